"""Live transcription: LocalAgreement policy, sessions, replay with latency figures, the
WebSocket server and the load generator (see each module's docstring)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any


def allocator_note() -> str:
    """Which malloc settings this process runs under, for a stream's result.

    Over an hour's stream (tiny.en ct2 int8, 500 ms, LA-3, VAD) RSS rose in steps, +31 MiB
    (17 MiB/h after the first 5 minutes): glibc raises its mmap threshold each time a large
    block is freed, so the stream's re-allocated buffers later come from the heap and
    fragment it. Fixing the threshold (MALLOC_MMAP_THRESHOLD_=131072) held it to 6.1 MiB/h
    but made every step pay for fresh mappings (compute/elapsed 0.18 -> 0.28). Sessions
    instead release the heap's free pages with malloc_trim(0) at a buffer cut, at most every
    TRIM_EVERY_S of audio (release_heap): 3.1 MiB/h over the same hour. An operator can still
    fix the threshold, or turn the release off with VOXMETER_MALLOC_TRIM=0."""
    fixed = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if fixed:
        note = f"MALLOC_MMAP_THRESHOLD_={fixed} (glibc mmap threshold fixed)"
    else:
        note = "malloc defaults (glibc: dynamic mmap threshold)"
    if trims_heap():
        note += f"; malloc_trim(0) at a buffer cut, at most every {TRIM_EVERY_S:g} s of audio"
    return note


TRIM_EVERY_S = 10.0  # stream seconds between heap releases of one session


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None where the C library has none."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trims_heap() -> bool:
    """Whether sessions give freed heap back to the kernel (glibc's malloc_trim; off with
    VOXMETER_MALLOC_TRIM=0, and wherever the C library has no malloc_trim)."""
    return os.environ.get("VOXMETER_MALLOC_TRIM", "1") != "0" and _malloc_trim() is not None


def release_heap() -> bool:
    """Give the heap's free pages back to the kernel (glibc malloc_trim(0)); whether it ran.

    A stream frees and re-allocates its buffers at every cut; the freed blocks fragment
    glibc's heap and RSS creeps up over an hour (see allocator_note). Sessions call this at a
    buffer cut at most every TRIM_EVERY_S of their audio."""
    if not trims_heap():
        return False
    _malloc_trim()(0)
    return True


def open_engine(
    spec: Any, cache_dir: str | Path | None = None, replicas: int = 1
) -> tuple[Any, Any, float]:
    """(engine, model source, load seconds) for a spec, compressed configurations included,
    opened as the harness opens it (run/model.py; `replicas`: engines.load_engine)."""
    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.run.model import open_model

    spec.validate()
    opened = open_model(spec, default_cache_dir(cache_dir), replicas=replicas)
    return opened.engine, opened.source, opened.load_s
