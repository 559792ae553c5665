"""The measure commands: bench (one configuration), models, flops (without audio), peak."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from voxmeter.cli.common import (
    CACHE_HELP,
    COMPRESS_HELP,
    STORE_HELP,
    app,
    parse_compress,
    parse_frames,
    setup_logging,
)
from voxmeter.store import DEFAULT_STORE_PATH


@app.command(rich_help_panel="Measure")
def bench(
    model: str = typer.Option("tiny.en", help="tiny.en, base, small, medium, large-v3 or a dir"),
    engine: str = typer.Option("hf", help="hf (torch + transformers) or ct2 (CTranslate2)"),
    data: str = typer.Option(
        "default", help="default, noisy, longform, calib, a JSONL manifest or LibriSpeech dir"
    ),
    repeats: int = typer.Option(3, min=1, help="measured passes over the data set"),
    threads: int = typer.Option(2, min=1, help="intra-op threads"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    precision: str = typer.Option("fp32", help="fp32, bf16, fp16 (cuda) or int8"),
    frames: str = typer.Option("3000", help="xT: encoder input frames (even, <=3000) or 'fit'"),
    pad: str = typer.Option("silence", help="xT: what the decoder sees past a short input"),
    stride: int = typer.Option(1, help="xV: encoder states subsampled by this factor"),
    pool: str = typer.Option("stride", help="xV: 'stride' or 'avg'"),
    max_clips: int = typer.Option(0, help="use only the first N clips (0 = all)"),
    batch_size: int = typer.Option(
        1, help="clips per batch (1 = the edge case); long-form: chunks"
    ),
    frontend: str = typer.Option(
        "audio", help="pad the 'audio' (openai) or the 'features' (faster-whisper)"
    ),
    longform: str = typer.Option(
        "sequential", help="recordings over 30 s: 'sequential' or 'batched' (VAD)"
    ),
    condition_on_previous_text: bool = typer.Option(
        False, help="sequential long-form: prompt with the text so far"
    ),
    vad_threshold: float = typer.Option(
        0.5, help="batched long-form: Silero speech threshold, (0, 1)"
    ),
    vad_min_silence_ms: int = typer.Option(160, help="batched long-form: silence that ends speech"),
    max_segment_s: float = typer.Option(30.0, help="batched long-form: longest chunk, (0, 30] s"),
    pool_recordings: bool = typer.Option(
        False, help="batched long-form: recordings' VAD chunks share batches (throughput)"
    ),
    encoder_batch: int = typer.Option(
        0, help="run the encoder in parts of N items of a batch (0 = whole batch)"
    ),
    compress: list[str] | None = typer.Option(None, "--compress", help=COMPRESS_HELP),
    seed: int = typer.Option(0),
    warmup: int = typer.Option(1, min=0, help="clips run before measuring"),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    cache_dir: Path | None = typer.Option(None, help=CACHE_HELP),
    force: bool = typer.Option(False, help="re-measure a spec already in the store"),
    isolated: bool = typer.Option(False, help="run in a fresh child process (own peak RSS)"),
    memory_budget: float | None = typer.Option(
        None,
        "--memory-budget",
        help="MiB of process peak RSS: run the largest configuration that fits (this spec, "
        "its int8, smaller models), isolated, stopping any that passes it",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
    quiet: bool = typer.Option(False, help="no progress bar or notes"),
) -> None:
    """Measure one configuration: accuracy, latency, memory, FLOPs, energy, environment."""
    from voxmeter.display import print_bench, results_json
    from voxmeter.run.bench import measure_spec
    from voxmeter.spec import AxisSettings, RunSpec, WorkloadSettings

    setup_logging(quiet or as_json)
    spec = RunSpec(
        model=model,
        engine=engine,
        data=data,
        device=device,
        threads=threads,
        seed=seed,
        max_clips=max_clips,
        batch_size=batch_size,
        repeats=repeats,
        warmup=warmup,
        axes=AxisSettings(
            frames=parse_frames(frames), pad=pad, stride=stride, pool=pool, precision=precision
        ),
        workload=WorkloadSettings(
            frontend=frontend,
            longform=longform,
            condition_on_previous_text=condition_on_previous_text,
            vad_threshold=vad_threshold,
            vad_min_silence_ms=vad_min_silence_ms,
            max_segment_s=max_segment_s,
            pool_recordings=pool_recordings,
            encoder_batch=encoder_batch,
        ),
        compression=parse_compress(compress),
    ).validate()
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.data.datasets import load_dataset

    resolve_model(spec.model, cache_dir)  # fail fast on a bad model or data set, before any work
    load_dataset(spec.data)
    if memory_budget is not None:
        from voxmeter.run.budget import measure_within_budget

        choice = measure_within_budget(
            spec, memory_budget, store, cache_dir=cache_dir, force=force, show=False
        )
        spec, results = choice.spec, choice.results
        note = " ".join(x for x in (choice.explain(memory_budget), choice.note) if x)
    else:
        results, note = measure_spec(
            spec,
            store,
            cache_dir=cache_dir,
            force=force,
            isolated=isolated,
            show=not (quiet or as_json),
        )
    if as_json:
        typer.echo(json.dumps(results_json(spec, results, note), indent=2, default=str))
    else:
        print_bench(spec, results, note)


@app.command(rich_help_panel="Measure")
def models(
    model: str | None = typer.Option(None, "--model", help="also describe this directory"),
    cache_dir: Path | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the models that can run here, with parameters and weight bytes."""
    from voxmeter.display import list_models

    list_models(model, cache_dir, as_json)


@app.command(rich_help_panel="Measure")
def flops(
    model: str = typer.Option("tiny.en"),
    frames: int = typer.Option(3000, help="encoder input frames (even, <= 3000)"),
    stride: int = typer.Option(1, help="xV factor k"),
    pad: str = typer.Option("silence"),
    pool: str = typer.Option("stride"),
    tokens: int = typer.Option(20, min=1, help="generated tokens, end-of-text included"),
    cache_dir: Path | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """FLOPs per stage in three columns (counted, analytic, paper), without audio."""
    from voxmeter.display import print_flops
    from voxmeter.run.flopsreport import flops_table

    setup_logging(True)
    table = flops_table(model, frames, stride, pad, pool, tokens, cache_dir)
    if as_json:
        typer.echo(json.dumps(table, indent=2))
    else:
        print_flops(table)


@app.command(rich_help_panel="Measure")
def peak(
    threads: int = typer.Option(2, min=1),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option(
        "fp32",
        help="fp32, bf16, fp16 (torch.mm) or int8 (the hf engine's int8 Linear kernel, CPU)",
    ),
    refresh: bool = typer.Option(False, help="measure again even if cached"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Measure the machine's matmul peak (GFLOP/s) in one dtype once and cache it; a run's
    share of peak divides by the peak of the dtype it computes in."""
    from voxmeter.display import print_peak
    from voxmeter.measure.peak import PEAK_DTYPES, get_peak
    from voxmeter.measure.windows import MeasureError

    if dtype not in PEAK_DTYPES:
        raise MeasureError(f"peak: --dtype {dtype!r} is not one of {', '.join(PEAK_DTYPES)}")
    full_range = False
    if dtype == "int8":  # the range the engine's int8 Linear asks for here
        from voxmeter.engines.quant import full_range_is_safe
        from voxmeter.measure.envinfo import cpu_info

        full_range = full_range_is_safe(cpu_info().flags)
    res = get_peak(
        threads=threads, dtype=dtype, device=device, refresh=refresh, int8_full_range=full_range
    )
    print_peak(res, as_json)
