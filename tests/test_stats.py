"""voxmeter.stats, the one percentile helper and CI module, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from voxmeter.stats import (
    PERCENTILES,
    cluster_percentile_ci,
    clusters_of,
    named_percentiles,
    paired_bootstrap_ci,
    percentiles,
    ratio_bootstrap_ci,
    t_interval,
)


def test_percentiles_interpolate_between_order_statistics():
    p50, p90, p99 = percentiles(list(range(1, 11)))
    assert p50 == 5.5  # rank 0.5 * 9 = 4.5: between 5 and 6
    assert p90 == pytest.approx(9.1) and p99 == pytest.approx(9.91)
    assert percentiles([1, 2, 3, 4, 100], (90,)) == [pytest.approx(61.6)]  # 4 + 0.6 * 96
    with pytest.raises(ValueError, match="no values"):
        percentiles([])


def test_named_percentiles_keys_and_empty():
    assert named_percentiles([3.0], "commit_ms_") == {
        "commit_ms_p50": 3.0,
        "commit_ms_p90": 3.0,
        "commit_ms_p99": 3.0,
    }
    assert named_percentiles([]) == {f"p{q}": None for q in PERCENTILES}


def test_t_interval_by_hand():
    lo, hi = t_interval([10.0, 12.0, 14.0])
    # mean 12, s = 2, t(0.975, 2) = 4.302653: half width = 4.302653 * 2 / sqrt(3) = 4.968275
    assert (lo, hi) == pytest.approx((12 - 4.968275, 12 + 4.968275), abs=1e-5)
    assert t_interval([5.0]) is None


def test_ratio_bootstrap_by_hand_and_degenerate_cases():
    num, den = np.array([1, 0, 3]), np.array([4, 5, 6])
    lo, hi = ratio_bootstrap_ci(num, den, n_boot=200, seed=3)
    idx = np.random.default_rng(3).integers(0, 3, size=(200, 3))
    r = 100 * num[idx].sum(1) / den[idx].sum(1)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(r, [2.5, 97.5])))
    assert ratio_bootstrap_ci([], []) is None
    assert ratio_bootstrap_ci([2], [0]) is None
    with pytest.raises(ValueError, match="level"):
        ratio_bootstrap_ci(num, den, level=1.0)


def test_cluster_ci_equal_and_ragged_clusters_agree_with_a_hand_resample():
    rng = np.random.default_rng(7)
    equal = [rng.normal(10 * i, 1, 3) for i in range(5)]
    ragged = [rng.normal(10 * i, 1, 1 + i % 3) for i in range(5)]
    for clusters in (equal, ragged):
        got = cluster_percentile_ci(clusters, (50, 90), n_boot=300, seed=2)
        idx = np.random.default_rng(2).integers(0, 5, (300, 5))
        boot = np.array(
            [np.percentile(np.concatenate([clusters[i] for i in row]), [50, 90]) for row in idx]
        )
        want = np.percentile(boot, [2.5, 97.5], axis=0).T
        assert np.allclose(got, want)
    assert cluster_percentile_ci([np.array([1.0, 2.0])]) is None  # one cluster: no interval


def test_clusters_of_groups_in_first_appearance_order():
    got = clusters_of(["b", "a", "b", "c"], [1, 2, 3, 4])
    assert [list(c) for c in got] == [[1.0, 3.0], [2.0], [4.0]]


def test_paired_bootstrap_of_a_difference_cancels_what_pairs_share():
    base = np.linspace(0, 100, 40)  # large spread shared by both sides
    a, b = base + 1.0, base
    lo, hi = paired_bootstrap_ci(
        (a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis), n_boot=200
    )
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
