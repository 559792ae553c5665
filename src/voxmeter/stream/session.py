"""One streaming session: an audio buffer that grows chunk by chunk, transcribed by any engine
after each chunk, with LocalAgreement deciding what to commit (whisper_streaming's
`OnlineASRProcessor`, over voxmeter's engine stages).

After each chunk the whole buffer is transcribed with timestamp tokens: features at the
buffer's own length (the spec's frames; "fit" runs the encoder on the buffer rounded up to
`fit_step_s`, padded with silence), the encoder, then greedy decoding with Whisper's timestamp
rules, prompted with the committed text that precedes the buffer. Each timestamp segment's
words get times interpolated over its tokens (Whisper gives times per segment, not per word;
the word times only decide where the buffer may be cut and which words of a hypothesis repeat
committed ones, never a latency figure).

The buffer never grows without bound:
- once it is longer than `trim_s`, it is cut at the end of the last timestamp segment that is
  wholly committed (whisper_streaming's "segment" trimming), so no uncommitted speech is lost;
- if it still reaches `max_buffer_s` (no segment ends inside the committed text: silence or
  noise that the model keeps rewriting, or a very long sentence), it is cut at the committed
  end, or failing that to its last `trim_s` seconds. Audio cut that way was never committed:
  each forced cut is counted (`forced_trims`).

With a VAD (Silero), only speech reaches the buffer: silence outside speech is dropped (a short
pre-roll is kept), and when speech stops for `vad_silence_ms` the utterance is finished, every
pending word committed at once and the buffer emptied. That is the end-of-utterance path a
live captioner needs, and what keeps minutes of silence from costing compute. The next
utterance starts without a prompt, as whisper_streaming's VAD controller restarts its
processor (`init`) at each speech start: the prompt is committed text of the same utterance
only, the way offline long-form does not carry text from one recording to the next (on the
bundled set, whose clips are unrelated sentences, the mean streaming WER over four shifts went
from 15.37 to 15.17: within its noise, see benchmarks/diag_stream_gap.py).

The last pass over an utterance (`finish_utterance`) decodes, by default, without timestamp
tokens (`final_pass="plain"`), as `bench` decodes a clip: nothing is cut or agreed on after it,
so it needs no segment times, and tiny.en transcribes a whole clip better without them (on the
bundled set, offline WER 13.18 plain against 17.09 with timestamps, mean of four shifts). Its
words' times are spread evenly over the buffer: they place the words in the stream and serve
the time fallback of the policy's cut (stream/policy.py), never a latency figure. Measured with
benchmarks/diag_stream_gap.py (ct2 int8, fit, 500 ms, LA-3, VAD, prompt; mean of four shifts):
streaming WER 15.03 with a timestamped final pass, 14.50 plain.

`force_committed` (off by default) stops decoding committed words again. Once a step commits
words of the buffer, the next steps' decodes start with the newest hypothesis's tokens through
the last committed word (timestamp tokens included), forced as faster-whisper's `prefix` is,
and the policy is told how many leading words of the hypothesis restate committed ones, so it
cuts there without matching by text and time. CTranslate2 feeds forced tokens one decoder step
each, as it generates them (tiny.en int8, 2 cores: a decode forced to all but its last 3
tokens took as long as the free one), so on ct2 it saves no compute; the hf engine feeds them
in one pass. It is off because it pins early mistakes: a forced wrong word steers what
follows. Measured with benchmarks/bench_stream.py (ct2 int8, 500 ms, VAD; WER gap = mean of
four shifts, SE about 0.8):
- LA-2: WER gap 4.00 forced against 3.15 decoded again, commit p99 4487 against 2665 ms;
- LA-3: WER gap 0.76 against 1.52, commit p99 5629 against 6572 ms;
(decoded again: the previous grid run, before VAD time counted as compute), and with
diag_stream_gap.py, both on today's code, LA-3: WER gap 0.84 against 0.90, compute/elapsed
0.318 against 0.324.

`step_pass="plain"` (VAD only) decodes every step without timestamp tokens, as the final pass
does: fewer tokens per step (no segment's two timestamps) and no timestamp rules. Its words'
times are spread evenly over the buffer; force_committed finds the committed words without
those times, but with LA-2 it makes plain steps hallucinate (below). Without segment ends the
buffer is only emptied at an utterance's end (or cut at max_buffer_s), hence the VAD. Against
timestamped steps, both forced (bench_stream.py, 500 ms, VAD):
- LA-3: commit p99 3463 against 5629 ms, churn 0.68 against 0.84, WER gap 1.32 against 0.76
  (not told apart); compute/elapsed 0.291 in both timed runs, 0.282 against 0.318 as the
  mean of four diag_stream_gap.py shifts (before the policy was told the forced length);
- LA-2: WER gap 7.09: forced through every word heard so far, the plain decoder adds a
  " you" or repeats the forced words ("go forward 10 meters go forward 10 meters") rather
  than end-of-text, and two steps agree on it often enough to commit it. Decoding only up to
  the VAD's last speech frame did not stop it; not forcing did (diag_stream_gap.py, one
  shift: no clip ends in " you", WER gap 4.28 on that shift, against 9.23 forced).

The figures above were measured before the log-mel's matrix product ran on one BLAS thread
(audio/features.py). OpenBLAS's spinning threads had slowed every step: compute/elapsed was
about 0.05-0.1 higher and computation-aware latencies longer (bench_stream.py, 500 ms, LA-3,
VAD, after the fix: compute/elapsed 0.276, commit p99 3844 ms against 6572 before). They
compare configurations measured alike.

`pause_cut_ms` (VAD only; off by default) cuts the buffer inside an utterance too. The VAD
records the middle of every pause at least that long (non-speech frames, shorter than
vad_silence_ms, which would end the utterance); once the committed words end PAUSE_MARGIN_S
past a pause, the buffer is cut there (with `prompt`, the committed words before it join the
prompt).
A step then decodes the words since the last pause, not the whole utterance so far. Segment
ends rarely do this: tiny.en gives one segment to most of a bundled sentence, so cutting at
them past 3 s instead of 15 s left compute/elapsed where it was (0.326 against 0.324,
diag_stream_gap.py, four shifts, both before the log-mel's one-BLAS-thread fix; WER gap 1.83
against 0.90). Measured with bench_stream.py (ct2 int8, 500 ms, LA-3, VAD, no prompt;
compute/elapsed = mean of five draws, WER gap = mean of four shifts, SE about 0.7), 160 ms
pauses against none: compute/elapsed 0.203 (draws 0.192-0.218) against
0.276 (0.254-0.287), WER gap 1.35 against 0.82 (not told apart), commit p50 1302 against
1308 ms, p99 4038 against 3844 ms, churn 0.97 against 0.81. With LA-2: compute/elapsed 0.203
against 0.285, commit p99 2775 against 3388 ms, but a WER gap of 4.05 against 2.42. What it
costs in words: the committed words past the pause are decoded again from the new buffer
start, without the audio before it, and the policy's match by text and time does not always
recognise them, so a word either side of a cut is at times committed twice or misheard
("her for only 19" became "her lonely only 19" on tts-08). It stays off by default.
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
    """A live transcription over `engine` (any voxmeter engine; see module doc)."""

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
        prompt; see module doc)."""
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
        """Bytes this session holds in its buffers (bounded: see module doc)."""
        held = sum(f.nbytes for _, f in self._held) + sum(f.nbytes for _, f in self._preroll)
        return int(self.buffer.nbytes + self._vad_rest.nbytes + held)
