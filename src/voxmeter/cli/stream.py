"""`voxmeter stream`: live transcription of a file, or a data set streamed into the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from voxmeter.cli.common import (
    LIVE,
    AsJson,
    CacheDir,
    ChunkMs,
    Compress,
    Data,
    Engine,
    FinalPass,
    ForceCommitted,
    Frames,
    MaxClips,
    MaxWaitS,
    Model,
    PauseCutMs,
    Policy,
    Precision,
    Prompt,
    RelaxS,
    StepPass,
    Store,
    Threads,
    Vad,
    app,
    cost_only_option,
    live_spec,
    setup_logging,
)
from voxmeter.cli.serve import PANEL
from voxmeter.store import DEFAULT_STORE_PATH

S = LIVE.stream  # every default below is the spec's (cli/common.py)


@app.command(rich_help_panel=PANEL)
def stream(
    file: Path | None = typer.Argument(None, help="audio file to stream (omit: --data)"),
    model: Model = LIVE.model,
    cost_only: bool = cost_only_option(),
    engine: Engine = LIVE.engine,
    precision: Precision = LIVE.axes.precision,
    frames: Frames = str(LIVE.axes.frames),
    chunk_ms: ChunkMs = S.chunk_ms,
    policy: Policy = S.policy,
    vad: Vad = S.vad,
    holdback_s: float = typer.Option(
        S.holdback_s, help="commit no word ending this close to the buffer end"
    ),
    prompt: Prompt = S.prompt,
    final_pass: FinalPass = S.final_pass,
    step_pass: StepPass = S.step_pass,
    force_committed: ForceCommitted = S.force_committed,
    pause_cut_ms: PauseCutMs = S.pause_cut_ms,
    max_wait_s: MaxWaitS = S.max_wait_s,
    relax_s: RelaxS = S.relax_s,
    realtime: bool = typer.Option(S.realtime, help="feed audio at real-time pace (wall clock)"),
    ref: str | None = typer.Option(None, help="FILE's reference text (for WER and latency)"),
    data: Data = LIVE.data,
    max_clips: MaxClips = LIVE.max_clips,
    gap_s: float = typer.Option(S.gap_s, help="without FILE: silence after each clip (s)"),
    duration_s: float = typer.Option(
        S.duration_s, help="without FILE: repeat clips up to this (s; 0: once)"
    ),
    threads: Threads = LIVE.threads,
    compress: Compress = None,
    store: Store = Path(DEFAULT_STORE_PATH),
    cache_dir: CacheDir = None,
    force: bool = typer.Option(False, help="re-measure a stream spec already in the store"),
    as_json: AsJson = False,
    quiet: bool = typer.Option(False, help="no live text or notes"),
) -> None:
    """Stream audio through a model as a live session: partial and committed text as it goes,
    then latency, stability, WER against offline, compute/elapsed and memory. Without FILE,
    a data set (--data) streams into the store."""
    setup_logging(quiet or as_json)
    spec = live_spec(locals())
    live = not (quiet or as_json)
    if file is not None:
        metrics = _stream_file(spec, file, ref, cache_dir, live=live)
        note = "a single file's figures are printed, not stored (stream a data set to store)"
    else:
        metrics, note = _stream_data(spec, store, cache_dir, force, show=live)
    _print(spec, metrics, note, as_json)


def _stream_data(
    spec: Any, store: Path, cache_dir: Path | None, force: bool, show: bool
) -> tuple[dict[str, Any], str]:
    """Stream the spec's data set into the store (or find it there): the last run's figures."""
    from voxmeter.run.bench import measure_spec
    from voxmeter.stream.run import run_stream_spec

    results, note = measure_spec(
        spec, store, cache_dir=cache_dir, force=force, show=show, runner=run_stream_spec
    )
    return (results[-1].metrics if results else {}), note


def _print(spec: Any, metrics: dict[str, Any], note: str, as_json: bool) -> None:
    """One JSON document, or the summary table with its notes (stream_display)."""
    if as_json:
        doc = {"spec": spec.to_dict(), "label": spec.label(), "metrics": metrics, "note": note}
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    from voxmeter.cli.common import console
    from voxmeter.stream_display import print_summary

    print_summary(console(), spec.label(), metrics, note)


def _stream_file(
    spec: Any, file: Path, ref: str | None, cache_dir: Path | None, live: bool
) -> dict[str, Any]:
    """Stream one file; with `live`, its text as it goes (stream_display.LiveText)."""
    from voxmeter.audio.io import info
    from voxmeter.stream.run import stream_file

    info(file)  # a missing or unreadable file: one line, before the model loads
    if not live:
        return stream_file(spec, file, ref, cache_dir=cache_dir).metrics
    from voxmeter.cli.common import console
    from voxmeter.stream_display import LiveText

    with LiveText(console()).running() as view:
        run = stream_file(spec, file, ref, cache_dir=cache_dir, on_step=view.on_step)
    return run.metrics
