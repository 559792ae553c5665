"""Silero VAD over a stream, and the chunks of at most 30 s a batched long-form pipeline decodes.

`speech_probs` (per 32 ms frame, the audio streamed and never held whole), `speech_segments`
(thresholds, padding, over-long segments cut) and `collect_chunks` (speech joined into chunks
of at most `max_segment_s`), as faster-whisper's `get_speech_timestamps` and `collect_chunks`
do; `speech_chunks` runs all three. The differences from faster-whisper, what they were
measured to cost, and which Silero file runs: docs/streaming-notes.md, "audio/vad.py".
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from voxmeter.audio.io import SAMPLE_RATE, AudioStream
from voxmeter.errors import ModelError, SpecError

FRAME = 512  # samples per Silero VAD frame at 16 kHz
CONTEXT = 64  # samples of the previous frame the model sees with each frame
STATE_SHAPE = (1, 1, 128)
NEG_OFFSET = 0.15  # speech ends below threshold - NEG_OFFSET (faster-whisper's neg_threshold)
MAX_WINDOW_S = 30.0  # Whisper's window: no chunk may be longer
MODEL_FILES = (
    ("faster_whisper", "assets/silero_vad_v6.onnx"),
    ("silero_vad", "data/silero_vad_16k_sequence.onnx"),
)


class Readable(Protocol):
    """Audio behind a read interface: `AudioStream`, or samples already in memory."""

    def read(self, start: int, n: int) -> np.ndarray: ...


class Span(NamedTuple):
    """A stretch of the recording in seconds; unpacks as (start_s, end_s)."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class VadSettings:
    """How speech is found and chunked; every field is checked on construction (SpecError).

    threshold: speech probability in (0, 1) at which speech starts.
    min_silence_ms: how long (>= 0) the probability must stay low before speech ends.
    speech_pad_ms: padding (>= 0) added on each side of a speech segment.
    max_segment_s: the longest chunk, in (0, 30]: Whisper reads 30 s at a time.
    """

    threshold: float = 0.5
    min_silence_ms: float = 160
    speech_pad_ms: float = 400
    max_segment_s: float = MAX_WINDOW_S

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_number("threshold", self.threshold, 0.0, 1.0, low_open=True, high_open=True)
        _check_number("min_silence_ms", self.min_silence_ms, 0.0, math.inf)
        _check_number("speech_pad_ms", self.speech_pad_ms, 0.0, math.inf)
        _check_number("max_segment_s", self.max_segment_s, 0.0, MAX_WINDOW_S, low_open=True)


def _check_number(
    name: str, v: object, lo: float, hi: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if low_open else v >= lo) and (v < hi if high_open else v <= hi)  # type: ignore[operator]
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        span = f">= {lo:g}" if hi == math.inf else f"in {left}{lo:g}, {hi:g}{right}"
        raise SpecError(f"{name}: must be a finite number {span}, got {v!r}")


def find_silero(candidates: tuple[tuple[str, str], ...] = MODEL_FILES) -> Path:
    """The first Silero VAD sequence model found among installed packages; ModelError if none."""
    tried = []
    for package, rel in candidates:
        spec = importlib.util.find_spec(package)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            tried.append(f"{package} (not installed)")
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if path.is_file():
            return path
        tried.append(f"{package} (has no {rel})")
    raise ModelError(
        f"Silero VAD: no model file found (tried {', '.join(tried)}); "
        "install faster-whisper or silero-vad"
    )


@dataclass(frozen=True)
class VadState:
    """What carries from one block of frames to the next: the LSTM state and the context."""

    h: np.ndarray
    c: np.ndarray
    context: np.ndarray  # the last CONTEXT samples of the previous frame


class SileroVad:
    """Silero VAD (the 16 kHz sequence export) in ONNX Runtime, one CPU thread."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else find_silero()
        try:
            import onnxruntime as ort
            from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
        except ImportError:
            raise ModelError("Silero VAD needs onnxruntime: pip install onnxruntime") from None
        if not self.path.is_file():
            raise ModelError(f"Silero VAD: {self.path}: no such model file")
        self.digest = hashlib.sha256(self.path.read_bytes()).hexdigest()  # which weights ran
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except (ort_errors.Fail, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(
                f"Silero VAD: {self.path}: not a usable ONNX model ({reason})"
            ) from None
        names = {i.name: i.shape for i in self.session.get_inputs()}
        if set(names) != {"input", "h", "c"} or names["input"][-1] != FRAME + CONTEXT:
            raise ModelError(
                f"Silero VAD: {self.path}: expected the 16 kHz sequence export (inputs input "
                f"[n, {FRAME + CONTEXT}], h, c), found inputs {names}"
            )

    def initial_state(self) -> VadState:
        zeros = np.zeros(STATE_SHAPE, dtype=np.float32)
        return VadState(zeros, zeros.copy(), np.zeros(CONTEXT, dtype=np.float32))

    def frame_probs(self, frames: np.ndarray, state: VadState) -> tuple[np.ndarray, VadState]:
        """Speech probability of each row of `frames` (n x 512, in order), and the next state."""
        before = np.concatenate([state.context[None, :], frames[:-1, -CONTEXT:]])
        x = np.ascontiguousarray(np.concatenate([before, frames], axis=1), dtype=np.float32)
        probs, h, c = self.session.run(None, {"input": x, "h": state.h, "c": state.c})
        return np.asarray(probs, dtype=np.float32).reshape(-1), VadState(
            h, c, frames[-1, -CONTEXT:]
        )


def speech_probs(
    audio: Readable, model: SileroVad, block_s: float = 30.0
) -> tuple[np.ndarray, int]:
    """(probability per frame, samples read): `audio` read from sample 0 to its end.

    The last frame is completed with zeros. Blocks hold a whole number of frames, so the
    result does not depend on `block_s`.
    """
    n = max(1, round(block_s * SAMPLE_RATE / FRAME)) * FRAME
    state, out, pos = model.initial_state(), [], 0
    while len(x := audio.read(pos, n)):
        pos += len(x)
        if len(x) % FRAME:
            x = np.pad(x, (0, FRAME - len(x) % FRAME))
        p, state = model.frame_probs(x.reshape(-1, FRAME), state)
        out.append(p)
        if pos % FRAME:
            break  # a short read is the end of the audio
    return (np.concatenate(out) if out else np.zeros(0, dtype=np.float32)), pos


def speech_segments(probs: np.ndarray, n_samples: int, settings: VadSettings) -> list[Span]:
    """Speech segments from frame probabilities (see the module doc), in time order."""
    raw = _hysteresis(probs, n_samples, settings)
    padded = _pad(raw, n_samples, round(settings.speech_pad_ms * SAMPLE_RATE / 1000))
    limit = max(1, round(settings.max_segment_s * SAMPLE_RATE))
    pieces = [piece for a, b in padded for piece in _split(probs, a, b, limit)]
    return [Span(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in pieces]


def speech_off(threshold: float) -> float:
    """The probability below which speech that reached `threshold` counts as ended."""
    return max(threshold - NEG_OFFSET, 0.01)


def _hysteresis(probs: np.ndarray, n_samples: int, s: VadSettings) -> list[tuple[int, int]]:
    """Sample bounds of speech: from a frame at `threshold` to the first frame of a quiet run.

    A quiet run starts at a frame below the lower threshold and ends at the next frame back
    at `threshold`; speech ends once such a run has lasted `min_silence_ms`, which (as in
    faster-whisper) is checked at frames below the lower threshold.
    """
    on, off = s.threshold, speech_off(s.threshold)
    min_quiet = s.min_silence_ms * SAMPLE_RATE / 1000
    segments: list[tuple[int, int]] = []
    start: int | None = None
    quiet_from: int | None = None  # first frame below the lower threshold since speech
    for i, p in enumerate(probs.tolist()):
        if start is None:
            if p >= on:
                start, quiet_from = i, None
        elif p >= on:
            quiet_from = None
        elif p < off:
            quiet_from = i if quiet_from is None else quiet_from
            if (i - quiet_from) * FRAME >= min_quiet:
                segments.append((start * FRAME, quiet_from * FRAME))
                start = quiet_from = None
    if start is not None:  # speech runs to the end of the recording
        segments.append((start * FRAME, n_samples))
    return [(a, min(b, n_samples)) for a, b in segments if min(b, n_samples) > a]


def _pad(raw: list[tuple[int, int]], n_samples: int, pad: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for k, (a, b) in enumerate(raw):
        lo, hi = max(0, a - pad), min(n_samples, b + pad)
        if out and out[-1][1] > lo:  # the pads would overlap: meet in the middle of the gap
            mid = (raw[k - 1][1] + a) // 2
            out[-1] = (out[-1][0], mid)
            lo = mid
        out.append((lo, hi))
    return out


def _split(probs: np.ndarray, a: int, b: int, limit: int) -> list[tuple[int, int]]:
    """[a, b) in pieces of at most `limit` samples, each cut at the least speech-like frame
    boundary in the second half of the allowed span."""
    pieces = []
    while b - a > limit:
        first = -(-(a + limit // 2) // FRAME)  # frame boundaries k * FRAME in the second half
        last = (a + limit) // FRAME
        if first <= last:
            ks = np.arange(first, last + 1)
            cut = int(ks[::-1][np.argmin(probs[ks[::-1]])]) * FRAME  # ties: the latest
        else:
            cut = a + limit
        cut = cut if cut > a else a + limit
        pieces.append((a, cut))
        a = cut
    pieces.append((a, b))
    return pieces


class Chunk(NamedTuple):
    """Speech segments decoded as one piece of audio: their samples joined in order."""

    pieces: tuple[Span, ...]

    @property
    def start_s(self) -> float:
        return self.pieces[0].start_s

    @property
    def end_s(self) -> float:
        return self.pieces[-1].end_s

    @property
    def speech_s(self) -> float:
        """Seconds of audio the chunk holds (its span less the silence left out)."""
        return sum(p.duration_s for p in self.pieces)

    def read(self, audio: Readable) -> np.ndarray:
        """The chunk's samples from `audio` (pieces in order, so a stream reads forward)."""
        parts = [audio.read(a, b - a) for a, b in map(_samples, self.pieces)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _samples(span: Span) -> tuple[int, int]:
    """A span's sample bounds (spans are made from whole samples, so this is exact)."""
    return round(span.start_s * SAMPLE_RATE), round(span.end_s * SAMPLE_RATE)


def collect_chunks(segments: list[Span], max_segment_s: float) -> list[Chunk]:
    """Segments gathered in order into chunks of at most `max_segment_s` of speech.

    A segment that would take the chunk past the limit starts the next one; no segment is
    longer than the limit (`speech_segments` cuts them), so every chunk holds at least one.
    """
    limit = round(max_segment_s * SAMPLE_RATE)
    chunks: list[list[Span]] = []
    held = 0  # samples of speech in the last chunk
    for seg in segments:
        a, b = _samples(seg)
        n = b - a
        if not chunks or held + n > limit:
            chunks.append([])
            held = 0
        chunks[-1].append(seg)
        held += n
    return [Chunk(tuple(c)) for c in chunks]


def speech_chunks(
    audio: Readable, settings: VadSettings | None = None, model: SileroVad | None = None
) -> list[Chunk]:
    """Chunks of speech of at most `settings.max_segment_s`, in time order (steps 1-3).

    An `AudioStream` is not consumed: the VAD reads a stream of its own on the same file, so
    the caller's stream can still serve the chunks (the file is decoded twice: the cost of
    never holding it whole).
    """
    settings = settings or VadSettings()
    model = model or SileroVad()
    if isinstance(audio, AudioStream):
        with audio.reopen() as own:
            probs, n = speech_probs(own, model)
    else:
        probs, n = speech_probs(audio, model)
    return collect_chunks(speech_segments(probs, n, settings), settings.max_segment_s)


def chunker(
    threshold: float = 0.5,
    min_silence_ms: float = 160,
    speech_pad_ms: float = 400,
    max_segment_s: float = MAX_WINDOW_S,
    model: SileroVad | None = None,
) -> Callable[[Readable], list[Chunk]]:
    """`speech_chunks` with these settings, as a function of the audio alone.

    The settings are checked and the model is loaded here, once, so neither counts in the
    time of the calls (a harness times those as its VAD stage).
    """
    settings = VadSettings(threshold, min_silence_ms, speech_pad_ms, max_segment_s)
    return functools.partial(speech_chunks, settings=settings, model=model or SileroVad())
