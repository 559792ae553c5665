"""Engines: one per runtime. `load_engine` picks it from the spec."""

from __future__ import annotations

from pathlib import Path

from voxmeter.assets.bundled import ModelSource, default_cache_dir, resolve_model
from voxmeter.engines.base import DecodeOutput, Encoded, Engine
from voxmeter.errors import SpecError
from voxmeter.spec import RunSpec

__all__ = ["DecodeOutput", "Encoded", "Engine", "check_replicas", "load_engine"]


def check_replicas(engine: str, replicas: int) -> None:
    """Model replicas above 1 need CTranslate2 (load_engine)."""
    if replicas > 1 and engine != "ct2":
        raise SpecError(f"replicas: {replicas} needs the ct2 engine (hf runs one call at a time)")


def load_engine(
    spec: RunSpec,
    cache_dir: str | Path | None = None,
    source: ModelSource | None = None,
    replicas: int = 1,
) -> Engine:
    """The spec's engine. `replicas` > 1 (ct2 only: CTranslate2's inter_threads) loads that
    many copies of the model, so that calls from several threads (a server's sessions) run in
    parallel, each on spec.threads threads."""
    cache = default_cache_dir(cache_dir)
    source = source or resolve_model(spec.model, cache)
    if spec.engine == "ct2":
        from voxmeter.engines.ct2_whisper import Ct2WhisperEngine

        return Ct2WhisperEngine(spec, source, cache, replicas=replicas)
    check_replicas(spec.engine, replicas)
    from voxmeter.engines.hf_whisper import HFWhisperEngine

    return HFWhisperEngine(spec, source, cache)
