"""Run many specs into the store, resumably, locally or on Ray.

Resumability comes from the store: before running, each spec's finished repeats are looked up
by its identity (spec hash, code fingerprint, weights and data digests) and mode, and only the
missing repeat indices are measured. A local sweep writes `isolated` rows and a Ray sweep
`ray` rows (several specs may have shared the machine), and aggregation never averages the
two. A sweep cell is done when one mode holds all its repeats: isolated rows complete it
for either executor, ray rows only for a Ray sweep (`done_modes`); a `bench` run in process
(whose peak RSS is shared with whatever ran before it) never does. Every Result is written
the moment it arrives (one transaction per row), so a sweep killed with -9 loses at most the
repeats in flight and a re-run picks up where it stopped.

A spec that fails with a VoxmeterError (a model that cannot load, a bad data set) leaves
`status = 'failed'` rows for the repeats it did not finish, is reported in the summary, and
the sweep goes on; failed rows do not count as done, so the next run tries them again. Any
other exception is a bug and stops the sweep with its traceback.

Executors: "local" runs one spec after another in this process's control (by default each in
a fresh child process, so peak RSS is the spec's own). "ray" runs one spec per Ray task, with
`num_cpus` = the spec's threads so Ray never packs more concurrent specs onto a node than it
has cores; the tasks stream Results back and only the driver writes the store (SQLite is not
a network database). Concurrent specs on one node share caches and memory bandwidth, so their
latencies are noisier than a local sweep's; the harness records other processes' CPU use with
every result. Ray is imported only by the Ray executor. Under Ray, several specs share one
machine's energy and CPU counters, and each result says so.

A crash in an isolated child (a bug, not a user error) leaves failed rows that keep the
child's whole traceback; it is logged with it, and the sweep goes on and exits 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxmeter.errors import SpecError, VoxmeterError
from voxmeter.identity import Identity
from voxmeter.result import Result
from voxmeter.run.isolate import ChildCrashed
from voxmeter.spec import RunSpec
from voxmeter.store import ResultStore, failed_result

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("voxmeter")

EXECUTORS = ("local", "ray")
# runner(spec, repeat_indices, cache_dir=...) -> one Result per repeat, as each finishes
Runner = Callable[..., Iterator[Result]]


@dataclass
class SweepSummary:
    n_specs: int
    n_skipped: int  # specs whose repeats were all in the store already
    n_results: int = 0  # repeats measured and written now
    failed: list[tuple[str, str]] = field(default_factory=list)  # (spec label, message)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        """The closing summary (the notes were logged when the sweep began)."""
        out = []
        ran = self.n_specs - self.n_skipped
        out.append(
            f"sweep: {ran} spec(s) run, {self.n_results} repeat(s) written, "
            f"{len(self.failed)} failed, in {self.elapsed_s:.1f} s"
        )
        out += [f"failed: {label}: {msg}" for label, msg in self.failed]
        return out


@dataclass
class _Job:
    spec: RunSpec
    missing: list[int]
    ident: Identity | None = None
    mode: str = "isolated"  # the mode its rows are written in (sweep_mode)
    written: set[int] = field(default_factory=set)
    error: str = ""  # a user error found while planning (e.g. a model that cannot resolve)


SWEEP_MODE = "isolated"  # a local sweep's rows: each spec alone in a fresh child process
RAY_MODE = "ray"  # a Ray sweep's rows: other specs may have shared the machine


def sweep_mode(executor: str) -> str:
    """The mode a sweep's rows are written in."""
    return RAY_MODE if executor == "ray" else SWEEP_MODE


def done_modes(executor: str) -> tuple[str, ...]:
    """Modes whose rows can complete a sweep cell: isolated rows always (the spec ran alone),
    ray rows only when the sweep itself runs on Ray."""
    return (SWEEP_MODE, RAY_MODE) if executor == "ray" else (SWEEP_MODE,)


def missing_repeats(store: ResultStore, spec: RunSpec, ident: Identity, executor: str) -> list[int]:
    """Repeats still to measure: none when one of `done_modes` holds them all (modes are
    never mixed within a cell), else those the sweep's own mode lacks."""
    want = set(range(spec.repeats))
    for mode in done_modes(executor):
        if want <= store.done_repeats(spec.spec_hash, ident, mode):
            return []
    done = store.done_repeats(spec.spec_hash, ident, sweep_mode(executor))
    return sorted(want - done)


RAY_NOTE = (
    "ray executor: other specs may have run at the same time on this machine; energy and "
    "CPU counters are machine-wide and were shared among them"
)


def _default_runner() -> Runner:
    from voxmeter.stream.isolate import run_any_isolated  # a stream spec: stream's child

    return run_any_isolated


def identity_here(cache_dir: str | Path | None) -> Callable[[RunSpec], Identity]:
    """What a run of a spec would be identified by on this machine, with this code."""
    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.run.identify import identity_of

    cache = default_cache_dir(cache_dir)
    return lambda spec: identity_of(spec, cache)


def plan(
    specs: list[RunSpec],
    store: ResultStore,
    force: bool = False,
    identify: Callable[[RunSpec], Identity] | None = None,
    executor: str = "local",
) -> tuple[list[_Job], int, int]:
    """The jobs still to run: (jobs, n_unique_specs, n_already_done)."""
    identify = identify or identity_here(None)
    mode = sweep_mode(executor)
    unique = list({s.spec_hash: s for s in specs}.values())
    jobs, done_specs = [], 0
    for spec in unique:
        try:
            ident = identify(spec)
        except VoxmeterError as e:  # the spec fails alone; the sweep goes on
            jobs.append(_Job(spec, list(range(spec.repeats)), mode=mode, error=str(e)))
            continue
        if force:
            store.delete(spec.spec_hash, ident, mode)
            missing = list(range(spec.repeats))
        else:
            missing = missing_repeats(store, spec, ident, executor)
        if missing:
            jobs.append(_Job(spec, missing, ident, mode))
        else:
            done_specs += 1
    return jobs, len(unique), done_specs


def run_sweep(
    specs: list[RunSpec],
    store: ResultStore,
    *,
    runner: Runner | None = None,
    executor: str = "local",
    address: str | None = None,
    force: bool = False,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    identify: Callable[[RunSpec], Identity] | None = None,
) -> SweepSummary:
    """Measure every repeat of `specs` the store lacks; write each Result as it arrives."""
    if executor not in EXECUTORS:
        raise SpecError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if address and executor != "ray":
        raise SpecError("--address: only meaningful with --executor ray")
    t0 = time.perf_counter()
    jobs, n_specs, n_done = plan(
        specs, store, force, identify or identity_here(cache_dir), executor
    )
    summary = SweepSummary(n_specs=n_specs, n_skipped=n_done)
    if n_done:
        note = f"{n_done} of {n_specs} specs already done, skipping"
        summary.notes.append(note)
        log.info(note)
    partial = sum(1 for j in jobs if len(j.missing) < j.spec.repeats)
    if partial:
        note = f"{partial} spec(s) partly done: measuring only their missing repeats"
        summary.notes.append(note)
        log.info(note)
    for job in [j for j in jobs if j.error]:
        _record_failure(store, job, job.error, summary)
    jobs = [j for j in jobs if not j.error]
    if jobs:
        run = runner or _default_runner()
        cache = str(cache_dir) if cache_dir else None
        with _Bar(sum(len(j.missing) for j in jobs), progress) as bar:
            if executor == "local":
                _run_local(jobs, store, run, cache, bar, summary)
            else:
                _run_ray(jobs, store, run, cache, address, bar, summary)
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _record(store: ResultStore, job: _Job, res: Result, summary: SweepSummary) -> None:
    if res.spec_hash != job.spec.spec_hash:
        raise RuntimeError(
            f"runner returned spec {res.spec_hash} while running {job.spec.spec_hash}"
        )
    if job.ident is not None and res.identity != job.ident:
        # the code, weights or data changed while the sweep ran: the row is kept under the
        # identity it really has, and this cell will be measured again next time
        log.warning(
            "spec %s: measured as %s, planned as %s",
            job.spec.spec_hash,
            res.identity.short(),
            job.ident.short(),
        )
    store.add(res)
    job.written.add(res.repeat)
    summary.n_results += 1


def _record_failure(
    store: ResultStore, job: _Job, message: str, summary: SweepSummary, traceback: str = ""
) -> None:
    spec = job.spec
    for r in job.missing:
        if r not in job.written:
            store.add(
                failed_result(
                    spec.to_dict(),
                    spec.spec_hash,
                    r,
                    message,
                    ident=job.ident,
                    mode=job.mode,
                    traceback=traceback,
                )
            )
    summary.failed.append((spec.label(), message))
    if traceback:
        log.error("spec %s (%s) crashed:\n%s", spec.spec_hash, spec.label(), traceback)
    else:
        log.error("spec %s (%s) failed: %s", spec.spec_hash, spec.label(), message)


def _run_local(
    jobs: list[_Job],
    store: ResultStore,
    runner: Runner,
    cache_dir: str | None,
    bar: _Bar,
    summary: SweepSummary,
) -> None:
    for i, job in enumerate(jobs, 1):
        bar.describe(f"[{i}/{len(jobs)}] {job.spec.label()}")
        try:
            for res in runner(job.spec, list(job.missing), cache_dir=cache_dir):
                _record(store, job, res, summary)
                bar.advance()
        except VoxmeterError as e:
            _record_failure(store, job, str(e), summary)
            bar.advance(len(job.missing) - len(job.written))
        except ChildCrashed as e:  # a bug in the child: its traceback is kept, not one line
            _record_failure(store, job, e.message, summary, traceback=e.stderr)
            bar.advance(len(job.missing) - len(job.written))


# -- Ray --------------------------------------------------------------------------------
def _ray_measure(
    runner: Runner, spec_dict: dict[str, Any], repeats: list[int], cache_dir: str | None
) -> Iterator[tuple[str, Any]]:
    """A Ray task: stream ("result", result dict) per repeat, or ("error", message) once."""
    from voxmeter.run.isolate import ChildCrashed

    spec = RunSpec.from_dict(spec_dict)
    try:
        for res in runner(spec, repeats, cache_dir=cache_dir):
            yield "result", res.to_dict()
    except VoxmeterError as e:
        yield "error", (str(e), "")
    except ChildCrashed as e:
        yield "error", (e.message, e.stderr)


def _run_ray(
    jobs: list[_Job],
    store: ResultStore,
    runner: Runner,
    cache_dir: str | None,
    address: str | None,
    bar: _Bar,
    summary: SweepSummary,
) -> None:
    try:
        import ray
    except ImportError:
        raise SpecError(
            "--executor ray: ray is not installed (pip install 'voxmeter[ray]')"
        ) from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise SpecError(f"--address {address}: cannot connect to Ray ({e})") from None
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        task = ray.remote(num_returns="streaming")(_ray_measure)
        pending: dict[Any, _Job] = {}
        for job in jobs:
            need = job.spec.threads
            if need > cpus:
                log.warning(
                    "spec %s wants %d threads but the Ray cluster has %d CPUs: scheduling it on %d",
                    job.spec.spec_hash,
                    need,
                    cpus,
                    cpus,
                )
            gen = task.options(num_cpus=min(need, cpus)).remote(
                runner, job.spec.to_dict(), list(job.missing), cache_dir
            )
            pending[gen] = job
        while pending:
            bar.describe(f"ray: {len(pending)} spec(s) queued or running")
            ready, _ = ray.wait(list(pending), num_returns=1)
            gen = ready[0]
            job = pending[gen]
            try:
                ref = next(gen)
            except StopIteration:
                del pending[gen]
                continue
            kind, payload = ray.get(ref)  # a bug in the task re-raises here, traceback kept
            if kind == "result":
                res = Result.from_dict(payload)
                res.mode = RAY_MODE  # not `isolated`: other specs may have shared the machine
                res.warnings.append(RAY_NOTE)
                if res.metrics.get("energy_method"):
                    res.metrics["energy_method"] += (
                        " (machine-wide, shared by concurrent Ray tasks)"
                    )
                _record(store, job, res, summary)
                bar.advance()
            else:
                message, trace = payload
                _record_failure(store, job, message, summary, traceback=trace)
                bar.advance(len(job.missing) - len(job.written))
    finally:
        if started:
            ray.shutdown()


# -- progress ---------------------------------------------------------------------------
class _Bar:
    """A rich progress bar over repeats (spec label, done/total, ETA), or nothing at all."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self._progress = None
        self._task = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("sweep", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and n:
            self._progress.advance(self._task, n)
