"""The measure commands: bench (one configuration), models, flops (without audio), peak."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from voxmeter.cli.common import (
    AsJson,
    CacheDir,
    Compress,
    Data,
    Engine,
    Frames,
    MaxClips,
    Model,
    Precision,
    Store,
    Threads,
    app,
    cost_only_option,
    parse_compress,
    parse_frames,
    setup_logging,
)
from voxmeter.spec import RunSpec
from voxmeter.store import DEFAULT_STORE_PATH

D = RunSpec()  # every default of bench's spec options is the spec's (cli/common.py)


@app.command(rich_help_panel="Measure")
def bench(
    model: Model = D.model,
    cost_only: bool = cost_only_option(),
    engine: Engine = D.engine,
    data: Data = D.data,
    repeats: int = typer.Option(3, min=1, help="measured passes over the data set"),
    threads: Threads = D.threads,
    device: str = typer.Option("cpu", help="cpu or cuda"),
    precision: Precision = D.axes.precision,
    frames: Frames = str(D.axes.frames),
    pad: str = typer.Option("silence", help="xT: what the decoder sees past a short input"),
    stride: int = typer.Option(1, help="xV: encoder states subsampled by this factor"),
    pool: str = typer.Option("stride", help="xV: 'stride' or 'avg'"),
    max_clips: MaxClips = D.max_clips,
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
    compress: Compress = None,
    seed: int = typer.Option(0),
    warmup: int = typer.Option(1, min=0, help="clips run before measuring"),
    store: Store = Path(DEFAULT_STORE_PATH),
    cache_dir: CacheDir = None,
    force: bool = typer.Option(False, help="re-measure a spec already in the store"),
    isolated: bool = typer.Option(False, help="run in a fresh child process (own peak RSS)"),
    memory_budget: float | None = typer.Option(
        None,
        "--memory-budget",
        help="MiB of process peak RSS: run the largest configuration that fits (this spec, "
        "its int8, smaller models), isolated, stopping any that passes it",
        show_default=False,
    ),
    as_json: AsJson = False,
    quiet: bool = typer.Option(False, help="no progress bar or notes"),
) -> None:
    """Measure one configuration: accuracy, latency, memory, FLOPs, energy, environment."""
    spec = _bench_spec(dict(locals()))  # first: every option, as typer parsed it
    setup_logging(quiet or as_json)
    _check_inputs(spec, cache_dir)
    spec, results, note = _measure(
        spec, store, cache_dir, force, isolated, memory_budget, show=not (quiet or as_json)
    )
    from voxmeter.display import print_bench, results_json

    if as_json:
        typer.echo(json.dumps(results_json(spec, results, note), indent=2, default=str))
    else:
        print_bench(spec, results, note)


def _bench_spec(o: dict[str, Any]) -> RunSpec:
    """The validated RunSpec that bench's options `o` describe."""
    from voxmeter.spec import AxisSettings, RunSpec, WorkloadSettings

    axes = AxisSettings(
        frames=parse_frames(o["frames"]),
        pad=o["pad"],
        stride=o["stride"],
        pool=o["pool"],
        precision=o["precision"],
    )
    workload = WorkloadSettings(
        frontend=o["frontend"],
        longform=o["longform"],
        condition_on_previous_text=o["condition_on_previous_text"],
        vad_threshold=o["vad_threshold"],
        vad_min_silence_ms=o["vad_min_silence_ms"],
        max_segment_s=o["max_segment_s"],
        pool_recordings=o["pool_recordings"],
        encoder_batch=o["encoder_batch"],
    )
    run = (
        "model",
        "cost_only",
        "engine",
        "data",
        "device",
        "threads",
        "seed",
        "max_clips",
        "batch_size",
    )
    return RunSpec(
        **{k: o[k] for k in (*run, "repeats", "warmup")},
        axes=axes,
        workload=workload,
        compression=parse_compress(o["compress"]),
    ).validate()


def _check_inputs(spec: RunSpec, cache_dir: Path | None) -> None:
    """Fail fast on a bad model or data set, in one line, before any work."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.data.datasets import load_dataset

    resolve_model(spec.model, cache_dir)
    load_dataset(spec.data)


def _measure(
    spec: RunSpec,
    store: Path,
    cache_dir: Path | None,
    force: bool,
    isolated: bool,
    memory_budget: float | None,
    show: bool,
) -> tuple[RunSpec, list[Any], str]:
    """Run (or find stored) repeats of `spec`; under --memory-budget, of the largest
    configuration that fits. The spec that ran, its results and a note."""
    if memory_budget is None:
        from voxmeter.run.bench import measure_spec

        results, note = measure_spec(
            spec, store, cache_dir=cache_dir, force=force, isolated=isolated, show=show
        )
        return spec, results, note
    from voxmeter.run.budget import measure_within_budget

    choice = measure_within_budget(
        spec, memory_budget, store, cache_dir=cache_dir, force=force, show=False
    )
    note = " ".join(x for x in (choice.explain(memory_budget), choice.note) if x)
    return choice.spec, choice.results, note


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
