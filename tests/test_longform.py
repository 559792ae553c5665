"""Whisper's sequential long-form rules, checked against hand-worked token sequences."""

from __future__ import annotations

import pytest

from voxmeter.engines.longform import TIME_PRECISION, fit_frames, split_segments, window_frames

TS = 50363  # tiny.en's first timestamp token (<|0.00|>)


def text(tokens):
    return " ".join(str(t) for t in tokens)


def test_two_complete_segments_then_seek_to_the_last_end():
    # <|0.00|> a b <|2.00|><|2.00|> c <|5.00|><|5.00|> d   (d unfinished: no closing stamp)
    toks = [TS, 1, 2, TS + 100, TS + 100, 3, TS + 250, TS + 250, 4]
    segs, advance, single = split_segments(toks, TS, 10.0, text)
    assert [(s.start_s, s.end_s, s.text) for s in segs] == [
        (10.0, 10.0 + 100 * TIME_PRECISION, "1 2"),
        (10.0 + 100 * TIME_PRECISION, 10.0 + 250 * TIME_PRECISION, "3"),
    ]
    assert advance == 250 and not single  # the next window starts at 5.00 s into this one


def test_a_single_timestamp_ending_consumes_the_whole_window():
    toks = [TS, 1, TS + 100, TS + 100, 2, TS + 300]  # ends on one timestamp: all said
    segs, advance, single = split_segments(toks, TS, 0.0, text)
    assert single and advance is None
    assert [(s.text, s.end_s) for s in segs] == [("1", 2.0), ("2", 6.0)]


def test_no_complete_pair_is_one_segment_to_the_last_timestamp():
    segs, advance, single = split_segments([TS, 7, 8, TS + 50], TS, 30.0, text)
    assert [(s.start_s, s.end_s, s.text) for s in segs] == [(30.0, 31.0, "7 8")]
    assert single and advance is None
    assert split_segments([TS], TS, 0.0, text)[0] == []  # nothing said: no segment


@pytest.mark.parametrize(("frames", "expected"), [("fit", 3000), (3000, 3000), (1500, 1500)])
def test_window_length_follows_xt(frames, expected):
    assert window_frames(frames) == expected


def test_the_last_window_is_fitted_like_a_short_clip():
    assert fit_frames(16000 * 7 + 5, 1.0, 3000) == 800  # 7.0003 s -> 8 s at 1 s steps
    assert fit_frames(16000 * 40, 1.0, 1500) == 1500  # never longer than the window
