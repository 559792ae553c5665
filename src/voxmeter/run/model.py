"""Opening a spec's model: the one sequence every measurement runs before its first figure.

Resolve the weights, check the compression settings against the model's shape, convert
CTranslate2 weights for the hf engine (cached), build the structural compression (cached),
then load the engine with the load timed on its own. The harness, the stream runner, the
streaming server and the isolated child's build step all open models here, so a compressed
configuration is the same model wherever it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voxmeter.assets.bundled import ModelSource, resolve_model
from voxmeter.spec import RunSpec


@dataclass
class OpenedModel:
    engine: Any  # engines.Engine
    source: ModelSource  # as loaded: converted and compressed where the spec asks
    load_s: float  # load_engine alone
    convert_s: float  # CTranslate2 -> transformers conversion, 0.0 when it was cached
    compress_s: float  # building the compressed model, 0.0 when it was cached


def resolve_checked(spec: RunSpec, cache: Path) -> ModelSource:
    """The spec's model, its compression settings checked against its shape before any work."""
    source = resolve_model(spec.model, cache)
    spec.compression.check_model(source.dims.n_text_layer)
    return source


def prepare_weights(spec: RunSpec, source: ModelSource, cache: Path) -> tuple[ModelSource, float]:
    """Convert CTranslate2 weights for the hf engine before load is timed; the seconds spent
    converting are returned only when a conversion really ran (0.0 when it was cached)."""
    from voxmeter.assets.convert import convert_cached

    if spec.engine != "hf" or source.hf_dir is not None or source.ct2_dir is None:
        return source, 0.0
    root = cache / "hf"
    before = set(root.iterdir()) if root.is_dir() else set()
    t0 = time.perf_counter()
    hf_dir = convert_cached(source.ct2_dir, cache)
    took = time.perf_counter() - t0
    fresh = hf_dir not in before
    return replace(source, hf_dir=hf_dir), took if fresh else 0.0


def build_source(
    spec: RunSpec, source: ModelSource, cache: Path, progress: Any = None
) -> tuple[ModelSource, float, float]:
    """(source ready to load, conversion seconds, compression build seconds)."""
    from voxmeter.compress import compressed_source

    source, convert_s = prepare_weights(spec, source, cache)
    source, compress_s = compressed_source(spec, source, cache, progress)
    return source, convert_s, compress_s


def open_model(
    spec: RunSpec,
    cache: Path,
    *,
    source: ModelSource | None = None,
    progress: Any = None,
    replicas: int = 1,
) -> OpenedModel:
    """The spec's engine, loaded (`source`: the already resolved and checked model, if the
    caller has it; `replicas`: engines.load_engine)."""
    from voxmeter.engines import load_engine

    source = source or resolve_checked(spec, cache)
    source, convert_s, compress_s = build_source(spec, source, cache, progress)
    t0 = time.perf_counter()
    engine = load_engine(spec, cache, source, replicas=replicas)
    return OpenedModel(engine, source, time.perf_counter() - t0, convert_s, compress_s)
