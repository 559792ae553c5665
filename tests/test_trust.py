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
from test_cli import voxmeter


def _bench(store, cache_dir, *extra):
    return voxmeter(
        "bench", "--max-clips", "2", "--repeats", "1", "--store", str(store), "--json", *extra,
        env_extra={"VOXMETER_CACHE": str(cache_dir)},
    )  # fmt: skip


@pytest.mark.slow
def test_rows_of_two_code_fingerprints(tmp_path, cache_dir):
    store = tmp_path / "s.sqlite"
    first = _bench(store, cache_dir)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    h = doc["spec_hash"]
    # the same spec, as an older voxmeter measured it (its int8 path, say, was different)
    c = sqlite3.connect(store)
    with c:
        c.execute("UPDATE results SET code_fp = '0.0.9+older', metrics_json = "
                  "json_set(metrics_json, '$.rtfx', 1000.0)")  # fmt: skip
    c.close()
    again = _bench(store, cache_dir)
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
def test_ctrl_c_exits_130_with_the_store_intact(tmp_path, cache_dir):
    store = tmp_path / "s.sqlite"
    args = ["bench", "--max-clips", "2", "--repeats", "40", "--store", str(store), "--quiet"]
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
