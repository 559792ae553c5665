"""Long recordings, written once over any engine's batch stages.

Sequential (`transcribe_sequential`) is Whisper's own algorithm, as openai-whisper's
`transcribe` runs it at temperature 0: a window of audio at `seek`, decoded with timestamp
tokens under the timestamp rules; the tokens between consecutive timestamps are segments; when
the window ends on a single timestamp, the next window starts after this one, otherwise it
starts at the last complete segment's end. Differences from openai-whisper, each deliberate:
- No temperature fallback and no no-speech / log-probability thresholds: one greedy pass per
  window, so every figure is one decoding's cost. Each result says so.
- The log-mel is computed per window (the window's own normalisation), not over the whole
  recording, so a recording of hours is read from disk window by window and never held whole.
  For speech the normalisation maximum is almost always the same.
- xT applies to every window: a window is `frames` mel frames long (3000 with frames="fit"),
  and the last, shorter window runs as a short clip would: at the fitted length with silence
  padding under frames="fit", at `frames` otherwise (as openai-whisper and faster-whisper run
  every window at 3000). xV applies as for short clips.

Batched (`transcribe_batched`) is the VAD pipeline of faster-whisper's BatchedInferencePipeline
(Silero VAD finds speech; the speech segments, joined end to end without the silence between
them, make chunks of at most `max_segment_s`; see audio/vad.py), decoded `batch_size` chunks
at a time without timestamps; the texts are joined in order. VAD time is a stage of its own and
counts in RTFx.

The audio comes from any object with `n_samples` and `read(start, n)` (non-decreasing starts):
`audio.io.AudioStream` for files, `ArrayAudio` for samples already in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voxmeter.spec import FULL_FRAMES

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame
INPUT_STRIDE = 2  # mel frames per encoder position, i.e. per timestamp step
TIME_PRECISION = INPUT_STRIDE * HOP / SAMPLE_RATE  # 0.02 s per timestamp token
DECODING_NOTE = "greedy at temperature 0; no temperature fallback, no no-speech threshold"

# stage(key, record) -> a context manager that times one stage into the record
StageTimer = Callable[[str, dict], AbstractContextManager]


class Audio(Protocol):
    n_samples: int

    def read(self, start: int, n: int) -> np.ndarray: ...


@dataclass
class ArrayAudio:
    """Samples already in memory, behind the stream interface."""

    samples: np.ndarray

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    def read(self, start: int, n: int) -> np.ndarray:
        return self.samples[start : start + n]


@dataclass
class Segment:
    start_s: float
    end_s: float
    tokens: list[int]
    text: str


@dataclass
class LongformOutput:
    text: str
    segments: list[Segment] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)  # one timed record each


def window_frames(axes_frames: int | str) -> int:
    """Mel frames per window: the spec's frames, or 3000 with frames="fit"."""
    return FULL_FRAMES if axes_frames == "fit" else int(axes_frames)


def fit_frames(n_samples: int, fit_step_s: float, limit: int) -> int:
    """The fitted input length of a shorter last window (as a short clip's), <= limit."""
    from voxmeter.audio.features import frames_for

    return min(frames_for(n_samples, fit_step_s), limit)


def split_segments(
    tokens: list[int], ts_begin: int, time_offset: float, decode_text: Callable
) -> tuple[list[Segment], int | None, bool]:
    """Segments of one window's tokens (openai-whisper's rules), the seek advance in encoder
    positions of the last complete segment (None: none complete), and whether the window
    ended on a single timestamp."""
    is_ts = [t >= ts_begin for t in tokens]
    single_ending = len(is_ts) >= 2 and is_ts[-2:] == [False, True]
    consecutive = [i + 1 for i in range(len(is_ts) - 1) if is_ts[i] and is_ts[i + 1]]
    segments: list[Segment] = []
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        last = 0
        for cur in slices:
            part = tokens[last:cur]
            start, end = part[0] - ts_begin, part[-1] - ts_begin
            text_tokens = [t for t in part if t < ts_begin]
            segments.append(
                Segment(
                    time_offset + start * TIME_PRECISION,
                    time_offset + end * TIME_PRECISION,
                    text_tokens,
                    decode_text(text_tokens),
                )
            )
            last = cur
        advance = None if single_ending else tokens[last - 1] - ts_begin
        return segments, advance, single_ending
    stamps = [t - ts_begin for t, ts in zip(tokens, is_ts) if ts]
    text_tokens = [t for t in tokens if t < ts_begin]
    end = stamps[-1] * TIME_PRECISION if stamps and stamps[-1] > 0 else None
    if text_tokens:
        seg_end = time_offset + end if end is not None else float("nan")
        segments.append(Segment(time_offset, seg_end, text_tokens, decode_text(text_tokens)))
    return segments, None, True


def cap_segment_ends(segments: list[Segment], end_s: float) -> None:
    """End every segment by `end_s`, the end of the audio it was decoded from: a segment may
    end on a timestamp beyond the speech, or without one (NaN)."""
    for s in segments:
        if not np.isfinite(s.end_s) or s.end_s > end_s:
            s.end_s = end_s


def transcribe_sequential(
    engine: Any,
    audio: Audio,
    stage: StageTimer,
    *,
    condition_on_previous_text: bool = False,
) -> LongformOutput:
    """Whisper's sequential long-form algorithm over `engine`'s stages (see module doc)."""
    from voxmeter.assets.convert import special_ids
    from voxmeter.metrics import failure_flags

    axes = engine.spec.axes
    win = window_frames(axes.frames)
    ts_begin = special_ids(engine.dims)["no_timestamps"] + 1
    total_frames = -(-audio.n_samples // HOP)
    seek = 0
    out = LongformOutput("")
    history: list[int] = []
    while seek < total_frames:
        start = seek * HOP
        samples = audio.read(start, win * HOP)
        if len(samples) == 0:
            break
        seg_frames = min(win, total_frames - seek)
        last_fitted = seg_frames < win and axes.frames == "fit"
        n_frames = fit_frames(len(samples), axes.fit_step_s, win) if last_fitted else win
        rec: dict[str, Any] = {
            "start_s": start / SAMPLE_RATE,
            "duration_s": len(samples) / SAMPLE_RATE,
        }
        prefixes = [history] if condition_on_previous_text and history else None
        with stage("feat", rec):
            feats = engine.features([samples], n_frames)
        with stage("enc", rec):
            enc = engine.encode(feats)
        with stage("dec", rec):
            (res,) = engine.decode(enc, timestamps=True, prefixes=prefixes)
        time_offset = start / SAMPLE_RATE
        segments, advance, single_ending = split_segments(
            res.tokens, ts_begin, time_offset, engine.tokenizer.decode
        )
        cap_segment_ends(segments, time_offset + len(samples) / SAMPLE_RATE)
        text = " ".join(s.text for s in segments if s.text).strip()
        rec.update(
            n_frames=int(feats.shape[-1]),
            n_tokens=len(res.tokens),
            n_steps=len(res.tokens) + (0 if res.hit_max_length else 1),
            hit_max_length=res.hit_max_length,
            computed_positions=enc.computed_positions,
            decoder_positions=enc.decoder_positions,
            kv_projected=enc.kv_projected,
            text=text,
            n_segments=len(segments),
            flags=failure_flags(text, rec["duration_s"], None, res.hit_max_length),
        )
        if res.prefill_ms is not None:
            rec["prefill_ms"] = res.prefill_ms
        out.windows.append(rec)
        out.segments += segments
        history += [t for s in segments for t in s.tokens]
        if single_ending or advance is None or advance <= 0:
            seek += seg_frames
        else:
            seek += min(advance * INPUT_STRIDE, seg_frames)  # never backwards, never past
    return _finish(out)


class SpeechChunk(Protocol):
    """What the batched path needs of a VAD chunk (`audio.vad.Chunk`)."""

    @property
    def start_s(self) -> float: ...

    @property
    def end_s(self) -> float: ...

    def read(self, audio: Audio) -> np.ndarray: ...


def chunk_batches(chunks: list[SpeechChunk], batch_size: int) -> Iterator[list[SpeechChunk]]:
    for i in range(0, len(chunks), batch_size):
        yield chunks[i : i + batch_size]


def decode_pieces(
    engine: Any, pieces: list[np.ndarray], start_s: float, stage: StageTimer
) -> tuple[dict[str, Any], list[Any]]:
    """One batch of speech pieces through features, encoder and decoder, each timed; its
    window record and the decoder's outputs, in the pieces' order."""
    from voxmeter.engines.common import encode_batch
    from voxmeter.metrics import failure_flags

    axes = engine.spec.axes
    win = window_frames(axes.frames)
    longest = max(len(p) for p in pieces)
    n_frames = fit_frames(longest, axes.fit_step_s, win) if axes.frames == "fit" else win
    rec: dict[str, Any] = {
        "start_s": start_s,
        "duration_s": sum(len(p) for p in pieces) / SAMPLE_RATE,
        "batch": len(pieces),
    }
    item_frames, enc = encode_batch(engine, pieces, n_frames, stage, rec)
    with stage("dec", rec):
        results = engine.decode(enc)
    if len(set(item_frames)) > 1:  # encoder parts at their own lengths (workload.encoder_batch)
        rec["item_frames"] = item_frames
    rec.update(
        n_frames=max(item_frames),
        n_tokens=sum(len(r.tokens) for r in results),
        n_steps=max(len(r.tokens) + (0 if r.hit_max_length else 1) for r in results),
        hit_max_length=any(r.hit_max_length for r in results),
        computed_positions=enc.computed_positions,
        decoder_positions=enc.decoder_positions,
        kv_projected=enc.kv_projected,
        text=" ".join(r.text for r in results if r.text),
        padding_share=1 - sum(len(p) for p in pieces) / (sum(item_frames) * HOP),
        flags=sorted(
            {
                f
                for p, r in zip(pieces, results)
                for f in failure_flags(r.text, len(p) / SAMPLE_RATE, None, r.hit_max_length)
            }
        ),
    )
    if results and results[0].prefill_ms is not None:
        rec["prefill_ms"] = results[0].prefill_ms
    return rec, results


def _vad(audio: Audio, stage: StageTimer, speech_chunks: Callable) -> tuple[dict, list]:
    rec: dict[str, Any] = {"start_s": 0.0, "duration_s": audio.n_samples / SAMPLE_RATE}
    with stage("vad", rec):
        chunks = speech_chunks(audio)
    rec.update(n_chunks=len(chunks), kind="vad")
    return rec, chunks


def _finish(out: LongformOutput) -> LongformOutput:
    out.text = " ".join(s.text for s in out.segments if s.text).strip()
    return out


def transcribe_batched(
    engine: Any,
    audio: Audio,
    stage: StageTimer,
    speech_chunks: Callable[[Audio], list[SpeechChunk]],
    batch_size: int,
) -> LongformOutput:
    """VAD chunks of at most max_segment_s, decoded batch_size at a time (see module doc)."""
    return transcribe_pooled(engine, [audio], stage, speech_chunks, batch_size)[0]


def transcribe_pooled(
    engine: Any,
    audios: Iterable[Audio],
    stage: StageTimer,
    speech_chunks: Callable[[Audio], list[SpeechChunk]],
    batch_size: int,
) -> list[LongformOutput]:
    """Batched long-form over several recordings whose VAD chunks share batches.

    The recordings are taken in order, one open at a time: each one's VAD runs, then its
    chunks join a queue of pending pieces, and every time the queue holds batch_size pieces
    they are decoded as one batch, whichever recordings they came from (as the transformers
    pipeline batches the chunks of a list of inputs; faster-whisper's pipeline batches one
    file's chunks). At most batch_size - 1 pieces wait between recordings, so memory stays
    bounded whatever the number of recordings.

    A batch's window record goes to the recording of its first piece; one that spans several
    has `pooled`, the pieces each had in it, keyed by offset from that recording ("0": its
    own, "1": the next one's). Each batch's time is so counted once, and a pooled recording's
    own e2e time is that of the batches it begins, not its latency. One recording alone is
    exactly `transcribe_batched`.
    """
    outs: list[LongformOutput] = []
    pending: list[tuple[int, SpeechChunk, np.ndarray]] = []

    def flush() -> None:
        first = pending[0][0]
        rec, results = decode_pieces(
            engine, [p for _, _, p in pending], pending[0][1].start_s, stage
        )
        counts: dict[int, int] = {}
        for (i, c, _), r in zip(pending, results):
            outs[i].segments.append(Segment(c.start_s, c.end_s, r.tokens, r.text))
            counts[i] = counts.get(i, 0) + 1
        if len(counts) > 1:
            rec["pooled"] = {str(i - first): n for i, n in counts.items()}
        outs[first].windows.append(rec)
        pending.clear()

    for audio in audios:
        outs.append(LongformOutput(""))
        vad_rec, chunks = _vad(audio, stage, speech_chunks)
        outs[-1].windows.append(vad_rec)
        for c in chunks:
            pending.append((len(outs) - 1, c, c.read(audio)))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return [_finish(o) for o in outs]
