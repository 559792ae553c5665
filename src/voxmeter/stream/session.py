"""One streaming session: an audio buffer that grows chunk by chunk, transcribed by any engine
after each chunk, with LocalAgreement deciding what to commit (whisper_streaming's
`OnlineASRProcessor`, over voxmeter's engine stages).

Each step transcribes the whole buffer with timestamp tokens, prompted with the committed text
before it; the buffer is cut at a committed segment end past `trim_s` (forced at
`max_buffer_s`, counted). With a VAD only speech reaches the buffer, and a pause of
`vad_silence_ms` finishes the utterance with one final pass. The options (`final_pass`,
`force_committed`, `step_pass`, `pause_cut_ms`), why their defaults are what they are, and
what each was measured to cost: docs/streaming-notes.md, "stream/session.py".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxmeter.audio.vad import speech_off
from voxmeter.spec import StreamSettings
from voxmeter.stream import TRIM_EVERY_S, release_heap
from voxmeter.stream.policy import LocalAgreement, Word

SAMPLE_RATE = 16000
PROMPT_TOKENS = 223  # n_text_ctx // 2 - 1, as Whisper's condition_on_previous_text uses
VAD_FRAME = 512
# generated tokens allowed per step: fast English speech is ~4 tokens/s plus two timestamps
# per segment; a looping hypothesis stops here instead of at 224 tokens (~1 s on 2 cores)
MIN_TOKENS = 12
TOKENS_PER_S = 7
# ~0.4 s of audio kept before detected speech (faster-whisper's VAD pads speech by 400 ms):
# Silero flags speech a few frames late, and with 0.2 s the first word was cut at times
PREROLL_FRAMES = 12
# a shorter buffer holds no word; on 0.13 s the model hallucinated a whole phrase
MIN_BUFFER_S = 0.3
# pause_cut_ms: a pause is a cut point once the committed words end this far past its middle
# (their times are interpolated over each segment's tokens, so a margin keeps an uncommitted
# word before the pause from being cut away)
PAUSE_MARGIN_S = 0.3


@dataclass
class Step:
    """What one processing step produced."""

    committed: list[Word]  # words committed by this step
    partial: list[Word]  # the uncommitted rest of the newest hypothesis
    compute_s: float  # wall time of the step (features, encoder, decoder, policy)
    buffer_s: float  # audio the model saw
    n_frames: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)
    final: bool = False  # an utterance (or the stream) ended here


def word_spans(pieces: Sequence[str]) -> list[tuple[int, int, str]]:
    """(first token, token past the last, text) of each word of a run of text tokens.
    `pieces[i]` is token i's text; a piece starting with a space starts a word."""
    out: list[tuple[int, int, str]] = []
    text, first = "", 0
    for i, piece in enumerate(pieces):
        if piece.startswith(" ") and text.strip():
            out.append((first, i, text.strip()))
            text, first = "", i
        text += piece
    if text.strip():
        out.append((first, len(pieces), text.strip()))
    return out


def words_of(
    pieces: Sequence[str],
    start_s: float,
    end_s: float,
    spans: list[tuple[int, int, str]] | None = None,
) -> list[Word]:
    """Words of one timestamp segment, times interpolated linearly over its text tokens
    (`spans`: word_spans(pieces), where the caller has it already)."""
    n = len(pieces)
    span = max(end_s - start_s, 0.0)
    return [
        Word(start_s + span * a / n, end_s if b == n else start_s + span * b / n, text)
        for a, b, text in (word_spans(pieces) if spans is None else spans)
    ]


class StreamSession:
    """A live transcription over `engine` (any voxmeter engine; see docs/streaming-notes.md)."""

    def __init__(self, engine: Any, config: StreamSettings, vad: Any = None) -> None:
        from voxmeter.assets.convert import special_ids

        self.engine = engine
        self.config = config.validate()
        if not config.enabled:
            raise ValueError("StreamSession: stream settings with chunk_ms 0 (not a stream)")
        self.policy = LocalAgreement(
            config.agreement, max_wait_s=config.max_wait_s, relax_s=config.relax_s
        )
        ids = special_ids(engine.dims)
        self.ts_begin = ids["no_timestamps"] + 1
        self.eot = ids["eot"]
        frames = engine.spec.axes.frames
        cap = config.max_buffer_s if frames == "fit" else min(config.max_buffer_s, frames / 100)
        self.max_buffer_s = cap
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start_s = 0.0  # stream time of the buffer's first sample
        self.received_s = 0.0  # stream time of the end of the audio received
        self.forced_trims = 0
        self.looped_steps = 0  # hypotheses dropped as repetition loops
        self.n_steps = 0
        self._trimmed_at_s = 0.0
        self._prompt_tokens: list[int] = []
        self._prompt_upto = 0  # committed words already in the prompt
        self._utterance_words = 0  # policy.n_committed when the current utterance began
        self._segment_ends: list[float] = []
        # the newest hypothesis's tokens through its last committed word, forced at the next
        # step (force_committed; emptied whenever the buffer is cut)
        self._forced: list[int] = []
        self._word_ends: dict[int, int] = {}  # id(word) -> its end in the hypothesis' tokens
        self._hypothesis: list[int] = []
        self._known = 0  # leading words of the last hypothesis that were forced
        self._vad = vad
        self._vad_state = vad.initial_state() if vad is not None else None
        self._vad_rest = np.zeros(0, dtype=np.float32)
        self._in_speech = False
        self._silence_s = 0.0
        self._pause_from = 0.0  # stream time the current run of non-speech frames began
        self._pauses: list[float] = []  # middles of the pauses in the buffer (pause_cut_ms)
        self._preroll: list[tuple[float, np.ndarray]] = []
        self._held: list[tuple[float, np.ndarray]] = []

    # -- audio in ---------------------------------------------------------------------------

    def insert_audio(self, samples: np.ndarray) -> bool:
        """Append 16 kHz mono float32 samples. Returns whether an utterance just ended (VAD:
        speech stopped for vad_silence_ms); the caller then calls `finish_utterance`."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        start = self.received_s
        self.received_s += len(x) / SAMPLE_RATE
        if self._vad is None:
            self._append(x, start)
            return False
        return self._insert_vad(x, start)

    def _append(self, x: np.ndarray, start_s: float) -> None:
        if not len(self.buffer):
            self.buffer_start_s = start_s
        self.buffer = np.concatenate([self.buffer, x])

    def _insert_vad(self, x: np.ndarray, start_s: float) -> bool:
        c = self.config
        x = np.concatenate([self._vad_rest, x])
        start_s -= len(self._vad_rest) / SAMPLE_RATE
        n = len(x) // VAD_FRAME * VAD_FRAME
        self._vad_rest = x[n:]
        if n == 0:
            return False
        frames = x[:n].reshape(-1, VAD_FRAME)
        probs, self._vad_state = self._vad.frame_probs(frames, self._vad_state)
        ended = False
        for i, p in enumerate(probs):
            t = start_s + i * VAD_FRAME / SAMPLE_RATE
            if p >= c.vad_threshold:
                if not self._in_speech:  # speech starts: keep a short pre-roll before it
                    for pt, pf in self._preroll:
                        self._append_speech(pf, pt, ended)
                    self._preroll = []
                elif c.pause_cut_ms and self._silence_s * 1000 >= c.pause_cut_ms:
                    self._pauses.append((self._pause_from + t) / 2)  # speech resumes
                self._in_speech, self._silence_s = True, 0.0
            elif self._in_speech and p < speech_off(c.vad_threshold):
                if not self._silence_s:
                    self._pause_from = t
                self._silence_s += VAD_FRAME / SAMPLE_RATE
                if self._silence_s * 1000 >= c.vad_silence_ms:
                    self._in_speech = False
                    ended = True
            if self._in_speech:
                self._append_speech(frames[i], t, ended)
            else:
                self._preroll = [*self._preroll, (t, frames[i])][-PREROLL_FRAMES:]
        return ended

    def _append_speech(self, frame: np.ndarray, t: float, after_end: bool) -> None:
        """Speech after an utterance ended in the same call waits for `finish_utterance`."""
        if after_end:
            self._held.append((t, frame))
        else:
            self._append(frame, t)

    # -- processing --------------------------------------------------------------------------

    @property
    def buffer_s(self) -> float:
        return len(self.buffer) / SAMPLE_RATE

    def process(self) -> Step:
        """Transcribe the buffer, commit what LocalAgreement-n agrees on, trim the buffer."""
        t0 = time.perf_counter()
        if self.buffer_s < MIN_BUFFER_S:  # nothing worth a model call yet
            return Step([], self.policy.pending, time.perf_counter() - t0, self.buffer_s)
        plain = self.config.step_pass == "plain"
        words, n_frames, stages = self._transcribe(timestamps=not plain)
        until = self.buffer_start_s + self.buffer_s - self.config.holdback_s
        new = (
            self.policy.insert(words, self.buffer_start_s, until, self._known, self.received_s)
            if words is not None
            else []
        )
        if new and self.config.force_committed:
            self._forced = self._hypothesis[: self._word_ends[id(new[-1])]]
        self._trim()
        self.n_steps += 1
        step = Step(new, self.policy.pending, 0.0, self.buffer_s, n_frames, stages)
        step.compute_s = time.perf_counter() - t0
        return step

    def finish_utterance(self) -> Step:
        """End of an utterance (VAD silence) or of the stream: one last pass over what is
        buffered, then every pending word is committed and the buffer emptied."""
        t0 = time.perf_counter()
        stages: dict[str, float] = {}
        n_frames = 0
        new: list[Word] = []
        if self.buffer_s >= MIN_BUFFER_S:
            plain = self.config.final_pass == "plain"
            words, n_frames, stages = self._transcribe(timestamps=not plain)
            if words is not None:
                new = self.policy.insert(words, self.buffer_start_s, known=self._known)
        new += self.policy.finish()
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start_s = self.received_s
        self._utterance_words = self.policy.n_committed
        self._prompt_tokens, self._prompt_upto = [], 0  # the new utterance's prompt is empty
        self._segment_ends, self._forced, self._pauses = [], [], []
        for t, frame in self._held:  # speech that began after the end, in the same chunk
            self._append(frame, t)
        self._held = []
        self._release_heap()
        return Step(new, [], time.perf_counter() - t0, 0.0, n_frames, stages, final=True)

    def _transcribe(
        self, timestamps: bool = True
    ) -> tuple[list[Word] | None, int, dict[str, float]]:
        """The buffer's words with stream times; None for a hypothesis caught in a repetition
        loop (stopped by the length limit, or an n-gram repeated LOOP_MIN_REPEATS times),
        which is left out of the agreement rather than compared (two loops can agree).
        Without timestamps (the final pass, or every step with step_pass "plain"; see module
        doc) the words' times are spread evenly over the buffer and no segment end is
        recorded. Records the hypothesis's tokens, where each word ends in them, and how many
        of its leading words the forced tokens began (`_known`)."""
        from voxmeter.engines.longform import cap_segment_ends, split_segments
        from voxmeter.metrics import LOOP_MIN_REPEATS, longest_repeat

        e = self.engine
        audio = self.buffer[: int(self.max_buffer_s * SAMPLE_RATE)]
        t = time.perf_counter
        t0 = t()
        feats = e.features([audio])
        t1 = t()
        enc = e.encode(feats)
        t2 = t()
        prompt = self._prompt()
        max_new = int(MIN_TOKENS + TOKENS_PER_S * len(audio) / SAMPLE_RATE)
        # forced tokens come from a step's decode: usable by decodes of the same kind only
        same_kind = timestamps == (self.config.step_pass == "timestamps")
        forced = [self._forced] if self._forced and same_kind else None
        (res,) = e.decode(
            enc,
            timestamps=timestamps,
            prefixes=[prompt] if prompt else None,
            max_new=max_new,
            forced=forced,
        )
        t3 = t()
        stages = {"feat": (t1 - t0) * 1e3, "enc": (t2 - t1) * 1e3, "dec": (t3 - t2) * 1e3}
        end_s = self.buffer_start_s + len(audio) / SAMPLE_RATE
        segments = []
        if timestamps:
            segments, _, _ = split_segments(
                res.tokens, self.ts_begin, self.buffer_start_s, e.tokenizer.decode
            )
            cap_segment_ends(segments, end_s)
            words: list[Word] = []
            # where each word ends in res.tokens: segments hold the text tokens in order
            text_at = [i for i, tok in enumerate(res.tokens) if tok < self.ts_begin]
            self._hypothesis, self._word_ends, seen = res.tokens, {}, 0
            starts: list[int] = []  # each word's first token in res.tokens
            for s in segments:
                pieces = [e.tokenizer.piece(tok) for tok in s.tokens]
                spans = word_spans(pieces)
                mine = words_of(pieces, min(s.start_s, s.end_s), s.end_s, spans)
                for w, (a, b, _) in zip(mine, spans):
                    self._word_ends[id(w)] = text_at[seen + b - 1] + 1
                    starts.append(text_at[seen + a])
                words += mine
                seen += len(s.tokens)
        else:
            pieces = [e.tokenizer.piece(tok) for tok in res.tokens if tok < self.eot]
            spans = word_spans(pieces)
            words = words_of(pieces, self.buffer_start_s, end_s, spans)
            self._hypothesis = res.tokens
            self._word_ends = {id(w): b for w, (_, b, _) in zip(words, spans)}
            starts = [a for a, _, _ in spans]
        # the words the forced tokens begin (the last may go on past them: "clubs" + "."):
        # the policy knows they restate committed ones
        n = len(forced[0]) if forced else 0
        self._known = sum(1 for a in starts if a < n)
        if res.hit_max_length or longest_repeat([w.key for w in words]) >= LOOP_MIN_REPEATS:
            self.looped_steps += 1
            return None, int(feats.shape[-1]), stages
        if timestamps:
            self._segment_ends = [s.end_s for s in segments]
        return words, int(feats.shape[-1]), stages

    def _prompt(self) -> list[int]:
        """Tokens of the committed text before the buffer in this utterance (whisper_streaming's
        prompt; see docs/streaming-notes.md)."""
        if not self.config.prompt:
            return []
        held = self.policy.committed  # the last KEEP_COMMITTED words
        mine = held[max(0, len(held) - (self.policy.n_committed - self._utterance_words)) :]
        done = [w for w in mine if w.end <= self.buffer_start_s + 1e-6]
        if len(done) != self._prompt_upto:
            text = " ".join(w.text for w in done[-100:])
            self._prompt_tokens = (
                self.engine.tokenizer.encode(text)[-PROMPT_TOKENS:] if text else []
            )
            self._prompt_upto = len(done)
        return self._prompt_tokens

    def _trim(self) -> None:
        committed_end = self.policy.committed_end
        if self._pauses:  # pause_cut_ms: the last pause the committed words reach past
            cuts = [p for p in self._pauses if p <= committed_end - PAUSE_MARGIN_S]
            if cuts and max(cuts) > self.buffer_start_s:
                self._cut(max(cuts))
            self._pauses = [p for p in self._pauses if p > self.buffer_start_s]
        if self.buffer_s > self.config.trim_s:
            cuts = [
                e for e in self._segment_ends if self.buffer_start_s < e <= committed_end + 1e-6
            ]
            if cuts:
                self._cut(max(cuts))
        if self.buffer_s + self.config.chunk_s > self.max_buffer_s:
            if committed_end > self.buffer_start_s:
                self._cut(committed_end)
            if self.buffer_s + self.config.chunk_s > self.max_buffer_s:
                self._cut(self.buffer_start_s + self.buffer_s - self.config.trim_s)
                self.forced_trims += 1

    def _cut(self, at_s: float) -> None:
        n = round((at_s - self.buffer_start_s) * SAMPLE_RATE)
        n = max(0, min(n, len(self.buffer)))
        if n:
            self._forced = []  # its timestamps were relative to the old buffer start
        self.buffer = self.buffer[n:].copy()
        self.buffer_start_s += n / SAMPLE_RATE
        self._release_heap()

    def _release_heap(self) -> None:
        """At most every TRIM_EVERY_S of this stream's audio, the heap's free pages go back to
        the kernel (stream.release_heap)."""
        if self.received_s - self._trimmed_at_s >= TRIM_EVERY_S:
            self._trimmed_at_s = self.received_s
            release_heap()

    def state_bytes(self) -> int:
        """Bytes this session holds in its buffers (bounded: see docs/streaming-notes.md)."""
        held = sum(f.nbytes for _, f in self._held) + sum(f.nbytes for _, f in self._preroll)
        return int(self.buffer.nbytes + self._vad_rest.nbytes + held)
