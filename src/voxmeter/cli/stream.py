"""`voxmeter stream`: live transcription of a file, or a data set streamed into the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
from voxmeter.cli.serve import PANEL, parse_agreement
from voxmeter.errors import SpecError
from voxmeter.store import DEFAULT_STORE_PATH

# (key, label, digits) of the summary, in order
SUMMARY = (
    ("first_partial_s", "time to first partial (s)", 2),
    ("commit_ms_p50", "commit latency p50 (ms)", 0),
    ("commit_ms_p90", "commit latency p90 (ms)", 0),
    ("commit_ms_p99", "commit latency p99 (ms)", 0),
    ("commit_unaware_ms_p50", "commit latency p50, compute-unaware (ms)", 0),
    ("eou_ms_p50", "end-of-utterance latency p50 (ms)", 0),
    ("churn", "partial words revised per committed word", 2),
    ("stream_wer", "streaming WER (%)", 2),
    ("offline_wer", "offline WER, same audio (%)", 2),
    ("stream_wer_vs_offline", "streaming WER against offline (%)", 2),
    ("compute_ratio", "compute / elapsed", 3),
    ("compute_ratio_worst_60s", "compute / elapsed, worst 60 s", 3),
    ("buffer_s_max", "longest buffer (s)", 1),
    ("looped_steps", "hypotheses dropped as loops", 0),
    ("forced_trims", "forced buffer cuts (uncommitted audio dropped)", 0),
    ("rss_mb_end", "RSS at the end (MiB)", 0),
    ("rss_slope_mb_h", "RSS slope (MiB/hour)", 1),
    ("rss_floor_slope_mb_h", "RSS floor slope, trace excluded (MiB/hour)", 1),
    ("stream_audio_s", "audio streamed (s)", 1),
    ("stream_wall_s", "wall time (s)", 1),
)


@app.command(rich_help_panel=PANEL)
def stream(
    file: Path | None = typer.Argument(None, help="audio file to stream (omit: --data)"),
    model: str = typer.Option("tiny.en", help="tiny.en, base, ... or a model directory"),
    engine: str = typer.Option("ct2", help="ct2 (CTranslate2) or hf (torch)"),
    precision: str = typer.Option("int8", help="fp32, bf16, fp16 (cuda) or int8"),
    frames: str = typer.Option("fit", help="encoder input: 'fit' (the buffer's length) or frames"),
    chunk_ms: int = typer.Option(500, help="audio per processing step (ms)"),
    policy: str = typer.Option("local-agreement-2", help="commit policy: local-agreement-N"),
    vad: bool = typer.Option(False, help="Silero VAD: skip silence, end utterances"),
    holdback_s: float = typer.Option(
        0.0, help="commit no word ending this close to the buffer end"
    ),
    prompt: bool = typer.Option(False, help="prompt with the committed text before the buffer"),
    final_pass: str = typer.Option(
        "plain", help="an utterance's last pass: 'plain' (no timestamps) or 'timestamps'"
    ),
    step_pass: str = typer.Option(
        "timestamps", help="every other step: 'timestamps' or 'plain' (fewer tokens; needs --vad)"
    ),
    force_committed: bool = typer.Option(
        False, help="start each step's decode with the words already committed from the buffer"
    ),
    pause_cut_ms: int = typer.Option(
        0, help="also cut the buffer in pauses this long inside an utterance (needs --vad; 0: off)"
    ),
    max_wait_s: float = typer.Option(
        0.0, help="commit a word not agreed on this long after its end anyway (s; 0: off)"
    ),
    relax_s: float = typer.Option(
        0.0,
        help="with LocalAgreement-3 or more: a word not agreed on this long after its end "
        "needs only the last two hypotheses to agree (s; 0: off)",
    ),
    realtime: bool = typer.Option(False, help="feed audio at real-time pace (wall clock)"),
    ref: str | None = typer.Option(None, help="FILE's reference text (for WER and latency)"),
    data: str = typer.Option("default", help="without FILE: data set streamed into the store"),
    max_clips: int = typer.Option(0, help="without FILE: first N clips (0 = all)"),
    gap_s: float = typer.Option(2.0, help="without FILE: silence after each clip (s)"),
    duration_s: float = typer.Option(0.0, help="without FILE: repeat clips up to this (s)"),
    threads: int = typer.Option(2, min=1, help="intra-op threads"),
    compress: list[str] | None = typer.Option(None, "--compress", help=COMPRESS_HELP),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    cache_dir: Path | None = typer.Option(None, help=CACHE_HELP),
    force: bool = typer.Option(False, help="re-measure a stream spec already in the store"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
    quiet: bool = typer.Option(False, help="no live text or notes"),
) -> None:
    """Stream audio through a model as a live session: partial and committed text as it goes,
    then latency, stability, WER against offline, compute/elapsed and memory."""
    from voxmeter.spec import AxisSettings, RunSpec, StreamSettings

    setup_logging(quiet or as_json)
    spec = RunSpec(
        model=model,
        engine=engine,
        data=data,
        threads=threads,
        max_clips=max_clips,
        repeats=1,
        axes=AxisSettings(frames=parse_frames(frames), precision=precision),
        compression=parse_compress(compress),
        stream=StreamSettings(
            chunk_ms=chunk_ms,
            agreement=parse_agreement(policy),
            holdback_s=holdback_s,
            vad=vad,
            prompt=prompt,
            final_pass=final_pass,
            step_pass=step_pass,
            force_committed=force_committed,
            pause_cut_ms=pause_cut_ms,
            max_wait_s=max_wait_s,
            relax_s=relax_s,
            realtime=realtime,
            gap_s=gap_s,
            duration_s=duration_s,
        ),
    )
    if chunk_ms == 0:
        raise SpecError("--chunk-ms: must be in [20, 10000], got 0")
    spec.validate()
    if file is not None:
        metrics = _stream_file(spec, file, ref, cache_dir, live=not (quiet or as_json))
        note = "a single file's figures are printed, not stored (stream a data set to store)"
    else:
        from voxmeter.run.bench import measure_spec
        from voxmeter.stream.run import run_stream_spec

        results, note = measure_spec(
            spec,
            store,
            cache_dir=cache_dir,
            force=force,
            show=not (quiet or as_json),
            runner=run_stream_spec,
        )
        metrics = results[-1].metrics if results else {}
    if as_json:
        doc = {"spec": spec.to_dict(), "label": spec.label(), "metrics": metrics, "note": note}
        typer.echo(json.dumps(doc, indent=2, default=str))
    else:
        _print_summary(spec, metrics, note)


def _stream_file(
    spec: Any, file: Path, ref: str | None, cache_dir: Path | None, live: bool
) -> dict[str, Any]:
    from voxmeter.audio.io import info
    from voxmeter.stream.run import stream_file

    info(file)  # a missing or unreadable file: one line, before the model loads
    if not live:
        return stream_file(spec, file, ref, cache_dir=cache_dir).metrics
    from rich.live import Live
    from rich.text import Text

    from voxmeter.cli.common import console

    committed: list[str] = []

    def show(step: Any) -> Text:
        committed.extend(w.text for w in step.committed)
        text = Text(f"[{step.audio_s:7.1f} s] ", style="dim")
        text.append(" ".join(committed[-40:]))
        if step.partial:
            text.append(" " + " ".join(w.text for w in step.partial), style="italic yellow")
        return text

    with Live(Text(""), console=console(), transient=False, refresh_per_second=8) as view:
        run = stream_file(
            spec, file, ref, cache_dir=cache_dir, on_step=lambda s: view.update(show(s))
        )
    return run.metrics


def _print_summary(spec: Any, metrics: dict[str, Any], note: str) -> None:
    from rich.table import Table

    from voxmeter.cli.common import console, fmt

    t = Table(title=spec.label(), show_header=False)
    for key, label, digits in SUMMARY:
        if key in metrics and metrics[key] is not None:
            t.add_row(label, fmt(float(metrics[key]), digits))
    out = console()
    out.print(t)
    if metrics.get("stream_reference"):
        out.print(f"[dim]{metrics['stream_reference']}[/dim]")
    if note:
        out.print(f"[dim]{note}[/dim]")
