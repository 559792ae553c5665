"""A stream's figures, in the field's terms, from its trace and the reference.

- Commit latency per word: when the word was committed (seen by the listener) minus when its
  audio ended in the reference alignment (stream/align.py). Committed words are matched to
  reference words in order by normalised text (difflib's longest matching blocks), utterance
  by utterance (a word belongs to the utterance nearest its time); unmatched
  words (errors) have no latency, and the share matched is reported beside the percentiles.
- Time to first partial: the first step showing any text, minus the first reference word's start.
- End-of-utterance latency: per utterance (a clip of a joined data set, or the whole file),
  the commit time of its last matched word minus the end of its last reference word.
- Churn: at every step, each word of the previous partial result that the listener then saw
  replaced or withdrawn (not at the same place in the new committed + partial words) counts
  once; churn = those revisions / committed words.
- Streaming WER against the reference, and against the offline transcription of the same
  audio (how much streaming itself costs).
- compute/elapsed: total compute / stream duration (above 1.0 a stream falls behind for good);
  the worst 60 s window is reported too.
- RSS and latency drift: least-squares slopes, in MiB/hour and ms/hour. The RSS slope is
  fitted after the first 5 minutes (or 10% of the session, if longer): in the first minutes
  the runtime's allocator pools grow to the longest buffer seen (a one-off step of ~40 MiB on
  tiny.en with ct2), which a straight line over the whole hour would read as drift. The slope
  over the whole session is reported beside it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np

from voxmeter.stats import named_percentiles
from voxmeter.stream.policy import Word
from voxmeter.stream.replay import Trace

HOUR = 3600.0
RSS_SETTLE_S = 300.0  # the RSS slope is fitted from here on (and from 10% of the session)
RSS_FLOOR_WINDOW_S = 300.0  # the floor slope fits each window's lowest sample


def match_words(hyp: Sequence[Word], ref: Sequence[Word]) -> list[tuple[int, int]]:
    """(hyp index, ref index) of words matched in order by normalised text."""
    sm = difflib.SequenceMatcher(None, [w.key for w in hyp], [w.key for w in ref], autojunk=False)
    return [(a + k, b + k) for a, b, n in sm.get_matching_blocks() for k in range(n)]


def match_by_utterance(
    hyp: Sequence[Word], ref: Sequence[Word], utterances: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """match_words within each utterance: a committed word goes to the utterance whose
    reference span is nearest its midpoint. One match over a whole stream would pair words
    across utterances when the same text recurs (an hour of the bundled clips, repeated)."""
    spans = [(ref[a].start, ref[b - 1].end, a, b) for a, b in utterances if b > a]
    if not spans:
        return []
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(hyp):
        mid = (w.start + w.end) / 2
        u = min(range(len(spans)), key=lambda j: max(spans[j][0] - mid, mid - spans[j][1], 0.0))
        groups.setdefault(u, []).append(i)
    pairs = []
    for u, idx in groups.items():
        _, _, a, b = spans[u]
        pairs += [(idx[h], a + r) for h, r in match_words([hyp[i] for i in idx], ref[a:b])]
    return sorted(pairs)


def p50_p90_p99(values: Sequence[float]) -> dict[str, float | None]:
    """{"p50", "p90", "p99"} of `values` (None each when there are none)."""
    return named_percentiles(values)


def percentiles(values: Sequence[float], prefix: str) -> dict[str, float | None]:
    """p50_p90_p99 as the result's keys: `{prefix}_p50`..."""
    return named_percentiles(values, f"{prefix}_")


def slope_per_hour(points: Sequence[tuple[float, float]], settle_s: float = 0.0) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour, over the points from
    `settle_s` on; None under 3 points or 60 s."""
    points = [p for p in points if p[0] >= settle_s]
    if len(points) < 3 or points[-1][0] - points[0][0] < 60:
        return None
    t, v = np.asarray(points, dtype=float).T
    return float(np.polyfit(t, v, 1)[0] * HOUR)


def floor_slope_per_hour(
    rss: Sequence[tuple[float, float]],
    own: Sequence[tuple[float, float]],
    settle_s: float = 0.0,
    window_s: float = RSS_FLOOR_WINDOW_S,
) -> tuple[float, float, float] | None:
    """(slope, 95% low, 95% high) per hour of the lowest (RSS - own) sample in each `window_s`
    window from `settle_s` on, each placed at the mean time of its window's samples, by
    Theil-Sen (module doc). `own` pairs with `rss` sample by sample (missing: 0). None under
    3 windows."""
    from scipy.stats import theilslopes

    held = dict(own)
    windows: dict[int, list[tuple[float, float]]] = {}
    for t, v in rss:
        if t >= settle_s:
            windows.setdefault(int((t - settle_s) // window_s), []).append(
                (t, v - held.get(t, 0.0))
            )
    if len(windows) < 3:
        return None
    points = [(float(np.mean([t for t, _ in w])), min(v for _, v in w)) for w in windows.values()]
    t, v = np.asarray(points, dtype=float).T
    fit = theilslopes(v, t / HOUR)
    return float(fit.slope), float(fit.low_slope), float(fit.high_slope)


def churn(trace: Trace) -> tuple[int, int]:
    """(partial words revised or withdrawn, committed words): see module doc."""
    return sum(s.revised for s in trace.steps), sum(len(s.committed) for s in trace.steps)


def worst_window(trace: Trace, window_s: float = 60.0) -> float | None:
    """The largest compute/elapsed over windows of `window_s` of stream time."""
    if trace.audio_s < window_s:
        return None
    t = np.array([s.audio_s for s in trace.steps])
    c = np.cumsum([s.compute_s for s in trace.steps])
    worst = 0.0
    for i, start in enumerate(t):
        j = int(np.searchsorted(t, start + window_s))
        if j >= len(t):
            break
        worst = max(worst, (c[j] - c[i]) / window_s)
    return worst


def stream_metrics(
    trace: Trace,
    ref_words: Sequence[Word],
    utterances: Sequence[tuple[int, int]],
    ref_text: str | None,
    offline_text: str | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, per-utterance records). `utterances` are [first, last) ranges of ref_words;
    `ref_text` None means the reference is the offline transcription itself."""
    from voxmeter.metrics import corpus_wer

    seen = trace.committed
    words = [w for w, _, _ in seen]
    pairs = match_by_utterance(words, ref_words, utterances)
    aware = [seen[h][1] - ref_words[r].end for h, r in pairs]
    unaware = [seen[h][2] - ref_words[r].end for h, r in pairs]
    m: dict[str, Any] = {}
    m.update(percentiles([x * 1e3 for x in aware], "commit_ms"))
    m.update(percentiles([x * 1e3 for x in unaware], "commit_unaware_ms"))
    m["words_committed"] = len(words)
    # the share committed before the policy's n hypotheses agreed (relax_s, max_wait_s)
    m["words_relaxed_share"] = 100 * trace.relaxed_words / len(words) if words else None
    m["words_unagreed_share"] = 100 * trace.unagreed_words / len(words) if words else None
    m["words_matched_share"] = 100 * len(pairs) / len(ref_words) if ref_words else None
    speech_start = ref_words[0].start if ref_words else 0.0
    first = next((s for s in trace.steps if s.shows_text), None)
    m["first_partial_s"] = first.t_aware - speech_start if first else None
    m["first_partial_unaware_s"] = first.t_unaware - speech_start if first else None

    last_seen = {r: (seen[h][1], seen[h][2]) for h, r in pairs}
    utts = []
    for u, (a, b) in enumerate(utterances):
        done = [r for r in range(a, b) if r in last_seen]
        rec: dict[str, Any] = {"utterance": u, "ref_words": b - a, "matched": len(done)}
        if done and b > a:
            end = ref_words[b - 1].end
            rec["speech_end_s"] = end
            rec["eou_ms"] = (max(last_seen[r][0] for r in done) - end) * 1e3
            rec["eou_unaware_ms"] = (max(last_seen[r][1] for r in done) - end) * 1e3
        utts.append(rec)
    m.update(percentiles([u["eou_ms"] for u in utts if "eou_ms" in u], "eou_ms"))
    m.update(
        percentiles([u["eou_unaware_ms"] for u in utts if "eou_unaware_ms" in u], "eou_unaware_ms")
    )

    revised, committed = churn(trace)
    m["churn"] = revised / committed if committed else None
    text = trace.text
    m["stream_wer"] = corpus_wer([ref_text], [text]).wer if ref_text else None
    m["offline_wer"] = (
        corpus_wer([ref_text], [offline_text]).wer if ref_text and offline_text else None
    )
    m["stream_wer_vs_offline"] = corpus_wer([offline_text], [text]).wer if offline_text else None
    m["compute_ratio"] = trace.compute_s / trace.audio_s if trace.audio_s else None
    m["compute_ratio_worst_60s"] = worst_window(trace)
    m["lag_end_s"] = trace.steps[-1].t_aware - trace.audio_s if trace.steps else None
    m["stream_audio_s"] = trace.audio_s
    m["stream_wall_s"] = trace.wall_s
    m["n_steps"] = len(trace.steps)
    m["forced_trims"] = trace.forced_trims
    m["looped_steps"] = trace.looped_steps
    m["buffer_s_max"] = trace.buffer_s_max
    m["rss_mb_start"] = trace.rss[0][1] if trace.rss else None
    m["rss_mb_end"] = trace.rss[-1][1] if trace.rss else None
    # memory settles in the first minutes (allocator pools grow to the longest buffer yet):
    # drift is fitted after that, and over the whole session beside it
    settle = max(RSS_SETTLE_S, 0.1 * trace.audio_s)
    m["rss_slope_mb_h"] = slope_per_hour(trace.rss, settle)
    m["rss_slope_all_mb_h"] = slope_per_hour(trace.rss)
    floor = floor_slope_per_hour(trace.rss, trace.own, settle)
    if floor is not None:
        m["rss_floor_slope_mb_h"], m["rss_floor_slope_lo_mb_h"], m["rss_floor_slope_hi_mb_h"] = (
            floor
        )
    m["trace_mb"] = trace.nbytes() / 2**20
    m["commit_ms_slope_h"] = slope_per_hour(
        [(seen[h][0].end, (seen[h][1] - ref_words[r].end) * 1e3) for h, r in pairs]
    )
    return m, utts
