"""Isolated mode: measure a spec in a fresh child process, so its peak RSS is its own.

The parent sends the spec and repeat indices as JSON on the child's stdin; the child runs the
harness and writes one line per finished repeat, `RESULT <json>`, flushing each, so a parent
that is killed loses at most the repeat in flight. A user error in the child comes back as
`ERROR <message>` and is raised in the parent as the same one-line VoxmeterError. Anything
else that ends the child (a bug, a crash, a kill) is not a user error: it is raised as
ChildCrashed carrying the child's whole stderr, traceback included.

A compressed spec whose model must be built (pruning, depth, low-rank, recovery training) is
built first in a child of its own, which writes `BUILT <seconds>`: training's memory is not
the model's, and must not be the measured child's peak RSS. The measured child then finds the
model cached; the build seconds go on its first result as `compress_s`, as in-process runs
report them.

`rss_limit_mb` (the memory budget): the parent samples the child's resident set every 20 ms
and kills it past the limit; the run then raises OverBudget with the figure it reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from voxmeter.errors import VoxmeterError
from voxmeter.result import Result
from voxmeter.spec import RunSpec


class ChildCrashed(RuntimeError):
    """The isolated child died of something other than a user error; `.stderr` holds its
    traceback."""

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(f"{message}\n{stderr}".rstrip())
        self.message = message
        self.stderr = stderr


class OverBudget(VoxmeterError):
    """The isolated child's resident set passed the memory budget and was stopped."""

    def __init__(self, message: str, rss_mb: float) -> None:
        super().__init__(message)
        self.rss_mb = rss_mb


HARNESS_CHILD = "voxmeter.run.isolate"  # this module's __main__: harness.run_spec


def run_spec_isolated(
    spec: RunSpec,
    repeats: list[int],
    *,
    cache_dir: str | Path | None = None,
    rss_limit_mb: float | None = None,
    child: str = HARNESS_CHILD,
) -> Iterator[Result]:
    """One Result per repeat of `spec`, measured in a fresh `python -m child` process that
    speaks the protocol above (child_main). The default child runs the harness; a stream
    spec's child is stream.isolate's."""
    if not repeats:
        return
    if spec.stream.enabled and child == HARNESS_CHILD:
        raise ValueError(
            f"spec {spec.spec_hash} ({spec.label()}) is a live stream: measure it isolated "
            "with voxmeter.stream.isolate.run_stream_spec_isolated"
        )
    built_s = 0.0
    if spec.compression.changes_weights:
        # its stderr is the terminal's: a recovery run's progress bar shows while it trains
        lines = _child_lines(spec, {"build": True}, cache_dir, None, child, own_stderr=False)
        for line in lines:
            if line.startswith("BUILT "):
                built_s = float(line[6:])
    first = True
    for line in _child_lines(spec, {"repeats": repeats}, cache_dir, rss_limit_mb, child):
        if line.startswith("RESULT "):
            res = Result.from_dict(json.loads(line[7:]))
            if first and built_s > 0:
                res.metrics["compress_s"] = built_s
            first = False
            yield res


def _child_lines(
    spec: RunSpec,
    request: dict,
    cache_dir: str | Path | None,
    rss_limit_mb: float | None,
    child: str,
    own_stderr: bool = True,
) -> Iterator[str]:
    """The protocol lines of one child run on `request`; errors and crashes raised. With
    `own_stderr` False the child writes to this process's stderr (a crash's traceback is
    then there, not in ChildCrashed)."""
    payload = json.dumps({"spec": spec.to_dict(), "cache_dir": str(cache_dir or ""), **request})
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", child],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if own_stderr else None,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(payload)
    proc.stdin.close()
    error = None
    guard = _RssGuard(proc.pid, rss_limit_mb) if rss_limit_mb else None
    try:
        for line in proc.stdout:
            if line.startswith("ERROR "):
                error = line[6:].strip()
            else:
                yield line
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait()
        if guard:
            guard.stop()
    if guard and guard.tripped:
        raise OverBudget(
            f"spec {spec.spec_hash} ({spec.label()}): resident set reached "
            f"{guard.peak_mb:.0f} MiB, over the {rss_limit_mb:g} MiB budget; stopped",
            guard.peak_mb,
        )
    if error:
        raise VoxmeterError(error)
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or [
            "its stderr is above" if not own_stderr else "no output"
        ]
        raise ChildCrashed(
            f"spec {spec.spec_hash} ({spec.label()}): the isolated child crashed "
            f"(exit {proc.returncode}): {tail[0]}",
            stderr,
        )


class _RssGuard:
    """Samples a process's resident set on a thread; kills it once it passes `limit_mb`."""

    def __init__(self, pid: int, limit_mb: float, every_s: float = 0.02) -> None:
        import threading

        import psutil

        self.proc = psutil.Process(pid)
        self.limit_mb, self.every_s = limit_mb, every_s
        self.peak_mb, self.tripped = 0.0, False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psutil

        while not self._done.is_set():
            try:
                rss = self.proc.memory_info().rss / 2**20
            except psutil.Error:
                return
            self.peak_mb = max(self.peak_mb, rss)
            if rss > self.limit_mb:
                self.tripped = True
                try:
                    self.proc.kill()
                except psutil.Error:
                    pass
                return
            self._done.wait(self.every_s)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _build(spec: RunSpec, cache_dir: str | None) -> float:
    """Build (or find cached) the compressed model of `spec`; the seconds building took."""
    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.run.model import build_source, resolve_checked

    spec.validate()
    cache = default_cache_dir(cache_dir)
    return build_source(spec, resolve_checked(spec, cache), cache)[2]


def child_main(runner: Callable[..., Iterator[Result]]) -> int:
    """The child's side of the protocol (module doc), measuring with `runner` (called as
    harness.run_spec is: spec, repeats, cache_dir=..., mode="isolated")."""
    req = json.loads(sys.stdin.read())
    spec = RunSpec.from_dict(req["spec"])
    try:
        if req.get("build"):
            sys.stdout.write(f"BUILT {_build(spec, req['cache_dir'] or None)!r}\n")
            return 0
        for res in runner(
            spec, req["repeats"], cache_dir=req["cache_dir"] or None, mode="isolated"
        ):
            sys.stdout.write("RESULT " + res.to_json() + "\n")
            sys.stdout.flush()
    except VoxmeterError as e:
        sys.stdout.write("ERROR " + str(e).replace("\n", " ") + "\n")
        sys.stdout.flush()
        return 2
    return 0


def _child() -> int:
    from voxmeter.run.harness import run_spec  # looked up now: a test hook may replace it

    return child_main(run_spec)


if __name__ == "__main__":
    sys.exit(_child())
