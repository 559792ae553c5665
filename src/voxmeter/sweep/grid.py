"""Expand a sweep file into the specs it asks for; iso-FLOPs grids for a compute budget.

Expansion is the cartesian product, then each spec is put in canonical form so that settings
with no effect collapse into one spec (pad when frames = 3000, pool when stride = 1,
fit_step_s when frames is not "fit"), and combinations that cannot run (fp16 on CPU) are
dropped; the count of each is reported. Reading and checking the file is sweep/sweepfile.py's
work; its names are re-exported here for the callers that import them from grid.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from voxmeter.errors import SpecError, VoxmeterError
from voxmeter.spec import FULL_FRAMES, AxisSettings, RunSpec, is_cuda
from voxmeter.sweep.sweepfile import (
    LIMITS,
    MINIMISE,
    BudgetSettings,
    Constraints,
    SweepFile,
    check_budget,
    check_constraints,
    load_sweep,
    tomllib,
)

__all__ = [
    "LIMITS",
    "MINIMISE",
    "BudgetGrid",
    "BudgetPoint",
    "BudgetSettings",
    "Constraints",
    "Expansion",
    "SweepFile",
    "budget_gflops_of",
    "budget_grid",
    "budget_specs",
    "canonical",
    "check_budget",
    "check_constraints",
    "expand",
    "load_sweep",
    "sweep_budget_grid",
    "tomllib",
]

# The paper's decoding assumption for FLOPs budgets: a 2-token prompt
# (<|startoftranscript|><|notimestamps|> for English-only models) and 20 generated tokens.
BUDGET_PROMPT_TOKENS = 2
BUDGET_GENERATED_TOKENS = 20
DEFAULT_BUDGET_STRIDES = (1, 2, 3, 4, 6, 8)


@dataclass
class Expansion:
    specs: list[RunSpec]
    n_combinations: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def notes(self) -> list[str]:
        out = [f"{self.n_combinations} combinations -> {len(self.specs)} specs"]
        out += [f"{n} dropped: {why}" for why, n in self.dropped.items()]
        return out


# -- expansion --------------------------------------------------------------------------
def canonical(spec: RunSpec) -> RunSpec:
    """The same measurement with settings that cannot matter reset to their defaults."""
    a = spec.axes
    d = AxisSettings()
    changes: dict[str, Any] = {}
    if a.frames == FULL_FRAMES and a.pad != d.pad:
        changes["pad"] = d.pad
    if a.stride == 1 and a.pool != d.pool:
        changes["pool"] = d.pool
    if a.frames != "fit" and a.fit_step_s != d.fit_step_s:
        changes["fit_step_s"] = d.fit_step_s
    return spec.with_(**changes) if changes else spec


def _why_redundant(spec: RunSpec) -> str:
    a, d = spec.axes, AxisSettings()
    if a.frames == FULL_FRAMES and a.pad != d.pad:
        return "pad has no effect at frames = 3000"
    if a.stride == 1 and a.pool != d.pool:
        return "pool has no effect at stride = 1"
    if a.frames != "fit" and a.fit_step_s != d.fit_step_s:
        return "fit_step_s has no effect unless frames = 'fit'"
    return "duplicate combination"


def _unrunnable(spec: RunSpec) -> str | None:
    """Why a combination of the grid cannot run: the spec's own refusal (spec.validate, the
    one place its rules live), or the hf engine's refusal of int8 on CUDA, which it gives at
    load time."""
    if spec.axes.precision == "int8" and spec.engine == "hf" and is_cuda(spec.device):
        return "int8 in the hf engine is CPU only"
    try:
        spec.validate()
    except SpecError as e:
        return str(e)
    return None


def _keep(spec: RunSpec, specs: dict[str, RunSpec], dropped: Counter[str]) -> None:
    """Add spec to specs under its canonical hash, or count why it was dropped."""
    why = _unrunnable(spec)
    if why:
        dropped[why] += 1
        return
    c = canonical(spec)
    if c.spec_hash in specs:
        dropped[_why_redundant(spec)] += 1
        return
    specs[c.spec_hash] = c.validate()


def expand(sweep: SweepFile) -> Expansion:
    """Every spec of the sweep's grid, canonical and deduplicated, in file order."""
    names = list(sweep.axes) + list(sweep.workload)
    grid = {**sweep.axes, **sweep.workload}
    combos = list(
        itertools.product(sweep.models, sweep.engines, sweep.devices, *(grid[n] for n in names))
    )
    specs: dict[str, RunSpec] = {}
    dropped: Counter[str] = Counter()
    for model, engine, device, *vals in combos:
        spec = sweep.base.with_(model=model, engine=engine, device=device, **dict(zip(names, vals)))
        _keep(spec, specs, dropped)
    if not specs:
        reasons = "; ".join(f"{n} {w}" for w, n in dropped.items())
        raise SpecError(f"{sweep.path}: the grid has no runnable specs ({reasons})")
    return Expansion(list(specs.values()), len(combos), dict(dropped))


# -- iso-FLOPs budget grids -------------------------------------------------------------
@dataclass(frozen=True)
class BudgetPoint:
    model: str
    frames: int
    stride: int
    gflops: float  # analytic, prompt 2 + 20 generated tokens
    rel_err: float  # (gflops - budget) / budget


@dataclass
class BudgetGrid:
    budget_gflops: float
    tol: float
    points: dict[str, list[BudgetPoint]]  # model -> points found (possibly empty)
    pad: str
    pool: str

    @property
    def missing(self) -> list[str]:
        return [m for m, pts in self.points.items() if not pts]

    def all_points(self) -> list[BudgetPoint]:
        return [p for pts in self.points.values() for p in pts]

    def lines(self) -> list[str]:
        out = [
            (
                f"iso-FLOPs grid at {self.budget_gflops:g} GFLOPs ±{self.tol:.0%} per clip "
                f"(analytic, {BUDGET_PROMPT_TOKENS}-token prompt + {BUDGET_GENERATED_TOKENS} "
                f"generated tokens as in the paper; pad={self.pad}, pool={self.pool})"
            )
        ]
        for model, pts in self.points.items():
            if not pts:
                out.append(f"  {model}: no frames/stride setting within ±{self.tol:.0%}")
                continue
            cells = ", ".join(
                f"T={p.frames} k={p.stride} ({p.gflops:.2f}, {p.rel_err:+.1%})" for p in pts
            )
            out.append(f"  {model}: {cells}")
        return out


def budget_gflops_of(
    model: str, frames: int, stride: int, pad: str = "silence", pool: str = "stride"
) -> float:
    """Analytic GFLOPs of one clip under the paper's decoding assumption (2 + 20 tokens)."""
    from voxmeter.assets.dims import dims_for
    from voxmeter.measure.flops import analytic_flops

    f = analytic_flops(
        dims_for(model),
        frames,
        stride,
        pad,
        prompt_len=BUDGET_PROMPT_TOKENS,
        n_generated=BUDGET_GENERATED_TOKENS,
        pool=pool,
    )
    return f["total"] / 1e9


def budget_grid(
    models: tuple[str, ...] | list[str],
    budget_gflops: float,
    tol: float = 0.05,
    frames_options: tuple[int, ...] | list[int] | None = None,
    strides: tuple[int, ...] | list[int] = DEFAULT_BUDGET_STRIDES,
    pad: str = "silence",
    pool: str = "stride",
) -> BudgetGrid:
    """For each model size, the (frames, stride) settings costing budget ± tol GFLOPs per clip.

    FLOPs are analytic, from the model's architecture (assets.dims), with a 2-token prompt and
    20 generated tokens, the paper's assumption. With explicit `frames_options`, every option
    within tolerance is kept. Without, frames range over every even value in [2, 3000] and, per
    stride, only the one closest to the budget is kept (neighbouring frame counts differ by
    a fraction of a percent, so keeping all would list dozens of near-identical specs).
    """
    from voxmeter.assets.dims import dims_for

    check_budget(budget_gflops, tol, tuple(frames_options or ()), tuple(strides))
    if not strides:
        raise SpecError("strides: empty list: the budget grid would have no specs")
    dense = not frames_options
    frames_list = list(range(2, FULL_FRAMES + 1, 2)) if dense else list(frames_options)
    points: dict[str, list[BudgetPoint]] = {}
    for model in dict.fromkeys(models):
        try:
            dims_for(model)
        except VoxmeterError as e:
            raise SpecError(f"budget grid: {e}") from None
        found: list[BudgetPoint] = []
        for k in strides:
            cands = []
            for f in frames_list:
                g = budget_gflops_of(model, f, k, pad, pool)
                err = (g - budget_gflops) / budget_gflops
                if abs(err) <= tol:
                    cands.append(BudgetPoint(model, f, k, g, err))
            if dense and cands:
                cands = [min(cands, key=lambda p: abs(p.rel_err))]
            found.extend(cands)
        points[model] = found
    return BudgetGrid(budget_gflops, tol, points, pad, pool)


def budget_specs(grid: BudgetGrid, sweep: SweepFile) -> Expansion:
    """The runnable specs of a budget grid, crossed with the file's engines and precisions."""
    precisions = sweep.axes.get("precision", (AxisSettings().precision,))
    pts = grid.all_points()
    names = list(sweep.workload)
    combos = list(
        itertools.product(
            pts, sweep.engines, sweep.devices, precisions, *(sweep.workload[n] for n in names)
        )
    )
    specs: dict[str, RunSpec] = {}
    dropped: Counter[str] = Counter()
    for p, engine, device, precision, *work in combos:
        spec = sweep.base.with_(
            **dict(zip(names, work)),
            model=p.model,
            engine=engine,
            device=device,
            frames=p.frames,
            stride=p.stride,
            pad=grid.pad,
            pool=grid.pool,
            precision=precision,
        )
        _keep(spec, specs, dropped)
    return Expansion(list(specs.values()), len(combos), dict(dropped))


def sweep_budget_grid(sweep: SweepFile, budget_gflops: float | None = None) -> BudgetGrid:
    """The budget grid a sweep file asks for (command-line budget over the file's [budget])."""
    g = budget_gflops if budget_gflops is not None else sweep.budget.gflops
    if g is None:
        raise SpecError(f"{sweep.path}: no budget: pass --budget-gflops or set budget.gflops")
    pads = sweep.axes.get("pad", (AxisSettings().pad,))
    pools = sweep.axes.get("pool", (AxisSettings().pool,))
    if len(pads) > 1 or len(pools) > 1:
        raise SpecError(f"{sweep.path}: axes.pad/pool: a budget grid takes one value of each")
    strides = sweep.budget.strides or tuple(
        s for s in sweep.axes.get("stride", DEFAULT_BUDGET_STRIDES)
    )
    frames = sweep.budget.frames or None
    return budget_grid(
        sweep.models, g, sweep.budget.tol, frames, strides, pad=pads[0], pool=pools[0]
    )
