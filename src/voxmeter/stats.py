"""Percentiles and 95% intervals: the one definition every command takes them from.

Percentiles are numpy's linear interpolation between order statistics, p50/p90/p99. Each
interval names its method, and every bootstrap is seeded, so the same rows give the same
interval in `bench`, `results show`, `compare` and the report:
- `t_interval`: Student t over repeats (mean ± t(0.975, n-1)·s/√n), from 2 repeats on. Sweeps
  run 1-3 repeats, where a bootstrap over repeats has nothing to resample.
- `ratio_bootstrap_ci`: a ratio of sums over clips (corpus WER = Σ edits / Σ reference words,
  CER in characters), clips resampled: the words of one clip share speaker and recording.
- `cluster_percentile_ci`: pooled percentiles of clip runs, whole clusters resampled (a clip
  with all its repeats, a batch, a recording with its windows): repeats of one clip are
  correlated, so resampling runs one by one would claim more data than was measured.
- `paired_bootstrap_ci`: a statistic of paired per-clip arrays (a WER gap), by
  scipy.stats.bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)
BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95
_CHUNK_VALUES = 4_000_000  # values one resampling chunk may hold at once


def percentiles(values: Sequence[float], qs: Sequence[float] = PERCENTILES) -> list[float]:
    """The qs-th percentiles (0..100) of `values`; ValueError when there are none."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("percentiles of no values")
    return [float(v) for v in np.percentile(arr, list(qs))]


def named_percentiles(values: Sequence[float], prefix: str = "") -> dict[str, float | None]:
    """{f"{prefix}p50": .., f"{prefix}p90": .., f"{prefix}p99": ..}; None each for no values."""
    if not len(values):
        return {f"{prefix}p{q}": None for q in PERCENTILES}
    return {f"{prefix}p{q}": v for q, v in zip(PERCENTILES, percentiles(values))}


def t_interval(values: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Student t-interval of the mean; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def _tails(level: float) -> tuple[float, float]:
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = 100.0 * (1.0 - level) / 2.0
    return tail, 100.0 - tail


def ratio_bootstrap_ci(
    num: Sequence[float],
    den: Sequence[float],
    n_boot: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
    scale: float = 100.0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of scale·Σnum/Σden, resampling clips (rows).

    Resamples whose denominator sums to 0 (only possible with empty references) have no
    ratio and are left out. None when there are no rows or the denominator is 0.
    """
    lo_q, hi_q = _tails(level)
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    m = len(num)
    if m == 0 or den.sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_VALUES // m)  # 1000 resamples of 100k clips never held at once
    out = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, m, size=(min(chunk, n_boot - start), m))
        e, n = num[idx].sum(axis=1), den[idx].sum(axis=1)
        ok = n > 0
        out.append(scale * e[ok] / n[ok])
    r = np.concatenate(out)
    if not len(r):
        return None
    lo, hi = np.percentile(r, [lo_q, hi_q])
    return float(lo), float(hi)


def clusters_of(keys: Sequence[Hashable], values: Sequence[float]) -> list[np.ndarray]:
    """Group `values` by `keys` (first appearance order): one array per cluster."""
    groups: dict[Hashable, list[float]] = {}
    for k, v in zip(keys, values):
        groups.setdefault(k, []).append(float(v))
    return [np.asarray(g) for g in groups.values()]


def cluster_percentile_ci(
    clusters: Sequence[np.ndarray],
    qs: Sequence[float] = PERCENTILES,
    n_boot: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> list[tuple[float, float]] | None:
    """Percentile-bootstrap intervals of pooled percentiles, resampling whole clusters.

    Each resample draws len(clusters) clusters with replacement (`rng.integers(0, k,
    (n_boot, k))` from `default_rng(seed)`, row by row), pools every value of the drawn
    clusters and takes the qs-th percentiles; the interval is the [2.5, 97.5] percentiles of
    those over the resamples. None for fewer than 2 clusters (nothing to resample).
    """
    lo_q, hi_q = _tails(level)
    qs = list(qs)
    k = len(clusters)
    if k < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, k, (n_boot, k))
    sizes = {len(c) for c in clusters}
    if len(sizes) == 1:  # equal clusters (every clip ran every repeat): array ops in chunks
        mat = np.stack(clusters)
        step = max(1, _CHUNK_VALUES // mat.size)
        boot = np.concatenate(
            [
                np.percentile(
                    mat[idx[s : s + step]].reshape(len(idx[s : s + step]), -1), qs, axis=1
                )
                for s in range(0, n_boot, step)
            ],
            axis=1,
        )
    else:  # each resample: every value repeated as often as its cluster was drawn
        flat, sizes = np.concatenate(clusters), np.array([len(c) for c in clusters])
        boot = np.array(
            [
                np.percentile(np.repeat(flat, np.repeat(np.bincount(row, minlength=k), sizes)), qs)
                for row in idx
            ]
        ).T
    lo, hi = np.percentile(boot, [lo_q, hi_q], axis=1)
    return [(float(a), float(b)) for a, b in zip(lo, hi)]


def paired_bootstrap_ci(
    arrays: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> tuple[float, float]:
    """Percentile interval of a vectorised `statistic(*arrays, axis=-1)` with the arrays'
    rows resampled together (scipy.stats.bootstrap, paired)."""
    from scipy.stats import bootstrap

    res = bootstrap(
        tuple(arrays),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    lo, hi = res.confidence_interval
    return float(lo), float(hi)
