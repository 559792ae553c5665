"""Feeding recorded audio through a session as a live stream, and what a listener would have
seen when: the trace every streaming figure is computed from.

Two clocks, as whisper_streaming reports them:
- computation-aware: audio arrives at real-time pace; a step starts when its chunk has arrived
  and the previous step has finished, and whatever arrived meanwhile goes in with it (a stream
  that falls behind gets longer chunks, never a queue). A step's output is seen when it ends.
  With `realtime` this is the wall clock (the run takes as long as the audio); without it, a
  simulated clock advanced by each step's measured compute time, so the run goes as fast as
  the machine can and the latencies are still those a live user would have seen. A step's
  compute is the voice-activity detector's work on its chunk (Silero, with --vad) plus the
  session's step (features, encoder, decoder, policy).
- computation-unaware: the same steps, their output seen the moment their audio arrived
  (compute taken as zero): the lower bound the policy alone imposes.

Resident memory is sampled every `rss_every_s` of stream time, for the long-session drift,
with what the trace itself holds at that moment beside it (`own`): the replay's record grows
with the session (~2.5 MiB an hour of 500 ms steps), and that growth is the measurement's,
not the session's (a server keeps no trace).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from voxmeter.stream.policy import Word
from voxmeter.stream.session import SAMPLE_RATE, StreamSession

MB = 1024 * 1024


@dataclass(slots=True)
class StepRecord:
    audio_s: float  # stream time of the audio received when the step ran
    t_aware: float  # when its output was seen, computation-aware (stream seconds)
    t_unaware: float  # the same, computation-unaware
    compute_s: float
    buffer_s: float
    n_frames: int
    committed: list[Word]
    partial: list[Word]  # emptied once the next step is recorded (the trace stays small)
    final: bool
    revised: int = 0  # words of the previous partial this step replaced or withdrew
    shows_text: bool = False  # any committed or partial text was on screen after this step


@dataclass
class Trace:
    steps: list[StepRecord]
    audio_s: float
    wall_s: float
    realtime: bool
    forced_trims: int
    looped_steps: int = 0
    rss: list[tuple[float, float]] = field(default_factory=list)  # (stream s, MiB)
    buffer_s_max: float = 0.0
    own: list[tuple[float, float]] = field(default_factory=list)  # (stream s, trace MiB)
    relaxed_words: int = 0  # committed by the policy's relax_s (two hypotheses agreed)
    unagreed_words: int = 0  # committed by the policy's max_wait_s (no agreement)

    @property
    def committed(self) -> list[tuple[Word, float, float]]:
        """Every committed word with when it was seen (aware, unaware)."""
        return [(w, s.t_aware, s.t_unaware) for s in self.steps for w in s.committed]

    @property
    def text(self) -> str:
        return " ".join(w.text for w, _, _ in self.committed)

    @property
    def compute_s(self) -> float:
        return sum(s.compute_s for s in self.steps)

    def nbytes(self) -> int:
        """What the trace itself holds (records, words, their texts), in bytes: the part of
        the replay process's RSS growth that is the measurement's, not the session's."""
        return sys.getsizeof(self.steps) + sum(record_bytes(s) for s in self.steps)


def record_bytes(rec: StepRecord) -> int:
    """Bytes one step's record holds: itself, its lists, its committed words and texts."""
    total = sys.getsizeof(rec) + sys.getsizeof(rec.committed) + sys.getsizeof(rec.partial)
    return total + sum(sys.getsizeof(w) + sys.getsizeof(w.text) for w in rec.committed)


class Clock:
    """The computation-aware clock: simulated, or the wall clock with real-time pacing."""

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self.t0 = time.perf_counter()
        self.sim = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.t0 if self.realtime else self.sim

    def wait_until(self, t: float) -> None:
        if self.realtime:
            delay = t - self.now()
            if delay > 0:
                time.sleep(delay)
        else:
            self.sim = max(self.sim, t)

    def spent(self, seconds: float) -> None:
        if not self.realtime:
            self.sim += seconds


def replay(
    session: StreamSession,
    audio: Any,
    *,
    realtime: bool = False,
    rss_every_s: float = 10.0,
    progress: Callable[[float, float], None] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> Trace:
    """Stream `audio` (anything with `n_samples` and `read(start, n)`) through `session`."""
    chunk = max(1, round(session.config.chunk_s * SAMPLE_RATE))
    total = int(audio.n_samples)
    proc = psutil.Process()
    clock = Clock(realtime)
    steps: list[StepRecord] = []
    rss: list[tuple[float, float]] = [(0.0, proc.memory_info().rss / MB)]
    own: list[tuple[float, float]] = [(0.0, 0.0)]
    own_bytes = 0  # record_bytes of every record but the last (whose partial is still held)
    next_rss = rss_every_s
    fed, buffer_max = 0, 0.0
    wall0 = time.perf_counter()
    while fed < total:
        arrived = int(clock.now() * SAMPLE_RATE)
        target = min(total, max(fed + chunk, arrived))
        clock.wait_until(target / SAMPLE_RATE)
        chunk_audio = audio.read(fed, target - fed)
        t0 = time.perf_counter()
        ended = session.insert_audio(chunk_audio)  # the VAD runs here: its time is compute
        vad_s = time.perf_counter() - t0
        fed = target
        buffer_max = max(buffer_max, session.buffer_s)
        step = session.finish_utterance() if ended else session.process()
        step.compute_s += vad_s
        clock.spent(step.compute_s)
        own_bytes += _append(steps, _record(step, fed, clock.now()), on_step)
        if fed / SAMPLE_RATE >= next_rss:
            rss.append((fed / SAMPLE_RATE, proc.memory_info().rss / MB))
            own.append((fed / SAMPLE_RATE, (own_bytes + sys.getsizeof(steps)) / MB))
            next_rss += rss_every_s
        if progress is not None:
            progress(fed / SAMPLE_RATE, total / SAMPLE_RATE)
    step = session.finish_utterance()
    clock.spent(step.compute_s)
    _append(steps, _record(step, fed, clock.now()), on_step)
    return Trace(
        steps=steps,
        audio_s=total / SAMPLE_RATE,
        wall_s=time.perf_counter() - wall0,
        realtime=realtime,
        forced_trims=session.forced_trims,
        looped_steps=session.looped_steps,
        rss=rss,
        buffer_s_max=buffer_max,
        own=own,
        relaxed_words=session.policy.n_relaxed,
        unagreed_words=session.policy.n_unagreed,
    )


def revisions(previous_partial: list[Word], rec: StepRecord) -> int:
    """Words of the previous partial result not shown at the same place after `rec`."""
    shown = [*rec.committed, *rec.partial]
    return sum(
        1 for i, w in enumerate(previous_partial) if i >= len(shown) or shown[i].key != w.key
    )


def _append(
    steps: list[StepRecord], rec: StepRecord, on_step: Callable[[StepRecord], None] | None
) -> int:
    """Record a step; the previous step's partial words are dropped once compared, so an
    hour's trace holds the committed transcript and a few numbers per step, not every
    partial (that would be the replay's own memory growth, read as the session's).
    Returns the bytes of the previous record, now final (record_bytes; 0 for the first)."""
    prev = steps[-1] if steps else None
    rec.revised = revisions(prev.partial if prev else [], rec)
    rec.shows_text = bool(rec.committed or rec.partial)
    if prev is not None:
        prev.partial = []
    steps.append(rec)
    if on_step is not None:
        on_step(rec)
    return record_bytes(prev) if prev is not None else 0


def _record(step: Any, fed: int, t_aware: float) -> StepRecord:
    return StepRecord(
        audio_s=fed / SAMPLE_RATE,
        t_aware=t_aware,
        t_unaware=fed / SAMPLE_RATE,
        compute_s=step.compute_s,
        buffer_s=step.buffer_s,
        n_frames=step.n_frames,
        committed=list(step.committed),
        partial=list(step.partial),
        final=step.final,
    )


@dataclass
class JoinedAudio:
    """Clips joined end to end with `gap_s` of silence after each, repeated until
    `duration_s` (0: once), generated on read: an hour-long stream never sits in memory."""

    clips: list[np.ndarray]
    gap_s: float = 2.0
    duration_s: float = 0.0
    offsets: list[tuple[int, int]] = field(init=False)  # (start sample, clip index)

    def __post_init__(self) -> None:
        gap = round(self.gap_s * SAMPLE_RATE)
        self._gap = gap
        limit = round(self.duration_s * SAMPLE_RATE)
        pos, out = 0, []
        full = False
        while not full:
            for i, c in enumerate(self.clips):
                if limit and pos + len(c) > limit:
                    full = True
                    break
                out.append((pos, i))
                pos += len(c) + gap
            full = full or not limit or not self.clips
        self.offsets = out
        self._n = limit if limit else pos

    @property
    def n_samples(self) -> int:
        return self._n

    def read(self, start: int, n: int) -> np.ndarray:
        end = min(start + n, self._n)
        out = np.zeros(max(0, end - start), dtype=np.float32)
        for pos, i in self.offsets:
            c = self.clips[i]
            a, b = max(start, pos), min(end, pos + len(c))
            if a < b:
                out[a - start : b - start] = c[a - pos : b - pos]
        return out

    def placements(self) -> list[tuple[float, int]]:
        """(start second, clip index) of every clip in the stream, in order."""
        return [(pos / SAMPLE_RATE, i) for pos, i in self.offsets]
