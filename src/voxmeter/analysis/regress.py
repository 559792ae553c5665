"""Regressions: figures of the same spec that got worse between two stores, beyond noise.

A figure is flagged when both sides have a 95% CI and the intervals do not overlap in the
bad direction (new CI entirely worse than the old CI). Without CIs on both sides (one repeat)
a change cannot be told from noise, so it is flagged only past `tol_no_ci` (default 10%) and
marked as such. Specs are matched by hash; specs in only one store are listed, not compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# figures where a larger value is better; every other compared figure is better smaller
HIGHER_IS_BETTER = frozenset({"rtfx", "throughput_clips_s", "enc_gflops_per_s", "enc_peak_share"})
DEFAULT_METRICS = (
    "wer",
    "cer",
    "e2e_ms_p50",
    "e2e_ms_p90",
    "dec_ms_per_token",
    "rtfx",
    "peak_rss_mb",
    "j_per_audio_s",
    "load_s",
)


@dataclass(frozen=True)
class Regression:
    spec_hash: str
    label: str
    metric: str
    old: float
    new: float
    by_ci: bool  # True: CIs separate; False: no CI, change beyond tol_no_ci

    @property
    def change(self) -> float:
        return (self.new - self.old) / self.old if self.old else float("inf")

    def describe(self) -> str:
        how = "CIs do not overlap" if self.by_ci else "no CI; beyond tolerance"
        return (
            f"{self.label}: {self.metric} {self.old:.4g} -> {self.new:.4g} "
            f"({self.change:+.1%}; {how})"
        )


def _worse(metric: str, old: Any, new: Any, tol_no_ci: float) -> bool | None:
    """True/False when decidable; (old, new) are MetricAgg-like (mean, ci_lo, ci_hi)."""
    up = metric in HIGHER_IS_BETTER
    if old.ci_lo is not None and new.ci_lo is not None:
        return new.ci_hi < old.ci_lo if up else new.ci_lo > old.ci_hi
    if old.mean == 0:
        return None
    rel = (new.mean - old.mean) / abs(old.mean)
    return rel < -tol_no_ci if up else rel > tol_no_ci


def compare(
    old_rows: Sequence[Any],
    new_rows: Sequence[Any],
    metrics: Sequence[str] = DEFAULT_METRICS,
    tol_no_ci: float = 0.10,
) -> tuple[list[Regression], list[str]]:
    """(regressions, notes) for specs present in both row sets (AggRows)."""
    old = {r.spec_hash: r for r in old_rows}
    new = {r.spec_hash: r for r in new_rows}
    out: list[Regression] = []
    for h in old.keys() & new.keys():
        for m in metrics:
            a, b = old[h].metrics.get(m), new[h].metrics.get(m)
            if a is None or b is None:
                continue
            if _worse(m, a, b, tol_no_ci):
                by_ci = a.ci_lo is not None and b.ci_lo is not None
                out.append(Regression(h, new[h].label, m, a.mean, b.mean, by_ci))
    notes = []
    only_old, only_new = old.keys() - new.keys(), new.keys() - old.keys()
    if only_old:
        notes.append(f"{len(only_old)} spec(s) only in the old results, not compared")
    if only_new:
        notes.append(f"{len(only_new)} spec(s) only in the new results, not compared")
    out.sort(key=lambda r: (r.label, r.metric))
    return out, notes
