"""The results store: round trips, resumability bookkeeping, aggregation, export, kill safety.

`sample_results()` builds plausible hand-made Results (no model runs); the analysis and report
tests use it too.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from voxmeter.errors import StoreError
from voxmeter.identity import Identity
from voxmeter.result import Result
from voxmeter.spec import RunSpec
from voxmeter.store import ResultStore, aggregate_results, open_existing

# what the fake results claim to have been measured by (a real run stamps voxmeter.identity's)
TEST_IDENT = Identity("test-code", "test-weights", "test-data")


def make_result(spec: RunSpec, repeat: int = 0, **metrics) -> Result:
    res = Result(
        spec_hash=spec.spec_hash,
        spec=spec.to_dict(),
        repeat=repeat,
        metrics=metrics,
        clips=[{"id": "c1", "e2e_ms": metrics.get("e2e_ms_p50", 1.0)}],
        env={"cpu": "test cpu", "threads": spec.threads, "repeat": repeat},
        warnings=[],
        mode="isolated",
    )
    return res.with_identity(TEST_IDENT)


def sample_results() -> list[Result]:
    """Three models x a few axis settings x 2 repeats, with figures shaped like real ones."""
    out = []
    sizes = {"tiny.en": (1.0, 150e6, 40.0), "base": (0.7, 290e6, 95.0), "small": (None, 970e6, 380)}
    for model, (wer_scale, wbytes, full_gflops) in sizes.items():
        for frames, stride in ((3000, 1), (3000, 2), ("fit", 1), (1000, 4)):
            spec = RunSpec(model=model, repeats=2).with_(frames=frames, stride=stride)
            shrink = (1000 / 3000 if frames == 1000 else 0.3 if frames == "fit" else 1.0) / (
                1 + 0.1 * (stride - 1)
            )
            gflops = full_gflops * shrink
            for rep in range(2):
                jitter = 1 + 0.02 * rep
                m = dict(
                    gflops_analytic_total=gflops,
                    e2e_ms_p50=20 * gflops * jitter,
                    e2e_ms_p90=26 * gflops * jitter,
                    feat_ms_p50=5.0 * jitter,
                    enc_ms_p50=12 * gflops * jitter,
                    dec_ms_p50=8 * gflops * jitter,
                    rtf=0.002 * gflops * jitter,
                    rtfx=500 / gflops / jitter,
                    peak_rss_mb=300 + wbytes / 2**20 + gflops * jitter,
                    feat_mem_mb=2.0,
                    enc_mem_mb=0.5 * gflops,
                    dec_mem_mb=0.2 * gflops,
                    weight_bytes=wbytes,
                    energy_j=3 * gflops * jitter,
                    j_per_audio_s=0.1 * gflops * jitter,
                    energy_method="estimated: CPU TDP share x time",
                )
                if wer_scale is None:
                    m["wer"] = None
                else:
                    wer = wer_scale * 40 * gflops**-0.3 * (1 + 0.05 * (stride - 1))
                    m.update(wer=wer, cer=wer / 2, wer_ci_lo=wer * 0.8, wer_ci_hi=wer * 1.25)
                out.append(make_result(spec, rep, **m))
    return out


@pytest.fixture
def store(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as s:
        yield s


def test_round_trip_and_resume_bookkeeping(store):
    a, b = RunSpec(), RunSpec(model="base")
    r0 = make_result(a, 0, wer=10.0, e2e_ms_p50=100.0)
    r0.clips = [{"id": "x", "hyp": "héllo", "e2e_ms": 3.5}]
    r0.warnings = ["a warning"]
    store.add(r0)
    store.add(make_result(a, 2, wer=11.0))
    store.add(make_result(b, 0, wer=8.0))
    assert store.done_repeats(a.spec_hash) == {0, 2}
    assert store.done_repeats("nope") == set()
    got = store.get(a.spec_hash)
    assert [r.repeat for r in got] == [0, 2]
    assert got[0].to_dict() == r0.to_dict()  # everything survives, unicode included
    assert store.get(a.spec_hash[:6])[0].spec_hash == a.spec_hash  # a prefix is enough
    assert set(store.specs()) == {a.spec_hash, b.spec_hash}
    assert len(store.all()) == 3

    # a repeat written again replaces the old row rather than duplicating it
    store.add(make_result(a, 0, wer=12.0))
    assert len(store.all()) == 3
    assert store.get(a.spec_hash)[0].metrics["wer"] == 12.0

    assert store.delete(a.spec_hash) == 2
    assert store.done_repeats(a.spec_hash) == set()
    with pytest.raises(StoreError, match="no results for spec"):
        store.get(a.spec_hash)


def test_failed_rows_are_kept_but_not_done(store):
    from voxmeter.store import failed_result

    s = RunSpec()
    store.add(failed_result(s.to_dict(), s.spec_hash, 0, "model x: no weights"))
    assert store.done_repeats(s.spec_hash) == set()  # a re-run tries it again
    assert store.all() == []
    assert [f.warnings for f in store.failures()] == [["model x: no weights"]]
    store.add(make_result(s, 0, wer=1.0))  # success replaces the failure
    assert store.failures() == [] and store.done_repeats(s.spec_hash) == {0}


def test_wal_mode_and_visible_to_other_connections(store):
    store.add(make_result(RunSpec(), 0, wer=1.0))
    other = sqlite3.connect(store.path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    other.close()


def test_not_a_store(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a database\n" * 100)
    with pytest.raises(StoreError, match="notes.txt.*not a voxmeter store"):
        ResultStore(text)
    foreign = tmp_path / "other.sqlite"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE people (name TEXT)")
    c.commit()
    c.close()
    with pytest.raises(StoreError, match="other.sqlite.*not a voxmeter store"):
        ResultStore(foreign)
    with pytest.raises(StoreError, match="no such results store"):
        open_existing(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(StoreError, match="does not exist"):
        ResultStore(tmp_path / "no" / "dir" / "r.sqlite")


def test_aggregate_means_and_cis():
    s = RunSpec(repeats=3)
    rs = [
        make_result(
            s, i, e2e_ms_p50=v, rtfx=v, wer=7.0, wer_ci_lo=5.0, wer_ci_hi=9.5, energy_method="est"
        )
        for i, v in enumerate((10.0, 12.0, 14.0))
    ]
    rs.append(make_result(RunSpec(model="base"), 0, e2e_ms_p50=3.0, wer=None, rtfx=float("nan")))
    rows = {r.spec_hash: r for r in aggregate_results(rs)}
    row = rows[s.spec_hash]
    assert row.n_repeats == 3 and row.label == s.label()
    rtfx = row.metrics["rtfx"]
    assert rtfx.mean == 12.0 and rtfx.n == 3 and rtfx.ci_method == "t over repeats"
    assert rtfx.half_width == pytest.approx(4.968275, abs=1e-5)
    # latency percentiles are pooled over the clip runs (one clip per repeat here); the three
    # runs are repeats of one clip, one cluster: nothing to resample, so no interval
    lat = row.metrics["e2e_ms_p50"]
    assert lat.mean == 12.0 and lat.n == 3
    assert (lat.ci_lo, lat.ci_hi, lat.ci_method) == (None, None, "")
    # WER: the same every repeat; its CI is the recorded bootstrap over clips, not a zero
    wer = row.metrics["wer"]
    assert (wer.mean, wer.ci_lo, wer.ci_hi, wer.ci_method) == (
        7.0,
        5.0,
        9.5,
        "bootstrap over clips",
    )
    assert row.notes["energy_method"] == "est"
    single = rows[RunSpec(model="base").spec_hash]
    assert single.metrics["e2e_ms_p50"].ci_lo is None  # one repeat: no interval
    assert single.value("wer") is None and single.value("rtfx") is None  # None/NaN are absent


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_flat(store, tmp_path, fmt):
    for r in sample_results():
        store.add(r)
    out = tmp_path / f"out.{fmt}"
    n = store.export(out, fmt)
    assert n == len(sample_results())
    if fmt == "csv":
        import csv

        rows = list(csv.DictReader(out.open()))
    elif fmt == "json":
        rows = json.loads(out.read_text())
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    assert len(rows) == n
    assert {
        "spec_hash",
        "repeat",
        "label",
        "spec.model",
        "spec.axes.frames",
        "spec.axes.stride",
        "wer",
        "e2e_ms_p50",
        "peak_rss_mb",
        "gflops_analytic_total",
    } <= set(rows[0])
    frames = {str(r["spec.axes.frames"]) for r in rows}
    assert frames == {"3000", "fit", "1000"}  # mixed int/"fit" survives every format
    tiny = [r for r in rows if r["spec.model"] == "tiny.en" and str(r["spec.axes.stride"]) == "1"]
    assert tiny and all(float(r["wer"]) > 0 for r in tiny)


def test_export_errors(store, tmp_path):
    with pytest.raises(StoreError, match="has no results"):
        store.export(tmp_path / "x.csv")
    store.add(make_result(RunSpec(), 0, wer=1.0))
    from voxmeter.errors import SpecError

    with pytest.raises(SpecError, match="--format"):
        store.export(tmp_path / "x.xlsx", "xlsx")
    assert not (tmp_path / "x.xlsx").exists()


_WRITER = """
import sys, itertools
from voxmeter.result import Result
from voxmeter.store import ResultStore
s = ResultStore(sys.argv[1])
big = [{"id": f"clip{i}", "hyp": "word " * 200} for i in range(200)]  # ~200 kB per row
for i in itertools.count():
    s.add(Result(spec_hash=f"h{i % 7}", spec={"i": i}, repeat=i, metrics={"wer": float(i)},
                 clips=big))
    print(i, flush=True)
"""


def test_kill_9_mid_write_leaves_only_whole_rows(tmp_path):
    path = tmp_path / "k.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        for line in proc.stdout:
            if int(line) >= 20:
                break
        time.sleep(0.05)  # land the kill somewhere inside a later write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with ResultStore(path) as s:
        assert s._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = s.all()
        assert len(rows) >= 21
        for r in rows:  # every row whole: full clip list, parseable metrics
            assert len(r.clips) == 200 and r.metrics["wer"] == float(r.repeat)
        assert sorted(r.repeat for r in rows) == list(range(len(rows)))  # no gaps


def test_sample_results_are_plausible():
    rows = aggregate_results(sample_results())
    assert len(rows) == 12
    assert all(r.value("wer") is None for r in rows if r.spec["model"] == "small")
    assert all(math.isfinite(r.value("e2e_ms_p50")) for r in rows)


def test_percentiles_pool_clips_across_repeats():
    """p90 over clips x repeats is not the mean of each repeat's p90 (the old definition)."""
    import numpy as np

    s = RunSpec(repeats=2)
    runs = [[10.0, 11.0, 12.0, 100.0], [10.0, 11.0, 12.0, 13.0]]
    rs = []
    for i, vals in enumerate(runs):
        r = make_result(s, i, e2e_ms_p90=float(np.percentile(vals, 90)))
        r.clips = [{"id": f"c{j}", "e2e_ms": v, "enc_ms": v / 2} for j, v in enumerate(vals)]
        r.metrics["stage_keys"] = "enc"
        rs.append(r)
    row = aggregate_results(rs)[0]
    pooled = float(np.percentile(runs[0] + runs[1], 90))
    assert row.value("e2e_ms_p90") == pytest.approx(pooled)
    assert row.value("e2e_ms_p90") != pytest.approx(np.mean([r.metrics["e2e_ms_p90"] for r in rs]))
    assert row.value("enc_ms_p90") == pytest.approx(pooled / 2)  # the engine's own stage name
    assert row.metrics["e2e_ms_p90"].n == 8 and "pooled" in row.metrics["e2e_ms_p90"].how


def _hand_cluster_ci(clusters, q, seed=0, n_boot=1000):
    """The cluster resample written out by hand: clips drawn with replacement, each with all
    its repeats, the q-th percentile of what was drawn, then the 2.5/97.5 percentiles."""
    import numpy as np

    idx = np.random.default_rng(seed).integers(0, len(clusters), (n_boot, len(clusters)))
    stats = [np.percentile(np.concatenate([clusters[i] for i in row]), q) for row in idx]
    return tuple(float(v) for v in np.percentile(stats, [2.5, 97.5]))


def test_latency_ci_resamples_clips_with_all_their_repeats():
    """Repeats of a clip are identical here: resampling the 3 x 6 runs one by one (the old
    CI) claims 18 independent draws; the cluster bootstrap resamples the 6 clips."""
    import numpy as np

    clips = [5.0, 7.0, 8.0, 20.0, 21.0, 40.0]
    s = RunSpec(repeats=3)
    rs = []
    for rep in range(3):
        r = make_result(s, rep)
        r.clips = [{"id": f"c{j}", "e2e_ms": v} for j, v in enumerate(clips)]
        rs.append(r)
    agg = aggregate_results(rs)[0].metrics
    clusters = [np.array([v] * 3) for v in clips]
    pooled = clips * 3
    for q in (50, 90, 99):
        m = agg[f"e2e_ms_p{q}"]
        assert m.mean == pytest.approx(float(np.percentile(pooled, q)))  # percentiles unchanged
        assert m.n == 18
        assert m.ci_method == "cluster bootstrap over clips (repeats kept together)"
        assert (m.ci_lo, m.ci_hi) == pytest.approx(_hand_cluster_ci(clusters, q))
        naive = _hand_cluster_ci([np.array([v]) for v in pooled], q)  # runs as independent
        assert (m.ci_lo, m.ci_hi) != pytest.approx(naive)
        if q == 50:  # 6 clips, not 18 independent runs: the median is less sure than claimed
            assert m.ci_hi - m.ci_lo > naive[1] - naive[0]


def test_batches_and_windows_are_resampled_whole():
    """A batch is one unit (its clips and repeats together); a recording keeps its windows."""
    import numpy as np

    s = RunSpec(repeats=2)
    rs = []
    for rep in range(2):
        r = make_result(s, rep)
        r.clips = [
            {"id": f"c{j}", "batch": j // 2, "e2e_ms": 10.0 * (j // 2 + 1) + rep} for j in range(6)
        ]
        r.clips[0]["windows"] = [
            {"n_frames": 3000, "e2e_ms": 1.0 + rep},
            {"n_frames": 3000, "e2e_ms": 2.0},
        ]
        r.clips[1]["windows"] = [{"n_frames": 3000, "e2e_ms": 9.0}]
        rs.append(r)
    agg = aggregate_results(rs)[0].metrics
    batch = [np.array([10.0 * (b + 1), 10.0 * (b + 1) + 1]) for b in range(3)]
    assert agg["batch_ms_p50"].ci_method == "cluster bootstrap over batches (repeats kept together)"
    assert (agg["batch_ms_p50"].ci_lo, agg["batch_ms_p50"].ci_hi) == pytest.approx(
        _hand_cluster_ci(batch, 50)
    )
    # per-clip records of a batch resample with their batch: 3 clusters of 4 runs
    assert agg["e2e_ms_p90"].ci_method.startswith("cluster bootstrap over batches")
    per_clip = [np.concatenate([b[:1], b[:1], b[1:], b[1:]]) for b in batch]
    assert (agg["e2e_ms_p90"].ci_lo, agg["e2e_ms_p90"].ci_hi) == pytest.approx(
        _hand_cluster_ci(per_clip, 90)
    )
    rec = [np.array([1.0, 2.0, 2.0, 2.0]), np.array([9.0, 9.0])]
    w = agg["window_ms_p50"]
    assert w.ci_method.startswith("cluster bootstrap over recordings")
    assert (w.ci_lo, w.ci_hi) == pytest.approx(_hand_cluster_ci(rec, 50))


@pytest.mark.slow
def test_greedy_cer_gets_a_bootstrap_ci_and_a_small_change_is_not_flagged(cache_dir):
    """Greedy decoding repeats the same CER: a t-interval over repeats is zero-wide and flagged
    any change. The harness records a bootstrap over clips for CER as for WER."""
    from dataclasses import replace

    from voxmeter.analysis.regress import compare
    from voxmeter.run.harness import run_spec

    # tiny.en's own errors ("old-sposed") on whole clips; clips cut short (frames=200) repeat
    # themselves to the token limit, which costs minutes and tests nothing more
    spec = RunSpec(engine="ct2", max_clips=4, repeats=2, warmup=0).with_(frames="fit")
    old = list(run_spec(spec, [0, 1], cache_dir=cache_dir, instruments=False))
    assert old[0].metrics["cer"] == old[1].metrics["cer"] > 0  # greedy: the same every repeat
    cer = aggregate_results(old)[0].metrics["cer"]
    assert cer.ci_method == "bootstrap over clips"
    assert cer.ci_lo < cer.mean < cer.ci_hi
    shift = (cer.ci_hi - cer.ci_lo) / 10  # a change well inside the interval
    new = []
    for r in old:
        m = dict(r.metrics)
        for k in ("cer", "cer_ci_lo", "cer_ci_hi"):
            m[k] += shift
        new.append(replace(r, metrics=m))
    assert compare(aggregate_results(old), aggregate_results(new), metrics=("cer",))[0] == []
