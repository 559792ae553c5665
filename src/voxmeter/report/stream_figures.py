"""The report's live-streaming figures, and the capacity files they read.

A row is a stream when its spec's `stream.chunk_ms` is above 0 (rows written before streams
existed have no "stream" key and are not streams). Three figures, each None when nothing has
the figures it needs:

- commit latency (compute-aware p50/p90/p99) and streaming WER minus offline WER against the
  chunk size, one line per configuration that differs in its chunk size alone;
- resident memory against stream time, one line per session that recorded its RSS series
  (`{"kind": "rss_series"}` among a result's clips), its least-squares slope in the legend
  (and its floor slope, stream/measures.py, where the session was long enough for one);
- capacity: p99 commit latency against concurrent streams, with the SLO and the count that
  held it, from files written by `voxmeter load --find-capacity --json` or bench_stream.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from voxmeter.analysis.pareto import metric
from voxmeter.errors import SpecError
from voxmeter.report.figures import EXTRA_COLOURS, TEMPLATE, _without

# the section's words: what the two clocks mean, and what a capacity curve is for
STREAM_TEXT = (
    "Commit latency is the time from the end of a word's audio to the moment the stream "
    "commits it. Computation-aware figures count the model's compute time, as a live user "
    "waits for it; computation-unaware figures take compute as zero, which leaves the "
    "policy's own wait for agreement: the lower bound no faster hardware can beat. A capacity "
    "curve is the p99 latency one server keeps as concurrent streams are added; the most "
    "streams that hold the SLO size a fleet (streams expected at peak / streams per server)."
)
NO_STREAMS = (
    "No live-stream results (spec stream.chunk_ms > 0) and no capacity file "
    "(voxmeter report --capacity FILE.json)."
)
PERCENTILE_DASH = {"p50": "solid", "p90": "dash", "p99": "dot"}
HOUR_S = 3600.0


def is_stream(row: Any) -> bool:
    chunk = (row.spec.get("stream") or {}).get("chunk_ms") or 0
    return isinstance(chunk, int | float) and chunk > 0


def stream_rows(rows: Sequence[Any]) -> list[Any]:
    return [r for r in rows if is_stream(r)]


def _chunk(r: Any) -> int:
    return int(r.spec["stream"]["chunk_ms"])


def _group_name(rs: list[Any]) -> str:
    """The line's name: the first row's label without its chunk size."""
    label, c = rs[0].label, _chunk(rs[0])
    return label.replace(f"stream {c}ms ", "stream ").replace(f"stream {c}ms", "stream")


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def latency_figure(rows: Sequence[Any]) -> go.Figure | None:
    """Commit latency p50 (solid), p90 (dashed), p99 (dotted), compute-aware, and streaming
    WER minus offline WER (points; same audio, same model) against chunk size: one line per
    policy, VAD and everything else in the spec equal. Hover adds the compute-unaware p50."""
    from plotly.subplots import make_subplots

    lines: dict[str, list[Any]] = {}
    for r in stream_rows(rows):
        if any(metric(r, k) is not None for k in ("commit_ms_p50", "stream_wer")):
            lines.setdefault(_without(r.spec, "stream", "chunk_ms"), []).append(r)
    if not lines:
        return None
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "commit latency, compute-aware (ms)",
            "streaming WER - offline WER (points)",
        ),
    )
    chunks: set[int] = set()
    for i, rs in enumerate(sorted(lines.values(), key=_group_name)):
        rs = sorted(rs, key=_chunk)
        name = _group_name(rs)
        xs = [_chunk(r) for r in rs]
        chunks |= set(xs)
        colour = EXTRA_COLOURS[i % len(EXTRA_COLOURS)]
        unaware = [metric(r, "commit_unaware_ms_p50") for r in rs]
        for p, dash in PERCENTILE_DASH.items():
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[metric(r, f"commit_ms_{p}") for r in rs],
                    mode="lines+markers",
                    name=name if p == "p50" else f"{name} {p}",
                    legendgroup=name,
                    showlegend=p == "p50",
                    line=dict(color=colour, dash=dash),
                    customdata=[u if u is not None else float("nan") for u in unaware],
                    hovertemplate=f"{name}<br>%{{x}} ms chunks<br>{p} %{{y:.0f}} ms"
                    "<br>compute-unaware p50 %{customdata:.0f} ms<extra></extra>",
                ),
                row=1,
                col=1,
            )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[_difference(metric(r, "stream_wer"), metric(r, "offline_wer")) for r in rs],
                mode="lines+markers",
                name=f"{name} WER gap",
                legendgroup=name,
                showlegend=False,
                line=dict(color=colour),
                hovertemplate=f"{name}<br>%{{x}} ms chunks<br>%{{y:+.2f}} WER points"
                "<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.add_hline(y=0, line=dict(color="#bbb", width=1), row=1, col=2)
    fig.update_xaxes(type="log", title_text="chunk (ms of audio per step)", tickvals=sorted(chunks))
    fig.update_layout(
        title="live streams by chunk size: commit latency p50 (solid), p90 (dashed), "
        "p99 (dotted), and the accuracy a stream gives up",
        template=TEMPLATE,
        height=440,
        margin=dict(l=20, r=20, t=70, b=50),
    )
    return fig


def rss_series(row: Any) -> list[dict[str, Any]]:
    """The row's RSS series, one per repeat that recorded one (an AggRow's clips hold every
    repeat's, each with its "repeat"; a Result's hold its own)."""
    return [
        c
        for c in getattr(row, "clips", None) or []
        if c.get("kind") == "rss_series" and c.get("t_s") and c.get("rss_mb")
    ]


def _slope_text(row: Any, series: dict[str, Any], n_series: int) -> str:
    """The stored slope where the row has one series; the same least-squares fit per repeat
    where it has several (the stored figure is then their mean)."""
    if n_series == 1:
        slope = metric(row, "rss_slope_mb_h")
        floor = metric(row, "rss_floor_slope_mb_h")
        if slope is not None and floor is not None:
            return f"{slope:+.1f} MiB/h, floor {floor:+.1f}"
    else:
        from voxmeter.stream.measures import slope_per_hour

        slope = slope_per_hour(list(zip(series["t_s"], series["rss_mb"], strict=False)))
    return "slope n/a (under 60 s)" if slope is None else f"{slope:+.1f} MiB/h"


def rss_figure(rows: Sequence[Any]) -> go.Figure | None:
    """Resident memory against stream time, one line per session; a leak is a steady slope
    (the sampler reads RSS every 10 s of stream time)."""
    fig = go.Figure()
    for r in sorted(stream_rows(rows), key=lambda r: r.label):
        all_series = rss_series(r)
        for s in all_series:
            name = r.label
            if len(all_series) > 1:
                name += f" (repeat {s.get('repeat', '?')})"
            fig.add_trace(
                go.Scatter(
                    x=[t / 60 for t in s["t_s"]],
                    y=s["rss_mb"],
                    mode="lines+markers" if len(s["t_s"]) < 30 else "lines",
                    name=f"{name}: {_slope_text(r, s, len(all_series))}",
                    hovertemplate=f"{name}<br>%{{x:.1f}} min, %{{y:.0f}} MiB<extra></extra>",
                )
            )
    if not fig.data:
        return None
    fig.update_layout(
        title="resident memory over a live session (legend: least-squares slope)",
        xaxis_title="stream time (min)",
        yaxis_title="RSS (MiB)",
        template=TEMPLATE,
        height=420,
        margin=dict(l=60, r=20, t=50, b=50),
        legend=dict(font=dict(size=11)),
    )
    return fig


@dataclass(frozen=True)
class CapacityLevel:
    streams: int
    p50_ms: float | None
    p99_ms: float | None
    held: bool


@dataclass(frozen=True)
class CapacityCurve:
    """One server configuration's capacity search: every level tried, and the most streams
    that held the SLO (None when not stated)."""

    config: str
    sustained: int | None
    slo_ms: float
    levels: tuple[CapacityLevel, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "sustained": self.sustained,
            "slo_ms": self.slo_ms,
            "levels": [lv.__dict__ for lv in self.levels],
        }


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _level(d: Any, i: int) -> CapacityLevel:
    """A level in either shape: flat (streams, p50_ms, p99_ms, held), or a LoadReport's
    to_dict (config.streams, latency_ms.p50/p99, held)."""
    if not isinstance(d, dict):
        raise SpecError(f"level {i} is not an object")
    if "config" in d and "latency_ms" in d:
        cfg, lat = (x if isinstance(x, dict) else {} for x in (d["config"], d["latency_ms"]))
        d = {"streams": cfg.get("streams"), "held": d.get("held")}
        d |= {"p50_ms": lat.get("p50"), "p99_ms": lat.get("p99")}
    streams, held = d.get("streams"), d.get("held")
    if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
        raise SpecError(f"level {i} has no streams count")
    if not isinstance(held, bool):
        raise SpecError(f"level {i} has no 'held' true/false")
    for k in ("p50_ms", "p99_ms"):
        if d.get(k) is not None and not _num(d[k]):
            raise SpecError(f"level {i}'s {k} is not a number")
    return CapacityLevel(streams, d.get("p50_ms"), d.get("p99_ms"), held)


def _curve(d: Any, i: int) -> CapacityCurve:
    if not isinstance(d, dict):
        raise SpecError(f"capacity[{i}] is not an object")
    config, sustained, slo = d.get("config"), d.get("sustained"), d.get("slo_ms")
    if not isinstance(config, str) or not config:
        raise SpecError(f"capacity[{i}] has no config label")
    if sustained is not None and (not isinstance(sustained, int) or isinstance(sustained, bool)):
        raise SpecError(f"capacity[{i}] ({config}): 'sustained' is not a whole number")
    if not _num(slo) or not 0 < slo < math.inf:
        raise SpecError(f"capacity[{i}] ({config}) has no positive slo_ms")
    levels = d.get("levels")
    if not isinstance(levels, list) or not levels:
        raise SpecError(f"capacity[{i}] ({config}) has no levels")
    try:
        found = tuple(_level(lv, j) for j, lv in enumerate(levels))
    except SpecError as e:
        raise SpecError(f"capacity[{i}] ({config}): {e}") from None
    return CapacityCurve(config, sustained, float(slo), found)


def _from_find_capacity(doc: dict[str, Any], name: str) -> list[CapacityCurve]:
    """`voxmeter load --find-capacity --json`: one search, named after its file."""
    levels = doc.get("levels")
    if not isinstance(levels, list) or not levels:
        raise SpecError("'levels' is not a non-empty list")
    first = levels[0] if isinstance(levels[0], dict) else {}
    cfg = first.get("config")
    slo = cfg.get("slo_ms") if isinstance(cfg, dict) else None
    curve = {"config": name, "sustained": doc["capacity"], "slo_ms": slo, "levels": levels}
    return [_curve(curve, 0)]


def parse_capacity(doc: Any, name: str) -> list[CapacityCurve]:
    """Capacity curves from a parsed file: {"capacity": [curve, ...]} (bench_stream.py, also
    under its "load" key) or {"capacity": N, "levels": [...]} (voxmeter load --find-capacity
    --json, its curve named `name`). A SpecError saying what is wrong otherwise."""
    if isinstance(doc, dict) and "capacity" not in doc and isinstance(doc.get("load"), dict):
        doc = doc["load"]
    if not isinstance(doc, dict) or "capacity" not in doc:
        raise SpecError("no top-level 'capacity'")
    cap = doc["capacity"]
    if isinstance(cap, int) and not isinstance(cap, bool):
        return _from_find_capacity(doc, name)
    if not isinstance(cap, list) or not cap:
        raise SpecError("'capacity' is neither a list of curves nor a stream count")
    return [_curve(c, i) for i, c in enumerate(cap)]


def read_capacity(path: str | Path) -> list[CapacityCurve]:
    """The capacity curves in the file at `path`; a SpecError naming the file and what is
    wrong otherwise, so `voxmeter report` refuses it in one line before any report work."""
    p = Path(path)
    where = f"--capacity {p}"
    if not p.is_file():
        raise SpecError(f"{where}: {'not a file' if p.exists() else 'no such file'}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{where}: cannot read it ({e})") from None
    except ValueError as e:
        raise SpecError(f"{where}: not JSON ({e})") from None
    try:
        return parse_capacity(doc, p.stem)
    except SpecError as e:
        raise SpecError(f"{where}: not a capacity file ({e})") from None


def _at(curve: CapacityCurve, streams: int) -> float | None:
    return next((lv.p99_ms for lv in curve.levels if lv.streams == streams), None)


def capacity_figure(curves: Sequence[CapacityCurve]) -> go.Figure | None:
    """p99 commit latency against concurrent streams, one line per configuration; levels
    that missed the SLO are crosses, the SLO a dashed line, the sustained count an arrow."""
    if not curves:
        return None
    fig = go.Figure()
    for i, c in enumerate(curves):
        colour = EXTRA_COLOURS[i % len(EXTRA_COLOURS)]
        held = "none" if not c.sustained else str(c.sustained)
        fig.add_trace(
            go.Scatter(
                x=[lv.streams for lv in c.levels],
                y=[lv.p99_ms for lv in c.levels],
                mode="lines+markers",
                name=f"{c.config}: {held} sustained",
                line=dict(color=colour),
                marker=dict(
                    symbol=["circle" if lv.held else "x" for lv in c.levels],
                    size=10,
                    color=colour,
                ),
                customdata=[
                    [lv.p50_ms if lv.p50_ms is not None else float("nan"), lv.held]
                    for lv in c.levels
                ],
                hovertemplate=f"{c.config}<br>%{{x}} streams: p99 %{{y:.0f}} ms, "
                "p50 %{customdata[0]:.0f} ms, held %{customdata[1]}<extra></extra>",
            )
        )
        y = _at(c, c.sustained) if c.sustained else None
        if y is not None:
            fig.add_annotation(
                x=c.sustained,
                y=y,
                text=f"{c.sustained} streams",
                showarrow=True,
                arrowhead=2,
                ax=0,
                ay=-30 - 18 * i,
                font=dict(color=colour),
            )
    for slo in sorted({c.slo_ms for c in curves}):
        fig.add_hline(
            y=slo,
            line=dict(color="#b42318", dash="dash", width=1),
            annotation_text=f"SLO p99 ≤ {slo:g} ms",
            annotation_position="top left",
        )
    fig.update_layout(
        title="capacity: p99 commit latency as concurrent streams grow (x = missed the SLO)",
        xaxis=dict(
            title="concurrent streams",
            tickvals=sorted({lv.streams for c in curves for lv in c.levels}),
        ),
        yaxis_title="p99 commit latency (ms)",
        template=TEMPLATE,
        height=420,
        margin=dict(l=60, r=20, t=50, b=50),
    )
    return fig
