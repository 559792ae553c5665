"""The report's live-streaming section: its figures from stream rows, the capacity files it
reads (and refuses), and the one muted line when there is nothing to show."""

from __future__ import annotations

import html
import json
import re

import pytest
from test_store import make_result, sample_results

from voxmeter.errors import SpecError
from voxmeter.report import stream_figures as sf
from voxmeter.report.html import write_report
from voxmeter.result import Result
from voxmeter.spec import RunSpec
from voxmeter.store import ResultStore, aggregate_results

CHUNKS = (500, 1000)
POLICIES = (2, 3)  # LocalAgreement-n
N_DIVS = 'class="plotly-graph-div"'


def stream_result(chunk_ms: int, agreement: int, repeat: int = 0) -> Result:
    """One stream's figures, shaped like a real replay's, with its utterances and RSS series."""
    spec = RunSpec(model="tiny.en").with_(stream_chunk_ms=chunk_ms, stream_agreement=agreement)
    p50 = 300 + chunk_ms * agreement
    res = make_result(
        spec,
        repeat,
        commit_ms_p50=p50,
        commit_ms_p90=1.4 * p50,
        commit_ms_p99=2.0 * p50,
        commit_unaware_ms_p50=p50 - 250,
        eou_ms_p50=p50 + 100,
        first_partial_s=chunk_ms / 1000 + 0.2,
        churn=0.1 * agreement,
        stream_wer=5.0 + chunk_ms / 1000 - agreement * 0.2,
        offline_wer=4.0,
        compute_ratio=0.2,
        rss_slope_mb_h=1.5 + agreement,
    )
    t = [10.0 * i for i in range(7)]
    res.clips = [
        {"kind": "utterance", "id": "u0", "eou_ms": p50},
        {"kind": "rss_series", "t_s": t, "rss_mb": [600 + 0.001 * x for x in t]},
    ]
    return res


def stream_results() -> list[Result]:
    return [stream_result(c, a) for c in CHUNKS for a in POLICIES]


def capacity_doc() -> dict:
    levels = [
        {"streams": 1, "p50_ms": 400.0, "p99_ms": 900.0, "held": True},
        {"streams": 2, "p50_ms": 600.0, "p99_ms": 1500.0, "held": True},
        {"streams": 4, "p50_ms": 1200.0, "p99_ms": 3500.0, "held": False},
    ]
    return {
        "capacity": [
            {"config": "500ms LA-2 +vad", "sustained": 2, "slo_ms": 3000.0, "levels": levels},
            {"config": "1000ms LA-2", "sustained": None, "slo_ms": 3000.0, "levels": levels[:1]},
        ]
    }


def test_stream_rows_are_told_by_chunk_ms():
    rows = aggregate_results(stream_results() + sample_results())
    assert len(sf.stream_rows(rows)) == 4
    old = make_result(RunSpec(model="tiny.en"), e2e_ms_p50=1.0)
    old.spec.pop("stream", None)  # a row from before streams: no key at all
    assert not sf.is_stream(aggregate_results([old])[0])


def test_latency_figure_one_line_per_policy_over_chunk_sizes():
    fig = sf.latency_figure(aggregate_results(stream_results()))
    assert fig is not None
    # per policy: p50, p90, p99 commit latency, then the WER gap
    assert len(fig.data) == len(POLICIES) * 4
    for tr in fig.data:
        assert list(tr.x) == list(CHUNKS)
    p50 = [tr for tr in fig.data if tr.showlegend]
    assert sorted(tr.name for tr in p50) == [
        "tiny.en hf fp32 T=3000 k=1 stream LA-2",
        "tiny.en hf fp32 T=3000 k=1 stream LA-3",
    ]
    assert [tr.line.dash for tr in fig.data[:3]] == ["solid", "dash", "dot"]
    la2 = p50[0] if p50[0].name.endswith("LA-2") else p50[1]
    assert list(la2.y) == [300 + c * 2 for c in CHUNKS]
    gap = next(tr for tr in fig.data if tr.name.endswith("LA-2 WER gap"))
    assert list(gap.y) == pytest.approx([5.0 + c / 1000 - 0.4 - 4.0 for c in CHUNKS])
    # no stream rows, no figure
    assert sf.latency_figure(aggregate_results(sample_results())) is None


def test_rss_figure_one_line_per_session_with_its_slope():
    rows = aggregate_results(stream_results())
    fig = sf.rss_figure(rows)
    assert fig is not None and len(fig.data) == 4
    assert all(list(tr.x) == [i / 6 for i in range(7)] for tr in fig.data)  # minutes
    names = sorted(tr.name for tr in fig.data)
    assert names[0] == "tiny.en hf fp32 T=3000 k=1 stream 1000ms LA-2: +3.5 MiB/h"
    # two repeats of one spec: a line each, each with its own fit
    two = aggregate_results([stream_result(500, 2, 0), stream_result(500, 2, 1)])
    fig = sf.rss_figure(two)
    assert len(fig.data) == 2
    assert all("(repeat " in tr.name and "+3.6 MiB/h" in tr.name for tr in fig.data)


def test_capacity_file_round_trips(tmp_path):
    p = tmp_path / "cap.json"
    p.write_text(json.dumps(capacity_doc()))
    curves = sf.read_capacity(p)
    assert [c.config for c in curves] == ["500ms LA-2 +vad", "1000ms LA-2"]
    assert curves[0].sustained == 2 and curves[1].sustained is None
    assert {"capacity": [c.to_dict() for c in curves]} == capacity_doc()
    fig = sf.capacity_figure(curves)
    assert len(fig.data) == 2
    assert list(fig.data[0].x) == [1, 2, 4] and list(fig.data[0].y) == [900, 1500, 3500]
    assert [s for s in fig.data[0].marker.symbol] == ["circle", "circle", "x"]
    assert fig.layout.shapes[0].y0 == 3000  # the SLO
    assert [a.text for a in fig.layout.annotations if a.x == 2] == ["2 streams"]


def test_capacity_from_voxmeter_load_find_capacity(tmp_path):
    """`voxmeter load --find-capacity --json` writes one search: levels are LoadReports."""

    def level(n, p99, held):
        return {
            "config": {"streams": n, "slo_ms": 2000.0},
            "latency_ms": {"p50": p99 / 2, "p90": None, "p99": p99},
            "held": held,
        }

    p = tmp_path / "tiny-int8.json"
    doc = {"capacity": 2, "levels": [level(1, 800.0, True), level(2, 1900.0, True)]}
    p.write_text(json.dumps(doc))
    (c,) = sf.read_capacity(p)
    assert (c.config, c.sustained, c.slo_ms) == ("tiny-int8", 2, 2000.0)
    assert [(lv.streams, lv.p99_ms, lv.held) for lv in c.levels] == [
        (1, 800, True),
        (2, 1900, True),
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ("[1]", "no top-level 'capacity'"),
        ('{"capacity": "many"}', "neither a list"),
        ('{"capacity": [{"config": "a", "slo_ms": 1, "levels": [{"streams": 1}]}]}', "'held'"),
        ('{"capacity": [{"config": "a", "slo_ms": 0, "levels": []}]}', "slo_ms"),
    ],
)
def test_bad_capacity_file_is_refused_by_name(tmp_path, text, needle):
    p = tmp_path / "bad.json"
    if text is not None:
        p.write_text(text)
    with pytest.raises(SpecError) as e:
        sf.read_capacity(p)
    msg = str(e.value)
    assert msg.startswith(f"--capacity {p}:") and needle in msg and "\n" not in msg


def test_report_has_the_streaming_section(tmp_path):
    p = tmp_path / "cap.json"
    p.write_text(json.dumps(capacity_doc()))
    out = write_report(
        stream_results() + sample_results(),
        tmp_path / "r.html",
        capacity=[(str(p), sf.read_capacity(p))],
    )
    text = out.read_text()
    section = text[text.index("<h2>Live streaming</h2>") :]
    section = section[: section.index("<h2>", 5)]
    assert "Computation-aware figures count the model" in section
    assert f"Capacity from {p}" in section
    assert section.count(N_DIVS) == 3  # latency, RSS, capacity
    assert "stream 500ms LA-3" in section  # the stream table
    assert len(re.findall(r"plotly\.js v\d", text)) == 1


def test_no_streams_is_one_muted_line(tmp_path):
    text = write_report(sample_results(), tmp_path / "r.html").read_text()
    m = re.search(r"<h2>Live streaming</h2>(.*?)<h2>", text, re.DOTALL)
    assert m is not None
    assert m.group(1).strip() == f'<p class="muted">{html.escape(sf.NO_STREAMS)}</p>'


def test_cli_capacity_option(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    with ResultStore(store) as s:
        for r in stream_results():
            s.add(r)
    cap = tmp_path / "cap.json"
    cap.write_text(json.dumps(capacity_doc()))
    out = tmp_path / "r.html"
    r = cli("report", "--store", store, "-o", out, "--capacity", cap)
    assert r.exit_code == 0, r.output
    assert "capacity: p99 commit latency" in out.read_text()
    # a bad file is refused before the store is read, and no report is written
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    out2 = tmp_path / "r2.html"
    r = cli("report", "--store", tmp_path / "none.sqlite", "-o", out2, "--capacity", bad)
    assert r.exit_code != 0
    assert isinstance(r.exception, SpecError) and str(bad) in str(r.exception)
    assert not out2.exists()


def test_bad_capacity_file_is_one_line_exit_2(tmp_path):
    """Through voxmeter.cli's main, as a user runs it: the store does not exist, so the error
    is the capacity file's, checked first."""
    import subprocess
    import sys

    bad = tmp_path / "nope.json"
    out = tmp_path / "r.html"
    p = subprocess.run(
        [sys.executable, "-m", "voxmeter.cli", "report", "--store", str(tmp_path / "x.sqlite")]
        + ["-o", str(out), "--capacity", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "no such file" in lines[0]
    assert not out.exists()
