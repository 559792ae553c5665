"""The HTML report's content, and the explore commands (results, recommend, report, fit, sweep)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_store import make_result, sample_results

from voxmeter.errors import SpecError, StoreError, VoxmeterError
from voxmeter.report.html import write_report
from voxmeter.spec import RunSpec
from voxmeter.store import ResultStore, aggregate_results
from voxmeter.sweep.grid import Constraints


def test_report_is_self_contained(tmp_path):
    out = write_report(sample_results(), tmp_path / "r.html", constraints=Constraints(max_wer=20))
    text = out.read_text()
    # plotly.js inlined exactly once (its banner and its config hook), however many figures
    assert len(re.findall(r"plotly\.js v\d", text)) == 1
    assert text.count("window.PlotlyConfig") == 1
    assert (
        text.count('class="plotly-graph-div"') == 9
    )  # 6 Pareto fronts, iso-FLOPs, latency, memory
    # nothing loaded from elsewhere: no external script, stylesheet, image or font
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=", text)
    assert not re.search(r"<img[^>]+src=[\"']https?:", text)
    # the recommendation and its evidence
    assert "Recommended: tiny.en hf fp32 T=fit/silence k=1" in text
    assert "Evidence: every configuration" in text
    # the estimate note, CIs in the table, environments
    assert "ESTIMATED" in text and "estimated: CPU TDP share x time" in text
    assert "± " in text and "bootstrap over clips" in text
    assert text.count("<details>") >= 12 + 1
    assert '"cpu": "test cpu"' in html_unescape(text)
    assert not (tmp_path / "r.html.tmp").exists()


def html_unescape(s: str) -> str:
    import html

    return html.unescape(s)


def test_report_with_nothing_to_recommend_and_without_constraints(tmp_path):
    out = write_report(sample_results(), tmp_path / "a.html", constraints=Constraints(max_wer=0.5))
    assert "No configuration qualifies" in out.read_text()
    out = write_report(aggregate_results(sample_results()), tmp_path / "b.html")
    assert "No constraints given" in out.read_text()


def test_report_handles_missing_figures(tmp_path):
    # one cost-only row: no WER anywhere, so the accuracy plots say so instead of drawing
    r = make_result(RunSpec(model="small"), 0, e2e_ms_p50=10.0, peak_rss_mb=900.0, wer=None)
    text = write_report([r], tmp_path / "c.html").read_text()
    assert "No configuration has both gflops_analytic_total and wer" in text
    assert "plotly.js" in text  # the first figure drawn still carries the library


def test_empty_results_write_nothing(tmp_path):
    with pytest.raises(StoreError, match="s.sqlite has no results; nothing written"):
        write_report([], tmp_path / "r.html", source="s.sqlite")
    assert not (tmp_path / "r.html").exists()


# -- commands ---------------------------------------------------------------------------
def test_results_list_show_export(cli, store_path, tmp_path):
    r = cli("results", "list", "--store", store_path, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert len(doc["results"]) == 12 and doc["failed"] == []
    tiny = next(d for d in doc["results"] if d["label"] == "tiny.en hf fp32 T=3000 k=1")
    assert tiny["n_repeats"] == 2 and tiny["wer"] > 0 and tiny["peak_rss_mb"] > 300

    r = cli("results", "list", "--store", store_path)
    assert r.exit_code == 0 and tiny["spec_hash"] in r.output

    r = cli("results", "show", tiny["spec_hash"][:8], "--store", store_path, "--json")
    shown = json.loads(r.output)
    assert shown["spec_hash"] == tiny["spec_hash"] and shown["metrics"]["wer"]["ci"] is not None
    r = cli("results", "show", tiny["spec_hash"], "--store", store_path)
    assert r.exit_code == 0 and "e2e_ms_p50" in r.output and "estimated" in r.output

    out = tmp_path / "x.csv"
    r = cli("results", "export", "--format", "csv", "-o", out, "--store", store_path)
    assert r.exit_code == 0 and "wrote 24 row(s)" in r.output
    assert len(list(csv.DictReader(out.open()))) == 24


def test_recommend_report_fit_commands(cli, store_path, tmp_path):
    r = cli("recommend", "--store", store_path, "--max-wer", 20, "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["ok"] and rec["best"]["label"] == "tiny.en hf fp32 T=fit/silence k=1"
    r = cli("recommend", "--store", store_path, "--max-wer", 20, "--minimise", "memory")
    assert r.exit_code == 0 and "recommended:" in r.output

    # --sweep: that sweep's cells only (3 of its 4 base cells are stored), its constraints
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        '[sweep]\nmodels = ["base"]\nrepeats = 2\n[axes]\nframes = [3000, "fit"]\n'
        "stride = [1, 2]\n[constraints]\nmax_wer = 30.0\n"
    )
    r = cli("recommend", "--store", store_path, "--sweep", sweep, "--json")
    doc = json.loads(r.stdout)
    assert doc["best"]["label"].startswith("base")  # tiny.en qualifies too, but is not in it
    assert {c["label"].split()[0] for c in doc["candidates"]} == {"base"}
    assert "3 of 4 cell(s) measured" in r.stderr

    html = tmp_path / "r.html"
    r = cli("report", "--store", store_path, "-o", html, "--max-wer", 20)
    assert r.exit_code == 0 and html.stat().st_size > 1_000_000

    r = cli("fit", "--store", store_path)
    assert r.exit_code == 0 and "stride [" in r.output and "GFLOPs^(" in r.output
    r = cli("fit", "--store", store_path, "--json")
    assert {f["axis"] for f in json.loads(r.output)} == {"model size", "frames", "stride"}


def test_command_errors_are_voxmeter_errors(cli, store_path, tmp_path):
    cases = [
        (["recommend", "--store", store_path, "--max-wer", 0.1], "max_wer ruled out"),
        (["recommend", "--store", store_path], "at least one limit"),
        (["recommend", "--store", tmp_path / "nope.sqlite", "--max-wer", 5], "no such results"),
        (["results", "show", "ffff", "--store", store_path], "no results for spec"),
        (
            ["results", "export", "-o", tmp_path / "x", "--format", "xls", "--store", store_path],
            "--format",
        ),
        (["sweep", tmp_path / "missing.toml", "--dry-run"], "no such sweep file"),
    ]
    for args, needle in cases:
        r = cli(*args)
        assert isinstance(r.exception, VoxmeterError), (args, r.output, r.exception)
        assert needle in str(r.exception)
    empty = tmp_path / "empty.sqlite"
    ResultStore(empty).close()
    r = cli("report", "--store", empty, "-o", tmp_path / "e.html")
    assert isinstance(r.exception, StoreError) and "has no results; nothing written" in str(
        r.exception
    )
    assert not (tmp_path / "e.html").exists()


UNWRITABLE = Path("/proc/voxmeter-test-report.html")  # refused even to root


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc")
def test_report_to_an_unwritable_path_is_one_line_exit_2(store_path):
    """os.access lets root write almost anywhere, so the path passes the folder checks and
    used to fail in the write itself: a 46-line traceback and exit 1."""
    p = subprocess.run(
        [sys.executable, "-m", "voxmeter.cli", "report", "--store", str(store_path)]
        + ["-o", str(UNWRITABLE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert str(UNWRITABLE) in lines[0] and "report" in lines[0]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc")
def test_write_report_to_an_unwritable_path_is_a_spec_error():
    with pytest.raises(SpecError, match=re.escape(f"report {UNWRITABLE}: cannot write")):
        write_report(sample_results(), UNWRITABLE)


def test_write_report_refused_by_the_file_system_leaves_no_file(tmp_path, monkeypatch):
    """A write the file system refuses (read-only mount, full disk) is one SpecError naming
    the report, and the temporary file is gone."""
    import errno

    def refuse(self, target):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "replace", refuse)
    out = tmp_path / "r.html"
    with pytest.raises(SpecError, match="r.html: cannot write \\(Read-only file system\\)"):
        write_report(sample_results(), out)
    assert list(tmp_path.iterdir()) == []


def test_sweep_dry_run_prints_the_budget_grid(cli, tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text('[sweep]\nmodels = ["tiny.en", "base"]\n[axes]\nstride = [1, 2]\n')
    r = cli("sweep", sweep, "--dry-run")
    assert r.exit_code == 0 and "4 combinations -> 4 specs" in r.output
    r = cli("sweep", sweep, "--dry-run", "--budget-gflops", 2)
    assert r.exit_code == 0, r.output
    assert "iso-FLOPs grid at 2 GFLOPs" in r.output
    assert "base: no frames/stride setting within ±5%" in r.output
    assert "tiny.en: T=" in r.output and "2 combinations -> 2 specs" in r.output


def test_real_cli_error_is_one_line_exit_2(store_path):
    """Through voxmeter.cli's main: the one-line error and exit 2 a user sees."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxmeter.cli",
            "recommend",
            "--store",
            str(store_path),
            "--max-wer",
            "0.1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # a lost command must fail here, not skip: "No such command" is exit 2 and one line too
    assert "No such command" not in p.stderr, p.stderr
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "no configuration meets max_wer=0.1" in lines[0]


# -- what is estimated is marked where it is shown ----------------------------------------------
EST_METHOD = (
    "estimated: CPU TDP share x time (TDP 15 W/core assumed, 1.93 cores busy on average "
    "over 4.20 s)"
)
GPU_CPU_ONLY = "RAPL package (1 domain); GPU not measured (NVML: no NVIDIA driver)"


def _row(label: str, method: str | None, spec_hash: str = "", **figures: float):
    from voxmeter.store import AggRow, MetricAgg

    spec = RunSpec(model="tiny.en").to_dict()
    return AggRow(
        spec_hash=spec_hash or label.replace(" ", "-"),
        spec=spec,
        label=label,
        n_repeats=1,
        metrics={k: MetricAgg(mean=v, n=1) for k, v in figures.items()},
        notes={"energy_method": method} if method else {},
    )


def _energy(j: float) -> dict[str, float]:
    return dict(energy_j=j, j_per_audio_s=j / 10, j_per_word=j / 30)


def _table_row(text: str, label: str) -> str:
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", text.split('id="results"', 1)[1], flags=re.DOTALL)
    (row,) = [r for r in rows if f"<td>{label}" in r]
    return row


def _plotly_texts(text: str) -> list[str]:
    """Every "text" string in the figures' JSON (titles among them), JSON escapes undone."""
    return [json.loads(f'"{t}"') for t in re.findall(r'"text":"((?:[^"\\]|\\.)*)"', text)]


def test_estimated_energy_is_marked_on_every_cell_and_axis(tmp_path):
    from voxmeter.measure.flops import paper_label
    from voxmeter.report.html import EST_MARK

    rows = [
        _row("estimated run", EST_METHOD, wer=5.0, gflops_analytic_total=10.0, **_energy(40.0)),
        _row("measured run", "RAPL package (1 domain)", wer=4.0, **_energy(50.0)),
        _row("gpu run", GPU_CPU_ONLY, wer=6.0, **_energy(30.0)),
        _row("no energy", None, wer=7.0),
    ]
    text = write_report(rows, tmp_path / "e.html").read_text()
    est = _table_row(text, "estimated run")
    # energy J, J per audio s and J per word: each cell marked, its method on hover
    assert est.count(EST_MARK) == 3
    assert est.count('title="energy method: estimated: CPU TDP share x time') == 3
    for label in ("measured run", "no energy"):
        row = _table_row(text, label)
        assert EST_MARK not in row and "CPU only" not in row
    gpu = _table_row(text, "gpu run")
    assert EST_MARK not in gpu and gpu.count("CPU only") == 3
    # the energy Pareto front's axis names the estimate and how it was made (run readings
    # dropped, so one method reads the same for every run)
    titles = _plotly_texts(text)
    want = "J per audio s (estimated: CPU TDP share x time (TDP 15 W/core assumed))"
    assert want in titles, titles
    from voxmeter.report.figures import pareto_figure

    fig, _ = pareto_figure(rows, "j_per_audio_s")
    hover = [t for trace in fig.data for t in trace.text]
    assert "estimated run (energy ≈ est.)" in hover and "measured run" in hover
    # the notes: which figures are estimated, which are CPU only, and the paper's label
    assert "Energy of 1 of 4 configurations is ESTIMATED" in text
    assert "Energy of 1 GPU configuration(s) is the CPU&#x27;s alone" in text
    assert paper_label() in text


def test_measured_energy_has_no_estimate_mark(tmp_path):
    from voxmeter.report.html import EST_MARK

    rows = [
        _row("a", "RAPL package (1 domain)", wer=5.0, **_energy(40.0)),
        _row("b", "RAPL package (1 domain)", wer=4.0, **_energy(50.0)),
    ]
    text = write_report(rows, tmp_path / "m.html").read_text()
    assert EST_MARK not in text and "ESTIMATED" not in text
    assert "J per audio s" in _plotly_texts(text)


def test_rows_sharing_a_spec_are_shown_by_label_and_starred_by_identity(tmp_path):
    """One spec measured on two data sets: two rows, one hash; the report shows row.label and
    puts the front's star only on the row that is on the front."""
    better = _row("tiny.en hf [data=default]", None, "abc123", wer=4.0, gflops_analytic_total=9)
    worse = _row("tiny.en hf [data=noisy]", None, "abc123", wer=9.0, gflops_analytic_total=10)
    text = write_report([better, worse], tmp_path / "s.html").read_text()
    assert "★" in _table_row(text, "tiny.en hf [data=default]")
    assert "★" not in _table_row(text, "tiny.en hf [data=noisy]")


def test_energy_recommendation_marks_estimated_objectives(tmp_path):
    from voxmeter.report.html import EST_MARK

    rows = [
        _row("estimated run", EST_METHOD, wer=5.0, **_energy(40.0)),
        _row("measured run", "RAPL package (1 domain)", wer=4.0, **_energy(50.0)),
    ]
    out = write_report(rows, tmp_path / "r.html", constraints=Constraints(minimise="energy"))
    text = html_unescape(out.read_text())
    assert "Recommended: estimated run" in text
    plain = re.sub(r"<[^>]+>", "", text)
    assert f"{EST_MARK} its j_per_audio_s is not a plain measurement: estimated: CPU" in plain
    evidence = text.split("Evidence: every configuration", 1)[1].split("</table>", 1)[0]
    (est,) = [r for r in evidence.split("<tr>") if "<td>estimated run" in r]
    (meas,) = [r for r in evidence.split("<tr>") if "<td>measured run" in r]
    assert f"4 {EST_MARK}" in est and EST_MARK not in meas


def test_batch_sizes_and_front_ends_get_their_own_sections(tmp_path):
    from voxmeter.report.figures import batch_figure, frontend_pairs
    from voxmeter.report.html import write_report
    from voxmeter.store import aggregate_results

    base = RunSpec(repeats=1)
    rs = [
        make_result(base.with_(batch_size=b), 0, wer=10.0, throughput_clips_s=t, peak_rss_mb=m)
        for b, t, m in ((1, 2.0, 700.0), (4, 5.0, 800.0), (8, 6.5, 900.0))
    ]
    rs.append(make_result(base.with_(frontend="features"), 0, wer=12.5))
    rows = aggregate_results(rs)
    fig = batch_figure(rows)
    assert fig is not None
    thr = [t for t in fig.data if t.xaxis == "x"]
    assert len(thr) == 1 and list(thr[0].x) == [1, 4, 8] and list(thr[0].y) == [2.0, 5.0, 6.5]
    (pair,) = frontend_pairs(rows)
    assert pair[0].value("wer") == 10.0 and pair[1].value("wer") == 12.5
    out = write_report(rows, tmp_path / "r.html")
    html = out.read_text()
    assert "Throughput and memory by batch size" in html
    assert "Front end: audio padding vs feature padding" in html and "+2.50" in html


# -- results list at the widths people use ------------------------------------------------------
def _listed_rows() -> list:
    """sample_results under a real-looking identity, with wide figures and a long label."""
    from voxmeter.identity import Identity

    ident = Identity("0.4.0+0123456789ab", "9f2c41d07a5e3b18", "c0ffee1234567890")
    rs = [r.with_identity(ident) for r in sample_results()]
    rs[0].metrics.update(rtfx=1234.56, e2e_ms_p50=12345.6, peak_rss_mb=10240.0, wer=100.0)
    rows = aggregate_results(rs)
    rows[1].label = "tiny.en hf fp32 T=3000 k=2/stride quant=int8-dynamic+emb keep=0.5 [data=noisy]"
    return rows


@pytest.mark.parametrize("width", [100, 120])
def test_results_list_shows_every_figure_in_full(width, monkeypatch):
    """The figure columns (mode, repeats, WER, RTFx, p50, RSS) used to shrink to nothing below
    about 185 columns: each row's figure cells must read exactly as formatted."""
    import io

    from rich.console import Console

    from voxmeter.cli.common import fmt
    from voxmeter.cli.results import _print_list

    rows = _listed_rows()
    con = Console(width=width, file=io.StringIO(), color_system=None)
    monkeypatch.setattr("voxmeter.display.console", con)
    _print_list(Path("r.sqlite"), rows, [], "0.4.0+0123456789ab")
    lines = con.file.getvalue().splitlines()
    assert max(len(ln) for ln in lines) <= width
    for r in rows:
        (line,) = [ln for ln in lines if r.spec_hash in ln]
        cells = [c.strip() for c in line.split("│")]
        assert cells[0] == r.spec_hash
        want = [
            r.mode,
            str(r.n_repeats),
            fmt(r.value("wer")),
            fmt(r.value("rtfx")),
            fmt(r.value("e2e_ms_p50"), 1),
            fmt(r.value("peak_rss_mb"), 0),
        ]
        assert cells[2:8] == want, (width, line)
    # what gave way is said, never silently dropped
    text = " ".join(" ".join(lines).split())
    assert ("code" in lines[1]) or "code, weights and data columns left out" in text


def test_results_list_keeps_identity_columns_where_they_fit(monkeypatch):
    import io

    from rich.console import Console

    from voxmeter.cli.results import _print_list

    rows = _listed_rows()
    con = Console(width=220, file=io.StringIO(), color_system=None)
    monkeypatch.setattr("voxmeter.display.console", con)
    _print_list(Path("r.sqlite"), rows, [], "other")
    text = con.file.getvalue()
    assert "0.4.0+0123456789ab*" in text and "9f2c41d0" in text and "left out" not in text
    assert "[data=noisy]" in text  # a label's brackets are text, not markup
