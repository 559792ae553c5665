"""LocalAgreement-n, word splitting, the joined stream and the figures, by hand examples."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from voxmeter.errors import SpecError
from voxmeter.spec import RunSpec, StreamSettings
from voxmeter.stream.align import word_bounds, words_from_path
from voxmeter.stream.measures import (
    churn,
    floor_slope_per_hour,
    match_by_utterance,
    match_words,
    slope_per_hour,
    stream_metrics,
)
from voxmeter.stream.policy import LocalAgreement, Word, common_prefix
from voxmeter.stream.replay import JoinedAudio, StepRecord, Trace, _append, record_bytes
from voxmeter.stream.session import words_of


def hyp(text: str, start: float = 0.0, step: float = 0.5) -> list[Word]:
    return [Word(start + i * step, start + (i + 1) * step, w) for i, w in enumerate(text.split())]


def texts(words: list[Word]) -> str:
    return " ".join(w.text for w in words)


def test_common_prefix_ignores_case_and_punctuation():
    assert common_prefix([hyp("Hello, world. again"), hyp("hello world again!")]) == 3
    assert common_prefix([hyp("a b c"), hyp("a x c")]) == 1
    assert common_prefix([hyp("a b"), hyp("a b c"), hyp("a b c d")]) == 2


def test_local_agreement_2_commits_what_two_hypotheses_share():
    la = LocalAgreement(2)
    assert la.insert(hyp("the cat")) == []  # one hypothesis: nothing agrees yet
    assert texts(la.pending) == "the cat"
    assert texts(la.insert(hyp("the cat sat on"))) == "the cat"
    assert texts(la.pending) == "sat on"
    assert texts(la.insert(hyp("the cat sat on the mat"))) == "sat on"
    assert texts(la.finish()) == "the mat"
    assert texts(la.committed) == "the cat sat on the mat"


def test_local_agreement_3_waits_for_three():
    la = LocalAgreement(3)
    assert la.insert(hyp("one two")) == []
    assert la.insert(hyp("one two three")) == []
    assert texts(la.insert(hyp("one too three"))) == "one"  # "two" disputed by the third


def test_local_agreement_1_commits_every_hypothesis():
    la = LocalAgreement(1)
    assert texts(la.insert(hyp("a b"))) == "a b"


def test_restated_committed_words_are_cut_by_text_even_when_times_are_off():
    la = LocalAgreement(2)
    la.insert(hyp("platform four every"))
    la.insert(hyp("platform four every morning"))  # commits "platform four every"
    # the next hypothesis restates them with times that put "morning" before the commit point
    skewed = [Word(0.0, 0.3, "platform"), Word(0.3, 0.6, "four"), Word(0.6, 0.9, "every")]
    skewed += [Word(0.9, 1.2, "morning"), Word(1.2, 1.5, "and")]
    assert texts(la.insert(skewed, buffer_start=0.0)) == "morning"


def test_a_committed_word_is_not_matched_to_its_namesake_seconds_later():
    """The bundled set's tts-15: "He asked when the" committed; the next hypothesis
    rephrases it and has another "the" seconds later. Cutting after that "the" lost the words
    between; the match is refused for its distance, and the time cut keeps what follows the
    committed end."""
    la = LocalAgreement(1)
    la.insert([Word(0.0, 0.36, "He"), Word(0.36, 0.71, "asked")], buffer_start=0.0)
    la.insert([Word(0.71, 1.07, "when"), Word(1.07, 1.43, "the")], buffer_start=0.0)
    text = "He asked whether anyone had seen this keys, but no more than the room could remember."
    step = 0.33
    again = [Word(i * step, (i + 1) * step, w) for i, w in enumerate(text.split())]
    assert again[12].text == "the" and again[12].end - 1.43 > 2.0
    got = texts(la.insert(again, buffer_start=0.0))
    assert got == "seen this keys, but no more than the room could remember."


def test_time_cut_and_prompt_repetition_are_dropped():
    la = LocalAgreement(2)
    la.insert(hyp("a b c"))
    la.insert(hyp("a b c d"))  # commits a b c, ending at 1.5 s
    # a hypothesis of a later buffer repeating the committed tail ("b c") at its start
    again = [Word(1.5, 1.8, "b"), Word(1.8, 2.0, "c"), Word(2.0, 2.5, "d"), Word(2.5, 3, "e")]
    assert texts(la.insert(again)) == "d"


def test_max_wait_commits_a_disputed_word_once_it_is_old_enough():
    # words of 0.5 s each: "the" ends at 0.5, "cat" at 1.0, "sat" at 1.5
    la = LocalAgreement(2, max_wait_s=1.0)
    assert la.insert(hyp("the cat"), now=1.2) == []  # nothing ended 1 s ago yet
    # the hypotheses disagree from the first word; at 1.6 s only "the" (ended 0.5) is overdue
    assert texts(la.insert(hyp("a cat sat"), now=1.6)) == "a"
    assert texts(la.pending) == "cat sat"
    assert (la.n_unagreed, la.n_relaxed) == (1, 0)
    # agreement still commits as before: "cat" is shared, and "sat" ends only 0.6 s before now
    assert texts(la.insert(hyp("a cat sad on", step=0.5), now=2.1)) == "cat"
    # without the bound, the same disputes commit nothing
    plain = LocalAgreement(2)
    plain.insert(hyp("the cat"), now=1.2)
    assert plain.insert(hyp("a cat sat"), now=1.6) == []


def test_max_wait_with_one_hypothesis_of_n_3():
    la = LocalAgreement(3, max_wait_s=0.5)
    # the first hypothesis of LA-3 commits only what is overdue; the rest waits for agreement
    assert texts(la.insert(hyp("one two three"), now=1.5)) == "one two"
    assert texts(la.pending) == "three"


def test_relax_commits_an_old_word_two_hypotheses_agree_on():
    # LA-3, words of 0.5 s: "one" ends at 0.5, "two" at 1.0, "three" at 1.5
    la = LocalAgreement(3, relax_s=1.0)
    assert la.insert(hyp("one two"), now=1.0) == []  # nothing ended 1 s before 1.0
    # the first two hypotheses agree on "one two"; only "one" ended 1 s before 1.6
    assert texts(la.insert(hyp("one two three"), now=1.6)) == "one"
    assert texts(la.pending) == "two three"
    # a third hypothesis: "two" agreed by all three (LA-3), "three" disputed by the newest
    assert texts(la.insert(hyp("one two tree"), now=2.0)) == "two"
    # "three"/"tree": the last two ("tree", "tree") agree and it is old enough: committed
    # with the newest copy's text, though the third-last read "three"
    assert texts(la.insert(hyp("one two tree four"), now=2.6)) == "tree"
    assert (la.n_committed, la.n_relaxed, la.n_unagreed) == (3, 2, 0)  # "one", "tree"
    # without relax_s LA-3 still waits on "tree" (three readings do not yet agree)
    plain = LocalAgreement(3)
    plain.insert(hyp("one two"), now=1.0)
    plain.insert(hyp("one two three"), now=1.6)
    assert texts(plain.insert(hyp("one two tree"), now=2.0)) == "one two"
    assert plain.insert(hyp("one two tree four"), now=2.6) == []


def test_relax_leaves_a_word_the_last_two_dispute_to_max_wait():
    la = LocalAgreement(3, relax_s=0.5, max_wait_s=1.5)
    la.insert(hyp("a b"), now=0.5)
    # "a" is old enough for relax_s, but the last two read it differently: nothing yet
    assert la.insert(hyp("x b c"), now=1.2) == []
    assert la.insert(hyp("y b c"), now=1.4) == []
    # past max_wait_s (a ended at 0.5, now 2.1) the newest copy goes in, agreed or not;
    # agreement is a common prefix, so nothing after the disputed word counts as agreed
    assert texts(la.insert(hyp("z b c d"), now=2.1)) == "z"
    # the newest alone goes on as history: "b c" (ended by 1.5, past relax_s at 2.3) is
    # committed once one more hypothesis agrees with it
    assert texts(la.pending) == "b c d"
    assert texts(la.insert(hyp("z b c e"), now=2.3)) == "b c"
    assert texts(la.pending) == "e"
    assert (la.n_committed, la.n_relaxed, la.n_unagreed) == (3, 2, 1)  # "b c"; "z"


def test_relax_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="n >= 3"):
        LocalAgreement(2, relax_s=1.0)
    with pytest.raises(ValueError, match="shorter than max_wait_s"):
        LocalAgreement(3, relax_s=1.5, max_wait_s=1.5)
    with pytest.raises(ValueError, match="relax_s"):
        LocalAgreement(3, relax_s=-0.5)


def test_bad_agreement_is_refused():
    with pytest.raises(ValueError):
        LocalAgreement(0)
    with pytest.raises(ValueError):
        LocalAgreement(2, max_wait_s=-1.0)


def test_words_of_interpolates_over_tokens():
    pieces = [" Hello", ",", " wor", "ld", "."]
    words = words_of(pieces, 1.0, 2.0)
    assert [w.text for w in words] == ["Hello,", "world."]
    assert words[0].start == 1.0 and words[0].end == pytest.approx(1.4)
    assert words[1].start == pytest.approx(1.4) and words[1].end == 2.0


def test_word_bounds_and_alignment_path():
    pieces = [" he", " was", " not", "ed"]
    assert word_bounds(pieces) == [(0, 1), (1, 2), (2, 4)]
    # token 0 at steps 0-4, token 1 at 5-9, tokens 2-3 at 10-19
    path = [(0, s) for s in range(5)] + [(1, s) for s in range(5, 10)]
    path += [(2, s) for s in range(10, 15)] + [(3, s) for s in range(15, 20)]
    words = words_from_path(path, pieces, offset_s=10.0)
    assert [(w.text, w.start, w.end) for w in words] == [
        ("he", 10.0, 10.1),
        ("was", 10.1, 10.2),
        ("noted", 10.2, pytest.approx(10.4)),
    ]


def test_joined_audio_reads_across_clips_and_repeats():
    a = np.ones(10, dtype=np.float32)
    b = np.full(6, 2.0, dtype=np.float32)
    j = JoinedAudio([a, b], gap_s=4 / 16000)
    assert j.n_samples == 10 + 4 + 6 + 4
    x = np.concatenate([j.read(0, 7), j.read(7, 100)])
    assert x.tolist() == [1.0] * 10 + [0.0] * 4 + [2.0] * 6 + [0.0] * 4
    long = JoinedAudio([a, b], gap_s=4 / 16000, duration_s=50 / 16000)
    assert long.n_samples == 50
    # a at 0, b at 14, a at 24, b at 38 (ends 44); a fifth clip (48 + 10) would pass 50
    assert [i for _, i in long.placements()] == [0, 1, 0, 1]


def step(t: float, committed: str = "", partial: str = "", start: float = 0.0) -> StepRecord:
    c = hyp(committed, start) if committed else []
    p = hyp(partial, start + 0.5 * len(c)) if partial else []
    return StepRecord(t, t + 0.1, t, 0.1, 1.0, 100, c, p, False)


def recorded(steps: list[StepRecord]) -> list[StepRecord]:
    """Steps as the replay records them (revisions counted, old partials dropped)."""
    out: list[StepRecord] = []
    for s in steps:
        _append(out, s, None)
    return out


def test_churn_counts_revised_partial_words():
    steps = recorded([step(1, "", "the cat"), step(2, "the", "bat sat"), step(3, "bat sat", "")])
    trace = Trace(steps, 3.0, 0.3, False, 0)
    # "cat" became "bat": one revision; "bat sat" then committed unchanged
    assert churn(trace) == (1, 3)


def test_stream_metrics_latency_against_reference_words():
    ref = hyp("a b c d")  # ends at 0.5, 1.0, 1.5, 2.0
    steps = recorded(
        [
            StepRecord(1.0, 1.2, 1.0, 0.2, 1.0, 100, hyp("a b"), hyp("c", 1.0), False),
            StepRecord(2.0, 2.3, 2.0, 0.3, 2.0, 100, hyp("c x", 1.0), [], True),
        ]
    )
    trace = Trace(steps, 2.0, 0.5, False, 0, rss=[(0, 100.0)])
    m, utts = stream_metrics(trace, ref, [(0, 4)], "a b c d", "a b c d")
    # a: 1.2-0.5, b: 1.2-1.0, c: 2.3-1.5 (d unmatched)
    assert m["commit_ms_p50"] == pytest.approx(700)
    assert m["words_matched_share"] == 75
    assert m["first_partial_s"] == pytest.approx(1.2)
    # the last matched word (c) committed at 2.3; the utterance's speech ended with d at 2.0
    assert utts[0]["eou_ms"] == pytest.approx((2.3 - 2.0) * 1000)
    assert m["stream_wer"] == pytest.approx(25.0)  # one substitution in four
    assert m["compute_ratio"] == pytest.approx(0.25)
    assert match_words(hyp("x a b"), hyp("a b")) == [(1, 0), (2, 1)]


def test_slope_per_hour():
    assert slope_per_hour([(0, 100), (30, 101)]) is None  # too short to fit
    pts = [(t, 100 + t / 3600 * 5) for t in range(0, 600, 10)]
    assert slope_per_hour(pts) == pytest.approx(5.0)


def test_floor_slope_fits_each_windows_lowest_sample_less_the_trace():
    # every 10 s for an hour: a floor rising 12 MiB/h, 20 MiB of allocator cache in the second
    # half on every sample but each 5-minute window's first, and a trace growing 2 MiB/h
    t = np.arange(0, 3600, 10.0)
    cached = np.where(((t - 300) % 300 == 0) | (t < 1800), 0.0, 20.0)
    rss = list(zip(t, 100 + 12 * t / 3600 + cached, strict=True))
    own = list(zip(t, 2 * t / 3600, strict=True))
    assert floor_slope_per_hour(rss, own, settle_s=300) == pytest.approx((10.0, 10.0, 10.0))
    assert floor_slope_per_hour(rss, [], settle_s=300)[0] == pytest.approx(12.0)
    assert slope_per_hour(rss, 300) > 30  # the cache moves the plain line, not the floor
    # one window's low far below the rest (a heap release the next steps undid) moves a
    # least-squares line through the lows by tens of MiB/h; Theil-Sen's median slope keeps 10
    dipped = [(t_, v - 25 if 300 <= t_ < 310 else v) for t_, v in rss]
    slope, low, high = floor_slope_per_hour(dipped, own, settle_s=300)
    assert slope == pytest.approx(10.0)
    assert low <= 10.0 <= high
    assert floor_slope_per_hour(rss[:60], own, settle_s=0) is None  # two windows only


def test_the_replay_counts_its_own_trace_bytes_as_it_goes():
    steps: list[StepRecord] = []
    counted = sum(_append(steps, step(i, "a b" if i % 2 else "", "c d"), None) for i in range(1, 6))
    trace = Trace(steps, 5.0, 0.5, False, 0)
    assert counted > 0
    assert counted + record_bytes(steps[-1]) + sys.getsizeof(steps) == trace.nbytes()


def test_stream_settings_validate_and_keep_old_hashes():
    assert RunSpec().spec_hash == RunSpec(stream=StreamSettings()).spec_hash
    s = RunSpec(stream=StreamSettings(chunk_ms=500))
    assert s.spec_hash != RunSpec().spec_hash
    assert "stream 500ms LA-2" in s.label()
    assert RunSpec.from_dict(s.to_dict()) == s
    assert RunSpec().with_(stream_chunk_ms=700).stream.chunk_ms == 700
    for bad, field in [
        ({"chunk_ms": 5}, "chunk_ms"),
        ({"chunk_ms": 500, "agreement": 0}, "agreement"),
        ({"chunk_ms": 500, "holdback_s": -0.5}, "holdback_s"),
        ({"chunk_ms": 500, "trim_s": 40.0}, "trim_s"),
        ({"chunk_ms": 500, "vad_threshold": 1.5}, "vad_threshold"),
        ({"chunk_ms": 500, "vad": "yes"}, "vad"),
        ({"chunk_ms": 500, "final_pass": "words"}, "final_pass"),
        ({"chunk_ms": 500, "force_committed": 1}, "force_committed"),
        ({"chunk_ms": 500, "vad": True, "step_pass": "words"}, "step_pass"),
        ({"chunk_ms": 500, "step_pass": "plain"}, "step_pass: 'plain' needs vad"),
        ({"chunk_ms": 500, "pause_cut_ms": 160}, "pause_cut_ms: needs vad"),
        ({"chunk_ms": 500, "vad": True, "pause_cut_ms": 20}, "pause_cut_ms"),
        ({"chunk_ms": 500, "vad": True, "pause_cut_ms": 500}, "pause_cut_ms"),
        ({"chunk_ms": 500, "vad": True, "pause_cut_ms": 160.0}, "pause_cut_ms"),
        ({"chunk_ms": 500, "max_wait_s": 0.05}, "max_wait_s"),
        ({"chunk_ms": 500, "max_wait_s": float("nan")}, "max_wait_s"),
        ({"chunk_ms": 500, "agreement": 3, "relax_s": 0.05}, "relax_s"),
        ({"chunk_ms": 500, "agreement": 2, "relax_s": 1.0}, "relax_s: needs agreement >= 3"),
        ({"chunk_ms": 500, "agreement": 3, "relax_s": 2.0, "max_wait_s": 1.5}, "shorter than"),
    ]:
        with pytest.raises(SpecError, match=field):
            RunSpec(stream=StreamSettings(**bad)).validate()


def test_a_stream_stored_before_final_pass_reads_as_what_it_measured_and_keeps_its_hash():
    """Streams stored before the field decoded their final pass with timestamps: read back
    they say so, and their hash is the one computed then (the field is left out of it)."""
    new = RunSpec(stream=StreamSettings(chunk_ms=500, vad=True))
    stored = new.to_dict()
    later_fields = ("final_pass", "force_committed", "step_pass", "pause_cut_ms", "max_wait_s")
    for later in (*later_fields, "relax_s"):
        del stored["stream"][later]
    old = RunSpec.from_dict(stored)
    assert old.stream.final_pass == "timestamps" and new.stream.final_pass == "plain"
    assert old.hash_dict()["stream"] == stored["stream"]  # the dict hashed before the field
    assert old.spec_hash != new.spec_hash
    assert "final=timestamps" in old.label() and "final=" not in new.label()
    assert RunSpec.from_dict(new.to_dict()) == new
    assert RunSpec.from_dict(RunSpec().to_dict()).spec_hash == RunSpec().spec_hash


def test_streams_stored_before_force_committed_step_pass_and_pause_cut_keep_meaning_and_hash():
    """The fields default to what every stream did before them."""
    new = RunSpec(stream=StreamSettings(chunk_ms=500, vad=True))
    stored = new.to_dict()
    for later in ("force_committed", "step_pass", "pause_cut_ms", "max_wait_s", "relax_s"):
        del stored["stream"][later]
    old = RunSpec.from_dict(stored)
    assert old == new and old.spec_hash == new.spec_hash
    assert old.hash_dict()["stream"] == stored["stream"]
    forced = new.with_(stream_force_committed=True, stream_step_pass="plain")
    assert forced.spec_hash != new.spec_hash
    assert "+forced step=plain" in forced.label() and "forced" not in new.label()
    cut = new.with_(stream_pause_cut_ms=160)
    assert cut.spec_hash != new.spec_hash and "cut@160ms" in cut.label()
    assert RunSpec.from_dict(cut.to_dict()) == cut
    wait = new.with_(stream_max_wait_s=1.5)
    assert wait.spec_hash != new.spec_hash and "wait<=1.5s" in wait.label()
    assert RunSpec.from_dict(wait.to_dict()) == wait
    relax = new.with_(stream_agreement=3, stream_relax_s=1.0)
    assert "LA-2@1s" in relax.label() and RunSpec.from_dict(relax.to_dict()) == relax
    assert relax.spec_hash != new.with_(stream_agreement=3).spec_hash


def test_known_leading_words_are_cut_without_matching():
    """A hypothesis forced to start with the committed words is cut right after them, even
    where their times (spread evenly over a longer buffer) moved by more than the text cut's
    tolerance: without `known` they fall past the time cut and are committed twice."""
    restated = hyp("the cat sat on the mat", start=4.0)  # the committed words 4 s later
    for known, expected in ((5, "mat"), (0, "the cat sat on the mat")):
        p = LocalAgreement(1)
        p.insert(hyp("the cat sat on the"), buffer_start=0.0)
        assert texts(p.insert(restated, buffer_start=0.0, known=known)) == expected
    # known counts words as they come, those with no text (punctuation only) included
    p = LocalAgreement(1)
    p.insert(hyp("go"), buffer_start=0.0)
    out = p.insert([Word(0, 1, "go"), Word(1, 1.1, "..."), Word(1.1, 2, "home")], 0.0, known=2)
    assert texts(out) == "home"


def test_matching_stays_within_each_utterance_when_text_recurs():
    first, second = hyp("go forward ten meters"), hyp("go forward ten meters", start=100.0)
    ref = first + second
    # the stream got only the second utterance, whose words recur in the first
    pairs = match_by_utterance(second, ref, [(0, 4), (4, 8)])
    assert pairs == [(0, 4), (1, 5), (2, 6), (3, 7)]
    assert match_words(second, ref)[0] == (0, 0)  # one match over the stream pairs them wrong


def test_allocator_note_says_which_malloc_settings_ran(monkeypatch):
    from voxmeter.stream import allocator_note

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert allocator_note().startswith("malloc defaults")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert "131072" in allocator_note()


def test_heap_release_runs_unless_turned_off_and_the_note_says_so(monkeypatch):
    from voxmeter.stream import allocator_note, release_heap

    monkeypatch.delenv("VOXMETER_MALLOC_TRIM", raising=False)
    assert release_heap() is True  # glibc here
    assert "malloc_trim(0)" in allocator_note()
    monkeypatch.setenv("VOXMETER_MALLOC_TRIM", "0")
    assert release_heap() is False
    assert "malloc_trim" not in allocator_note()
