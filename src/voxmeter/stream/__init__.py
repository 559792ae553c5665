"""Live transcription: LocalAgreement policy, sessions, replay with latency figures, the
WebSocket server and the load generator (see each module's docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
