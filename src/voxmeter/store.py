"""The results store: one SQLite row per (spec, repeat), written as soon as a repeat finishes.

SQLite in WAL mode with synchronous=NORMAL: each `add` is its own transaction, so a process
killed mid-sweep leaves every finished repeat intact and no half-written row (WAL commits are
atomic; NORMAL may lose the last commit on a power cut, never corrupt the file). The file is
marked with an application id, so opening some other SQLite file is a clear StoreError rather
than a silent new table in someone's database.

Aggregation over repeats (`aggregate_results`): the mean of each numeric metric and a 95%
Student t-interval of that mean from 2 repeats on (mean ± t(0.975, n-1)·s/√n). A t-interval is
used rather than a bootstrap because sweeps usually run 1-3 repeats, where a bootstrap has
nothing to resample. WER is the exception: greedy decoding gives the same text every repeat,
so a CI over repeats would be a misleading zero; where the harness recorded a bootstrap CI
over clips (wer_ci_lo/wer_ci_hi) that interval is reported instead, and says so.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxmeter.errors import SpecError, StoreError
from voxmeter.result import METRIC_UNITS, Result

if TYPE_CHECKING:
    from typing_extensions import Self

DEFAULT_STORE_PATH = "voxmeter-results.sqlite"
APPLICATION_ID = 0x56584D31  # "VXM1": marks a file as a voxmeter store
EXPORT_FORMATS = ("csv", "json", "parquet")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    spec_hash TEXT NOT NULL,
    "repeat" INTEGER NOT NULL,
    spec_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    clips_json TEXT NOT NULL,
    env_json TEXT NOT NULL,
    warnings_json TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (spec_hash, "repeat")
)
"""
_COLUMNS = (
    'spec_hash, "repeat", spec_json, metrics_json, clips_json, env_json, warnings_json, '
    "mode, status, created_at"
)


class ResultStore:
    """Results keyed by (spec_hash, repeat). Use as a context manager or call close()."""

    def __init__(self, path: str | Path = DEFAULT_STORE_PATH, *, create: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a results store")
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no such results store")
            if not self.path.parent.exists():
                raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=30.0)
            self._init_schema()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a voxmeter store ({e})") from None

    def _init_schema(self) -> None:
        c = self._conn
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != APPLICATION_ID and tables:
            c.close()
            raise StoreError(
                f"{self.path}: not a voxmeter store (an SQLite file with tables "
                f"{', '.join(sorted(tables)[:3])})"
            )
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        if app_id != APPLICATION_ID:
            with c:
                c.execute(f"PRAGMA application_id={APPLICATION_ID}")
                c.execute(_SCHEMA)

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------
    def add(self, result: Result) -> None:
        """Write one repeat in its own transaction (replacing an earlier row for it)."""
        row = (
            result.spec_hash,
            int(result.repeat),
            _dumps(result.spec),
            _dumps(result.metrics),
            _dumps(result.clips),
            _dumps(result.env),
            _dumps(result.warnings),
            result.mode,
            result.status,
            float(result.created_at),
        )
        with self._conn:  # commits on success, rolls back on error: never a partial row
            self._conn.execute(
                f"INSERT OR REPLACE INTO results ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", row
            )

    def delete(self, spec_hash: str) -> int:
        """Forget every repeat of a spec (for --force); returns the rows removed."""
        with self._conn:
            cur = self._conn.execute("DELETE FROM results WHERE spec_hash = ?", (spec_hash,))
        return cur.rowcount

    # -- reading -------------------------------------------------------------------------
    def done_repeats(self, spec_hash: str) -> set[int]:
        """Repeat indices finished successfully (failed ones are tried again on re-run)."""
        rows = self._conn.execute(
            "SELECT \"repeat\" FROM results WHERE spec_hash = ? AND status = 'ok'", (spec_hash,)
        )
        return {r[0] for r in rows}

    def get(self, spec_hash: str, *, include_failed: bool = False) -> list[Result]:
        """All repeats of one spec (by full hash or a unique prefix), in repeat order."""
        full = self.resolve_hash(spec_hash)
        return [
            r
            for r in self._select('WHERE spec_hash = ? ORDER BY "repeat"', (full,))
            if include_failed or r.status == "ok"
        ]

    def resolve_hash(self, prefix: str) -> str:
        """The one stored spec hash starting with `prefix`; StoreError if none or several."""
        if not prefix:
            raise StoreError(f"{self.path}: empty spec hash")
        rows = self._conn.execute(
            "SELECT DISTINCT spec_hash FROM results WHERE substr(spec_hash, 1, ?) = ?",
            (len(prefix), prefix),
        ).fetchall()
        if not rows:
            raise StoreError(f"{self.path}: no results for spec {prefix!r}")
        if len(rows) > 1:
            raise StoreError(f"{self.path}: spec prefix {prefix!r} matches {len(rows)} specs")
        return rows[0][0]

    def all(self, *, include_failed: bool = False) -> list[Result]:
        """Every repeat of every spec, oldest spec first."""
        where = "" if include_failed else "WHERE status = 'ok'"
        return self._select(f'{where} ORDER BY created_at, spec_hash, "repeat"', ())

    def failures(self) -> list[Result]:
        return self._select("WHERE status != 'ok' ORDER BY created_at", ())

    def specs(self) -> dict[str, dict[str, Any]]:
        """spec_hash -> spec dict, for every spec with at least one row."""
        rows = self._conn.execute(
            "SELECT spec_hash, spec_json FROM results GROUP BY spec_hash ORDER BY MIN(created_at)"
        )
        return {h: json.loads(s) for h, s in rows}

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def _select(self, tail: str, params: tuple) -> list[Result]:
        try:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM results {tail}", params).fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: cannot read results ({e})") from None
        return [_row_to_result(r) for r in rows]

    # -- derived -------------------------------------------------------------------------
    def aggregate(self) -> list[AggRow]:
        return aggregate_results(self.all())

    def export(self, path: str | Path, format: str = "csv") -> int:
        """Write one flat row per repeat (spec.* columns, then metrics); returns rows written."""
        if format not in EXPORT_FORMATS:
            raise SpecError(
                f"--format: expected one of {', '.join(EXPORT_FORMATS)}, got {format!r}"
            )
        results = self.all(include_failed=True)
        if not results:
            raise StoreError(f"{self.path} has no results; nothing written")
        rows = flat_rows(results)
        write_flat(rows, Path(path), format)
        return len(rows)


def open_existing(path: str | Path) -> ResultStore:
    """Open a store for reading; a missing file is an error rather than a new empty store."""
    return ResultStore(path, create=False)


# -- aggregation ------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricAgg:
    mean: float
    n: int
    ci_lo: float | None = None  # 95% CI of the mean; None when it cannot be computed
    ci_hi: float | None = None
    ci_method: str = ""  # "t over repeats", "bootstrap over clips", or "" (no CI)

    @property
    def half_width(self) -> float | None:
        return None if self.ci_lo is None or self.ci_hi is None else (self.ci_hi - self.ci_lo) / 2


@dataclass
class AggRow:
    """One spec, its repeats summarised: what analysis and the report work from."""

    spec_hash: str
    spec: dict[str, Any]
    label: str
    n_repeats: int
    metrics: dict[str, MetricAgg]
    notes: dict[str, str] = field(default_factory=dict)  # string metrics, e.g. energy_method
    modes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    envs: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)  # clip records of every repeat

    def value(self, key: str) -> float | None:
        """The mean of a metric, or None when no repeat measured it."""
        m = self.metrics.get(key)
        return None if m is None else m.mean

    def axis(self, name: str) -> Any:
        return (self.spec.get("axes") or {}).get(name)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student t-interval of the mean; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def _agg_metric(key: str, results: list[Result]) -> MetricAgg | None:
    vals = [float(r.metrics[key]) for r in results if _finite(r.metrics.get(key))]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    if key == "wer":
        los = [r.metrics.get("wer_ci_lo") for r in results]
        his = [r.metrics.get("wer_ci_hi") for r in results]
        if los and all(_finite(v) for v in los + his):
            return MetricAgg(
                mean, len(vals), sum(los) / len(los), sum(his) / len(his), "bootstrap over clips"
            )
    ci = t_interval(vals)
    if ci is None:
        return MetricAgg(mean, len(vals))
    return MetricAgg(mean, len(vals), ci[0], ci[1], "t over repeats")


def spec_label(spec: dict[str, Any], spec_hash: str = "") -> str:
    from voxmeter.spec import RunSpec

    try:
        return RunSpec.from_dict(spec).label()
    except (SpecError, TypeError, ValueError):
        return spec_hash or "unknown spec"  # a spec written by another voxmeter version


def aggregate_results(results: Iterable[Result]) -> list[AggRow]:
    """Group successful repeats by spec; mean and 95% CI per numeric metric."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault(r.spec_hash, []).append(r)
    out = []
    for h, rs in groups.items():
        rs.sort(key=lambda r: r.repeat)
        keys = sorted({k for r in rs for k, v in r.metrics.items() if _finite(v)})
        metrics = {k: a for k in keys if (a := _agg_metric(k, rs)) is not None}
        notes = {k: v for r in rs for k, v in r.metrics.items() if isinstance(v, str)}
        warnings = list(dict.fromkeys(w for r in rs for w in r.warnings))
        out.append(
            AggRow(
                spec_hash=h,
                spec=rs[-1].spec,
                label=spec_label(rs[-1].spec, h),
                n_repeats=len(rs),
                metrics=metrics,
                notes=notes,
                modes=sorted({r.mode for r in rs}),
                warnings=warnings,
                envs=[r.env for r in rs],
                clips=[dict(c, repeat=r.repeat) for r in rs for c in r.clips],
            )
        )
    return out


# -- export -----------------------------------------------------------------------------
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


def _dumps(obj: Any) -> str:
    from voxmeter.result import _json_default

    return json.dumps(obj, default=_json_default)


def _row_to_result(row: tuple) -> Result:
    h, rep, spec, metrics, clips, env, warnings, mode, status, created = row
    return Result(
        spec_hash=h,
        spec=json.loads(spec),
        repeat=rep,
        metrics=json.loads(metrics),
        clips=json.loads(clips),
        env=json.loads(env),
        warnings=json.loads(warnings),
        mode=mode,
        status=status,
        created_at=created,
    )


def failed_result(spec_dict: dict[str, Any], spec_hash: str, repeat: int, message: str) -> Result:
    """The row a failed repeat leaves: status 'failed', the error in metrics and warnings."""
    return Result(
        spec_hash=spec_hash,
        spec=spec_dict,
        repeat=repeat,
        metrics={"error": message},
        warnings=[message],
        status="failed",
        created_at=time.time(),
    )
