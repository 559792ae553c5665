"""One self-contained HTML report: figures, a sortable table, the recommendation, environments.

Self-contained means no network at all when opened: plotly.js is inlined once (the first
figure carries it, later ones reuse it), the table sorts with a few lines of inline script,
and there are no fonts, images or styles from elsewhere. The file is written only when there
is something to show; an empty store is a StoreError and leaves no file behind.

Every figure that is not a plain measurement says so where it is shown: each estimated energy
cell carries "≈ est." (and its method on hover), a CPU-only energy figure of a GPU run says
"CPU only", and the paper's FLOPs are named as our reconstruction with its misfit. Rows are
shown by their `label` and told apart by identity, never by spec hash alone: one spec may be
measured under several identities (code, weights, data).

Sensitivity maps (`voxmeter sensitivity`'s JSON) given to the report each get a section: the
heat map, the map's own method text, and the groups that rounding hurts most. A map is read and
checked by `read_sensitivity_map` before any report work, so a bad file costs one line, not a
half-built report.

Live streams get a section of their own (report/stream_figures.py): latency and accuracy
against chunk size, memory over a session, a table of the stream figures, and the capacity
curves of any --capacity files, read and checked the same way as sensitivity maps.
"""

from __future__ import annotations

import contextlib
import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voxmeter.analysis.pareto import STANDARD_FRONTS
from voxmeter.errors import SpecError, StoreError
from voxmeter.measure.energy import gpu_unmeasured, is_estimated, method_family
from voxmeter.measure.flops import paper_label
from voxmeter.result import Result
from voxmeter.store import AggRow, aggregate_results

PARETO_PAIRS = STANDARD_FRONTS  # WER against FLOPs, p50, p90, peak RSS, energy, weights
# (metric, header, digits) of the table
TABLE_COLUMNS = (
    ("wer", "WER %", 2),
    ("cer", "CER %", 2),
    ("rtfx", "RTFx", 2),
    ("e2e_ms_p50", "e2e p50 ms", 1),
    ("e2e_ms_p90", "e2e p90 ms", 1),
    ("dec_ms_per_token", "dec ms/token", 2),
    ("peak_rss_mb", "peak RSS MiB", 0),
    ("gflops_analytic_total", "GFLOPs (analytic)", 2),
    ("energy_j", "energy J", 2),
    ("j_per_audio_s", "J per audio s", 3),
    ("j_per_word", "J per word", 4),
    ("weight_bytes", "weights MiB", 1),
)
# figures derived from the energy reading: each inherits its method (row.notes["energy_method"])
ENERGY_KEYS = frozenset({"energy_j", "j_per_audio_s", "j_per_word"})
EST_MARK = "≈ est."
CPU_ONLY_MARK = "CPU only"
TOP_GROUPS = 3  # layer groups named under a sensitivity heat map, most sensitive first
# (metric, header, digits) of the live-stream table
STREAM_COLUMNS = (
    ("first_partial_s", "first partial s", 2),
    ("commit_ms_p50", "commit p50 ms", 0),
    ("commit_ms_p99", "commit p99 ms", 0),
    ("commit_unaware_ms_p50", "commit p50 ms, compute-unaware", 0),
    ("eou_ms_p50", "end of utterance p50 ms", 0),
    ("churn", "churn", 3),
    ("stream_wer", "stream WER %", 2),
    ("offline_wer", "offline WER %", 2),
    ("compute_ratio", "compute/elapsed", 3),
    ("rss_slope_mb_h", "RSS slope MiB/h", 1),
    ("rss_floor_slope_mb_h", "RSS floor slope MiB/h", 1),
)
# the keys of a sensitivity map that the heat map and its section read
SENSITIVITY_KEYS = (
    "model",
    "bits",
    "data",
    "baseline",
    "granularities",
    "groups",
    "cells",
    "method",
)

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;
 color:#222;padding:0 16px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;user-select:none}th:first-child,td:first-child{text-align:left}
tr.front td:first-child{font-weight:600}.ok{color:#1a7f37}.bad{color:#b42318}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;margin:8px 0}
.rec{background:#eef7ee;border-left:4px solid #1a7f37;padding:8px 12px}
.rec.none{background:#fdecea;border-left-color:#b42318}
details{margin:4px 0}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
.muted{color:#777}.scroll{overflow-x:auto}
.est{color:#b45309;font-size:11px;margin-left:4px}
"""

# Sort a table by the clicked column; numbers by data-v, blanks last. No libraries.
_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var body = th.closest('table').tBodies[0];
    var asc = th.dataset.dir !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    var key = function (tr) {
      var c = tr.cells[col], v = c.dataset.v;
      if (v === undefined) return c.textContent.toLowerCase();
      return v === '' ? null : parseFloat(v);
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null) return 1; if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _as_rows(rows: Sequence[Any]) -> list[AggRow]:
    if rows and isinstance(rows[0], Result):
        return aggregate_results(rows)
    return list(rows)


def _energy_method(row: Any) -> str | None:
    # an AggRow keeps string figures in notes; a Result among its metrics
    notes = getattr(row, "notes", None) or getattr(row, "metrics", None) or {}
    method = notes.get("energy_method")
    return method if isinstance(method, str) else None


def energy_marks(row: Any) -> list[str]:
    """Marks for a row's energy figures: estimated, and/or CPU only on a GPU run."""
    method = _energy_method(row)
    return [
        m
        for m, on in ((EST_MARK, is_estimated(method)), (CPU_ONLY_MARK, gpu_unmeasured(method)))
        if on
    ]


def _fmt_cell(row: AggRow, key: str, digits: int) -> str:
    m = row.metrics.get(key)
    if m is None:
        return '<td data-v="" class="muted">n/a</td>'
    scale = 2**20 if key == "weight_bytes" else 1
    mean = m.mean / scale
    text = f"{mean:,.{digits}f}"
    if m.half_width is not None:
        text += f" ± {m.half_width / scale:,.{digits}f}"
    hover = []
    if m.ci_lo is not None:
        hover.append(f"95% CI {m.ci_lo / scale:.4g}-{m.ci_hi / scale:.4g} ({m.ci_method})")
    marks = energy_marks(row) if key in ENERGY_KEYS else []
    if marks:  # the method says what the mark means: how the figure was made, what it lacks
        hover.append(f"energy method: {_energy_method(row)}")
    title = f' title="{_e("; ".join(hover))}"' if hover else ""
    tags = "".join(f'<span class="est">{_e(mark)}</span>' for mark in marks)
    return f'<td data-v="{mean!r}"{title}>{_e(text)}{tags}</td>'


def _table(rows: list[AggRow], front_ids: set[int]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in ("configuration", "spec", "repeats", "mode"))
    head += "".join(f"<th>{_e(h)}</th>" for _, h, _ in TABLE_COLUMNS)
    body = []
    for r in sorted(rows, key=lambda r: r.label):
        on_front = id(r) in front_ids
        cls = ' class="front"' if on_front else ""
        cells = (
            f"<td>{_e(r.label)}{' ★' if on_front else ''}</td>"
            f"<td><code>{_e(r.spec_hash)}</code></td>"
            f'<td data-v="{r.n_repeats}">{r.n_repeats}</td>'
            f"<td>{_e(', '.join(r.modes))}</td>"
        )
        cells += "".join(_fmt_cell(r, k, d) for k, _, d in TABLE_COLUMNS)
        body.append(f"<tr{cls}>{cells}</tr>")
    return (
        '<div class="scroll"><table class="sortable" id="results"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


def _recommendation_html(rec: Any) -> str:
    if rec is None:
        return (
            '<p class="muted">No constraints given. Run <code>voxmeter report --max-wer X</code> '
            "(or <code>voxmeter recommend</code>) to get a recommendation.</p>"
        )
    if not rec.ok:
        return f'<div class="rec none"><b>No configuration qualifies.</b> {_e(rec.reason)}</div>'
    parts = [
        (
            f'<div class="rec"><b>Recommended: {_e(rec.best.label)}</b> '
            f"<code>{_e(rec.best.spec_hash)}</code><br>{_e(rec.reason)}"
        )
    ]
    if rec.objective_metric in ENERGY_KEYS and energy_marks(rec.best):
        parts.append(
            f"<br><b>{_e(' '.join(energy_marks(rec.best)))}</b> its {_e(rec.objective_metric)} "
            f"is not a plain measurement: {_e(_energy_method(rec.best))}"
        )
    if rec.runner_up is not None:
        parts.append(f"<br>Runner-up: {_e(rec.runner_up.label)}")
    parts += [f"<br><i>{_e(n)}</i>" for n in rec.notes]
    parts.append("</div>")
    # evidence: every candidate's checks
    cons = [k for k, v in rec.constraints.__dict__.items() if k != "minimise" and v is not None]
    head = "".join(
        f"<th>{_e(h)}</th>" for h in ["configuration", "qualifies", rec.objective_metric, *cons]
    )
    trs = []
    for c in rec.candidates:
        marks = " ".join(energy_marks(c.row))

        def mark(metric: str, marks: str = marks) -> str:
            return f" {marks}" if marks and metric in ENERGY_KEYS else ""

        checks = "".join(
            f'<td class="{"ok" if ch.ok else "bad"}">{_e(ch.describe() + mark(ch.metric))}'
            f"{' (marginal)' if ch.marginal else ''}</td>"
            for ch in c.checks
        )
        obj = "n/a" if c.objective is None else f"{c.objective:.4g}"
        obj += mark(rec.objective_metric) if c.objective is not None else ""
        ok = '<span class="ok">yes</span>' if c.ok else '<span class="bad">no</span>'
        trs.append(f"<tr><td>{_e(c.label)}</td><td>{ok}</td><td>{_e(obj)}</td>{checks}</tr>")
    parts.append(
        "<details><summary>Evidence: every configuration against the constraints</summary>"
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(trs)}</tbody></table></div></details>"
    )
    return "".join(parts)


def _estimate_notes(rows: list[AggRow]) -> list[str]:
    notes = []
    # one line per method, not per configuration: the readings in brackets differ per run
    est = sorted({method_family(r.notes.get("energy_method", "")) for r in rows} - {""})
    measured = [m for m in est if not is_estimated(m)]
    estimated = [m for m in est if is_estimated(m)]
    if estimated:
        n = sum(1 for r in rows if is_estimated(r.notes.get("energy_method")))
        notes.append(
            f"Energy of {n} of {len(rows)} configurations is ESTIMATED, not measured "
            f"(marked {EST_MARK} in the table and on the energy plot's axis): "
            + " | ".join(estimated)
        )
    if measured:
        notes.append("Energy measured by: " + " | ".join(measured))
    n_cpu_only = sum(1 for r in rows if gpu_unmeasured(r.notes.get("energy_method")))
    if n_cpu_only:
        notes.append(
            f"Energy of {n_cpu_only} GPU configuration(s) is the CPU's alone (marked "
            f"{CPU_ONLY_MARK}): no GPU energy counter was readable, so the GPU's share, "
            "usually the larger, is missing."
        )
    notes.append(
        "GFLOPs are analytic (closed form from the shapes each clip ran), not counted at run "
        f"time; the paper's figure (gflops_paper_total in exports) is the {paper_label()}."
    )
    notes.append(
        "CIs are 95%: WER and CER from a bootstrap over clips where recorded; latency "
        "percentiles from a cluster bootstrap over clips (repeats kept together); other "
        "figures from a Student t-interval over repeats (none with a single repeat)."
    )
    cost_only = [r.label for r in rows if r.value("wer") is None]
    if cost_only:
        notes.append(
            f"{len(cost_only)} configuration(s) have no WER (cost-only runs with random weights, "
            "or no references) and are absent from the accuracy plots."
        )
    return notes


def _env_html(rows: list[AggRow]) -> str:
    out = []
    for r in sorted(rows, key=lambda r: r.label):
        envs = "".join(
            f"<pre>{_e(json.dumps(env, indent=1, sort_keys=True, default=str))}</pre>"
            for env in r.envs
        )
        warns = "".join(f"<li>{_e(w)}</li>" for w in r.warnings)
        warn_html = f"<p>Warnings:</p><ul>{warns}</ul>" if warns else ""
        out.append(
            f"<details><summary>{_e(r.label)} <code>{_e(r.spec_hash)}</code> "
            f"({r.n_repeats} repeat(s))</summary>{warn_html}"
            f"<p>Spec:</p><pre>{_e(json.dumps(r.spec, indent=1, sort_keys=True))}</pre>"
            f"<p>Environment per repeat:</p>{envs or '<p class=muted>none recorded</p>'}</details>"
        )
    return "".join(out)


class _FigureWriter:
    """Inline plotly.js with the first figure only; later figures reuse it."""

    def __init__(self) -> None:
        self.js_included = False

    def html(self, fig: Any) -> str:
        out = fig.to_html(
            full_html=False,
            include_plotlyjs=not self.js_included,
            include_mathjax=False,
            config={"displaylogo": False, "responsive": True},
        )
        self.js_included = True
        return out


def _frontend_html(rows: list[AggRow]) -> str:
    """WER of each configuration under both front ends: one early end-of-text can move a
    set's WER by points, and faster-whisper 1.x pads the features, not the audio."""
    from voxmeter.report import figures

    pairs = figures.frontend_pairs(rows)
    if not pairs:
        return (
            '<p class="muted">No configuration was measured with both front ends '
            "(frontend = audio and features).</p>"
        )
    body = []
    for a, f in sorted(pairs, key=lambda p: p[0].label):
        wa, wf = a.value("wer"), f.value("wer")
        diff = "n/a" if wa is None or wf is None else f"{wf - wa:+.2f}"
        flagged = (a.value("n_flagged"), f.value("n_flagged"))
        body.append(
            f"<tr><td>{_e(a.label)}</td><td>{_fmt_cell(a, 'wer', 2)}</td>"
            f"<td>{_fmt_cell(f, 'wer', 2)}</td><td>{diff}</td>"
            f"<td>{_e(' / '.join('n/a' if x is None else f'{x:.0f}' for x in flagged))}</td></tr>"
        )
    return (
        "<p class=muted>WER (%) with the audio zero-padded before the log-mel (openai-whisper) "
        "and with the normalised log-mel zero-padded (faster-whisper 1.x), same clips.</p>"
        "<table><thead><tr><th>configuration (audio)</th><th>WER audio</th><th>WER features"
        "</th><th>difference</th><th>flagged clips audio / features</th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def read_sensitivity_map(path: str | Path) -> dict[str, Any]:
    """The sensitivity map at `path`, checked for everything its report section reads; a
    SpecError naming the file and the problem (missing, unreadable, not JSON, not a map)
    otherwise, so the report command can refuse it in one line before doing any work."""
    p = Path(path)
    where = f"--sensitivity {p}"
    if not p.exists():
        raise SpecError(f"{where}: no such file")
    if not p.is_file():
        raise SpecError(f"{where}: not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{where}: cannot read it ({e})") from None
    try:
        smap = json.loads(text)
    except ValueError as e:
        raise SpecError(f"{where}: not JSON ({e})") from None
    why = _map_problem(smap)
    if why:
        raise SpecError(f"{where}: not a sensitivity map from `voxmeter sensitivity` ({why})")
    return smap


def _json_kind(v: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if v is None:
        return "null"
    return kinds.get(type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _map_problem(smap: Any) -> str | None:
    """What keeps `smap` from being drawn and ranked, in a few words; None when nothing."""
    from voxmeter.compress.sensitivity import ALL, FORMAT

    if not isinstance(smap, dict):
        return f"{_json_kind(smap)}, not an object"
    missing = [k for k in SENSITIVITY_KEYS if k not in smap]
    if missing:
        return "no " + ", ".join(repr(k) for k in missing)
    if "format" in smap and smap["format"] != FORMAT:
        return f"format {smap['format']!r}; this voxmeter reads format {FORMAT}"
    for key in ("groups", "granularities"):
        v = smap[key]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            return f"{key!r} is not a non-empty list of names"
    data, base = smap["data"], smap["baseline"]
    if not isinstance(data, dict) or not {"name", "n_clips"} <= set(data):
        return "'data' lacks its name or n_clips"
    if not isinstance(base, dict) or not (base.get("wer") is None or _number(base.get("wer"))):
        return "'baseline' has no WER"
    if not isinstance(smap["method"], str):
        return "'method' is not text"
    cells = smap["cells"]
    if not isinstance(cells, dict):
        return "'cells' is not an object"
    for gran in smap["granularities"]:
        by_group = cells.get(gran)
        if not isinstance(by_group, dict):
            return f"no cells for {gran!r}"
        for group in [*smap["groups"], ALL]:
            cell = by_group.get(group)
            if (
                not isinstance(cell, dict)
                or not (cell.get("delta_wer") is None or _number(cell.get("delta_wer")))
                or not _number(cell.get("kl"))
            ):
                return f"no WER change and KL for {group!r}, {gran}"
    return None


def _sensitivity_html(smap: dict[str, Any], source: str, fw: _FigureWriter) -> str:
    """One map's section: where it came from, the heat map, its method, and the groups that
    rounding hurts most (per channel when measured: the scheme int8 paths use)."""
    from voxmeter.compress.sensitivity import PER_CHANNEL, measured_label, ranked
    from voxmeter.report import figures

    grans = smap["granularities"]
    gran = PER_CHANNEL if PER_CHANNEL in grans else grans[0]
    cells = smap["cells"][gran]

    def cell(g: str) -> str:
        d = cells[g]["delta_wer"]
        return f"{g} ({'n/a' if d is None else f'{d:+.2f}'} points, KL {cells[g]['kl']:.2e})"

    top = ranked(smap, gran)[:TOP_GROUPS]
    return (
        f'<p class="muted">From {_e(source)}.</p>'
        + fw.html(figures.sensitivity_figure(smap))
        + f'<p class="muted">{_e(smap["method"])}</p>'
        + f"<p>Most sensitive groups ({_e(gran)}, {_e(measured_label(smap))}; by WER change, "
        f"then KL): <b>{_e(', '.join(cell(g) for g in top))}</b></p>"
    )


def _stream_html(
    rows: list[AggRow], capacity: Sequence[tuple[str, Sequence[Any]]], fw: _FigureWriter
) -> str:
    """Live streams: what the clocks mean, the figures, a table; one muted line when there
    are neither stream rows nor capacity curves."""
    from voxmeter.report import stream_figures as sf

    streams = sf.stream_rows(rows)
    curves = [c for _, cs in capacity for c in cs]
    if not streams and not curves:
        return f'<p class="muted">{_e(sf.NO_STREAMS)}</p>'
    parts = [f"<p>{_e(sf.STREAM_TEXT)}</p>"]
    if streams:
        head = "".join(
            f"<th>{_e(h)}</th>" for h in ("configuration", *(c[1] for c in STREAM_COLUMNS))
        )
        body = "".join(
            f"<tr><td>{_e(r.label)}</td>"
            + "".join(_fmt_cell(r, k, d) for k, _, d in STREAM_COLUMNS)
            + "</tr>"
            for r in sorted(streams, key=lambda r: r.label)
        )
        parts.append(
            '<div class="scroll"><table class="sortable"><thead><tr>'
            f"{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )
        for fig, empty in (
            (sf.latency_figure(streams), "No stream has commit latencies or a streaming WER."),
            (sf.rss_figure(streams), "No stream recorded its memory over time."),
        ):
            parts.append(fw.html(fig) if fig is not None else f'<p class="muted">{empty}</p>')
    fig = sf.capacity_figure(curves)
    if fig is not None:
        where = ", ".join(src for src, _ in capacity)
        parts.append(f'<p class="muted">Capacity from {_e(where)}.</p>' + fw.html(fig))
    return "".join(parts)


def write_report(
    rows: Sequence[AggRow] | Sequence[Result],
    path: str | Path,
    recommendation: Any = None,
    constraints: Any = None,
    title: str = "voxmeter report",
    source: str = "",
    sensitivity: Sequence[tuple[str, dict[str, Any]]] = (),
    capacity: Sequence[tuple[str, Sequence[Any]]] = (),
) -> Path:
    """Write the report to `path`; StoreError (and no file) when there are no results, a
    SpecError naming `path` when it cannot be written there.

    `constraints` (a sweep.grid.Constraints) is used to compute a recommendation when none is
    given. `sensitivity` holds (where from, map) pairs, maps as `read_sensitivity_map` returns
    them; each becomes a section after the figures. `capacity` holds (where from, curves)
    pairs, curves as `stream_figures.read_capacity` returns them, drawn in the live-stream
    section.
    """
    agg = _as_rows(rows)
    where = source or "the results"
    if not agg:
        raise StoreError(f"{where} has no results; nothing written")
    out = Path(path)
    if out.is_dir() or not out.parent.exists():
        raise StoreError(f"{out}: cannot write the report there (no such folder, or a folder)")
    if recommendation is None and constraints is not None:
        from voxmeter.analysis.budget import recommend

        recommendation = recommend(agg, **constraints.__dict__)
    fw = _FigureWriter()
    sections, front_ids = _figure_sections(agg, fw)
    sections.append(("Live streaming", _stream_html(agg, capacity, fw)))
    sections.append(("Front end: audio padding vs feature padding", _frontend_html(agg)))
    from voxmeter.compress.sensitivity import measured_label

    for where_from, smap in sensitivity:
        name = f"Layer sensitivity: {smap['model']}, {measured_label(smap)}"
        sections.append((name, _sensitivity_html(smap, where_from, fw)))
    page = _page(agg, title, where, recommendation, front_ids, sections)
    _write_atomic(out, page)
    return out


def _figure_sections(
    agg: list[AggRow], fw: _FigureWriter
) -> tuple[list[tuple[str, str]], set[int]]:
    """The figure sections (Pareto fronts, iso-FLOPs, stages, batch sizes) as (name, html),
    and the rows on the WER-vs-FLOPs front, by identity (two rows may share a spec hash)."""
    from voxmeter.report import figures

    front_ids: set[int] = set()
    pareto_html = []
    for x, y in PARETO_PAIRS:
        fig, front = figures.pareto_figure(agg, x, y)
        front_ids |= {id(r) for r in front.front} if x == "gflops_analytic_total" else set()
        if fig is None:
            pareto_html.append(f'<p class="muted">No configuration has both {x} and {y}.</p>')
        else:
            pareto_html.append(fw.html(fig))
    sections = [("Pareto fronts", "".join(pareto_html))]
    for name, fig, empty in (
        ("iso-FLOPs curves", figures.iso_flops_figure(agg), "No configuration has WER and FLOPs."),
        ("Latency by stage", figures.latency_figure(agg), "No per-stage latencies."),
        ("Memory by stage", figures.memory_figure(agg), "No memory figures."),
        (
            "Throughput and memory by batch size",
            figures.batch_figure(agg),
            "No configuration was measured at more than one batch size.",
        ),
    ):
        sections.append(
            (name, fw.html(fig) if fig is not None else f'<p class="muted">{empty}</p>')
        )
    return sections, front_ids


def _page(
    agg: list[AggRow],
    title: str,
    where: str,
    recommendation: Any,
    front_ids: set[int],
    sections: list[tuple[str, str]],
) -> str:
    """The whole HTML document: head, recommendation, estimate notes, table, sections,
    environments and the sorting script."""
    notes = "".join(f'<div class="note">{_e(n)}</div>' for n in _estimate_notes(agg))
    n_rep = sum(r.n_repeats for r in agg)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        (
            f'<p class="muted">{len(agg)} configuration(s), {n_rep} repeat(s) from {_e(where)}; '
            f"written {stamp}. ★ = on the WER-vs-FLOPs Pareto front.</p>"
        ),
        "<h2>Recommendation</h2>",
        _recommendation_html(recommendation),
        "<h2>What is estimated</h2>",
        notes,
        (
            "<h2>Results</h2><p class=muted>Click a header to sort. Mean ± half-width of the "
            "95% CI (hover for the interval and its method).</p>"
        ),
        _table(agg, front_ids),
    ]
    for name, body in sections:
        page.append(f"<h2>{_e(name)}</h2>{body}")
    page += [
        "<h2>Environment of each run</h2>",
        _env_html(agg),
        f"<script>{_SORT_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(page)


def _write_atomic(out: Path, text: str) -> None:
    """`text` to `out` through a temporary file, so a half-written report never carries the
    real name; a file system that refuses is a SpecError naming `out`, not a traceback."""
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as e:
        with contextlib.suppress(OSError):  # a temporary file left by a failed write
            tmp.unlink(missing_ok=True)
        raise SpecError(f"report {out}: cannot write ({e.strerror or type(e).__name__})") from None
