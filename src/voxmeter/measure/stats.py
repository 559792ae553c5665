"""Summaries of repeated measurements: centre, spread, a 95% CI of the mean, outliers.

The CI is a bootstrap (scipy.stats.bootstrap, BCa, fixed seed so a report is reproducible).
With fewer than 3 values a bootstrap CI means nothing, so it is None rather than a made-up
interval; the standard deviation likewise needs 2 values. Outliers by the 1.5 IQR rule are
marked by index and kept: a slow repeat is a fact about the machine, and dropping it would
flatter the figure.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from voxmeter.measure.windows import MeasureError

CI_MIN_N = 3  # below this a bootstrap CI is not reported
OUTLIER_MIN_N = 4  # quartiles of fewer values say nothing about outliers
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float | None  # sample standard deviation (ddof=1); None for n < 2
    median: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    ci_lo: float | None  # 95% bootstrap CI of the mean; None for n < 3
    ci_hi: float | None
    outliers: list[int] = field(default_factory=list)  # indices outside 1.5 IQR, kept

    @property
    def ci_half_width(self) -> float | None:
        return None if self.ci_lo is None else (self.ci_hi - self.ci_lo) / 2


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise MeasureError(f"{what}: need at least one value, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise MeasureError(f"{what}: values must be finite, got {arr[~np.isfinite(arr)][:3]}")
    return arr


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100), linear interpolation between order statistics."""
    if not 0 <= q <= 100:
        raise MeasureError(f"percentile: q must be in [0, 100], got {q}")
    return float(np.percentile(_as_array(values, "percentile"), q))


def outlier_indices(values: Sequence[float]) -> list[int]:
    """Indices of values below Q1 - 1.5 IQR or above Q3 + 1.5 IQR (none for n < 4)."""
    arr = _as_array(values, "outliers")
    if arr.size < OUTLIER_MIN_N:
        return []
    q1, q3 = np.percentile(arr, [25, 75])
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    return [int(i) for i in np.flatnonzero((arr < lo) | (arr > hi))]


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Bootstrap CI of the mean; None for n < 3. Identical values give a zero-width interval."""
    from scipy.stats import bootstrap

    arr = _as_array(values, "bootstrap_ci")
    if arr.size < CI_MIN_N:
        return None
    if np.ptp(arr) == 0:  # BCa is undefined without spread; the mean is exact
        m = float(arr[0])
        return m, m
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa can degenerate on tiny or tied samples; we fall back rather than report NaN
            warnings.simplefilter("ignore")
            res = bootstrap(
                (arr,),
                np.mean,
                confidence_level=confidence,
                n_resamples=BOOTSTRAP_RESAMPLES,
                method=method,
                rng=np.random.default_rng(seed),
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi
    raise MeasureError(f"bootstrap_ci: no finite interval for {arr.size} values")


def summarize(values: Sequence[float], seed: int = 0) -> Summary:
    """Summary of repeated measurements (latencies, RTFx over repeats...)."""
    arr = _as_array(values, "summarize")
    p50, p90, p99 = (float(v) for v in np.percentile(arr, [50, 90, 99]))
    ci = bootstrap_ci(arr, seed=seed)
    return Summary(
        n=int(arr.size),
        mean=float(arr.mean()),
        std=float(arr.std(ddof=1)) if arr.size >= 2 else None,
        median=p50,
        p50=p50,
        p90=p90,
        p99=p99,
        min=float(arr.min()),
        max=float(arr.max()),
        ci_lo=None if ci is None else ci[0],
        ci_hi=None if ci is None else ci[1],
        outliers=outlier_indices(arr),
    )
