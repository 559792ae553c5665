"""The decoder's fixed cost (prefill) apart from its per-token cost, and one length limit.

Per-token decoder cost is (decode_ms - prefill_ms) / (steps - 1), so prefill must be a real,
positive part of the decode, and both engines must stop at the same number of tokens.
Timings are compared with each other only (never with a fixed number of milliseconds).
"""

from __future__ import annotations

import statistics
import time

import pytest

from voxmeter.engines import load_engine
from voxmeter.engines.ct2_whisper import ct2_max_length
from voxmeter.spec import RunSpec

REPEATS = 5


@pytest.fixture(scope="module")
def engines(cache_dir, tiny_source):
    return {e: load_engine(RunSpec(engine=e), cache_dir, tiny_source) for e in ("hf", "ct2")}


@pytest.fixture(scope="module")
def long_clip(default_clips):
    """The longest real clip: many decoding steps, so prefill is a small part of decode."""
    real = [ca for ca in default_clips if not ca[0].id.startswith("tts-")]  # recorded speech
    return max(real, key=lambda ca: len(ca[1].samples))[1].samples


def _timed_ms(fn, *args):
    """Milliseconds of fn(*args) and its output (the only item of a batch of one)."""
    t0 = time.perf_counter_ns()
    (out,) = fn(*args)
    return (time.perf_counter_ns() - t0) / 1e6, out


@pytest.mark.parametrize("name", ["hf", "ct2"])
def test_prefill_is_positive_and_part_of_the_decode(engines, long_clip, name):
    e = engines[name]
    enc = e.encode(e.features([long_clip]))
    e.decode(enc)  # warm-up: first-call allocations belong to neither figure
    runs = [_timed_ms(e.decode, enc) for _ in range(REPEATS)]
    out = runs[0][1]
    assert len(out.tokens) >= 10, "the clip must need many steps for this test to mean much"
    if name == "hf":
        # measured inside the very call that the outer clock times
        for ms, o in runs:
            assert 0 < o.prefill_ms < ms
        prefill = statistics.median(o.prefill_ms for _, o in runs)
    else:
        assert out.prefill_ms is None  # CTranslate2 cannot be timed from inside generate
        prefill = statistics.median(e.prefill_ms(enc) for _ in range(REPEATS))
        assert prefill > 0
    assert prefill < statistics.median(ms for ms, _ in runs)


def test_hf_prefill_approximates_a_first_token_only_decode(engines, long_clip):
    """A decode of one step is all prefill; the prefill inside a full decode is the same work."""
    e = engines["hf"]
    enc = e.encode(e.features([long_clip]))
    e.decode(enc, n_steps=1)
    first = [_timed_ms(e.decode, enc, 1) for _ in range(REPEATS)]
    for ms, o in first:
        assert o.extra["steps"] == 1 and 0 < o.prefill_ms <= ms
    inside = statistics.median(e.decode(enc)[0].prefill_ms for _ in range(REPEATS))
    alone = statistics.median(ms for ms, _ in first)
    assert alone / 3 < inside < alone * 3  # loose: timings on a shared machine


def test_ct2_max_length_gives_exactly_n_steps():
    # CTranslate2 decodes min(max_length // 2, max_length - (prompt - 1)) steps
    for prompt in (2, 4):  # English-only and multilingual prompts
        for n in (1, 2, 3, 5, 113, 224):
            ml = ct2_max_length(n, prompt)
            assert min(ml // 2, ml - (prompt - 1)) == n
    assert ct2_max_length(224, 2) == 448  # the whole text context, not 2 + 224


def test_both_engines_stop_at_the_same_length_limit(engines, long_clip):
    hf, ct2 = engines["hf"], engines["ct2"]
    saved = hf.max_new_tokens, ct2.max_new_tokens
    try:
        for n in (1, 5):
            hf.max_new_tokens = ct2.max_new_tokens = n
            (a,) = hf.decode(hf.encode(hf.features([long_clip])))
            (b,) = ct2.decode(ct2.encode(ct2.features([long_clip])))
            assert len(a.tokens) == len(b.tokens) == n
            assert a.hit_max_length and b.hit_max_length
            assert a.tokens == b.tokens
            assert a.extra["steps"] == n
    finally:
        hf.max_new_tokens, ct2.max_new_tokens = saved
    # and with room to spare neither reports the limit
    assert not hf.decode(hf.encode(hf.features([long_clip])))[0].hit_max_length


@pytest.mark.parametrize("name", ["hf", "ct2"])
def test_prefill_is_one_figure_per_batch(engines, default_clips, name):
    """A batch's prefill covers every item: one value, the same in each output (hf), or one
    first-token generate over the batch (ct2)."""
    e = engines[name]
    audios = [a.samples for _, a in default_clips[:3]]
    enc = e.encode(e.features(audios))
    outs = e.decode(enc)
    assert len(outs) == 3
    if name == "hf":
        assert len({o.prefill_ms for o in outs}) == 1 and outs[0].prefill_ms > 0
    else:
        assert all(o.prefill_ms is None for o in outs)
        assert e.prefill_ms(enc) > 0
