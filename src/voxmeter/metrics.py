"""Accuracy figures: WER/CER as the Open ASR Leaderboard computes them, bootstrap CIs over
clips (voxmeter.stats), flags for hypotheses that look like failures, and UA/WA/macro-F1, the
confusion matrix and their bootstrap CIs for classification.

WER convention: Whisper's English text normalizer on reference and hypothesis, then corpus
totals (sum of substitutions + deletions + insertions over sum of reference words), never a
mean of per-clip rates (which would weight a 3-word clip like a 30-word one). Rates are in
percent, 0..100 (WER can exceed 100 when the hypothesis inserts more words than the
reference holds).

A reference that normalizes to nothing (e.g. "Uh, hmm.") contributes its hypothesis words as
insertions and zero reference words: the model is charged for what it made up, and the
corpus denominator stays the words that were really said. A corpus with no reference words at
all has no WER (None), as a rate over zero words is not a number.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import jiwer
import numpy as np

from voxmeter.stats import BOOTSTRAP_RESAMPLES, CI_LEVEL, paired_bootstrap_ci, ratio_bootstrap_ci

# failure_flags thresholds (see its docstring for why each value).
SLOW_WORDS_PER_S = 1.5
EARLY_END_RATE_SHARE = 0.4
EARLY_END_MIN_S = 2.0
EARLY_END_REF_SHARE = 0.5
EARLY_END_MIN_REF_WORDS = 4
LOOP_MAX_N = 4
LOOP_MIN_REPEATS = 4
COMPRESSION_RATIO_MAX = 2.4  # Whisper's own compression_ratio_threshold


@lru_cache(maxsize=1)
def _normalizer():
    # Building it parses a spelling table; one per process is enough and it holds no state
    # that changes between calls.
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalizer: lower case, no punctuation, numbers as digits, US spelling,
    contractions expanded, fillers ("uh", "hmm") removed."""
    return _normalizer()(text)


@dataclass(frozen=True)
class WerStats:
    """Edit totals over a set of clips, and the rates they give (percent; None when no
    reference words/characters)."""

    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    wer: float | None
    char_edits: int
    ref_chars: int
    cer: float | None
    n_clips: int
    n_empty_refs: int  # clips whose reference normalized to nothing

    @property
    def word_edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def clip_counts(ref: str, hyp: str) -> tuple[int, int, int, int, int, int]:
    """(S, D, I, ref words, char edits, ref chars) for one already-normalized pair."""
    if not ref.split():
        # jiwer would divide by zero words; count the hypothesis as pure insertion instead.
        return 0, 0, len(hyp.split()), 0, len(hyp), 0
    w = jiwer.process_words(ref, hyp)
    c = jiwer.process_characters(ref, hyp)
    char_edits = c.substitutions + c.deletions + c.insertions
    ref_chars = c.substitutions + c.deletions + c.hits
    ref_words = w.substitutions + w.deletions + w.hits
    return w.substitutions, w.deletions, w.insertions, ref_words, char_edits, ref_chars


def corpus_wer(refs: Sequence[str], hyps: Sequence[str], normalized: bool = False) -> WerStats:
    """Corpus WER and CER; texts are normalized first unless `normalized` says they already
    are."""
    counts = _all_counts(refs, hyps, normalized)
    totals = counts.sum(axis=0) if len(counts) else np.zeros(6, dtype=np.int64)
    s, d, i, n, ce, nc = (int(v) for v in totals)
    return WerStats(
        substitutions=s,
        deletions=d,
        insertions=i,
        ref_words=n,
        wer=100.0 * (s + d + i) / n if n else None,
        char_edits=ce,
        ref_chars=nc,
        cer=100.0 * ce / nc if nc else None,
        n_clips=len(counts),
        n_empty_refs=int(np.count_nonzero(counts[:, 3] == 0)) if len(counts) else 0,
    )


def clip_wer(ref: str, hyp: str, normalized: bool = False) -> WerStats:
    """WER/CER of one clip (the same figures as a corpus of one)."""
    return corpus_wer([ref], [hyp], normalized)


def wer_bootstrap_ci(
    refs: Sequence[str],
    hyps: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    normalized: bool = False,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of corpus WER (percent), resampling clips.

    Clips, not words, are the unit resampled: words within a clip share a speaker and
    recording, so their errors are not independent. None when there are no reference words.
    """
    return accuracy_bootstrap_cis(refs, hyps, n_boot, seed, level, normalized)["wer"]


def accuracy_bootstrap_cis(
    refs: Sequence[str],
    hyps: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    normalized: bool = False,
) -> dict[str, tuple[float, float] | None]:
    """{"wer": CI, "cer": CI}: the percentile bootstrap over clips of `wer_bootstrap_ci`, for
    both rates, from one alignment. Greedy decoding repeats the same text, so an interval
    over repeats would be zero-wide; this one says how much the clips chosen move the rate."""
    counts = _all_counts(refs, hyps, normalized)
    if not len(counts):
        return {"wer": None, "cer": None}
    return {
        "wer": ratio_bootstrap_ci(counts[:, :3].sum(axis=1), counts[:, 3], n_boot, seed, level),
        "cer": ratio_bootstrap_ci(counts[:, 4], counts[:, 5], n_boot, seed, level),
    }


def wer_gap_ci(
    refs: Sequence[str],
    draws_a: Sequence[Sequence[str]],
    draws_b: Sequence[Sequence[str]],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    normalized: bool = False,
) -> tuple[float, float, float] | None:
    """WER(a) - WER(b) in points, with a paired percentile bootstrap interval over clips.

    `draws_a` and `draws_b` hold one hypothesis list per draw (e.g. one per shift of a
    stream's timing), all over `refs`; the gap is the mean over draws of each side's corpus
    WER. Both sides of a resample take the same clips, so what the clips share (speaker,
    difficulty) cancels and the interval is that of the difference, far narrower than two
    separate WER intervals (voxmeter.stats.paired_bootstrap_ci). None when there are no
    reference words.
    """
    if not draws_a or not draws_b:
        raise ValueError("wer_gap_ci needs at least one draw on each side")

    def edits(draws: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        counts = [_all_counts(refs, hyps, normalized) for hyps in draws]
        # per clip: mean edits over the draws; reference words are the same in every draw
        return np.mean([c[:, :3].sum(axis=1) for c in counts], axis=0), counts[0][:, 3]

    ea, n = edits(draws_a)
    eb, _ = edits(draws_b)
    if not len(n) or n.sum() == 0:
        return None
    gap = 100.0 * (ea.sum() - eb.sum()) / n.sum()
    if len(n) < 2:
        return float(gap), float(gap), float(gap)

    def stat(a: np.ndarray, b: np.ndarray, w: np.ndarray, axis: int = -1) -> np.ndarray:
        return 100.0 * (a.sum(axis=axis) - b.sum(axis=axis)) / np.maximum(w.sum(axis=axis), 1)

    lo, hi = paired_bootstrap_ci((ea, eb, n.astype(np.float64)), stat, n_boot, seed, level)
    return float(gap), lo, hi


def failure_flags(
    hyp: str, duration_s: float, ref: str | None = None, hit_max_length: bool = False
) -> list[str]:
    """Flags for a hypothesis that looks like a decoding failure rather than a mistake.

    - "early_end": the decoder stopped long before the speech did. With a reference: fewer
      than 50% of its (normalized) words, when it has at least 4 (below that, one dropped
      word already halves the count). Without one: for clips over 2 s, fewer than 40% of the
      words a slow speaker would say (1.5 words/s; read English runs at 2.5-3), so a quiet or
      slow clip is not flagged, while a 20 s clip decoded as two words is.
    - "repetition_loop": the same 1- to 4-word sequence 4+ times in a row, or the text's
      zlib compression ratio above 2.4, the threshold Whisper itself uses to reject a
      decode as a loop.
    - "hit_max_length": the decoder was cut off by its token limit (passed in by the engine).
    """
    flags = []
    n_hyp = len(normalize(hyp).split())
    if ref is not None:
        n_ref = len(normalize(ref).split())
        if n_ref >= EARLY_END_MIN_REF_WORDS and n_hyp < EARLY_END_REF_SHARE * n_ref:
            flags.append("early_end")
    elif (
        duration_s > EARLY_END_MIN_S
        and n_hyp < EARLY_END_RATE_SHARE * SLOW_WORDS_PER_S * duration_s
    ):
        flags.append("early_end")
    if longest_repeat(_words(hyp)) >= LOOP_MIN_REPEATS or (
        compression_ratio(hyp) > COMPRESSION_RATIO_MAX
    ):
        flags.append("repetition_loop")
    if hit_max_length:
        flags.append("hit_max_length")
    return flags


def longest_repeat(words: Sequence[str], max_n: int = LOOP_MAX_N) -> int:
    """Most consecutive repeats of any n-gram (n = 1..max_n) in `words`; 1 if none repeats.

    An n-gram repeated r times in a row is a run of (r - 1) * n positions where
    words[j] == words[j + n]; scanning that run per n avoids building n-grams.
    """
    best = 1 if words else 0
    for n in range(1, max_n + 1):
        run = 0
        for j in range(len(words) - n):
            run = run + 1 if words[j] == words[j + n] else 0
            best = max(best, run // n + 1)
    return best


def compression_ratio(text: str) -> float:
    """UTF-8 bytes over zlib-compressed bytes, as Whisper computes it (0 for empty text)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def unweighted_accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """UA: mean over the classes present in `y_true` of each class's recall, in percent.

    The speech-emotion convention: it does not let a majority class hide a minority one.
    """
    t, p = _labels(y_true, y_pred)
    # dict.fromkeys, not np.unique: labels of mixed types need not be orderable.
    recalls = [float(np.mean(p[t == c] == c)) for c in dict.fromkeys(t.tolist())]
    return 100.0 * float(np.mean(recalls))


def weighted_accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """WA: plain accuracy (each sample weighs the same, so classes weigh by frequency), in
    percent."""
    t, p = _labels(y_true, y_pred)
    return 100.0 * float(np.mean(t == p))


def macro_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Macro-F1 in percent: scikit-learn's `f1_score(average="macro")` over the classes of
    `y_true` (as EmoBox reports it); a class never predicted scores F1 0, not a warning."""
    from sklearn.metrics import f1_score

    _, t, p = _coded(y_true, y_pred)
    classes = np.unique(t)
    return 100.0 * float(f1_score(t, p, labels=classes, average="macro", zero_division=0))


def confusion(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> dict:
    """{"labels": the classes in order of first appearance (of y_true, then predictions
    outside it), "counts": rows true, columns predicted} by scikit-learn's confusion_matrix."""
    from sklearn.metrics import confusion_matrix

    names, t, p = _coded(y_true, y_pred)
    m = confusion_matrix(t, p, labels=list(range(len(names))))
    return {"labels": names, "counts": m.tolist()}


def classification_bootstrap_cis(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    n_boot: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, tuple[float, float]]:
    """{"ua", "wa", "macro_f1": percentile bootstrap CI over clips}: clips resampled with
    their prediction, the three figures recomputed on each resample (a resample that lacks a
    class scores over the classes it has, as the figure itself would)."""
    _, t, p = _coded(y_true, y_pred)
    figures = {"ua": unweighted_accuracy, "wa": weighted_accuracy, "macro_f1": macro_f1}
    return {
        name: paired_bootstrap_ci((t, p), _per_resample(fn), n_boot, seed, level)
        for name, fn in figures.items()
    }


def _per_resample(fn):
    """`fn(y_true, y_pred)` as the vectorised statistic scipy's bootstrap calls: one value per
    row of 2-D resamples, a scalar for the 1-D data."""

    def statistic(t: np.ndarray, p: np.ndarray, axis: int = -1):
        if t.ndim == 1:
            return fn(t, p)
        t, p = np.moveaxis(t, axis, -1), np.moveaxis(p, axis, -1)
        flat = [fn(a, b) for a, b in zip(t.reshape(-1, t.shape[-1]), p.reshape(-1, p.shape[-1]))]
        return np.asarray(flat).reshape(t.shape[:-1])

    return statistic


def _coded(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> tuple[list, ...]:
    """(the classes in order of first appearance, of y_true then y_pred; both label lists as
    integer codes into them), so numpy and scikit-learn can index and compare labels of any
    hashable type."""
    t, p = _labels(y_true, y_pred)
    names = list(dict.fromkeys([*t.tolist(), *p.tolist()]))
    index = {c: i for i, c in enumerate(names)}
    return (
        names,
        np.array([index[c] for c in t.tolist()], dtype=np.int64),
        np.array([index[c] for c in p.tolist()], dtype=np.int64),
    )


def _labels(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> tuple[np.ndarray, ...]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if not len(y_true):
        raise ValueError("no labels")
    # Object arrays compare labels of any hashable type exactly (no string coercion).
    t = np.empty(len(y_true), dtype=object)
    p = np.empty(len(y_pred), dtype=object)
    t[:], p[:] = list(y_true), list(y_pred)
    return t, p


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def _all_counts(refs: Sequence[str], hyps: Sequence[str], normalized: bool) -> np.ndarray:
    """Per-clip counts as an (n_clips, 6) int array, columns as `clip_counts` returns."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not normalized:
        refs, hyps = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    rows = [clip_counts(r, h) for r, h in zip(refs, hyps)]
    return np.array(rows, dtype=np.int64).reshape(len(rows), 6)
