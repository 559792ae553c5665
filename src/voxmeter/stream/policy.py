"""LocalAgreement-n: which words of a streaming hypothesis are stable enough to commit.

The policy of ufal/whisper_streaming (Macháček et al., 2023), kept apart from any ASR back end
as there: a word is committed once `n` consecutive hypotheses agree on it, each hypothesis
first cut to what follows the committed text (by text, else by time, then de-duplicated).
`max_wait_s` and `relax_s` bound how long a word may wait for agreement. How the cut works and
the failures that shaped it: docs/streaming-notes.md, "stream/policy.py".
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

TIME_TOLERANCE_S = 0.1  # whisper_streaming's tolerance for a word straddling the commit point
# how far apart in time a committed word and its restatement may be: interpolated word times
# are off by about a word's length, and a final plain pass spreads its words evenly over the
# buffer (silence included)
TEXT_CUT_TOLERANCE_S = 1.5
MAX_NGRAM = 5  # longest committed tail a new hypothesis may repeat and still be deduplicated
# committed words a policy remembers: more than a 30 s buffer holds, so every comparison sees
# what it needs, and a session of hours holds no more than a minute's (the caller keeps the
# transcript, from the words each step returns)
KEEP_COMMITTED = 256

_NOT_WORD = re.compile(r"[^\w']+")


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a hypothesis, with its time in the stream (seconds from the stream start)."""

    start: float
    end: float
    text: str

    @property
    def key(self) -> str:
        return norm_word(self.text)


def norm_word(text: str) -> str:
    """How words are compared: lower case, punctuation other than apostrophes dropped."""
    return _NOT_WORD.sub("", text.lower())


def common_prefix(hyps: list[list[Word]]) -> int:
    """Length of the longest prefix all hypotheses share (by normalised text)."""
    if not hyps:
        return 0
    n = min(len(h) for h in hyps)
    for i in range(n):
        k = hyps[0][i].key
        if any(h[i].key != k for h in hyps[1:]):
            return i
    return n


@dataclass
class LocalAgreement:
    """LocalAgreement-n over successive hypotheses (see docs/streaming-notes.md). n >= 1;
    n = 1 commits every hypothesis as it comes (no stability check), the lower bound on
    latency."""

    n: int = 2
    max_wait_s: float = 0.0  # 0: off (see docs/streaming-notes.md)
    relax_s: float = 0.0  # 0: off (see docs/streaming-notes.md)
    committed: list[Word] = field(default_factory=list)  # the last KEEP_COMMITTED of them
    n_committed: int = 0
    n_relaxed: int = 0  # of n_committed: by relax_s, with two hypotheses' agreement
    n_unagreed: int = 0  # of n_committed: by max_wait_s, with no agreement
    _recent: list[list[Word]] = field(default_factory=list)  # last n-1 uncommitted tails

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"LocalAgreement: n must be an integer >= 1, got {self.n!r}")
        if not self.max_wait_s >= 0:
            raise ValueError(f"LocalAgreement: max_wait_s must be >= 0, got {self.max_wait_s!r}")
        if not self.relax_s >= 0:
            raise ValueError(f"LocalAgreement: relax_s must be >= 0, got {self.relax_s!r}")
        if self.relax_s and self.n < 3:
            raise ValueError(
                f"LocalAgreement: relax_s needs n >= 3 (it relaxes LocalAgreement-n to "
                f"LocalAgreement-2), got n={self.n}"
            )
        if self.relax_s and self.max_wait_s and self.relax_s >= self.max_wait_s:
            raise ValueError(
                f"LocalAgreement: relax_s ({self.relax_s:g} s) must be shorter than "
                f"max_wait_s ({self.max_wait_s:g} s)"
            )

    @property
    def committed_end(self) -> float:
        return self.committed[-1].end if self.committed else 0.0

    def _tail(self, words: list[Word], buffer_start: float | None, known: int = 0) -> list[Word]:
        """The part of a hypothesis that follows the committed text (docs/streaming-notes.md,
        "Cutting a hypothesis")."""
        skip = sum(1 for w in words[:known] if w.key)
        words = [w for w in words if w.key]
        at = skip if skip else self._text_cut(words, buffer_start)
        if at is not None:
            out = words[at:]
        else:
            cut = self.committed_end - TIME_TOLERANCE_S
            out = [w for w in words if w.start > cut] if self.committed else list(words)
        if out and self.committed and abs(out[0].start - self.committed_end) < 1.0:
            for k in range(min(MAX_NGRAM, len(self.committed), len(out)), 0, -1):
                tail = [w.key for w in self.committed[-k:]]
                if [w.key for w in out[:k]] == tail:
                    out = out[k:]
                    break
        return out

    def _text_cut(self, words: list[Word], buffer_start: float | None) -> int | None:
        """Index in `words` just past the last committed word of the buffer, matched by text
        (None: nothing committed in the buffer, or its last words not found)."""
        if buffer_start is None or not self.committed:
            return None
        inside = [w for w in self.committed if w.end > buffer_start + TIME_TOLERANCE_S]
        if not inside:
            return None
        keys = [w.key for w in inside]
        sm = difflib.SequenceMatcher(None, keys, [w.key for w in words], autojunk=False)
        last = len(inside) - 1
        for a, b, n in reversed(sm.get_matching_blocks()):
            if n and a + n - 1 >= last - 1:  # the last committed word, or the one before it
                near = abs(words[b + n - 1].end - inside[a + n - 1].end) <= TEXT_CUT_TOLERANCE_S
                if near:
                    return b + n + (last - (a + n - 1))
        return None

    def insert(
        self,
        words: list[Word],
        buffer_start: float | None = None,
        until: float | None = None,
        known: int = 0,
        now: float | None = None,
    ) -> list[Word]:
        """Take a new hypothesis of the buffer starting at `buffer_start` (stream seconds);
        commit and return what the last n agree on, up to words ending by `until` if given.
        `known`: the hypothesis's first words are known to restate committed ones (the
        decoder was forced to start with them): it is cut right after them. `now`: the
        stream time heard so far; with max_wait_s, the words of this hypothesis that ended
        max_wait_s before it are committed too; with relax_s, those that ended relax_s before
        it and that the last two hypotheses agree on (docs/streaming-notes.md)."""
        tail = self._tail(words, buffer_start, known)
        hyps = [*self._recent, tail]
        overdue = self._older_than(tail, now, self.max_wait_s)
        relaxed = 0  # the overdue-for-relax_s words the last two hypotheses agree on
        if self.relax_s and len(hyps) >= 2:
            relaxed = min(self._older_than(tail, now, self.relax_s), common_prefix(hyps[-2:]))
        if len(hyps) < self.n and not overdue and not relaxed:
            self._recent = hyps
            return []
        k = common_prefix(hyps[-self.n :]) if len(hyps) >= self.n else 0
        if until is not None:
            k = next((i for i, w in enumerate(tail[:k]) if w.end > until), k)
        agreed = k
        k = max(k, relaxed, overdue)
        new = tail[:k]  # the newest hypothesis's copy: its times are the latest estimate
        self._commit(new)
        self.n_unagreed += max(0, k - max(agreed, relaxed))
        self.n_relaxed += max(0, min(k, relaxed) - agreed)
        if k > max(agreed, relaxed):  # no two hypotheses agreed this far: the newest goes on
            self._recent = [tail[k:]] if self.n > 1 else []
        elif k > agreed:  # the last two agreed this far, the older ones did not
            self._recent = [h[k:] for h in hyps[-2:]]
        else:
            self._recent = [h[k:] for h in hyps[-(self.n - 1) :]] if self.n > 1 else []
        return new

    @staticmethod
    def _older_than(tail: list[Word], now: float | None, wait_s: float) -> int:
        """How many leading words of `tail` ended at least `wait_s` before `now` (0 when
        the bound is off or the time unknown)."""
        if not wait_s or now is None:
            return 0
        due = now - wait_s
        return next((i for i, w in enumerate(tail) if w.end > due), len(tail))

    def _commit(self, words: list[Word]) -> None:
        self.committed += words
        self.n_committed += len(words)
        del self.committed[:-KEEP_COMMITTED]

    @property
    def pending(self) -> list[Word]:
        """The newest hypothesis past the committed text: the partial result."""
        return list(self._recent[-1]) if self._recent else []

    def finish(self) -> list[Word]:
        """End of stream: commit what the newest hypothesis still holds."""
        new = self.pending
        self._commit(new)
        self._recent = []
        return new
