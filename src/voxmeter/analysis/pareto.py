"""Pareto fronts: the configurations no other configuration beats on both of two figures.

Both figures are minimised (WER and a cost). A row dominates another when it is no worse on
both and strictly better on at least one; the front is every row nothing dominates. Rows that
tie exactly (same x and same y) do not dominate each other, so all of them stay on the front:
two configurations with identical figures are both worth showing. A row missing either
figure (None, e.g. WER of a cost-only model, energy where nothing could be read) is left out
and counted, never treated as zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# (x, y) pairs the report and `voxmeter fit` show; energy per audio second, not energy_j, so
# that specs measured on different numbers of clips compare.
STANDARD_FRONTS: tuple[tuple[str, str], ...] = (
    ("gflops_analytic_total", "wer"),
    ("e2e_ms_p50", "wer"),
    ("e2e_ms_p90", "wer"),
    ("peak_rss_mb", "wer"),
    ("j_per_audio_s", "wer"),
    ("weight_bytes", "wer"),
)


def metric(row: Any, key: str) -> float | None:
    """A row's figure: AggRow (mean over repeats), Result, or a plain mapping; None if absent."""
    if hasattr(row, "value"):
        v = row.value(key)
    elif hasattr(row, "metrics"):
        v = row.metrics.get(key)
    elif isinstance(row, Mapping):
        v = row.get(key)
    else:
        raise TypeError(f"cannot read metric {key!r} from {type(row).__name__}")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


@dataclass
class Front:
    x: str
    y: str
    front: list[Any]  # rows on the front, by increasing x (then y)
    dominated: list[Any]
    n_excluded: int  # rows missing x or y
    excluded_examples: list[Any] = field(default_factory=list)

    def xy(self, rows: Sequence[Any] | None = None) -> list[tuple[float, float]]:
        return [
            (metric(r, self.x), metric(r, self.y)) for r in (self.front if rows is None else rows)
        ]


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a is no worse than b on both figures and strictly better on one (both minimised)."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def pareto_front(rows: Sequence[Any], x: str, y: str = "wer") -> Front:
    """The rows of `rows` not dominated on (x, y); rows missing a figure are counted out."""
    usable, excluded = [], []
    for r in rows:
        p = (metric(r, x), metric(r, y))
        if p[0] is None or p[1] is None:
            excluded.append(r)
        else:
            usable.append((p, r))
    # quadratic, and clear: sweeps hold hundreds of specs, not millions
    front = [(p, r) for p, r in usable if not any(dominates(q, p) for q, _ in usable)]
    on = {id(r) for _, r in front}
    front.sort(key=lambda pr: pr[0])
    return Front(
        x=x,
        y=y,
        front=[r for _, r in front],
        dominated=[r for _, r in usable if id(r) not in on],
        n_excluded=len(excluded),
        excluded_examples=excluded[:3],
    )


def standard_fronts(rows: Sequence[Any]) -> list[Front]:
    return [pareto_front(rows, x, y) for x, y in STANDARD_FRONTS]
