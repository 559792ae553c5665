"""Isolated mode: measure a spec in a fresh child process, so its peak RSS is its own.

The parent sends the spec and repeat indices as JSON on the child's stdin; the child runs the
harness and writes one line per finished repeat, `RESULT <json>`, flushing each, so a parent
that is killed loses at most the repeat in flight. A user error in the child comes back as
`ERROR <message>` and is raised in the parent as the same one-line VoxmeterError. Anything
else that ends the child (a bug, a crash, a kill) is not a user error: it is raised as
ChildCrashed carrying the child's whole stderr, traceback included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
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


def run_spec_isolated(
    spec: RunSpec, repeats: list[int], *, cache_dir: str | Path | None = None
) -> Iterator[Result]:
    if not repeats:
        return
    payload = json.dumps(
        {"spec": spec.to_dict(), "repeats": repeats, "cache_dir": str(cache_dir or "")}
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxmeter.run.isolate"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(payload)
    proc.stdin.close()
    error = None
    try:
        for line in proc.stdout:
            if line.startswith("RESULT "):
                yield Result.from_dict(json.loads(line[7:]))
            elif line.startswith("ERROR "):
                error = line[6:].strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    if error:
        raise VoxmeterError(error)
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or ["no output"]
        raise ChildCrashed(
            f"spec {spec.spec_hash} ({spec.label()}): the isolated child crashed "
            f"(exit {proc.returncode}): {tail[0]}",
            stderr,
        )


def _child() -> int:
    from voxmeter.run.harness import run_spec

    req = json.loads(sys.stdin.read())
    spec = RunSpec.from_dict(req["spec"])
    try:
        for res in run_spec(
            spec, req["repeats"], cache_dir=req["cache_dir"] or None, mode="isolated"
        ):
            sys.stdout.write("RESULT " + res.to_json() + "\n")
            sys.stdout.flush()
    except VoxmeterError as e:
        sys.stdout.write("ERROR " + str(e).replace("\n", " ") + "\n")
        sys.stdout.flush()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_child())
