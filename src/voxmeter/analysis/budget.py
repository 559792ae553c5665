"""Constraints -> a recommendation: the cheapest configuration that meets every limit.

A configuration qualifies on the MEAN of each constrained figure over its repeats; the 95% CI
is reported beside it, and a qualifying row whose CI reaches past a limit is marked marginal
(its figure could be over the limit on another run or data set). We judge on the mean rather
than the upper bound because WER's CI is a bootstrap over a few dozen clips and is wide: on
the upper bound almost nothing would qualify, and the user could not tell why. The marginal
flag keeps the caution visible instead.

Among qualifying rows the one with the smallest objective wins (latency: e2e_ms_p50; energy:
j_per_audio_s; memory: peak_rss_mb; flops: gflops_analytic_total); ties go to lower WER,
then the label. A row without the objective figure cannot be ranked and does not qualify.
When nothing qualifies, the reason names, for the closest rows, which limit ruled each out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from voxmeter.analysis.pareto import metric
from voxmeter.errors import StoreError, VoxmeterError
from voxmeter.sweep.grid import LIMITS, MINIMISE, Constraints, check_constraints

OBJECTIVES: dict[str, str] = {
    "latency": "e2e_ms_p50",
    "energy": "j_per_audio_s",
    "memory": "peak_rss_mb",
    "flops": "gflops_analytic_total",
}


class NoConfigurationError(VoxmeterError):
    """No configuration in the store meets the constraints (the message says why)."""


@dataclass(frozen=True)
class Check:
    constraint: str  # e.g. "max_wer"
    metric: str
    limit: float
    value: float | None  # mean over repeats; None = not measured
    ci: tuple[float, float] | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None and self.value <= self.limit

    @property
    def marginal(self) -> bool:
        """Meets the limit on its mean, but its CI reaches past the limit."""
        return self.ok and self.ci is not None and self.ci[1] > self.limit

    @property
    def excess(self) -> float:
        """How far over the limit, relative to it (0 when met; inf when not measured)."""
        if self.value is None:
            return math.inf
        return max(0.0, (self.value - self.limit) / self.limit)

    def describe(self) -> str:
        unit = LIMITS[self.constraint][1]
        if self.value is None:
            return f"{self.metric} not measured ({self.constraint} {self.limit:g}{unit})"
        op = "<=" if self.ok else ">"
        ci = f" [CI {self.ci[0]:.3g}-{self.ci[1]:.3g}]" if self.ci else ""
        return f"{self.metric} {self.value:.3g}{unit}{ci} {op} {self.limit:g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "constraint": self.constraint,
            "metric": self.metric,
            "limit": self.limit,
            "value": self.value,
            "ci": list(self.ci) if self.ci else None,
            "ok": self.ok,
            "marginal": self.marginal,
        }


@dataclass
class Candidate:
    row: Any
    checks: list[Check]
    objective: float | None

    @property
    def ok(self) -> bool:
        return self.objective is not None and all(c.ok for c in self.checks)

    @property
    def label(self) -> str:
        return getattr(self.row, "label", "?")

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec_hash": getattr(self.row, "spec_hash", None),
            "label": self.label,
            "ok": self.ok,
            "objective": self.objective,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass
class Recommendation:
    ok: bool
    best: Any | None
    runner_up: Any | None
    candidates: list[Candidate]  # qualifying first (best first), then the rest, closest first
    constraints: Constraints
    objective_metric: str
    reason: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def brief(row: Any) -> dict[str, Any] | None:
            if row is None:
                return None
            return {"spec_hash": row.spec_hash, "label": row.label, "spec": row.spec}

        return {
            "ok": self.ok,
            "best": brief(self.best),
            "runner_up": brief(self.runner_up),
            "minimise": self.constraints.minimise,
            "objective_metric": self.objective_metric,
            "constraints": {k: v for k, v in self.constraints.__dict__.items() if v is not None},
            "reason": self.reason,
            "notes": self.notes,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def _ci(row: Any, key: str) -> tuple[float, float] | None:
    m = getattr(row, "metrics", {}).get(key)
    if m is None or getattr(m, "ci_lo", None) is None:
        return None
    return (m.ci_lo, m.ci_hi)


def check_row(row: Any, constraints: Constraints) -> Candidate:
    checks = []
    for name, (key, _) in LIMITS.items():
        limit = getattr(constraints, name)
        if limit is not None:
            checks.append(Check(name, key, float(limit), metric(row, key), _ci(row, key)))
    return Candidate(row, checks, metric(row, OBJECTIVES[constraints.minimise]))


def recommend(
    rows: Sequence[Any],
    max_wer: float | None = None,
    max_rtf: float | None = None,
    max_memory_mb: float | None = None,
    max_gflops: float | None = None,
    minimise: str = "latency",
) -> Recommendation:
    """The qualifying row with the smallest objective, its runner-up, and every row's checks."""
    c = Constraints(max_wer, max_rtf, max_memory_mb, max_gflops, minimise)
    check_constraints(c)
    if not rows:
        raise StoreError("no results to recommend from (run `voxmeter sweep` first)")
    key = OBJECTIVES[minimise]
    cands = [check_row(r, c) for r in rows]
    ok = sorted(
        (x for x in cands if x.ok),
        key=lambda x: (x.objective, metric(x.row, "wer") or math.inf, x.label),
    )
    rest = sorted(
        (x for x in cands if not x.ok),
        key=lambda x: (sum(ch.excess for ch in x.checks), x.objective is None, x.label),
    )
    limits = ", ".join(f"{k}={v:g}" for k, v in c.limits().items())
    limits = limits or "no limits"
    if ok:
        best = ok[0]
        notes = [f"{len(ok)} of {len(cands)} configurations meet {limits}"]
        marg = [ch.describe() for ch in best.checks if ch.marginal]
        if marg:
            notes.append("marginal: the CI reaches past the limit: " + "; ".join(marg))
        if key.startswith("j_"):
            methods = {_note(x.row, "energy_method") for x in ok[:2]} - {""}
            est = sorted(m for m in methods if m.startswith("estimated"))
            if est:
                notes.append(
                    "energy is ESTIMATED, not measured, so the ranking follows the estimate's "
                    f"model (busy cores x time), not a meter: {est[0]}"
                )
        reason = (
            f"{best.label}: lowest {key} ({best.objective:.4g}) among configurations meeting "
            f"{limits}"
            + (f"; {', '.join(ch.describe() for ch in best.checks)}" if best.checks else "")
        )
        return Recommendation(
            ok=True,
            best=best.row,
            runner_up=ok[1].row if len(ok) > 1 else None,
            candidates=ok + rest,
            constraints=c,
            objective_metric=key,
            reason=reason,
            notes=notes,
        )
    return Recommendation(
        ok=False,
        best=None,
        runner_up=None,
        candidates=rest,
        constraints=c,
        objective_metric=key,
        reason=_why_none(rest, limits, key),
    )


def _why_none(rest: list[Candidate], limits: str, key: str) -> str:
    """One line: how many rows each limit ruled out, and the closest rows' failed checks."""
    n = len(rest)
    counts: dict[str, int] = {}
    for x in rest:
        for ch in x.failed():
            counts[ch.constraint] = counts.get(ch.constraint, 0) + 1
    unranked = sum(1 for x in rest if x.objective is None)
    tally = [f"{k} ruled out {v} of {n}" for k, v in counts.items()]
    if unranked:
        tally.append(f"{unranked} of {n} lack {key}")
    closest = "; ".join(
        f"{x.label}: " + (", ".join(ch.describe() for ch in x.failed()) or f"no {key}")
        for x in rest[:3]
    )
    return f"no configuration meets {limits} ({', '.join(tally)}); closest: {closest}"


def recommend_or_raise(rows: Sequence[Any], **constraints: Any) -> Recommendation:
    rec = recommend(rows, **constraints)
    if not rec.ok:
        raise NoConfigurationError(rec.reason)
    return rec


__all__ = [
    "MINIMISE",
    "OBJECTIVES",
    "Candidate",
    "Check",
    "NoConfigurationError",
    "Recommendation",
    "check_row",
    "recommend",
    "recommend_or_raise",
]


def _note(row: Any, key: str) -> str:
    notes = getattr(row, "notes", None) or {}
    return str(notes.get(key, "")) if isinstance(notes, dict) else ""
