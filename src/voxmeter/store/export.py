"""Export: one flat row per repeat (identity columns, spec.* with nested fields dotted, then
metrics), written as CSV, JSON or Parquet for tools outside voxmeter."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from voxmeter.errors import StoreError
from voxmeter.result import METRIC_UNITS, Result
from voxmeter.store.aggregate import spec_label

EXPORT_FORMATS = ("csv", "json", "parquet")


def _flatten(prefix: str, d: dict[str, Any], out: dict[str, Any]) -> None:
    for k, v in d.items():
        name = f"{prefix}.{k}"
        if isinstance(v, dict):
            _flatten(name, v, out)
        else:
            out[name] = v


def flat_rows(results: list[Result]) -> list[dict[str, Any]]:
    """One dict per repeat: identity columns, spec.* (nested fields dotted), then metrics."""
    known = list(METRIC_UNITS)
    rows = []
    for r in results:
        row: dict[str, Any] = {
            "spec_hash": r.spec_hash,
            "code_fp": r.code_fp,
            "weights_digest": r.weights_digest,
            "data_digest": r.data_digest,
            "repeat": r.repeat,
            "label": spec_label(r.spec, r.spec_hash),
            "status": r.status,
            "mode": r.mode,
            "created_at": r.created_at,
        }
        _flatten("spec", r.spec, row)
        extra = sorted(k for k in r.metrics if k not in METRIC_UNITS)
        for k in known + extra:
            if k in r.metrics:
                row[k] = r.metrics[k]
        row["warnings"] = "; ".join(r.warnings)
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        cols.update(dict.fromkeys(row))
    return list(cols)


def _column_values(rows: list[dict[str, Any]], col: str) -> list[Any]:
    """A column's values, as strings when it mixes kinds (frames: 3000 or "fit")."""
    vals = [row.get(col) for row in rows]
    kinds = {
        "num" if isinstance(v, int | float) and not isinstance(v, bool) else type(v).__name__
        for v in vals
        if v is not None
    }
    if len(kinds) > 1:
        return [None if v is None else str(v) for v in vals]
    if kinds == {"list"}:
        return [None if v is None else json.dumps(v) for v in vals]
    return vals


def write_flat(rows: list[dict[str, Any]], path: Path, format: str) -> None:
    try:
        _write_flat(rows, path, format)
    except OSError as e:  # the disk or folder refused: the user's problem, said in one line
        raise StoreError(f"{path}: cannot write ({e.strerror or e})") from None


def _write_flat(rows: list[dict[str, Any]], path: Path, format: str) -> None:
    cols = _columns(rows)
    if not path.parent.exists():
        raise StoreError(f"{path}: folder {path.parent} does not exist")
    if format == "csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for row in rows:
                w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    elif format == "json":
        path.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: _column_values(rows, c) for c in cols})
        pq.write_table(table, path)
