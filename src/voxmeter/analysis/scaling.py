"""Scaling fits: WER ≈ a · GFLOPs^(-b) along one compute axis at a time.

Rows are grouped by the axis that varies: rows that differ only in model size (xN), only in
input frames (xT, with pad), or only in encoder stride (xV, with pool) form one group each;
everything else (engine, precision, the other axes, data...) is held fixed inside a group.
Per group: ordinary least squares on log(WER) = log(a) - b·log(GFLOPs), R² on that log scale.
b > 0 means WER falls as compute grows. A group needs two distinct FLOPs values to fit; with
fewer the fit says so rather than inventing an exponent. Rows without WER (cost-only models)
or with WER = 0 (log undefined) are left out and counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voxmeter.analysis.pareto import metric

FLOPS_KEY = "gflops_analytic_total"
# axis name -> the spec fields that vary together along it
AXES: dict[str, tuple[str, ...]] = {
    "model size": ("model",),
    "frames": ("axes.frames", "axes.pad", "axes.fit_step_s"),
    "stride": ("axes.stride", "axes.pool"),
}


@dataclass(frozen=True)
class PowerFit:
    axis: str
    group: str  # what is held fixed, in words
    n: int
    a: float | None = None
    b: float | None = None
    r2: float | None = None
    points: tuple[tuple[float, float, str], ...] = ()  # (gflops, wer, what varies)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.b is not None

    def describe(self) -> str:
        if not self.ok:
            return f"{self.axis} [{self.group}]: cannot fit: {self.note}"
        # the exponent as fitted, signed: a negative one means WER rose with compute
        quality = (
            "two points: the line passes through both, R² says nothing"
            if self.n == 2
            else f"R² = {self.r2:.3f}"
        )
        return (
            f"{self.axis} [{self.group}]: WER ≈ {self.a:.4g} · GFLOPs^({-self.b:+.3f}), "
            f"{quality}, n = {self.n}"
        )


def fit_power_law(flops: Sequence[float], wer: Sequence[float]) -> tuple[float, float, float]:
    """(a, b, R²) of WER = a·FLOPs^(-b) by least squares in log-log space.

    Needs two or more distinct positive FLOPs values and positive WERs (ValueError otherwise).
    """
    if len(flops) != len(wer) or len(flops) < 2:
        raise ValueError("need at least two points")
    if min(flops) <= 0 or min(wer) <= 0:
        raise ValueError("FLOPs and WER must be positive for a log-log fit")
    xs = [math.log(f) for f in flops]
    ys = [math.log(w) for w in wer]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all points have the same FLOPs")
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return math.exp(intercept), -slope, r2


def _field(spec: dict[str, Any], dotted: str) -> Any:
    v: Any = spec
    for part in dotted.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def _flat(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _what_varies(row: Any, fields: tuple[str, ...]) -> str:
    return " ".join(f"{f.split('.')[-1]}={_field(row.spec, f)}" for f in fields)


def scaling_fits(rows: Sequence[Any]) -> list[PowerFit]:
    """One fit per (axis, fixed settings) group that has at least two rows."""
    usable = [r for r in rows if (metric(r, "wer") or 0) > 0 and metric(r, FLOPS_KEY)]
    fits: list[PowerFit] = []
    for axis, fields in AXES.items():
        groups: dict[str, list[Any]] = {}
        for r in usable:
            fixed = {k: v for k, v in _flat(r.spec).items() if k not in fields}
            fixed.pop("repeats", None)
            fixed.pop("warmup", None)
            groups.setdefault(json.dumps(fixed, sort_keys=True, default=str), []).append(r)
        for members in groups.values():
            if len(members) < 2:
                continue  # a lone row is not a group along this axis
            group = _describe_fixed(members[0], fields)
            pts = tuple(
                sorted(
                    (metric(r, FLOPS_KEY), metric(r, "wer"), _what_varies(r, fields))
                    for r in members
                )
            )
            try:
                a, b, r2 = fit_power_law([p[0] for p in pts], [p[1] for p in pts])
            except ValueError as e:
                fits.append(PowerFit(axis, group, len(pts), points=pts, note=str(e)))
                continue
            fits.append(PowerFit(axis, group, len(pts), a, b, r2, pts))
    return fits


def _describe_fixed(row: Any, varying: tuple[str, ...]) -> str:
    s = row.spec
    a = s.get("axes", {})
    parts = [
        ("model", s.get("model")),
        ("engine", s.get("engine")),
        ("precision", a.get("precision")),
        ("frames", a.get("frames")),
        ("stride", a.get("stride")),
    ]
    skip = {v.split(".")[-1] for v in varying}
    return " ".join(f"{k}={v}" if k != "model" else str(v) for k, v in parts if k not in skip)


def fit_report(rows: Sequence[Any]) -> list[str]:
    """Lines for `voxmeter fit`: every fit, or why there is nothing to fit."""
    n_rows = len(rows)
    no_wer = sum(1 for r in rows if not (metric(r, "wer") or 0) > 0)
    fits = scaling_fits(rows)
    out = [f.describe() for f in fits]
    if not fits:
        out.append(
            "cannot fit: no two configurations with WER differ along a single axis "
            "(model size, frames or stride) with everything else fixed"
        )
    if no_wer:
        out.append(f"{no_wer} of {n_rows} configurations have no WER > 0 and were left out")
    return out
