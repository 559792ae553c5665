"""A compressed model beside its source model, measured with the same settings on the same data
in the same results store: the rows to compare, and the WER gap with a paired interval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voxmeter.errors import SpecError


def base_rows(store_path: Path, meta: dict[str, Any]) -> list[Any]:
    """Aggregated rows of the source model itself (its name as the spec's model, nothing
    compressed), from the same store: what the card compares the directory with."""
    from voxmeter.store import aggregate_results, open_existing

    name = (meta.get("base") or {}).get("name")
    if not name or not store_path.is_file():
        return []
    with open_existing(store_path) as store:
        mine = [r for r in store.all() if r.spec.get("model") == name and _uncompressed(r.spec)]
    return aggregate_results(mine)


def _uncompressed(spec: dict[str, Any]) -> bool:
    from voxmeter.spec import RunSpec

    try:
        return RunSpec.from_dict(dict(spec)).compression.is_none
    except (SpecError, TypeError, ValueError):  # another version's row: not comparable
        return False


def _settings(spec: dict[str, Any]) -> str:
    """A row's settings apart from the model and its compression: rows that agree here and
    ran on the same data digest are one configuration of two models."""
    keep = {k: v for k, v in spec.items() if k not in ("model", "compression", "repeats")}
    return json.dumps(keep, sort_keys=True, default=str)


def base_for(row: Any, base: list[Any]) -> Any | None:
    """The base model's row measured like `row`: same settings, same data digest."""
    for b in base:
        if b.data_digest == row.data_digest and _settings(b.spec) == _settings(row.spec):
            return b
    return None


def wer_gap(row: Any, base_row: Any) -> tuple[float, float, float] | None:
    """WER(row) - WER(base) in points over the clips both hold, with a paired bootstrap
    interval over clips (metrics.wer_gap_ci); each clip's first repeat (greedy decoding
    gives the same text at every repeat)."""
    from voxmeter.metrics import wer_gap_ci

    def first(r: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for c in r.clips:
            if c.get("hyp") is not None:
                out.setdefault(str(c.get("id")), c)
        return out

    a, b = first(row), first(base_row)
    ids = [i for i in a if i in b]
    if not ids:
        return None
    refs = [a[i].get("ref") or "" for i in ids]
    return wer_gap_ci(refs, [[a[i]["hyp"] for i in ids]], [[b[i]["hyp"] for i in ids]])
