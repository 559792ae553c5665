"""One definition of peak memory and of warm-up for every side of a comparison.

faster-whisper (fw_run.py) and voxmeter's own configurations (run/isolate.py) are measured
alike: each runs in a freshly exec'd interpreter, and its peak is the kernel's high-water mark
of that process image (VmHWM), read by voxmeter's RssSampler (measure/memory.py) as
`peak_rss().lifetime_mb`. Not getrusage's ru_maxrss: Linux carries a parent's mark across
fork and exec into the child's ru_maxrss, so a child started by a 500 MiB parent reads at
least 500 MiB whatever it runs (tests/test_benchmarks_fw.py). Where the kernel mark is not
usable the sampler falls back to a thread (rss_method says so on every row).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

PEAK_RSS_DEFINITION = (
    "process_peak_rss_mb: the kernel's high-water mark (VmHWM) of a freshly exec'd process "
    "that runs one configuration, read at its end by voxmeter's RssSampler "
    "(measure/memory.py, peak_rss().lifetime_mb): imports, model load, warm-up and the timed "
    "pass included; the same instrument on both sides (fw_run.py, run/isolate.py). Not "
    "ru_maxrss, which a child inherits from its parent across fork and exec"
)
WARMUP_S = 30.0  # voxmeter's harness warms a long-form run on this much of the first recording
WARMUP_DEFINITION = (
    "untimed, after model load, before the timed pass, as run/harness.warm_up does: with "
    "warmup >= 1, the first `warmup` short clips, or (a set of long recordings only) the first "
    "30 s of the first recording, transcribed once sequentially with timestamps (voxmeter "
    "warms batched long-form runs sequentially too); warmup 0: none"
)


class ProcessPeak:
    """This process's peak RSS, by the one definition above; start it first thing."""

    def __init__(self) -> None:
        from voxmeter.measure.memory import RssSampler

        self._sampler = RssSampler()
        self._sampler.start()

    def fields(self) -> dict[str, Any]:
        """The figure, how it was read, and the definition; closes the sampler."""
        peak = self._sampler.peak_rss()
        self._sampler.close()
        return {
            "process_peak_rss_mb": peak.lifetime_mb,
            "rss_method": self._sampler.method,
            "rss_mode": self._sampler.mode,
        }


def run_json(cmd: Sequence[str]) -> dict[str, Any]:
    """Run `cmd` (a fresh interpreter: subprocess execs, it never forks a running Python) and
    return the JSON object on the last line of its stdout; its stderr in the error if not."""
    out = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {out.returncode} with no JSON line:\n{out.stderr[-4000:]}"
        )
    return json.loads(lines[-1])


def python_script(script: str, *args: str) -> list[str]:
    """The command line that runs `script` in a new interpreter of this Python."""
    return [sys.executable, script, *args]
