"""The workloads a repeat runs: short clips in batches, and long recordings.

A batch really runs as one tensor through each stage (the engines' stages take batches); each
clip of a batch records what it waited for, the batch's stage times, so per-clip latency at
batch B is the batch's latency, and throughput and RTFx count each batch once. A batch runs
at its longest clip's input length; the frames batching adds beyond each clip's own input
are stated (`padding_share`).

A recording over 30 s goes through engines.longform: Whisper's sequential algorithm, or VAD
chunks decoded in batches (spec.workload.longform). Its audio is streamed from disk window by
window; its record holds one timed record per window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from voxmeter.engines.common import encode_batch
from voxmeter.engines.longform import (
    DECODING_NOTE,
    ArrayAudio,
    transcribe_batched,
    transcribe_pooled,
    transcribe_sequential,
)

HOP = 160


def batches(clips: list[Any], size: int) -> list[list[Any]]:
    """Clips in data-set order, `size` at a time (the last batch may be smaller)."""
    return [clips[i : i + size] for i in range(0, len(clips), size)]


def batch_frames(engine: Any, clips: list[Any]) -> int:
    """The input length a batch runs at: the spec's frames, or the longest clip's fit."""
    return max(engine.n_frames(len(c.audio)) for c in clips)


def run_stages(
    engine: Any, audios: list, n_frames: int | None, steps: int | None, instr: Any, rec: dict
) -> dict[str, Any]:
    """A batch through the engine's stages in order, each timed into `rec`; every output."""
    x: Any = audios
    outs: dict[str, Any] = {}
    for stage in engine.stages:
        fn = getattr(engine, stage.method)
        with instr.stage(stage.key, rec):
            if stage.key == "feat":
                x = fn(x, n_frames)
            elif stage.key == "dec" and steps is not None:
                x = fn(x, steps)
            else:
                x = fn(x)
        outs[stage.key] = x
    return outs


def clip_record(
    clip: Any, out: Any, outs: dict[str, Any], n_frames: int | None = None
) -> dict[str, Any]:
    """What one short clip's decoding left: its text and the shapes it ran (for FLOPs);
    n_frames: the input it ran at, when not that of the batch's features."""
    enc = outs["enc"]
    rec = dict(
        id=clip.id,
        duration_s=clip.duration_s,
        notes=clip.notes,
        ref=clip.text,
        hyp=out.text,
        n_tokens=len(out.tokens),
        n_steps=len(out.tokens) + (0 if out.hit_max_length else 1),
        hit_max_length=out.hit_max_length,
        n_frames=int(outs["feat"].shape[-1]) if n_frames is None else n_frames,
        computed_positions=enc.computed_positions,
        decoder_positions=enc.decoder_positions,
        kv_projected=enc.kv_projected,
    )
    if out.prefill_ms is not None:
        rec["prefill_ms"] = out.prefill_ms
    return rec


def run_batch(
    engine: Any, clips: list[Any], steps: int | None, instr: Any, batch_index: int
) -> list[dict]:
    """One batch of short clips through the engine's stages; one record per clip."""
    timing: dict[str, Any] = {}
    n_frames = batch_frames(engine, clips)
    # one tensor, or the encoder in parts (workload.encoder_batch; engines.common.encode_batch)
    item_frames, enc = encode_batch(engine, [c.audio for c in clips], n_frames, instr.stage, timing)
    with instr.stage("dec", timing):
        dec = engine.decode(enc) if steps is None else engine.decode(enc, steps)
    outs = {"enc": enc, "dec": dec}
    stage_ms = {f"{s.key}_ms": timing[f"{s.key}_ms"] for s in engine.stages}
    mem = {k: v for k, v in timing.items() if k.endswith("_mem_mb")}
    batch_ms = sum(stage_ms.values())
    # the padding batching adds: up to the longest clip's input, beyond each clip's own
    # (at a fixed frames=T every clip runs at T alone too, so a batch adds none)
    own_frames = sum(engine.n_frames(len(c.audio)) for c in clips)
    padding = 1 - min(1.0, own_frames / sum(item_frames))
    recs = []
    for clip, out, frames in zip(clips, outs["dec"], item_frames):
        rec = clip_record(clip, out, outs, frames)
        rec.update(
            stage_ms,
            **mem,
            batch=batch_index,
            batch_size=len(clips),
            batch_padding_share=padding,
            e2e_ms=batch_ms,  # a clip's result is there when its batch is
        )
        recs.append(rec)
    return recs


def _open(clip: Any) -> Any:
    return clip.stream() if clip.audio is None else ArrayAudio(clip.audio)


def _close(audio: Any) -> None:
    close = getattr(audio, "close", None)
    if callable(close):
        close()


def run_recording(engine: Any, clip: Any, instr: Any, speech_chunks: Callable | None) -> dict:
    """One long recording, streamed, through the spec's long-form strategy; one record."""
    w = engine.spec.workload
    audio = _open(clip)
    try:
        if w.longform == "batched":
            assert speech_chunks is not None
            out = transcribe_batched(
                engine, audio, instr.stage, speech_chunks, engine.spec.batch_size
            )
        else:
            out = transcribe_sequential(
                engine,
                audio,
                instr.stage,
                condition_on_previous_text=w.condition_on_previous_text,
            )
    finally:
        _close(audio)
    return recording_record(engine, clip, out)


def run_recordings_pooled(
    engine: Any, clips: list[Any], instr: Any, speech_chunks: Callable
) -> list[dict]:
    """Long recordings whose VAD chunks share batches (spec.workload.pool_recordings; see
    engines.longform.transcribe_pooled); one record per recording, one stream open at a time."""

    def streams() -> Iterator[Any]:
        for clip in clips:
            audio = _open(clip)
            try:
                yield audio
            finally:
                _close(audio)

    outs = transcribe_pooled(engine, streams(), instr.stage, speech_chunks, engine.spec.batch_size)
    return [recording_record(engine, c, o) for c, o in zip(clips, outs)]


def recording_record(engine: Any, clip: Any, out: Any) -> dict:
    """The record of one recording's long-form output: its text, segments and windows."""
    w = engine.spec.workload
    # every engine stage, at 0 where no window ran it (no speech; or, pooled, batches begun by
    # earlier recordings); the VAD only where it ran
    stage_keys = [s.key for s in engine.stages] + ["vad"]
    totals = {
        f"{k}_ms": sum(win.get(f"{k}_ms", 0.0) for win in out.windows)
        for k in stage_keys
        if k != "vad" or any("vad_ms" in win for win in out.windows)
    }
    decoded = [win for win in out.windows if "n_frames" in win]
    rec = dict(
        totals,
        id=clip.id,
        duration_s=clip.duration_s,
        notes=clip.notes,
        ref=clip.text,
        hyp=out.text,
        longform=w.longform,
        decoding=DECODING_NOTE,
        windows=out.windows,
        n_windows=len(decoded),
        n_windows_flagged=sum(1 for win in decoded if win.get("flags")),
        n_tokens=sum(win["n_tokens"] for win in decoded),
        n_steps=sum(win["n_steps"] for win in decoded),
        hit_max_length=any(win["hit_max_length"] for win in decoded),
        segments=[[s.start_s, s.end_s, s.text] for s in out.segments],
    )
    rec["e2e_ms"] = sum(totals.values())
    if decoded and all("prefill_ms" in win for win in decoded):
        rec["prefill_ms"] = sum(win["prefill_ms"] for win in decoded)
    return rec


def speech_chunker(spec: Any) -> tuple[Callable, str]:
    """The VAD chunking of spec.workload's settings, as a function of a stream, and which
    Silero model runs it (the two published ONNX files give different segments)."""
    from voxmeter.audio import vad

    s = spec.workload.vad_settings()
    model = vad.SileroVad()
    fn = vad.chunker(
        threshold=s.threshold,
        min_silence_ms=s.min_silence_ms,
        speech_pad_ms=s.speech_pad_ms,
        max_segment_s=s.max_segment_s,
        model=model,
    )
    return fn, f"Silero VAD {Path(model.path).name} (sha256 {model.digest[:12]})"
