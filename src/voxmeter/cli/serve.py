"""The live commands: `serve` (a WebSocket transcription server) and `load` (live clients
against it, with commit latency percentiles and a capacity search).

Both bind or reach loopback by default; `load` refuses anything else (stream/load.py says why).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import typer

from voxmeter.cli.common import (
    LIVE,
    CacheDir,
    ChunkMs,
    Engine,
    FinalPass,
    ForceCommitted,
    Frames,
    MaxWaitS,
    Model,
    PauseCutMs,
    Policy,
    Precision,
    Prompt,
    RelaxS,
    StepPass,
    Threads,
    Vad,
    app,
    console,
    cost_only_option,
    fmt,
    live_spec,
    setup_logging,
)

PANEL = "Stream"
log = logging.getLogger("voxmeter.cli.serve")
S = LIVE.stream  # every default below is the spec's (cli/common.py)


@app.command(rich_help_panel=PANEL)
def serve(
    model: Model = LIVE.model,
    cost_only: bool = cost_only_option(),
    engine: Engine = LIVE.engine,
    precision: Precision = LIVE.axes.precision,
    frames: Frames = str(LIVE.axes.frames),
    threads: Threads = LIVE.threads,
    replicas: int = typer.Option(
        1, help="ct2: model copies stepping sessions in parallel (replicas x threads ~ cores)"
    ),
    chunk_ms: ChunkMs = S.chunk_ms,
    policy: Policy = S.policy,
    vad: Vad = S.vad,
    prompt: Prompt = S.prompt,
    final_pass: FinalPass = S.final_pass,
    step_pass: StepPass = S.step_pass,
    force_committed: ForceCommitted = S.force_committed,
    pause_cut_ms: PauseCutMs = S.pause_cut_ms,
    max_wait_s: MaxWaitS = S.max_wait_s,
    relax_s: RelaxS = S.relax_s,
    host: str = typer.Option("127.0.0.1", help="interface to bind (0.0.0.0: every one)"),
    port: int = typer.Option(8765, help="TCP port (0: any free one)"),
    max_sessions: int = typer.Option(4, help="concurrent streams; more get server_full"),
    max_ahead_s: float = typer.Option(
        2.0, help="audio a client may send ahead of real time (0: no guard, for replays)"
    ),
    cache_dir: CacheDir = None,
    quiet: bool = typer.Option(False, help="no log lines"),
) -> None:
    """Transcribe live audio over WebSocket (protocol: docs/stream-protocol.md) until Ctrl-C."""
    from dataclasses import replace

    from voxmeter.stream.server import ServerConfig
    from voxmeter.stream.server import serve as run_server

    setup_logging(quiet)
    spec = live_spec(locals(), realtime=True)
    base = ServerConfig(host=host, port=port, max_sessions=max_sessions, replicas=replicas)
    config = replace(base, limits=replace(base.limits, max_ahead_s=max_ahead_s)).validate()
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("binding %s: any machine that reaches it can use this server", host)
    try:
        asyncio.run(run_server(spec, config=config, cache_dir=cache_dir))
    except KeyboardInterrupt:
        log.info("stopped")  # Ctrl-C is how a server is meant to end


@app.command(rich_help_panel=PANEL)
def load(
    url: str = typer.Option("ws://127.0.0.1:8765", help="a loopback voxmeter serve"),
    streams: int = typer.Option(1, help="concurrent streams (fixed arrival)"),
    duration: float = typer.Option(30.0, help="seconds of audio per stream (poisson: of arrivals)"),
    arrival: str = typer.Option("fixed", help="fixed (all at once) or poisson"),
    rate: float = typer.Option(0.5, help="poisson: sessions started per second"),
    session: float = typer.Option(20.0, help="poisson: seconds of audio per session"),
    slo_ms: float = typer.Option(2000.0, help="p99 commit latency the server must keep"),
    frame_ms: int = typer.Option(100, help="audio per frame sent"),
    find_capacity: bool = typer.Option(
        False, help="run 1, 2, 4, 6, ... streams until p99 misses the SLO"
    ),
    max_streams: int = typer.Option(32, help="--find-capacity: the largest level tried"),
    level_audio: float = typer.Option(
        0.0,
        min=0.0,
        help="--find-capacity: audio per level in all streams, s (0: the bundled set once, "
        "~7 min; each stream runs at least this / streams: a p99 needs words)",
    ),
    seed: int = typer.Option(0, help="poisson arrivals' seed"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
    quiet: bool = typer.Option(False, help="no log lines"),
) -> None:
    """Live clients against a running `voxmeter serve`: commit latency p50/p90/p99."""
    from voxmeter.stream.load import LoadConfig, run_load
    from voxmeter.stream.load import find_capacity as search

    setup_logging(quiet or as_json)
    cfg = LoadConfig(
        url=url,
        streams=streams,
        duration_s=duration,
        arrival=arrival,
        rate=rate,
        session_s=session,
        slo_ms=slo_ms,
        frame_ms=frame_ms,
        seed=seed,
    ).validate()
    if find_capacity:
        show = None if as_json else _print_level
        found = asyncio.run(
            search(
                cfg,
                max_streams=max_streams,
                on_level=show,
                min_level_audio_s=level_audio or None,
            )
        )
        if as_json:
            typer.echo(json.dumps(found.to_dict(), indent=2))
        else:
            console().print(f"capacity: {found.capacity} streams held p99 <= {slo_ms:g} ms")
        return
    report = asyncio.run(run_load(cfg))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)


def _print_level(report: Any) -> None:
    lat = report.latency
    verdict = "held" if report.held else "missed"
    console().print(
        f"{report.config.streams:>3} streams: p50 {fmt(lat['p50'], 0)} ms, "
        f"p99 {fmt(lat['p99'], 0)} ms, {len(report.errors)} errors: {verdict}"
    )


def _print_report(report: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from voxmeter.stream.measures import p50_p90_p99
    from voxmeter.stream_display import COMPUTE_RATIO, COMPUTE_RATIO_NOTE, load_words_line

    t = Table(title=escape(f"load on {report.config.url}: commit latency per stream (ms)"))
    cols = ("stream", "start s", "audio s", "words", "timed", "p50", "p99", COMPUTE_RATIO, "error")
    for col in cols:
        t.add_column(col, justify="left" if col == "error" else "right")
    for s in report.streams:
        lat = p50_p90_p99(s.latencies_ms)
        t.add_row(
            str(s.index),
            fmt(s.start_s, 1),
            fmt(s.audio_s, 1),
            str(s.words),
            str(len(s.latencies_ms)),
            fmt(lat["p50"], 0),
            fmt(lat["p99"], 0),
            fmt(s.rtf, 3),
            escape(s.error or ("" if s.final else "no final")),
        )
    con = console()
    con.print(t)
    words = sum(s.words for s in report.streams)
    verdict = "held" if report.held else "missed"
    con.print(
        load_words_line(words, len(report.latencies_ms), report.latency)
        + f"; SLO p99 <= {report.config.slo_ms:g} ms {verdict}",
        highlight=False,
        markup=False,
    )
    con.print(f"[dim]{escape(COMPUTE_RATIO_NOTE)}[/dim]", highlight=False)
