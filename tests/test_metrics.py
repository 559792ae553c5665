"""WER/CER against hand counts, the normalizer, the bootstrap, failure flags, UA/WA/macro-F1."""

from __future__ import annotations

import numpy as np
import pytest

from voxmeter.metrics import (
    accuracy_bootstrap_cis,
    classification_bootstrap_cis,
    clip_wer,
    compression_ratio,
    confusion,
    corpus_wer,
    failure_flags,
    longest_repeat,
    macro_f1,
    normalize,
    unweighted_accuracy,
    weighted_accuracy,
    wer_bootstrap_ci,
    wer_gap_ci,
)
from voxmeter.stats import ratio_bootstrap_ci

# --- normalizer ----------------------------------------------------------------------------


def test_normalizer_matches_written_and_spoken_forms():
    # Whisper's normalizer spells "Mr." out, reads the 's as "is" (it cannot tell a possessive
    # from a contraction) and turns "ten dollars" into "$10": both sides land on one string.
    assert normalize("Mr. Smith's 10 dollars") == "mister smith is $10"
    assert normalize("mister smith's ten dollars") == "mister smith is $10"
    assert clip_wer("Mr. Smith's 10 dollars", "mister smith's ten dollars").wer == 0.0


def test_normalizer_drops_punctuation_case_fillers_and_british_spelling():
    assert normalize("Hello, World!") == "hello world"
    assert normalize("Uh, the colour of the centre.") == "the color of the center"


# --- WER / CER -------------------------------------------------------------------------------


def test_one_insertion_in_three_words():
    s = clip_wer("the cat sat", "the cat sat down")
    assert (s.substitutions, s.deletions, s.insertions, s.ref_words) == (0, 0, 1, 3)
    assert s.wer == pytest.approx(100 / 3)
    # CER counts characters, spaces included: " down" is 5 inserted of 11.
    assert (s.char_edits, s.ref_chars) == (5, 11)
    assert s.cer == pytest.approx(100 * 5 / 11)


def test_substitution_and_deletion():
    s = clip_wer("the cat sat on the mat", "the bat sat on mat")
    assert (s.substitutions, s.deletions, s.insertions, s.ref_words) == (1, 1, 0, 6)
    assert s.wer == pytest.approx(100 * 2 / 6)


def test_corpus_wer_is_total_edits_over_total_words_not_a_mean_of_rates():
    refs = ["a b c d e f g h i j", "k l"]  # 10 and 2 words
    hyps = ["a b c d e f g h i j", "x y"]  # 0 and 2 errors
    s = corpus_wer(refs, hyps)
    assert s.wer == pytest.approx(100 * 2 / 12)  # a mean of per-clip rates would give 50
    assert s.n_clips == 2 and s.word_edits == 2


def test_normalization_can_be_skipped():
    assert corpus_wer(["Hello."], ["hello"]).wer == 0.0
    assert corpus_wer(["Hello."], ["hello"], normalized=True).wer == 100.0


def test_empty_reference_counts_insertions_without_crashing():
    s = corpus_wer(["the cat sat", "Uh, hmm."], ["the cat sat", "hello there"])
    assert s.n_empty_refs == 1
    assert (s.insertions, s.ref_words) == (2, 3)
    assert s.wer == pytest.approx(100 * 2 / 3)
    only_empty = clip_wer("hmm", "hello")
    assert only_empty.wer is None and only_empty.cer is None and only_empty.insertions == 1
    assert clip_wer("", "").wer is None


def test_mismatched_lengths_are_a_bug():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        corpus_wer(["a", "b"], ["a"])


# --- bootstrap -------------------------------------------------------------------------------


def noisy_corpus(n: int = 60) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(1)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
    refs, hyps = [], []
    for _ in range(n):
        r = list(rng.choice(words, size=int(rng.integers(3, 15))))
        h = [w if rng.random() > 0.2 else "zulu" for w in r]
        refs.append(" ".join(r))
        hyps.append(" ".join(h))
    return refs, hyps


def test_bootstrap_contains_point_estimate_and_is_deterministic():
    refs, hyps = noisy_corpus()
    point = corpus_wer(refs, hyps).wer
    lo, hi = wer_bootstrap_ci(refs, hyps, n_boot=1000, seed=0)
    assert lo < point < hi
    assert 0 < hi - lo < 20  # informative, not degenerate
    assert wer_bootstrap_ci(refs, hyps, seed=0) == (lo, hi)
    assert wer_bootstrap_ci(refs, hyps, seed=1) != (lo, hi)
    lo90, hi90 = wer_bootstrap_ci(refs, hyps, seed=0, level=0.90)
    assert lo <= lo90 and hi90 <= hi  # a lower level gives a narrower interval


def test_bootstrap_of_perfect_output_is_zero_width():
    refs = ["one two three", "four five"]
    assert wer_bootstrap_ci(refs, refs) == (0.0, 0.0)


def test_bootstrap_from_counts_matches_hand_resampling():
    errors, words = np.array([1, 0, 3]), np.array([4, 5, 6])
    lo, hi = ratio_bootstrap_ci(errors, words, n_boot=200, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 3, size=(200, 3))
    w = 100 * errors[idx].sum(1) / words[idx].sum(1)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(w, [2.5, 97.5])))


def test_cer_gets_the_same_bootstrap_over_clips_as_wer():
    # the same clips resampled, in characters: edits and reference characters per clip by hand
    refs = ["one two three", "four five", "six seven eight"]
    hyps = ["one two tree", "four five", "six seven"]
    cis = accuracy_bootstrap_cis(refs, hyps, n_boot=300, seed=4, normalized=True)
    assert cis["wer"] == wer_bootstrap_ci(refs, hyps, n_boot=300, seed=4, normalized=True)
    char_edits = np.array([1, 0, 6])  # "three"->"tree": 1 deletion; " eight" deleted: 6
    ref_chars = np.array([13, 9, 15])
    idx = np.random.default_rng(4).integers(0, 3, size=(300, 3))
    c = 100 * char_edits[idx].sum(1) / ref_chars[idx].sum(1)
    assert cis["cer"] == pytest.approx(tuple(np.percentile(c, [2.5, 97.5])))
    lo, hi = cis["cer"]
    assert lo < corpus_wer(refs, hyps, normalized=True).cer < hi
    assert accuracy_bootstrap_cis([], []) == {"wer": None, "cer": None}


def test_wer_gap_is_the_mean_over_draws_against_hand_counts():
    refs = ["one two three four", "five six seven eight"]  # 8 words
    a1 = ["one two three", "five six seven eight"]  # 1 deletion: 12.5
    a2 = ["one two three four", "five six seven eight nine"]  # 1 insertion: 12.5
    a3 = ["one two three four", "five six seven eight"]  # 0
    b = ["one two three four", "five six seven eight"]
    gap, lo, hi = wer_gap_ci(refs, [a1, a2, a3], [b], normalized=True)
    assert gap == pytest.approx((12.5 + 12.5 + 0) / 3)
    assert lo <= gap <= hi


def test_wer_gap_interval_is_paired():
    # b is noisy; a is b with one more word dropped in every fifth clip: the clips' own
    # difficulty is shared by both sides and must not widen the gap's interval
    refs, b = noisy_corpus(80)
    a = [" ".join(h.split()[1:]) if i % 5 == 0 else h for i, h in enumerate(b)]
    gap, lo, hi = wer_gap_ci(refs, [a], [b], seed=0)
    assert gap == pytest.approx(corpus_wer(refs, a).wer - corpus_wer(refs, b).wer)
    assert 0 < lo < gap < hi
    lo_a, hi_a = wer_bootstrap_ci(refs, a, seed=0)
    assert hi - lo < (hi_a - lo_a) / 2  # unpaired, the two WERs' intervals would overlap
    assert wer_gap_ci(refs, [a], [b], seed=0) == (gap, lo, hi)
    assert wer_gap_ci(refs, [b], [b]) == (0.0, 0.0, 0.0)


def test_wer_gap_refuses_no_draws_and_has_no_figure_without_words():
    with pytest.raises(ValueError, match="at least one draw"):
        wer_gap_ci(["a b"], [], [["a b"]])
    assert wer_gap_ci(["hmm"], [["hello"]], [["hmm"]]) is None


def test_bootstrap_without_reference_words_is_none():
    assert wer_bootstrap_ci(["hmm"], ["hello"]) is None
    assert wer_bootstrap_ci([], []) is None


# --- failure flags ---------------------------------------------------------------------------

NORMAL = (
    "It is a truth universally acknowledged, that a single man in possession of a good "
    "fortune, must be in want of a wife. However little known the feelings or views of such "
    "a man may be on his first entering a neighbourhood, this truth is so well fixed in the "
    "minds of the surrounding families, that he is considered the rightful property of some "
    "one or other of their daughters."
)


def test_normal_text_is_not_flagged():
    assert failure_flags(NORMAL, 22.0) == []
    assert failure_flags(NORMAL, 22.0, ref=NORMAL) == []
    assert failure_flags("Go forward ten meters.", 2.8, ref="go forward ten meters") == []
    assert failure_flags("He had had enough, and that that was that.", 3.0) == []
    assert compression_ratio(NORMAL) < 2.4


def test_short_clips_and_short_refs_are_not_early_ends():
    assert failure_flags("ten", 1.5) == []  # too short to judge by rate
    assert failure_flags("", 1.1, ref="ten of clubs") == []  # one miss halves a 3-word ref


def test_early_end_by_speaking_rate():
    # 20 s at a slow 1.5 words/s is 30 words; 40% of that is 12.
    assert failure_flags("and then he said that", 20.0) == ["early_end"]
    thirteen = "the train to the coast leaves from platform four every morning at dawn"
    assert failure_flags(thirteen, 20.0) == []
    assert failure_flags(thirteen.rsplit(" ", 2)[0], 20.0) == ["early_end"]  # eleven words


def test_early_end_against_the_reference():
    ref = "had he married a more amiable woman he might have been made still more respectable"
    assert failure_flags("had he married a more", 6.0, ref=ref) == ["early_end"]
    assert failure_flags("had he married a more amiable woman he might have", 6.0, ref=ref) == []


def test_word_loops_are_flagged():
    assert "repetition_loop" in failure_flags("the the the the", 2.0)
    assert "repetition_loop" in failure_flags("and I said no. No, no, no!", 2.0)
    loop = "Thank you for watching. " + "I am going home. " * 4
    assert failure_flags(loop, 10.0) == ["repetition_loop"]
    assert failure_flags("the the the", 2.0) == []  # three in a row is speech, not a loop


def test_compression_ratio_catches_long_loops():
    long_loop = "we will see you in the next video and " * 12
    assert compression_ratio(long_loop) > 2.4
    assert "repetition_loop" in failure_flags(long_loop, 25.0)


def test_longest_repeat_counts_ngrams():
    assert longest_repeat(list("abababab")) == 4
    assert longest_repeat(list("xabcabcabcy")) == 3
    assert longest_repeat(["one", "two", "three"]) == 1
    assert longest_repeat([]) == 0


def test_hit_max_length_is_passed_through():
    assert failure_flags(NORMAL, 22.0, hit_max_length=True) == ["hit_max_length"]


# --- classification --------------------------------------------------------------------------


def test_ua_and_wa_on_an_imbalanced_set():
    y_true = ["neutral"] * 8 + ["angry"] * 2
    y_pred = ["neutral"] * 10
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(80.0)
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx(50.0)  # (100 + 0) / 2


def test_ua_averages_recalls_over_classes_present():
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx(100 * (1 / 2 + 2 / 3 + 1) / 3)
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(100 * 4 / 6)


def test_classification_inputs_are_checked():
    with pytest.raises(ValueError):
        weighted_accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        unweighted_accuracy([], [])


def test_macro_f1_by_hand():
    # class 0: P 1/2 R 1/2; class 1: P 2/3 R 2/3; class 2: P 1 R 1
    assert macro_f1([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 2]) == pytest.approx(
        100 * (1 / 2 + 2 / 3 + 1) / 3
    )
    # the minority class never predicted: F1 0, the majority 2PR/(P+R) with P 0.8, R 1
    y_true = ["neutral"] * 8 + ["angry"] * 2
    assert macro_f1(y_true, ["neutral"] * 10) == pytest.approx(100 * (2 * 0.8 / 1.8 + 0) / 2)


def test_macro_f1_averages_over_the_true_classes_only():
    # "c" is predicted but never true: it is a false positive of "a", not a class of its own
    assert macro_f1(["a", "a", "b"], ["a", "c", "b"]) == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_confusion_rows_are_true_columns_predicted():
    got = confusion([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 2])
    assert got == {"labels": [0, 1, 2], "counts": [[1, 1, 0], [1, 2, 0], [0, 0, 1]]}
    got = confusion(["a", "a", "b"], ["a", "c", "b"])
    assert got == {"labels": ["a", "b", "c"], "counts": [[1, 0, 1], [0, 1, 0], [0, 0, 0]]}


def test_classification_cis_hold_the_figure_and_narrow_with_the_level():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 200).tolist()
    y_pred = [t if rng.random() < 0.6 else int(rng.integers(0, 4)) for t in y_true]
    wide = classification_bootstrap_cis(y_true, y_pred, n_boot=400, level=0.99)
    narrow = classification_bootstrap_cis(y_true, y_pred, n_boot=400, level=0.5)
    figures = {
        "ua": unweighted_accuracy(y_true, y_pred),
        "wa": weighted_accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
    }
    for name, value in figures.items():
        assert wide[name][0] < narrow[name][0] <= value <= narrow[name][1] < wide[name][1]
    assert classification_bootstrap_cis(y_true, y_pred, n_boot=400, level=0.99) == wide


def test_classification_cis_of_a_perfect_classifier_are_a_point():
    cis = classification_bootstrap_cis(["x", "y", "y", "z"], ["x", "y", "y", "z"], n_boot=50)
    assert cis == {"ua": (100.0, 100.0), "wa": (100.0, 100.0), "macro_f1": (100.0, 100.0)}


def test_ua_equals_scikit_learns_balanced_accuracy():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 5, 300))
    assert unweighted_accuracy(y_true.tolist(), y_pred.tolist()) == pytest.approx(
        100 * balanced_accuracy_score(y_true, y_pred)
    )
