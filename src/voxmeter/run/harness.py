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

from voxmeter.assets.bundled import ModelSource, default_cache_dir
from voxmeter.engines import Engine
from voxmeter.errors import DataError
from voxmeter.result import Result
from voxmeter.run.model import prepare_weights  # noqa: F401 (its callers import it here)
from voxmeter.spec import RunSpec

COUNT_CLIPS = 3  # clips in the FLOPs counting pass
MB = 1024 * 1024


@dataclass
class PreparedClip:
    id: str
    audio: np.ndarray | None  # None for a long recording, which is streamed from disk
    text: str
    duration_s: float
    notes: list[str]
    long: Any = None  # data.datasets' handle of a recording over 30 s (its `stream()`)

    @property
    def is_long(self) -> bool:
        return self.long is not None

    def stream(self) -> Any:
        return self.long.stream()


@dataclass
class PreparedData:
    name: str
    clips: list[PreparedClip]
    skipped: list[tuple[str, str]]  # (clip id, reason)
    dataset: Any = None  # the data.manifest.Dataset the clips came from (for its digest)
    unreferenced: int = 0  # clips without a reference: a cost-only run, no WER (references.py)


def prepare_data(spec: RunSpec) -> PreparedData:
    """Load and validate every clip before any timing; bad clips are reported and skipped."""
    from voxmeter.data.datasets import iter_audio, load_dataset
    from voxmeter.run.references import check_references

    ds = load_dataset(spec.data)
    unreferenced = check_references(spec, ds)
    clips: list[PreparedClip] = []
    skipped: list[tuple[str, str]] = []
    for clip, loaded in iter_audio(ds):
        if isinstance(loaded, Exception):
            skipped.append((clip.id, str(loaded)))
            continue
        notes = []
        if getattr(loaded, "resampled", False):
            notes.append(f"resampled from {loaded.orig_sample_rate} Hz")
        if getattr(loaded, "mixed_down", False):
            notes.append(f"mixed down from {loaded.orig_channels} channels")
        if hasattr(loaded, "stream"):  # over 30 s: streamed window by window, never loaded
            notes.append("long-form")
            clips.append(
                PreparedClip(clip.id, None, clip.text, loaded.duration_s, notes, long=loaded)
            )
        else:
            clips.append(PreparedClip(clip.id, loaded.samples, clip.text, loaded.duration_s, notes))
        if spec.max_clips and len(clips) >= spec.max_clips:
            break
    if not clips:
        first = f" (first: {skipped[0][1]})" if skipped else ""
        raise DataError(f"data {spec.data!r}: no usable clips{first}")
    return PreparedData(ds.name, clips, skipped, ds, unreferenced)


def _forced_steps(engine: Engine, source: ModelSource, clip: PreparedClip) -> int | None:
    """Cost-only models have random weights: decode as many steps as the reference needs."""
    if source.has_weights:
        return None
    n = len(engine.tokenizer.encode(clip.text)) if engine.tokenizer.available else 0
    return max(1, n or round(clip.duration_s * 3)) + 1


def run_clip(engine: Engine, clip: PreparedClip, steps: int | None, instr: Any) -> dict:
    """One clip (a batch of one) through the engine's stages, each in a timing and memory
    window."""
    from voxmeter.run.workloads import clip_record, run_stages

    timing: dict[str, Any] = {}
    outs = run_stages(engine, [clip.audio], None, steps, instr, timing)
    rec = dict(timing, **clip_record(clip, outs["dec"][0], outs))
    rec["e2e_ms"] = sum(rec[f"{stage.key}_ms"] for stage in engine.stages)
    return rec


def prefill_pass(engine: Engine, data: PreparedData) -> dict[str, float] | None:
    """Per-clip decoder prefill for engines that cannot time it inside decode (ct2): one
    features + encode + first-token decode per clip, untimed and outside every window."""
    measure = getattr(engine, "prefill_ms", None)
    if not callable(measure):
        return None
    out = {}
    for clip in data.clips:
        if clip.audio is not None:  # a long recording is streamed, never one batch
            out[clip.id] = float(measure(engine.encode(engine.features([clip.audio]))))
    return out


@dataclass
class _OpenRun:
    """What every repeat of one run shares: the loaded model, the data, the instruments."""

    spec: RunSpec
    engine: Engine
    source: ModelSource
    data: PreparedData
    instr: Any
    ident: Any
    chunker: Callable | None
    vad_model: str | None
    load_s: float | None  # loaded once per run: the first repeat carries it
    one_off: dict[str, float]  # convert, digest and compress seconds: the first repeat's

    def close(self) -> None:
        self.instr.close()
        self.engine.close()


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
    """Measure `spec` once per repeat index in `repeats`, yielding each Result when done.

    A stream spec is not measured here: stream/run.py measures it (run never imports
    stream); its callers choose, as `voxmeter stream` and the sweep's isolated runner do."""
    spec.validate()
    if not repeats:
        return
    if spec.stream.enabled:
        raise ValueError(
            f"spec {spec.spec_hash} ({spec.label()}) is a live stream: measure it with "
            "voxmeter.stream.run.run_stream_spec (or stream.isolate in a child process)"
        )
    run = _open_run(spec, default_cache_dir(cache_dir), data, progress, instruments)
    try:
        warm_up(run.engine, run.source, run.data, run.instr.off(), run.chunker)
        counted = count_pass(run.engine, run.source, run.data) if instruments else None
        prefill = prefill_pass(run.engine, run.data) if spec.batch_size == 1 else None
        for r in repeats:
            yield _measure_repeat(run, r, counted, prefill, progress, mode)
    finally:
        run.close()


def _open_run(
    spec: RunSpec,
    cache: Path,
    data: PreparedData | None,
    progress: Callable[[str, int, int], None] | None,
    instruments: bool,
) -> _OpenRun:
    """Data prepared, identity taken, model opened (run/model.py), instruments ready."""
    from voxmeter.identity import FileDigests
    from voxmeter.measure.probes import Instruments
    from voxmeter.run.identify import identity_of
    from voxmeter.run.model import open_model, resolve_checked

    data = data or prepare_data(spec)
    source = resolve_checked(spec, cache)  # before any work starts
    files = FileDigests(cache)
    ident = identity_of(spec, cache, source, data.dataset, files)
    opened = open_model(spec, cache, source=source, progress=progress)
    one_off = {
        "convert_s": opened.convert_s,
        "digest_s": files.hashed_s,
        "compress_s": opened.compress_s,
    }
    chunker, vad_model = None, None
    try:
        instr = Instruments(spec, enabled=instruments)
        if any(c.is_long for c in data.clips) and spec.workload.longform == "batched":
            from voxmeter.run.workloads import speech_chunker

            chunker, vad_model = speech_chunker(spec)
    except BaseException:
        opened.engine.close()
        raise
    return _OpenRun(
        spec,
        opened.engine,
        opened.source,
        data,
        instr,
        ident,
        chunker,
        vad_model,
        opened.load_s,
        one_off,
    )


PREFILL_METHODS = (
    "timed inside decode, up to the first token's logits",
    "one first-token generate per clip, in an untimed pass before the repeats",
)


def _measure_repeat(
    run: _OpenRun,
    r: int,
    counted: dict | None,
    prefill: dict[str, float] | None,
    progress: Callable[[str, int, int], None] | None,
    mode: str,
) -> Result:
    """One repeat over the data, summarised into its Result."""
    from voxmeter.run.summary import summarize_repeat

    spec, instr = run.spec, run.instr
    instr.begin_repeat()
    t0 = time.perf_counter()
    recs = run_repeat(run.engine, run.source, run.data, instr, run.chunker, progress)
    wall_s = time.perf_counter() - t0
    window = instr.end_repeat()
    if prefill is not None:
        for rec in recs:
            if rec["id"] in prefill:
                rec["prefill_ms"] = prefill[rec["id"]]
    metrics, warnings = summarize_repeat(
        spec, run.engine, run.source, run.data, recs, window, counted
    )
    if run.load_s is not None:
        metrics["load_s"] = run.load_s
        run.load_s = None
    metrics["prefill_method"] = PREFILL_METHODS[prefill is not None]
    # the repeat's wall clock (what a caller of a whole transcribe call times): RTFx counts
    # the stages only, this also counts the Python between them, streaming audio from disk
    # and the instruments
    metrics["wall_s"] = wall_s
    metrics["rtfx_wall"] = metrics["audio_s"] / wall_s if wall_s > 0 else None
    if run.vad_model:
        metrics["vad_model"] = run.vad_model
    metrics.update({k: v for k, v in run.one_off.items() if v > 0})
    run.one_off = {}
    res = Result(
        spec_hash=spec.spec_hash,
        spec=spec.to_dict(),
        repeat=r,
        metrics=metrics,
        clips=recs,
        env=instr.environment(),
        warnings=warnings,
        mode=mode,
        skipped=[{"id": cid, "reason": why} for cid, why in run.data.skipped],
    )
    return res.with_identity(run.ident)


def run_repeat(
    engine: Engine,
    source: ModelSource,
    data: PreparedData,
    instr: Any,
    chunker: Callable | None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict]:
    """One pass over the data: short clips at the spec's batch size, long ones streamed."""
    from voxmeter.run.workloads import (
        batches,
        run_batch,
        run_recording,
        run_recordings_pooled,
    )

    b = engine.spec.batch_size
    recs: list[dict] = []
    short = [c for c in data.clips if not c.is_long]
    for i, batch in enumerate(batches(short, b)):
        if b == 1:
            recs.append(run_clip(engine, batch[0], _forced_steps(engine, source, batch[0]), instr))
        else:
            steps = _forced_steps(engine, source, batch[0])
            recs += run_batch(engine, batch, steps, instr, i)
        if progress:
            progress(batch[-1].id, len(recs), len(data.clips))
    long = [c for c in data.clips if c.is_long]
    if long and engine.spec.workload.pool_recordings:
        recs += run_recordings_pooled(engine, long, instr, chunker)
        if progress:
            progress(long[-1].id, len(recs), len(data.clips))
        return recs
    for clip in long:
        recs.append(run_recording(engine, clip, instr, chunker))
        if progress:
            progress(clip.id, len(recs), len(data.clips))
    return recs


def warm_up(
    engine: Engine, source: ModelSource, data: PreparedData, instr: Any, chunker: Callable | None
) -> None:
    """Untimed: the first batch of short clips, or the first 30 s of the first recording."""
    from voxmeter.engines.longform import ArrayAudio, transcribe_sequential
    from voxmeter.run.workloads import run_batch

    if engine.spec.warmup < 1:
        return
    short = [c for c in data.clips if not c.is_long]
    b = engine.spec.batch_size
    if short and b == 1:
        for clip in short[: engine.spec.warmup]:
            run_clip(engine, clip, _forced_steps(engine, source, clip), instr)
    elif short:
        run_batch(engine, short[:b], _forced_steps(engine, source, short[0]), instr, -1)
    else:
        stream = data.clips[0].stream()
        try:
            head = stream.read(0, 30 * 16000)
        finally:
            getattr(stream, "close", lambda: None)()
        transcribe_sequential(engine, ArrayAudio(head), instr.stage)


def count_pass(engine: Engine, source: ModelSource, data: PreparedData) -> dict | None:
    """Count FLOPs per stage on a few clips (hf engine only), untimed; None where impossible."""
    from voxmeter.measure.flops import count_flops

    if engine.name != "hf":
        return None
    enc_total = dec_total = 0.0
    shapes = []
    engine.count_mode = True
    try:
        for clip in [c for c in data.clips if c.audio is not None][:COUNT_CLIPS]:
            feats = engine.features([clip.audio])  # a batch of one
            enc_c = count_flops(engine.encode, feats)
            enc = enc_c.result
            steps = _forced_steps(engine, source, clip)
            dec_c = count_flops(engine.decode, enc, steps)
            (out,) = dec_c.result
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
    if n == 0:
        return None
    return {"enc": enc_total / n, "dec": dec_total / n, "shapes": shapes}
