"""The sweep runner: skip what is done, write as results arrive, survive failing specs,
resume after kill -9, never import Ray unless asked, and run on a local Ray instance."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_store import TEST_IDENT, make_result

from voxmeter.errors import ModelError
from voxmeter.spec import RunSpec
from voxmeter.store import ResultStore
from voxmeter.sweep.runner import run_sweep


def sweep(*args, **kwargs):
    """run_sweep with the fake results' identity as today's (no model or data resolved)."""
    return run_sweep(*args, identify=lambda spec: TEST_IDENT, **kwargs)


SPECS = [RunSpec(repeats=2, threads=1).with_(stride=k) for k in (1, 2, 3)]


def rows_in(path: Path) -> int:
    """Rows another connection sees: what a kill at this moment would leave."""
    c = sqlite3.connect(path)
    try:
        return c.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        c.close()


def rows_landed(path: Path) -> int:
    """rows_in for a store another process is creating: 0 until its file and table exist (the
    file appears at connect, the table a moment later)."""
    if not path.exists():
        return 0
    try:
        return rows_in(path)
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise
        return 0


class FakeRunner:
    """Yields plausible Results; records its calls; checks earlier repeats are already stored."""

    def __init__(self, store_path: Path | None = None, fail_model: str = "", fail_after: int = 0):
        self.calls: list[tuple[str, list[int]]] = []
        self.store_path = store_path
        self.fail_model = fail_model
        self.fail_after = fail_after
        self.seen_before: list[int] = []

    def __call__(self, spec, repeats, cache_dir=None):
        self.calls.append((spec.spec_hash, list(repeats)))
        for i, r in enumerate(repeats):
            if spec.model == self.fail_model and i >= self.fail_after:
                raise ModelError(f"model {spec.model!r}: weights missing")
            if self.store_path is not None:
                self.seen_before.append(rows_in(self.store_path))
            yield make_result(spec, r, wer=10.0 + r, e2e_ms_p50=100.0 * spec.axes.stride)


def test_runs_everything_then_skips_everything(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    fake = FakeRunner(store_path=path)
    with ResultStore(path) as st:
        summary = sweep(SPECS, st, runner=fake, progress=False)
        assert summary.ok and summary.n_results == 6 and summary.n_skipped == 0
        assert len(st.all()) == 6
        assert {st.done_repeats(s.spec_hash) == {0, 1} for s in SPECS} == {True}
    # each Result was in the store before the runner produced the next one
    assert fake.seen_before == [0, 1, 2, 3, 4, 5]

    fake2 = FakeRunner()
    with ResultStore(path) as st, caplog.at_level("INFO", logger="voxmeter"):
        again = sweep(SPECS + SPECS[:1], st, runner=fake2, progress=False)  # dup ignored
    assert fake2.calls == [] and again.n_results == 0 and again.n_skipped == 3
    assert "3 of 3 specs already done, skipping" in again.notes
    assert "3 of 3 specs already done, skipping" in caplog.text


def test_partial_specs_run_only_missing_repeats(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as st:
        st.add(make_result(SPECS[0], 1, wer=1.0))
        for r in (0, 1):
            st.add(make_result(SPECS[1], r, wer=1.0))
        fake = FakeRunner()
        summary = sweep(SPECS, st, runner=fake, progress=False)
        assert fake.calls == [(SPECS[0].spec_hash, [0]), (SPECS[2].spec_hash, [0, 1])]
        assert summary.n_skipped == 1 and summary.n_results == 3
        assert "1 of 3 specs already done, skipping" in summary.notes
        # the row that was already there is untouched
        assert st.get(SPECS[0].spec_hash)[1].metrics["wer"] == 1.0

        fake = FakeRunner()
        forced = sweep(SPECS[:1], st, runner=fake, force=True, progress=False)
        assert fake.calls == [(SPECS[0].spec_hash, [0, 1])] and forced.n_results == 2
        assert st.get(SPECS[0].spec_hash)[1].metrics["wer"] == 11.0


def test_failing_spec_is_recorded_and_the_sweep_goes_on(tmp_path):
    bad = RunSpec(model="base", repeats=3, threads=1)
    specs = [SPECS[0], bad, SPECS[1]]
    with ResultStore(tmp_path / "s.sqlite") as st:
        fake = FakeRunner(fail_model="base", fail_after=1)
        summary = sweep(specs, st, runner=fake, progress=False)
        assert not summary.ok
        assert summary.failed == [(bad.label(), "model 'base': weights missing")]
        assert summary.n_results == 2 + 1 + 2  # the failing spec's first repeat is kept
        assert st.done_repeats(bad.spec_hash) == {0}
        assert sorted(f.repeat for f in st.failures()) == [1, 2]
        assert any("1 failed" in line for line in summary.lines())
        # a re-run retries only what failed
        fake = FakeRunner()
        again = sweep(specs, st, runner=fake, progress=False)
        assert fake.calls == [(bad.spec_hash, [1, 2])] and again.ok
        assert st.failures() == []


def test_bad_executor_arguments(tmp_path):
    from voxmeter.errors import SpecError

    with ResultStore(tmp_path / "s.sqlite") as st:
        with pytest.raises(SpecError, match="--executor"):
            sweep(SPECS, st, runner=FakeRunner(), executor="dask")
        with pytest.raises(SpecError, match="--address"):
            sweep(SPECS, st, runner=FakeRunner(), address="ray://x:10001")


def test_a_sweep_cell_is_done_only_by_an_isolated_row_of_the_same_identity(tmp_path):
    from dataclasses import replace

    from voxmeter.identity import Identity

    path = tmp_path / "s.sqlite"
    with ResultStore(path) as st:
        inproc = make_result(SPECS[0], 0, wer=1.0)
        inproc.mode = "inprocess"  # what `bench` leaves: its peak RSS is not the spec's own
        st.add(inproc)
        other_code = make_result(SPECS[1], 0, wer=1.0).with_identity(
            replace(TEST_IDENT, code_fp="older-code")
        )
        st.add(other_code)
        fake = FakeRunner()
        summary = sweep(SPECS[:2], st, runner=fake, progress=False)
        assert summary.n_skipped == 0 and summary.n_results == 4
        assert sorted(fake.calls) == sorted((s.spec_hash, [0, 1]) for s in SPECS[:2])
        # nothing was overwritten: both earlier rows are still there, kept apart
        assert len(st.all()) == 6
        assert st.identities(SPECS[1].spec_hash) == [
            Identity("older-code", "test-weights", "test-data"),
            TEST_IDENT,
        ]
        assert st.done_repeats(SPECS[0].spec_hash, TEST_IDENT, "isolated") == {0, 1}
        assert st.done_repeats(SPECS[0].spec_hash, TEST_IDENT, "inprocess") == {0}


def test_ray_rows_complete_a_cell_only_for_a_ray_sweep(tmp_path):
    """Ray rows (several specs may have shared the machine) do not finish a local sweep's
    cell; isolated rows finish either; a cell is never completed by mixing the two."""
    from voxmeter.sweep.runner import done_modes, plan, sweep_mode

    assert (sweep_mode("local"), sweep_mode("ray")) == ("isolated", "ray")
    assert done_modes("local") == ("isolated",) and set(done_modes("ray")) == {"isolated", "ray"}
    ray_done, iso_done, mixed = SPECS

    def row(spec, rep, mode):
        r = make_result(spec, rep, wer=1.0)
        r.mode = mode
        return r

    with ResultStore(tmp_path / "s.sqlite") as st:
        for r in (row(ray_done, 0, "ray"), row(ray_done, 1, "ray")):
            st.add(r)
        for r in (row(iso_done, 0, "isolated"), row(iso_done, 1, "isolated")):
            st.add(r)
        st.add(row(mixed, 0, "isolated"))
        st.add(row(mixed, 1, "ray"))

        def todo(executor):
            jobs, _, n_done = plan(SPECS, st, identify=lambda s: TEST_IDENT, executor=executor)
            return {j.spec.spec_hash: (j.missing, j.mode) for j in jobs}, n_done

        local, n_local = todo("local")
        assert n_local == 1 and local == {
            ray_done.spec_hash: ([0, 1], "isolated"),
            mixed.spec_hash: ([1], "isolated"),
        }
        on_ray, n_ray = todo("ray")
        assert n_ray == 2 and on_ray == {mixed.spec_hash: ([0], "ray")}
        # --force on Ray measures every repeat again and replaces only the ray rows
        forced, _, _ = plan(SPECS, st, force=True, identify=lambda s: TEST_IDENT, executor="ray")
        assert all(j.missing == [0, 1] and j.mode == "ray" for j in forced)
        assert st.done_repeats(iso_done.spec_hash, TEST_IDENT, "isolated") == {0, 1}
        assert st.done_repeats(ray_done.spec_hash, TEST_IDENT, "ray") == set()


def test_ray_rows_are_never_averaged_with_isolated_rows():
    from voxmeter.store import aggregate_results

    spec = SPECS[0]
    rows = []
    for mode, rtfx in (("isolated", 10.0), ("ray", 4.0)):
        for rep in range(2):
            r = make_result(spec, rep, rtfx=rtfx + rep)
            r.mode = mode
            rows.append(r)
    agg = {a.mode: a for a in aggregate_results(rows)}
    assert set(agg) == {"isolated", "ray"}
    assert agg["isolated"].value("rtfx") == 10.5 and agg["ray"].value("rtfx") == 4.5
    assert agg["isolated"].n_repeats == agg["ray"].n_repeats == 2
    assert "mode=ray" in agg["ray"].label and "mode=isolated" in agg["isolated"].label


def test_a_crashed_child_keeps_its_traceback(tmp_path, caplog):
    """A bug in the isolated child is not a user error: the failed rows and the log keep the
    child's whole traceback, and the sweep goes on with the next spec."""
    from voxmeter.run.isolate import run_spec_isolated

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import voxmeter.run.harness as h\n"
        "def boom(*a, **k):\n"
        "    raise ZeroDivisionError('a bug deep in the harness')\n"
        "h.run_spec = boom\n"
    )
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), old) if p)
    try:
        with ResultStore(tmp_path / "s.sqlite") as st:
            summary = sweep(SPECS[:2], st, runner=run_spec_isolated, progress=False)
            fails = st.failures()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    assert not summary.ok and len(summary.failed) == 2  # both ran: the first did not stop it
    assert len(fails) == 4
    for f in fails:
        assert "crashed" in f.metrics["error"]
        tb = f.metrics["traceback"]
        assert "Traceback (most recent call last)" in tb and "ZeroDivisionError" in tb
    assert "Traceback (most recent call last)" in caplog.text


def test_local_sweep_never_imports_ray(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_sweep_runner import FakeRunner, SPECS, sweep
        from voxmeter.store import ResultStore
        from voxmeter.sweep.runner import run_sweep
        import voxmeter.cli, voxmeter.sweep.grid
        with ResultStore({str(tmp_path / "s.sqlite")!r}) as st:
            s = sweep(SPECS, st, runner=FakeRunner(), progress=True)
        assert s.n_results == 6, s
        print("ray" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_ray_executor_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'voxmeter[ray]')")
    from ray import cloudpickle

    # workers cannot import this test module: ship the fake runner by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sys.modules["test_store"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        bad = RunSpec(model="base", repeats=2, threads=1)
        with ResultStore(tmp_path / "s.sqlite") as st:
            st.add(make_result(SPECS[0], 0, wer=1.0))
            summary = sweep(
                [*SPECS, bad],
                st,
                runner=FakeRunner(fail_model="base"),
                executor="ray",
                progress=False,
            )
            # SPECS[0]'s one isolated repeat does not complete its cell, and Ray rows are
            # never mixed with it: both of its repeats are measured again, in mode "ray"
            assert summary.n_results == 6
            assert summary.failed == [(bad.label(), "model 'base': weights missing")]
            for s in SPECS:
                assert st.done_repeats(s.spec_hash, TEST_IDENT, "ray") == {0, 1}
            assert st.done_repeats(SPECS[0].spec_hash, TEST_IDENT, "isolated") == {0}
            assert len(st.failures()) == 2 and {f.mode for f in st.failures()} == {"ray"}
            # rows measured under Ray say so, and that the machine's counters were shared
            from voxmeter.sweep.runner import RAY_NOTE

            ray_rows = [r for r in st.all() if r.mode == "ray"]
            assert len(ray_rows) == 6 and all(RAY_NOTE in r.warnings for r in ray_rows)
            # a second Ray sweep finds every cell done
            again = sweep(SPECS, st, runner=FakeRunner(), executor="ray", progress=False)
            assert again.n_results == 0 and again.n_skipped == len(SPECS)
        assert ray.is_initialized()  # a Ray the caller started is left running
    finally:
        ray.shutdown()


SWEEP_TOML = """
[sweep]
models = ["tiny.en"]
engines = ["ct2"]
repeats = 3
threads = 1
max_clips = 1
[axes]
frames = ["fit"]
stride = [1, 2]
"""


def _voxmeter_harness_missing() -> str | None:
    try:
        import voxmeter.run.harness
        import voxmeter.run.isolate  # noqa: F401
    except ImportError as e:
        return f"voxmeter.run.harness is not importable yet ({e})"
    return None


@pytest.mark.slow
@pytest.mark.skipif(
    _voxmeter_harness_missing() is not None, reason=str(_voxmeter_harness_missing())
)
def test_kill_9_then_resume_with_a_real_sweep(tmp_path, cache_dir, short_clip):
    """kill -9 the sweep once a result has landed; a re-run keeps it and adds the rest."""
    toml = tmp_path / "sweep.toml"
    # one short clip: the sweep's own bookkeeping is what is checked, not the audio
    toml.write_text(SWEEP_TOML.replace("max_clips = 1", f"max_clips = 1\ndata = {short_clip!r}"))
    store = tmp_path / "s.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "voxmeter.cli",
        "sweep",
        str(toml),
        "--store",
        str(store),
        "--cache-dir",
        str(cache_dir),
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 400
        while rows_landed(store) < 1:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no result landed in time"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the sweep itself, as a user's kill -9 would
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # and the child it was measuring in
        except ProcessLookupError:
            pass
    with ResultStore(store) as st:
        before = {(r.spec_hash, r.repeat): r.created_at for r in st.all(include_failed=True)}
        assert st._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert 1 <= len(before) < 6
        assert all(r.status == "ok" and r.metrics["n_clips"] == 1 for r in st.all())

    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with ResultStore(store) as st:
        after = {(r.spec_hash, r.repeat): r.created_at for r in st.all(include_failed=True)}
        assert len(after) == 6 and all(r.status == "ok" for r in st.all())
        for key, t in before.items():
            assert after[key] == t  # kept, not measured again
    assert f"{6 - len(before)} repeat(s) written" in done.stdout
