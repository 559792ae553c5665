"""The harness: runs one RunSpec over a data set, stage by stage, with every instrument on.

One Result per repeat. Per repeat, every clip goes through features -> encode -> decode, each
stage timed (perf_counter, CUDA-synchronised) and watched by the RSS sampler; energy and CPU
frequency are measured over the whole repeat. Model load and warm-up happen before, and are
never inside RTFx. FLOPs are counted in a separate, untimed pass over a few clips (counting
slows execution), beside the closed-form count of the same shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxmeter.assets.bundled import ModelSource, default_cache_dir, resolve_model
from voxmeter.engines import Engine, load_engine
from voxmeter.errors import DataError, SpecError
from voxmeter.result import Result
from voxmeter.spec import RunSpec

COUNT_CLIPS = 3  # clips in the FLOPs counting pass
MB = 1024 * 1024


@dataclass
class PreparedClip:
    id: str
    audio: np.ndarray
    text: str
    duration_s: float
    notes: list[str]


@dataclass
class PreparedData:
    name: str
    clips: list[PreparedClip]
    skipped: list[tuple[str, str]]  # (clip id, reason)


def prepare_data(spec: RunSpec) -> PreparedData:
    """Load and validate every clip before any timing; bad clips are reported and skipped."""
    from voxmeter.data.datasets import iter_audio, load_dataset

    ds = load_dataset(spec.data)
    clips: list[PreparedClip] = []
    skipped: list[tuple[str, str]] = []
    for clip, loaded in iter_audio(ds):
        if isinstance(loaded, Exception):
            skipped.append((clip.id, str(loaded)))
            continue
        notes = []
        if loaded.resampled:
            notes.append(f"resampled from {loaded.orig_sample_rate} Hz")
        if loaded.mixed_down:
            notes.append(f"mixed down from {loaded.orig_channels} channels")
        clips.append(PreparedClip(clip.id, loaded.samples, clip.text, loaded.duration_s, notes))
        if spec.max_clips and len(clips) >= spec.max_clips:
            break
    if not clips:
        first = f" (first: {skipped[0][1]})" if skipped else ""
        raise DataError(f"data {spec.data!r}: no usable clips{first}")
    return PreparedData(ds.name, clips, skipped)


def _forced_steps(engine: Engine, source: ModelSource, clip: PreparedClip) -> int | None:
    """Cost-only models have random weights: decode as many steps as the reference needs."""
    if source.has_weights:
        return None
    n = len(engine.tokenizer.encode(clip.text)) if engine.tokenizer.available else 0
    return max(1, n or round(clip.duration_s * 3)) + 1


def run_clip(engine: Engine, clip: PreparedClip, steps: int | None, instr: Any) -> dict:
    """One clip through the three stages, each inside a timing and memory window."""
    rec: dict[str, Any] = {}
    with instr.stage("feat", rec):
        feats = engine.features(clip.audio)
    with instr.stage("enc", rec):
        enc = engine.encode(feats)
    with instr.stage("dec", rec):
        out = engine.decode(enc, steps) if steps is not None else engine.decode(enc)
    rec.update(
        id=clip.id,
        duration_s=clip.duration_s,
        notes=clip.notes,
        ref=clip.text,
        hyp=out.text,
        n_tokens=len(out.tokens),
        n_steps=len(out.tokens) + (0 if out.hit_max_length else 1),
        hit_max_length=out.hit_max_length,
        n_frames=int(feats.shape[-1]),
        computed_positions=enc.computed_positions,
        decoder_positions=enc.decoder_positions,
        kv_projected=enc.kv_projected,
    )
    rec["e2e_ms"] = rec["feat_ms"] + rec["enc_ms"] + rec["dec_ms"]
    return rec


def run_spec(
    spec: RunSpec,
    repeats: list[int],
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    instruments: bool = True,
    data: PreparedData | None = None,
    mode: str = "inprocess",
) -> Iterator[Result]:
    """Measure `spec` once per repeat index in `repeats`, yielding each Result when done."""
    from voxmeter.measure.probes import Instruments
    from voxmeter.run.summary import summarize_repeat

    spec.validate()
    if spec.batch_size != 1:
        raise SpecError(f"batch_size: only 1 is measured so far (got {spec.batch_size})")
    if not spec.compression.is_none:
        # the spec carries the seam; measuring an uncompressed model under a compressed
        # label would be a lie, so refuse until the compression stage exists
        raise SpecError(
            f"compression: not implemented yet (got {spec.compression}); "
            "use precision=int8 for dynamic int8 quantization"
        )
    if not repeats:
        return
    data = data or prepare_data(spec)
    cache = default_cache_dir(cache_dir)
    source = resolve_model(spec.model, cache)
    t0 = time.perf_counter()
    engine = load_engine(spec, cache, source)
    load_s = time.perf_counter() - t0
    instr = Instruments(spec, enabled=instruments)
    try:
        for clip in data.clips[: spec.warmup]:
            run_clip(engine, clip, _forced_steps(engine, source, clip), instr.off())
        counted = count_pass(engine, source, data) if instruments else None
        for r in repeats:
            instr.begin_repeat()
            recs = []
            for i, clip in enumerate(data.clips):
                recs.append(run_clip(engine, clip, _forced_steps(engine, source, clip), instr))
                if progress:
                    progress(clip.id, i + 1, len(data.clips))
            window = instr.end_repeat()
            metrics, warnings = summarize_repeat(spec, engine, source, data, recs, window, counted)
            metrics["load_s"] = load_s
            yield Result(
                spec_hash=spec.spec_hash,
                spec=spec.to_dict(),
                repeat=r,
                metrics=metrics,
                clips=recs,
                env=instr.environment(),
                warnings=warnings,
                mode=mode,
            )
    finally:
        instr.close()
        engine.close()


def count_pass(engine: Engine, source: ModelSource, data: PreparedData) -> dict | None:
    """Count FLOPs per stage on a few clips (hf engine only), untimed; None where impossible."""
    from voxmeter.measure.flops import count_flops

    if engine.name != "hf":
        return None
    enc_total = dec_total = 0.0
    shapes = []
    engine.count_mode = True
    try:
        for clip in data.clips[:COUNT_CLIPS]:
            feats = engine.features(clip.audio)
            enc_c = count_flops(engine.encode, feats)
            enc = enc_c.result
            steps = _forced_steps(engine, source, clip)
            dec_c = count_flops(engine.decode, enc, steps)
            out = dec_c.result
            enc_total += enc_c.total
            dec_total += dec_c.total
            shapes.append(
                dict(
                    n_frames=int(feats.shape[-1]),
                    decoder_positions=enc.decoder_positions,
                    kv_projected=enc.kv_projected,
                    n_steps=len(out.tokens) + (0 if out.hit_max_length else 1),
                )
            )
    finally:
        engine.count_mode = False
    n = len(shapes)
    return {"enc": enc_total / n, "dec": dec_total / n, "shapes": shapes}
