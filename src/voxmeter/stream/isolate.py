"""Stream specs in a fresh child process, as run/isolate.py measures every other spec.

The parent side and the line protocol are run/isolate.py's; this module is the child's entry
for a stream spec (`python -m voxmeter.stream.isolate`), so that run never imports stream.
`run_any_isolated` picks the child by the spec: what a sweep runs each spec with.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from voxmeter.result import Result
from voxmeter.run.isolate import run_spec_isolated
from voxmeter.spec import RunSpec

STREAM_CHILD = "voxmeter.stream.isolate"


def run_stream_spec_isolated(spec: RunSpec, repeats: list[int], **kw: Any) -> Iterator[Result]:
    """run_spec_isolated for a stream spec: the child runs stream.run.run_stream_spec."""
    return run_spec_isolated(spec, repeats, child=STREAM_CHILD, **kw)


def run_any_isolated(spec: RunSpec, repeats: list[int], **kw: Any) -> Iterator[Result]:
    """Any spec in a fresh child: a live stream through this module, others the harness."""
    if spec.stream.enabled:
        return run_stream_spec_isolated(spec, repeats, **kw)
    return run_spec_isolated(spec, repeats, **kw)


def _child() -> int:
    from voxmeter.run.isolate import child_main
    from voxmeter.stream.run import run_stream_spec

    return child_main(run_stream_spec)


if __name__ == "__main__":
    sys.exit(_child())
