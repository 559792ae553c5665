"""Live transcription: LocalAgreement policy, sessions, replay with latency figures, the
WebSocket server and the load generator (see each module's docstring)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def allocator_note() -> str:
    """Which malloc settings this process runs under, for a stream's result.

    Over an hour's stream (tiny.en ct2 int8, 500 ms, LA-3, VAD) RSS rose in steps, +31 MiB
    (17 MiB/h after the first 5 minutes): glibc raises its mmap threshold each time a large
    block is freed, so the stream's re-allocated buffers later come from the heap and
    fragment it. With MALLOC_MMAP_THRESHOLD_=131072 (the threshold held fixed) the same hour
    grew 11 MiB (6.1 MiB/h, 2.5 of it the replay's own trace), but every step paid for fresh
    mappings: compute/elapsed 0.18 -> 0.28. So the default stays, and an operator who would
    rather trade compute for flat memory sets that variable before starting the process."""
    fixed = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if fixed:
        note = f"MALLOC_MMAP_THRESHOLD_={fixed} (glibc mmap threshold fixed)"
    else:
        note = "malloc defaults (glibc: dynamic mmap threshold)"
    if trims_heap():
        note += f"; malloc_trim(0) at a buffer cut, at most every {TRIM_EVERY_S:g} s of audio"
    return note


TRIM_EVERY_S = 10.0  # stream seconds between heap releases of one session


def trims_heap() -> bool:
    """Whether sessions give freed heap back to the kernel (glibc's malloc_trim; off with
    VOXMETER_MALLOC_TRIM=0, and wherever the C library has no malloc_trim)."""
    return os.environ.get("VOXMETER_MALLOC_TRIM", "1") != "0" and _malloc_trim() is not None


def _malloc_trim() -> Any:
    global _TRIM
    if _TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    return _TRIM or None


_TRIM: Any = None


def release_heap() -> bool:
    """Give the heap's free pages back to the kernel (glibc malloc_trim(0)); whether it ran.

    A stream frees and re-allocates its buffers at every cut; the freed blocks fragment
    glibc's heap and RSS creeps up over an hour (see allocator_note). Sessions call this at a
    buffer cut at most every TRIM_EVERY_S of their audio."""
    trim = _malloc_trim() if os.environ.get("VOXMETER_MALLOC_TRIM", "1") != "0" else None
    if trim is None:
        return False
    trim(0)
    return True


def open_engine(spec: Any, cache_dir: str | Path | None = None) -> tuple[Any, Any, float]:
    """(engine, model source, load seconds) for a spec, compressed configurations included:
    weights converted and compression built (cached) as the harness does, then loaded."""
    import time

    from voxmeter.assets.bundled import default_cache_dir, resolve_model
    from voxmeter.compress import compressed_source
    from voxmeter.engines import load_engine
    from voxmeter.run.harness import prepare_weights

    spec.validate()
    cache = default_cache_dir(cache_dir)
    source = resolve_model(spec.model, cache)
    spec.compression.check_model(source.dims.n_text_layer)
    source, _ = prepare_weights(spec, source, cache)
    source, _ = compressed_source(spec, source, cache, None)
    t0 = time.perf_counter()
    engine = load_engine(spec, cache, source)
    return engine, source, time.perf_counter() - t0
