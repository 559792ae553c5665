"""Regressions: figures of the same spec that got worse between two stores, beyond noise.

A figure is flagged when both sides have a 95% CI and the intervals do not overlap in the
bad direction (new CI entirely worse than the old CI). Without CIs on both sides (one repeat)
a change cannot be told from noise, so it is flagged only past `tol_no_ci` (default 10%) and
marked as such. Rows are matched by spec hash, mode and data digest (the same configuration,
measured the same way on the same clips); where a store holds several groups of one such key
(other code or CPU), its newest is compared and the others are counted in a note. A pair
measured on different CPU models is compared but said to be. Keys in only one store are
listed, not compared.
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
    notes: list[str] = []
    old = _newest_by_key(old_rows, "old", notes)
    new = _newest_by_key(new_rows, "new", notes)
    out: list[Regression] = []
    cross_cpu = [k for k in old.keys() & new.keys() if _cpu(old[k]) != _cpu(new[k])]
    if cross_cpu:
        notes.append(
            f"{len(cross_cpu)} configuration(s) were measured on different CPU models in the two "
            "stores: their speed figures compare machines as well as code"
        )
    for h in old.keys() & new.keys():
        for m in metrics:
            a, b = old[h].metrics.get(m), new[h].metrics.get(m)
            if a is None or b is None:
                continue
            if _worse(m, a, b, tol_no_ci):
                by_ci = a.ci_lo is not None and b.ci_lo is not None
                out.append(Regression(h[0], new[h].label, m, a.mean, b.mean, by_ci))
    only_old, only_new = old.keys() - new.keys(), new.keys() - old.keys()
    if only_old:
        notes.append(f"{len(only_old)} spec(s) only in the old results, not compared")
    if only_new:
        notes.append(f"{len(only_new)} spec(s) only in the new results, not compared")
    out.sort(key=lambda r: (r.label, r.metric))
    return out, notes


def _cpu(row: Any) -> str:
    return str(getattr(row, "cpu_model", ""))


def _newest_by_key(rows: Sequence[Any], side: str, notes: list[str]) -> dict[tuple, Any]:
    """One row per (spec hash, mode, data digest): the last one the store produced."""
    out: dict[tuple, Any] = {}
    shadowed = 0
    for r in rows:  # aggregation keeps the store's order, oldest first
        key = (r.spec_hash, getattr(r, "mode", ""), getattr(r, "data_digest", ""))
        shadowed += key in out
        out[key] = r
    if shadowed:
        notes.append(
            f"{shadowed} older group(s) in the {side} results (other code or CPU) were not "
            "compared: only the newest measurement of each configuration is"
        )
    return out
