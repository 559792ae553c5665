"""Live transcription: LocalAgreement policy, sessions, replay with latency figures, the
WebSocket server and the load generator (see each module's docstring)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's initial threshold, held fixed


def fix_mmap_threshold() -> str:
    """Hold glibc's mmap threshold at 128 KiB for a long-lived streaming process; returns
    what was done, for the result.

    glibc raises the threshold each time a large mmapped block is freed, so later buffers of
    that size come from the heap, where the growing, re-allocated stream buffers fragment it.
    Measured on an hour's stream (tiny.en ct2 int8, 500 ms, LA-3, VAD): RSS rose in steps to
    +31 MiB (slope 17 MiB/h after the first 5 minutes); with the threshold fixed (what
    MALLOC_MMAP_THRESHOLD_=131072 does), +11 MiB and 6.1 MiB/h, 2.5 of it the replay's own
    trace. Elsewhere than glibc this does nothing and says so."""
    if not sys.platform.startswith("linux"):
        return f"allocator untouched ({sys.platform})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        return "allocator untouched (no glibc mallopt)"
    if ok != 1:
        return "allocator untouched (mallopt refused)"
    return f"glibc mmap threshold fixed at {MMAP_THRESHOLD} bytes (mallopt)"


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
