"""Which stored rows an analysis may put side by side.

`recommend`, `report` and `fit` compare configurations, so every row they compare must have
been measured on the same clips. With `--sweep FILE` they take exactly that sweep's cells: its
specs, measured isolated (a sweep cell is done only by an isolated row), with the code, weights
and data the store holds for them. Without it, they group the store's rows by data set (name,
data digest and max_clips) and analyse each group on its own, saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxmeter.errors import StoreError


@dataclass
class Selection:
    groups: list[tuple[str, list[Any]]]  # (title, rows measured on the same clips)
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[Any]:
        return [r for _, rs in self.groups for r in rs]


def sweep_spec_hashes(sweep_file: Path) -> set[str]:
    """The spec hashes a sweep file expands to (its axes grid, or its iso-FLOPs grid)."""
    from voxmeter.sweep.grid import budget_specs, expand, load_sweep, sweep_budget_grid

    sw = load_sweep(sweep_file)
    if sw.budget.gflops is not None:
        exp = budget_specs(sweep_budget_grid(sw), sw)
    else:
        exp = expand(sw)
    return {s.spec_hash for s in exp.specs}


def data_title(row: Any) -> str:
    data, digest, max_clips = row.data_key
    clips = f", first {max_clips} clips" if max_clips else ""
    return f"data set {data} ({digest[:8]}{clips})"


def select(
    rows: Sequence[Any], sweep_file: Path | None, where: str, empty_note: str = ""
) -> Selection:
    """The rows to analyse, grouped by data set; StoreError when nothing is left."""
    from voxmeter.store import distinguish

    rows = list(rows)
    notes: list[str] = []
    if sweep_file is not None:
        wanted = sweep_spec_hashes(sweep_file)
        rows = [r for r in rows if r.spec_hash in wanted and r.mode in ("isolated", "ray")]
        have = {r.spec_hash for r in rows}
        notes.append(f"sweep {sweep_file}: {len(have)} of {len(wanted)} cell(s) measured")
        if not rows:
            raise StoreError(f"{where} holds no isolated results of the sweep {sweep_file}")
    if not rows:
        raise StoreError(f"{where} has no results{empty_note}")
    groups: dict[tuple, list[Any]] = {}
    for r in rows:
        groups.setdefault(r.data_key, []).append(r)
    out = [(data_title(rs[0]), distinguish(_fresh_labels(rs))) for rs in groups.values()]
    if len(out) > 1:
        notes.append(
            f"{len(out)} data sets in the selection: each is analysed on its own "
            "(figures from different clips are never compared); pass --sweep FILE for one sweep"
        )
    return Selection(out, notes)


def _fresh_labels(rows: list[Any]) -> list[Any]:
    """Labels made again from the spec alone, so `distinguish` adds only what differs here."""
    from voxmeter.store import spec_label

    for r in rows:
        r.label = spec_label(r.spec, r.spec_hash)
    return rows
