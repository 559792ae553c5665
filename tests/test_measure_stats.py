"""Summaries of repeated measurements, checked against hand-computed values."""

from __future__ import annotations

import pytest

from voxmeter.measure.stats import bootstrap_ci, outlier_indices, percentile, summarize
from voxmeter.measure.windows import MeasureError


def test_summary_hand_values_and_outlier_kept():
    s = summarize([1, 2, 3, 4, 100])
    assert (s.n, s.mean, s.median, s.p50, s.min, s.max) == (5, 22.0, 3.0, 3.0, 1.0, 100.0)
    assert s.p90 == pytest.approx(61.6)  # rank 0.9 * 4 = 3.6: 4 + 0.6 * (100 - 4)
    assert s.p99 == pytest.approx(96.16)
    # sample std: deviations -21,-20,-19,-18,78 -> (441+400+361+324+6084)/4 = 1902.5
    assert s.std == pytest.approx(1902.5**0.5)
    assert s.outliers == [4]  # Q1=2, Q3=4, fence 4 + 1.5*2 = 7: only 100 is out, and kept
    assert s.ci_lo < s.mean < s.ci_hi


def test_no_made_up_numbers_for_tiny_samples():
    one = summarize([5.0])
    assert one.std is None and one.ci_lo is None and one.ci_hi is None and one.outliers == []
    two = summarize([5.0, 7.0])
    assert two.std == pytest.approx(2**0.5) and two.ci_lo is None and two.ci_half_width is None
    assert summarize([1.0, 2.0, 3.0]).ci_lo is not None


def test_bootstrap_ci_is_seeded_and_sane():
    vals = [10.2, 9.8, 10.5, 10.1, 9.9, 10.3, 10.0, 12.0]
    a, b = bootstrap_ci(vals, seed=3), bootstrap_ci(vals, seed=3)
    assert a == b
    lo, hi = a
    assert min(vals) <= lo < sum(vals) / len(vals) < hi <= max(vals)
    assert bootstrap_ci([4.0, 4.0, 4.0]) == (4.0, 4.0)  # no spread: the mean is exact


def test_outliers_both_sides_and_none_below_four_values():
    assert outlier_indices([-50, 10, 11, 12, 13, 14, 90]) == [0, 6]
    assert outlier_indices([1, 2, 1000]) == []


def test_percentile_and_bad_input():
    assert percentile(list(range(1, 11)), 50) == 5.5
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)
    with pytest.raises(MeasureError):
        percentile([1.0], 101)
    with pytest.raises(MeasureError):
        summarize([])
    with pytest.raises(MeasureError):
        summarize([1.0, float("nan")])
