"""The report's plotly figures, built from aggregated rows (one per spec).

Each builder returns a figure, or None when no row has the figures it needs (the report then
says so in words instead of drawing an empty chart). An axis of energy says when any point on
it is estimated, and how; the paper's FLOPs are titled as our reconstruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from voxmeter.analysis.pareto import Front, metric, pareto_front
from voxmeter.measure.energy import gpu_unmeasured, is_estimated, method_family
from voxmeter.result import METRIC_UNITS

TEMPLATE = "plotly_white"
FRONT_COLOUR = "#d62728"
OTHER_COLOUR = "#9e9e9e"
STAGE_COLOURS = {"feat": "#8c564b", "enc": "#1f77b4", "dec": "#ff7f0e"}
EXTRA_COLOURS = ("#2ca02c", "#9467bd", "#e377c2", "#7f7f7f")


def stage_keys(rows: Sequence[Any]) -> list[str]:
    """The stages the rows' engines declared, in order (rows of other tasks add theirs)."""
    out: list[str] = []
    for r in rows:
        for k in getattr(r, "stage_keys", None) or ["feat", "enc", "dec"]:
            if k not in out:
                out.append(k)
    return out


def stage_name(key: str) -> str:
    from voxmeter.engines.base import ASR_STAGES

    return {s.key: s.label for s in ASR_STAGES}.get(key, key)


def stage_colour(key: str, i: int) -> str:
    return STAGE_COLOURS.get(key, EXTRA_COLOURS[i % len(EXTRA_COLOURS)])


# figures derived from the energy reading, by how an axis names them
ENERGY_TITLES = {
    "energy_j": "energy (J)",
    "j_per_audio_s": "J per audio s",
    "j_per_word": "J per word",
}


def axis_title(key: str) -> str:
    if key == "gflops_paper_total":
        from voxmeter.measure.flops import paper_label

        return f"GFLOP, {paper_label()}"
    unit, _ = METRIC_UNITS.get(key, ("", key))
    return f"{key} ({unit})" if unit else key


def _energy_method(r: Any) -> str | None:
    notes = getattr(r, "notes", None)
    if notes is None and hasattr(r, "metrics"):
        notes = r.metrics  # a Result keeps its method among its metrics
    return (notes or {}).get("energy_method")


def energy_axis_title(key: str, rows: Sequence[Any]) -> str:
    """An energy axis's title: "(estimated: <method>)" when any row shown is estimated, and
    "(CPU only ...)" when any GPU run's GPU went unmeasured."""
    title = ENERGY_TITLES[key]
    methods = [m for m in (_energy_method(r) for r in rows) if m]
    estimated = sorted({method_family(m) for m in methods if is_estimated(m)})
    if estimated:
        how = " | ".join(m[len("estimated") :].lstrip(": ") for m in estimated)
        title += f" (estimated: {how})"
    elif any(gpu_unmeasured(m) for m in methods):
        title += " (CPU only: GPU not measured)"
    return title


def _hover_label(r: Any, keys: tuple[str, ...]) -> str:
    """A point's label, marked when one of its plotted figures is an estimated energy."""
    if any(k in ENERGY_TITLES for k in keys) and is_estimated(_energy_method(r)):
        return f"{r.label} (energy ≈ est.)"
    return r.label


def _wer_err(rows: Sequence[Any], y: str) -> dict[str, Any] | None:
    """Asymmetric error bars from each row's CI of y, where it has one."""
    plus, minus, any_ci = [], [], False
    for r in rows:
        m = r.metrics.get(y)
        if m is not None and m.ci_lo is not None:
            plus.append(max(0.0, m.ci_hi - m.mean))
            minus.append(max(0.0, m.mean - m.ci_lo))
            any_ci = True
        else:
            plus.append(0.0)
            minus.append(0.0)
    if not any_ci:
        return None
    return dict(type="data", symmetric=False, array=plus, arrayminus=minus, thickness=1)


def pareto_figure(rows: Sequence[Any], x: str, y: str = "wer") -> tuple[go.Figure | None, Front]:
    front = pareto_front(rows, x, y)
    if not front.front:
        return None, front
    shown = front.front + front.dominated
    # weights are stored in bytes; MiB reads better on an axis
    scale, x_title = (2**20, "weights (MiB)") if x == "weight_bytes" else (1, axis_title(x))
    if x in ENERGY_TITLES:
        x_title = energy_axis_title(x, shown)
    y_title = energy_axis_title(y, shown) if y in ENERGY_TITLES else axis_title(y)
    fig = go.Figure()
    for name, pts, colour, mode in (
        ("dominated", front.dominated, OTHER_COLOUR, "markers"),
        ("Pareto front", front.front, FRONT_COLOUR, "lines+markers"),
    ):
        if not pts:
            continue
        fig.add_trace(
            go.Scatter(
                x=[metric(r, x) / scale for r in pts],
                y=[metric(r, y) for r in pts],
                mode=mode,
                name=name,
                text=[_hover_label(r, (x, y)) for r in pts],
                hovertemplate="%{text}<br>" + x + "=%{x:.4g}<br>" + y + "=%{y:.3g}<extra></extra>",
                marker=dict(color=colour, size=9),
                line=dict(color=colour, shape="hv") if "lines" in mode else None,
                error_y=_wer_err(pts, y),
            )
        )
    note = f" ({front.n_excluded} without {x} or {y} left out)" if front.n_excluded else ""
    fig.update_layout(
        title=f"{y} vs {x}{note}",
        # a method in a title can be long: smaller type keeps it on the chart
        xaxis_title=dict(text=x_title, font=dict(size=11 if len(x_title) > 60 else 14)),
        yaxis_title=dict(text=y_title, font=dict(size=11 if len(y_title) > 60 else 14)),
        template=TEMPLATE,
        height=420,
        margin=dict(l=60, r=20, t=50, b=50),
    )
    return fig, front


def _line_key(r: Any) -> str:
    a = r.spec.get("axes", {})
    frames = a.get("frames")
    t = f"T={frames}" + (f"/{a.get('pad')}" if frames != 3000 else "")
    return f"{r.spec.get('model')} {r.spec.get('engine')} {a.get('precision')} {t}"


def iso_flops_figure(rows: Sequence[Any]) -> go.Figure | None:
    """WER vs FLOPs, one line per model, engine, precision and input length (xT), along which
    the encoder stride (xV) varies; points labelled k. Lines of one model at the same FLOPs
    are the iso-FLOPs comparison: the same compute spent on a longer input or finer states."""
    usable = [
        r for r in rows if metric(r, "wer") is not None and metric(r, "gflops_analytic_total")
    ]
    if not usable:
        return None
    lines: dict[str, list[Any]] = {}
    for r in usable:
        lines.setdefault(_line_key(r), []).append(r)
    fig = go.Figure()
    for name, pts in sorted(lines.items()):
        pts.sort(key=lambda r: metric(r, "gflops_analytic_total"))
        fig.add_trace(
            go.Scatter(
                x=[metric(r, "gflops_analytic_total") for r in pts],
                y=[metric(r, "wer") for r in pts],
                mode="lines+markers+text",
                name=name,
                text=[f"k={r.axis('stride')}/{r.axis('pool')}" for r in pts],
                textposition="top center",
                textfont=dict(size=10),
                hovertemplate="%{text}<br>%{x:.3g} GFLOP, WER %{y:.3g}%<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        title="iso-FLOPs view: WER against analytic GFLOPs per clip; "
        "one line per model, precision and input length, stride k along it",
        xaxis_title=axis_title("gflops_analytic_total"),
        yaxis_title=axis_title("wer"),
        xaxis_type="log",
        template=TEMPLATE,
        height=460,
        margin=dict(l=60, r=20, t=50, b=50),
    )
    return fig


def _bar_height(n: int) -> int:
    return max(260, 90 + 28 * n)


def latency_figure(rows: Sequence[Any]) -> go.Figure | None:
    """Per-stage median latency, stacked, per spec (medians of stages need not sum to e2e)."""
    keys = stage_keys(rows)
    usable = [r for r in rows if any(metric(r, f"{s}_ms_p50") is not None for s in keys)]
    if not usable:
        return None
    labels = [r.label for r in usable]
    fig = go.Figure()
    for i, s in enumerate(keys):
        fig.add_trace(
            go.Bar(
                y=labels,
                x=[metric(r, f"{s}_ms_p50") for r in usable],
                name=stage_name(s),
                orientation="h",
                marker_color=stage_colour(s, i),
            )
        )
    fig.update_layout(
        barmode="stack",
        title="latency per clip by stage (p50 pooled over clips x repeats)",
        xaxis_title="ms per clip",
        template=TEMPLATE,
        height=_bar_height(len(usable)),
        margin=dict(l=20, r=20, t=50, b=50),
        yaxis=dict(automargin=True),
    )
    return fig


def memory_figure(rows: Sequence[Any]) -> go.Figure | None:
    """Weights, per-stage transients and process peak RSS per spec, in MiB."""
    series = [
        ("weights", lambda r: (metric(r, "weight_bytes") or 0) / 2**20 or None),
        *[
            (f"{stage_name(k)} transient", lambda r, k=k: metric(r, f"{k}_mem_mb"))
            for k in stage_keys(rows)
        ],
        ("peak RSS", lambda r: metric(r, "peak_rss_mb")),
    ]
    usable = [r for r in rows if any(f(r) is not None for _, f in series)]
    if not usable:
        return None
    labels = [r.label for r in usable]
    fig = go.Figure()
    for name, f in series:
        fig.add_trace(go.Bar(y=labels, x=[f(r) for r in usable], name=name, orientation="h"))
    fig.update_layout(
        barmode="group",
        title="memory per stage (transient = peak during the stage - RSS before it)",
        xaxis_title="MiB",
        template=TEMPLATE,
        height=_bar_height(len(usable) * 2),
        margin=dict(l=20, r=20, t=50, b=50),
        yaxis=dict(automargin=True),
    )
    return fig


def _without(spec: dict[str, Any], *path: str) -> str:
    """The spec as a key with one field (top-level or nested) left out."""
    import json

    d = json.loads(json.dumps(spec))
    node = d
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node.pop(path[-1], None)
    for k in ("repeats", "warmup"):
        d.pop(k, None)
    return json.dumps(d, sort_keys=True)


def batch_figure(rows: Sequence[Any]) -> go.Figure | None:
    """Throughput and peak RSS against batch size, one line per configuration that was
    measured at two or more batch sizes (everything else in its spec equal)."""
    from plotly.subplots import make_subplots

    lines: dict[str, list[Any]] = {}
    for r in rows:
        lines.setdefault(_without(r.spec, "batch_size"), []).append(r)
    lines = {k: v for k, v in lines.items() if len({x.spec.get("batch_size") for x in v}) > 1}
    if not lines:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("throughput (clips/s)", "peak RSS (MiB)"))
    for i, rs in enumerate(lines.values()):
        rs = sorted(rs, key=lambda r: r.spec.get("batch_size") or 1)
        name = rs[0].label.replace(f" b={rs[0].spec.get('batch_size')}", "")
        xs = [r.spec.get("batch_size") or 1 for r in rs]
        colour = EXTRA_COLOURS[i % len(EXTRA_COLOURS)]
        for col, key in ((1, "throughput_clips_s"), (2, "peak_rss_mb")):
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[metric(r, key) for r in rs],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line=dict(color=colour),
                    hovertext=[r.label for r in rs],
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(type="log", title_text="batch size", tickvals=[1, 2, 4, 8, 16, 32])
    fig.update_layout(
        title="batches of short clips: what a larger batch buys and costs",
        template=TEMPLATE,
        height=420,
        margin=dict(l=20, r=20, t=70, b=50),
    )
    return fig


def frontend_pairs(rows: Sequence[Any]) -> list[tuple[Any, Any]]:
    """(audio-padded row, features-padded row) pairs that differ in the front end alone."""
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        fe = (r.spec.get("workload") or {}).get("frontend", "audio")
        groups.setdefault(_without(r.spec, "workload", "frontend"), {})[fe] = r
    return [(g["audio"], g["features"]) for g in groups.values() if {"audio", "features"} <= set(g)]


def sensitivity_figure(smap: dict[str, Any]) -> go.Figure:
    """A sensitivity map (compress/sensitivity.py's format) as a heat map: one row per layer
    group, then "all" (every group at once), one column per granularity; colour is the WER
    change in points, hover adds the KL, which ranks the groups WER cannot tell apart. Rows
    keep the map's group order, so the model reads top to bottom as it runs."""
    from voxmeter.compress.sensitivity import ALL, measured_label

    grans = smap["granularities"]
    groups = [*smap["groups"], ALL]
    cells = smap["cells"]
    z = [[cells[g][grp]["delta_wer"] for g in grans] for grp in groups]
    kl = [[cells[g][grp]["kl"] for g in grans] for grp in groups]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=grans, y=groups, customdata=kl, colorscale="Reds",
            colorbar={"title": "ΔWER (points)"},
            hovertemplate="%{y}, %{x}<br>ΔWER %{z:+.2f} points<br>KL %{customdata:.3e}"
            "<extra></extra>",
        )
    )  # fmt: skip
    data = smap["data"]
    wer = smap["baseline"]["wer"]
    fig.update_layout(
        title=f"{smap['model']}: WER change with one layer group at "
        f"{measured_label(smap)} ({data['name']}, {data['n_clips']} clips; fp32 WER "
        f"{'n/a' if wer is None else f'{wer:.2f}'})",
        template=TEMPLATE,
        yaxis={"autorange": "reversed"},
        height=120 + 28 * len(groups),
    )
    return fig
