"""Counted FLOPs of the hf engine equal the closed form for the shapes it really runs."""

import pytest

from voxmeter.run.flopsreport import flops_table


@pytest.mark.parametrize(
    "frames, stride, pad, pool, tokens",
    [
        (3000, 1, "silence", "stride", 20),
        (1000, 1, "silence", "stride", 20),
        (1000, 2, "silence", "stride", 12),
        (600, 3, "none", "avg", 7),
        (3000, 4, "silence", "avg", 5),
    ],
)
def test_counted_equals_analytic(frames, stride, pad, pool, tokens, cache_dir):
    t = flops_table("tiny.en", frames, stride, pad, pool, tokens, cache_dir)
    for stage in ("encoder", "decoder"):
        assert t["counted"][stage] == pytest.approx(t["analytic"][stage], rel=0.01), stage
    # the encoder really runs on the shorter input
    assert t["analytic"]["encoder"] < 36.94e9 * (frames / 3000) + 2e9


def test_cost_only_large_counts_without_weights(cache_dir):
    t = flops_table("small", 400, 1, "none", "stride", 3, cache_dir)
    assert t["counted"]["encoder"] == pytest.approx(t["analytic"]["encoder"], rel=0.01)


def test_paper_column_is_labelled_as_our_reconstruction(cache_dir):
    from voxmeter.measure.flops import paper_label

    t = flops_table("tiny.en", 400, 1, "none", "stride", 3, cache_dir)
    assert t["paper_label"] == paper_label()
    assert any(n.startswith(paper_label()) for n in t["notes"])
