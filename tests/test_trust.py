"""End to end through the real CLI: stored rows of other code are measured anew and never
averaged with today's, and Ctrl-C exits 130 with every finished repeat intact."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from test_cli import assert_one_line_error, voxmeter


def _bench(store, cache_dir, *extra):
    return voxmeter(
        "bench", "--max-clips", "2", "--repeats", "1", "--store", str(store), "--json", *extra,
        env_extra={"VOXMETER_CACHE": str(cache_dir)},
    )  # fmt: skip


@pytest.mark.slow
def test_rows_of_two_code_fingerprints(tmp_path, cache_dir, short_clip):
    store = tmp_path / "s.sqlite"
    # any spec will do: ct2 (no FLOP-counting pass), one short clip, no warm-up
    args = ("--engine", "ct2", "--data", short_clip, "--max-clips", "1", "--warmup", "0")
    first = _bench(store, cache_dir, *args)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    h = doc["spec_hash"]
    # the same spec, as an older voxmeter measured it (its int8 path, say, was different)
    c = sqlite3.connect(store)
    with c:
        c.execute("UPDATE results SET code_fp = '0.0.9+older', metrics_json = "
                  "json_set(metrics_json, '$.rtfx', 1000.0)")  # fmt: skip
    c.close()
    again = _bench(store, cache_dir, *args)
    assert again.returncode == 0, again.stderr
    doc2 = json.loads(again.stdout)
    assert "already" not in doc2["note"] and "other code" in doc2["note"]
    here = doc2["identity"]["code_fp"]
    assert len(doc2["repeats"]) == 1 and here != "0.0.9+older"
    assert doc2["aggregate"]["rtfx"]["value"] < 1000  # the old row is not in today's figure

    shown = voxmeter("results", "show", h, "--store", str(store), "--json")
    assert shown.returncode == 0, shown.stderr
    groups = json.loads(shown.stdout)
    assert sorted(g["code_fp"] for g in groups) == sorted(["0.0.9+older", here])
    by_code = {g["code_fp"]: g for g in groups}
    assert by_code["0.0.9+older"]["metrics"]["rtfx"]["value"] == 1000.0
    assert by_code[here]["metrics"]["rtfx"]["value"] < 1000  # not averaged with the old row
    assert all(g["n_repeats"] == 1 for g in groups)

    listed = voxmeter("results", "list", "--store", str(store), "--json")
    rows = json.loads(listed.stdout)["results"]
    assert sorted(r["this_code"] for r in rows) == [False, True]


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_store_intact(tmp_path, cache_dir, short_clip):
    store = tmp_path / "s.sqlite"
    args = ["bench", "--data", short_clip, "--repeats", "40", "--store", str(store), "--quiet"]
    args += ["--engine", "ct2", "--warmup", "0"]  # the first repeat lands sooner
    # a runner that started us in the background hands SIGINT down as ignored, and Python then
    # installs no KeyboardInterrupt handler: give the child the one a foreground job has
    boot = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"sys.argv = ['voxmeter', *{args!r}]; runpy.run_module('voxmeter.cli', run_name='__main__')"
    )
    cmd = [sys.executable, "-c", boot]
    env = dict(os.environ, VOXMETER_CACHE=str(cache_dir))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no repeat landed in time"
            if store.exists():
                c = sqlite3.connect(store)
                try:
                    n = c.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
                c.close()
                if n >= 1:
                    break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "interrupted" in lines[-1] and "Traceback" not in err
    c = sqlite3.connect(store)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = c.execute("SELECT status FROM results").fetchall()
    finally:
        c.close()
    assert 1 <= len(rows) < 40 and all(s == "ok" for (s,) in rows)


# -- random weights only when asked; every architecture named -----------------------------
def test_a_size_without_weights_is_refused_without_cost_only(cli):
    from voxmeter.errors import ModelError

    for args in (["bench"], ["stream", "--max-clips", "1"], ["serve", "--port", "0"]):
        r = cli(*args, "--model", "tiny")
        assert isinstance(r.exception, ModelError), (args, r.output, r.exception)
        msg = str(r.exception)
        assert "\n" not in msg and "'tiny'" in msg and "not available here" in msg
        assert "--cost-only" in msg


def test_the_refusal_is_one_line_and_exit_2():
    proc = voxmeter("bench", "--model", "small", "--repeats", "1")
    assert_one_line_error(proc, "'small'", "--cost-only")


def test_models_lists_every_architecture_and_which_have_weights(cli):
    from voxmeter.assets.dims import ARCHITECTURES

    r = cli("models", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert set(rows) == set(ARCHITECTURES)
    assert rows["tiny.en"]["kind"] == "bundled" and rows["tiny.en"]["accuracy"] == "yes"
    assert rows["tiny"]["kind"] == "cost-only" and "--cost-only" in rows["tiny"]["accuracy"]
    r = cli("bench", "--model", "tiny-en")
    for name in ARCHITECTURES:  # the unknown-model error names them all
        assert name in str(r.exception)


def test_the_spec_hash_ignores_the_consent():
    from voxmeter.spec import RunSpec

    assert RunSpec(model="tiny", cost_only=True).spec_hash == RunSpec(model="tiny").spec_hash
    RunSpec(model="tiny", cost_only=True).validate()  # allowed when asked
    RunSpec(model="tiny.en").validate()  # a size with weights needs nothing
    spec = RunSpec(model="tiny", cost_only=True)
    assert RunSpec.from_dict(spec.to_dict()) == spec  # survives the isolated child's JSON


def test_flops_need_no_weights(cli):
    r = cli("flops", "--model", "tiny", "--frames", "400", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["analytic"]["total"] > 0


@pytest.mark.slow
def test_cost_only_bench_runs_without_accuracy(tmp_path, cache_dir):
    # one clip: random weights decode to the token limit
    args = ("--model", "tiny", "--cost-only", "--max-clips", "1", "--warmup", "0")
    r = _bench(tmp_path / "s.sqlite", cache_dir, *args)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["identity"]["weights_digest"] == "cost-only"
    assert doc["aggregate"].get("wer") in (None, {}) or doc["aggregate"]["wer"]["value"] is None


# -- weights are checked against pinned digests -------------------------------------------
def test_corrupted_bundled_weights_exit_2_in_one_line(tmp_path):
    from test_assets import flipped_weight_package

    site = flipped_weight_package(tmp_path)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = voxmeter("bench", "--repeats", "1", "--cache-dir", tmp_path / "c", env_extra=env)
    assert_one_line_error(proc, "model.bin: sha256", "is not the pinned", "refusing unverified")
