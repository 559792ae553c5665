"""`bench --memory-budget MB`: the largest configuration whose measured peak RSS fits.

The candidates, largest first: the spec as asked; the same spec in int8 (the hf engine's int8
quantizes every Linear and the embedding, as CTranslate2's does); then each smaller bundled
model (xN), as asked and in int8. A candidate already measured here (an isolated run of this
code, weights and data in the store) is judged on the process peak RSS it measured. One not
measured yet is run isolated with the budget as a hard limit: the parent samples the child's
resident set every 20 ms and stops it past the budget (loading included), and the next
candidate is tried. Every candidate passed over is named with the figure that ruled it out.

The budget is on process peak RSS (the child's own, `process_peak_rss_mb`): what an edge box
must hold for the whole run, interpreter and libraries included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from voxmeter.errors import VoxmeterError
from voxmeter.result import Result
from voxmeter.spec import RunSpec

PEAK = "process_peak_rss_mb"


class BudgetError(VoxmeterError):
    """No candidate configuration fits the memory budget (the message lists why, each)."""


@dataclass
class BudgetChoice:
    spec: RunSpec
    results: list[Result]
    note: str
    passed_over: list[str] = field(default_factory=list)

    def explain(self, budget_mb: float) -> str:
        peak = _peak(self.results)
        fits = f" (process peak {peak:.0f} MiB)" if peak else ""
        head = f"memory budget {budget_mb:g} MiB: running {self.spec.label()}{fits}"
        if not self.passed_over:
            return head + ", the configuration asked for"
        return head + "; passed over: " + "; ".join(self.passed_over)


def _peak(results: list[Result]) -> float | None:
    """The highest process peak RSS among `results`; None when none measured one."""
    return max((r.metrics[PEAK] for r in results if r.metrics.get(PEAK)), default=None)


def candidates(spec: RunSpec) -> list[RunSpec]:
    """The fallback ladder of `spec`, largest first, without repeats."""
    from voxmeter.assets.bundled import BUNDLED

    def int8(s: RunSpec) -> RunSpec | None:
        comp = s.compression
        if s.axes.precision == "int8" or comp.quant != "none" or s.device != "cpu":
            return None
        return s.with_(precision="int8")

    models = list(BUNDLED)
    smaller = models[: models.index(spec.model)][::-1] if spec.model in models else []
    out: list[RunSpec] = []
    for s in [spec, *(spec.with_(model=m) for m in smaller)]:
        for c in (s, int8(s)):
            if c is not None and c.spec_hash not in {o.spec_hash for o in out}:
                out.append(c)
    return out


def measure_within_budget(
    spec: RunSpec,
    budget_mb: float,
    store_path: Path,
    *,
    cache_dir: Path | None = None,
    force: bool = False,
    show: bool = True,
) -> BudgetChoice:
    """Measure the first candidate of `spec` that fits `budget_mb`; BudgetError if none."""
    from voxmeter.run.bench import measure_spec, stored_results
    from voxmeter.run.isolate import OverBudget

    if not budget_mb > 0:
        raise BudgetError(f"--memory-budget: expected a positive number of MiB, got {budget_mb}")
    passed: list[str] = []
    for cand in candidates(spec):
        label = cand.label()
        known = [] if force else stored_results(cand, store_path, cache_dir, mode="isolated")
        peak = _peak(known)
        if peak is not None and peak > budget_mb:
            passed.append(f"{label}: measured process peak {peak:.0f} MiB > {budget_mb:g}")
            continue
        try:
            results, note = measure_spec(
                cand,
                store_path,
                cache_dir=cache_dir,
                force=force,
                isolated=True,
                show=show,
                rss_limit_mb=budget_mb,
            )
        except OverBudget as e:
            passed.append(f"{label}: stopped at {e.rss_mb:.0f} MiB resident, over {budget_mb:g}")
            continue
        peak = _peak(results)
        if peak is not None and peak > budget_mb:  # a spike between two samples: stored, no fit
            passed.append(f"{label}: measured process peak {peak:.0f} MiB > {budget_mb:g}")
            continue
        return BudgetChoice(cand, results, note, passed)
    raise BudgetError(
        f"--memory-budget {budget_mb:g} MiB: no configuration fits; " + "; ".join(passed)
    )
