"""The results store: one SQLite row per (identity, mode, repeat), written as soon as a repeat
finishes. A row's identity is its spec hash plus the code fingerprint, weights digest and data
digest that decided its numbers (voxmeter.identity); in-process and isolated rows of the same
identity are kept apart, because only an isolated row's peak RSS is the configuration's own.

SQLite in WAL mode with synchronous=NORMAL: each `add` is its own transaction, so a process
killed mid-sweep leaves every finished repeat intact and no half-written row (WAL commits are
atomic; NORMAL may lose the last commit on a power cut, never corrupt the file). The file is
marked with an application id, so opening some other SQLite file is a clear StoreError rather
than a silent new table in someone's database.

Aggregation over repeats (`aggregate_results`) never mixes what is not comparable: it groups
rows by identity, mode and CPU model (threads are in the spec). Within a group, latency
percentiles (every stage's p50/p90/p99, end to end) are pooled over clips x repeats from the
clip records, the one definition `bench`, `results show` and the report all use; other
figures take the mean of each numeric metric and a 95%
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
from voxmeter.identity import Identity
from voxmeter.result import METRIC_UNITS, PERCENTILES, Result

if TYPE_CHECKING:
    from typing_extensions import Self

DEFAULT_STORE_PATH = "voxmeter-results.sqlite"
APPLICATION_ID = 0x56584D31  # "VXM1": marks a file as a voxmeter store
EXPORT_FORMATS = ("csv", "json", "parquet")

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    spec_hash TEXT NOT NULL,
    code_fp TEXT NOT NULL DEFAULT '',
    weights_digest TEXT NOT NULL DEFAULT '',
    data_digest TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL,
    "repeat" INTEGER NOT NULL,
    spec_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    clips_json TEXT NOT NULL,
    env_json TEXT NOT NULL,
    warnings_json TEXT NOT NULL,
    skipped_json TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (spec_hash, code_fp, weights_digest, data_digest, mode, "repeat")
)
"""
_COLUMNS = (
    'spec_hash, code_fp, weights_digest, data_digest, mode, "repeat", spec_json, '
    "metrics_json, clips_json, env_json, warnings_json, skipped_json, status, created_at"
)
_V1_COLUMNS = (
    'spec_hash, "repeat", spec_json, metrics_json, clips_json, env_json, warnings_json, '
    "mode, status, created_at"
)
UNKNOWN = "unknown (stored before identities)"


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
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif c.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self._migrate_v1()

    def _migrate_v1(self) -> None:
        """A store from before identities: its rows keep an 'unknown' identity, so they are
        shown apart and never count as done for today's code, weights and data."""
        c = self._conn
        with c:
            c.execute("ALTER TABLE results RENAME TO results_v1")
            c.execute(_SCHEMA)
            c.execute(
                f"INSERT INTO results ({_V1_COLUMNS}, code_fp, weights_digest, data_digest) "
                f"SELECT {_V1_COLUMNS}, ?, ?, ? FROM results_v1",
                (UNKNOWN, UNKNOWN, UNKNOWN),
            )
            c.execute("DROP TABLE results_v1")
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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
            result.code_fp,
            result.weights_digest,
            result.data_digest,
            result.mode,
            int(result.repeat),
            _dumps(result.spec),
            _dumps(result.metrics),
            _dumps(result.clips),
            _dumps(result.env),
            _dumps(result.warnings),
            _dumps(result.skipped),
            result.status,
            float(result.created_at),
        )
        marks = ",".join("?" * len(row))
        with self._conn:  # commits on success, rolls back on error: never a partial row
            if result.status == "ok":  # a success supersedes earlier failures of the repeat
                self._conn.execute(
                    'DELETE FROM results WHERE spec_hash = ? AND mode = ? AND "repeat" = ? '
                    "AND status != 'ok'",
                    (result.spec_hash, result.mode, int(result.repeat)),
                )
            self._conn.execute(f"INSERT OR REPLACE INTO results ({_COLUMNS}) VALUES ({marks})", row)

    def _where(self, spec_hash: str, ident: Identity | None, mode: str | None) -> tuple[str, tuple]:
        sql, params = "spec_hash = ?", [spec_hash]
        if ident is not None:
            sql += " AND code_fp = ? AND weights_digest = ? AND data_digest = ?"
            params += [ident.code_fp, ident.weights_digest, ident.data_digest]
        if mode is not None:
            sql += " AND mode = ?"
            params.append(mode)
        return sql, tuple(params)

    def delete(self, spec_hash: str, ident: Identity | None = None, mode: str | None = None) -> int:
        """Forget the repeats of a spec (of one identity and mode, when given), for --force."""
        where, params = self._where(spec_hash, ident, mode)
        with self._conn:
            cur = self._conn.execute(f"DELETE FROM results WHERE {where}", params)
        return cur.rowcount

    # -- reading -------------------------------------------------------------------------
    def done_repeats(
        self, spec_hash: str, ident: Identity | None = None, mode: str | None = None
    ) -> set[int]:
        """Repeat indices finished successfully with this identity and mode (when given);
        failed ones are tried again on re-run."""
        where, params = self._where(spec_hash, ident, mode)
        rows = self._conn.execute(
            f"SELECT \"repeat\" FROM results WHERE {where} AND status = 'ok'", params
        )
        return {r[0] for r in rows}

    def identities(self, spec_hash: str) -> list[Identity]:
        """The distinct identities stored for a spec, oldest first."""
        rows = self._conn.execute(
            "SELECT code_fp, weights_digest, data_digest FROM results WHERE spec_hash = ? "
            "GROUP BY code_fp, weights_digest, data_digest ORDER BY MIN(created_at)",
            (spec_hash,),
        )
        return [Identity(*r) for r in rows]

    def get(self, spec_hash: str, *, include_failed: bool = False) -> list[Result]:
        """All repeats of one spec (by full hash or a unique prefix), in repeat order."""
        full = self.resolve_hash(spec_hash)
        return [
            r
            for r in self._select('WHERE spec_hash = ? ORDER BY "repeat", created_at', (full,))
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
    mean: float  # the figure: a mean over repeats, or a pooled percentile (see `how`)
    n: int  # repeats averaged, or clip runs pooled
    ci_lo: float | None = None  # 95% CI of the mean; None when it cannot be computed
    ci_hi: float | None = None
    ci_method: str = ""  # "t over repeats", "bootstrap over clips", or "" (no CI)
    how: str = "mean over repeats"

    @property
    def half_width(self) -> float | None:
        return None if self.ci_lo is None or self.ci_hi is None else (self.ci_hi - self.ci_lo) / 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.mean,
            "ci": [self.ci_lo, self.ci_hi] if self.ci_lo is not None else None,
            "ci_method": self.ci_method or None,
            "how": self.how,
            "n": self.n,
        }


@dataclass
class AggRow:
    """One group of comparable repeats (same spec, identity, mode and CPU), summarised:
    what analysis and the report work from."""

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
    code_fp: str = ""
    weights_digest: str = ""
    data_digest: str = ""
    cpu_model: str = ""
    stage_keys: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def value(self, key: str) -> float | None:
        """The figure's value (mean or pooled percentile), or None when not measured."""
        m = self.metrics.get(key)
        return None if m is None else m.mean

    def axis(self, name: str) -> Any:
        return (self.spec.get("axes") or {}).get(name)

    @property
    def mode(self) -> str:
        return self.modes[0] if self.modes else ""

    @property
    def identity(self) -> Identity:
        return Identity(self.code_fp, self.weights_digest, self.data_digest)

    @property
    def group_key(self) -> str:
        """Unique per group: the spec hash, then what sets this group apart."""
        parts = (self.code_fp, self.weights_digest, self.data_digest, self.mode, self.cpu_model)
        return self.spec_hash + "/" + "/".join(parts)

    @property
    def data_key(self) -> tuple[str, str, int]:
        """Rows with equal data keys were measured on the same clips."""
        return (str(self.spec.get("data")), self.data_digest, int(self.spec.get("max_clips") or 0))


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
    if key in ("wer", "cer"):
        los = [r.metrics.get(f"{key}_ci_lo") for r in results]
        his = [r.metrics.get(f"{key}_ci_hi") for r in results]
        if los and all(_finite(v) for v in los + his):
            return MetricAgg(
                mean, len(vals), sum(los) / len(los), sum(his) / len(his), "bootstrap over clips"
            )
    ci = t_interval(vals)
    if ci is None:
        return MetricAgg(mean, len(vals))
    return MetricAgg(mean, len(vals), ci[0], ci[1], "t over repeats")


def stage_keys_of(results: Iterable[Result]) -> list[str]:
    """The engine's stage keys as the results recorded them (older rows: feat, enc, dec)."""
    for r in results:
        keys = r.metrics.get("stage_keys")
        if isinstance(keys, str) and keys:
            return keys.split(",")
    return ["feat", "enc", "dec"]


BOOTSTRAP_RESAMPLES = 1000


def pooled_percentiles(results: list[Result], stage_keys: list[str]) -> dict[str, MetricAgg]:
    """Every stage's and the end-to-end p50/p90/p99, pooled over clips x repeats, each with
    a 95% percentile-bootstrap CI over those clip runs (seeded: the same rows give the same
    interval in every command)."""
    import numpy as np

    out: dict[str, MetricAgg] = {}
    series: dict[str, list[float]] = {}
    for stage in [*stage_keys, "prefill", "e2e"]:
        series[stage] = [
            c[f"{stage}_ms"] for r in results for c in r.clips if _finite(c.get(f"{stage}_ms"))
        ]
    # a batch's latency once per batch; a long recording's windows one by one
    series["batch"] = [
        c["e2e_ms"]
        for r in results
        for c in {c["batch"]: c for c in r.clips if "batch" in c}.values()
        if _finite(c.get("e2e_ms"))
    ]
    series["window"] = [
        w["e2e_ms"]
        for r in results
        for c in r.clips
        for w in c.get("windows", [])
        if "n_frames" in w and _finite(w.get("e2e_ms"))
    ]
    unit = {"batch": "batch runs", "window": "windows"}
    for stage, raw in series.items():
        vals = np.array(raw)
        if not len(vals):
            continue
        how = f"pooled over {len(vals)} {unit.get(stage, 'clip runs (clips x repeats)')}"
        point = np.percentile(vals, PERCENTILES)
        boot = None
        if len(vals) >= 2:
            idx = np.random.default_rng(0).integers(0, len(vals), (BOOTSTRAP_RESAMPLES, len(vals)))
            boot = np.percentile(np.percentile(vals[idx], PERCENTILES, axis=1), [2.5, 97.5], axis=1)
        for i, q in enumerate(PERCENTILES):
            if boot is None:
                out[f"{stage}_ms_p{q}"] = MetricAgg(float(point[i]), len(vals), how=how)
            else:
                lo, hi = float(boot[0][i]), float(boot[1][i])
                out[f"{stage}_ms_p{q}"] = MetricAgg(
                    float(point[i]),
                    len(vals),
                    lo,
                    hi,
                    f"bootstrap over {unit.get(stage, 'clip runs')}",
                    how,
                )
    return out


def spec_label(spec: dict[str, Any], spec_hash: str = "") -> str:
    from voxmeter.spec import RunSpec

    try:
        return RunSpec.from_dict(spec).label()
    except (SpecError, TypeError, ValueError):
        return spec_hash or "unknown spec"  # a spec written by another voxmeter version


def _group_key(r: Result) -> tuple[str, ...]:
    cpu = str(r.env.get("cpu_model") or "")
    return (r.spec_hash, r.code_fp, r.weights_digest, r.data_digest, r.mode, cpu)


def aggregate_results(results: Iterable[Result]) -> list[AggRow]:
    """Group successful repeats by spec, identity, mode and CPU model; summarise each group.

    Labels name what sets rows apart where several are shown (see `distinguish`).
    """
    groups: dict[tuple[str, ...], list[Result]] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault(_group_key(r), []).append(r)
    out = []
    for (h, code, weights, data, mode, cpu), rs in groups.items():
        rs.sort(key=lambda r: r.repeat)
        keys = sorted({k for r in rs for k, v in r.metrics.items() if _finite(v)})
        metrics = {k: a for k in keys if (a := _agg_metric(k, rs)) is not None}
        stages = stage_keys_of(rs)
        metrics.update(pooled_percentiles(rs, stages))
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
                modes=[mode],
                warnings=warnings,
                envs=[r.env for r in rs],
                clips=[dict(c, repeat=r.repeat) for r in rs for c in r.clips],
                code_fp=code,
                weights_digest=weights,
                data_digest=data,
                cpu_model=cpu,
                stage_keys=stages,
                skipped=rs[-1].skipped,
            )
        )
    return distinguish(out)


def distinguish(rows: list[AggRow]) -> list[AggRow]:
    """Add to each label what differs among the rows shown: data set, threads, max_clips,
    then, for rows of one spec, code, weights, mode and CPU. Returns the same rows."""
    specs = [r.spec for r in rows]

    def varies(f: Any) -> bool:
        return len({json.dumps(f(x), default=str) for x in specs}) > 1

    parts: dict[int, list[str]] = {i: [] for i in range(len(rows))}
    if varies(lambda s: (s.get("data"),)) or len({r.data_digest for r in rows}) > 1:
        for i, r in enumerate(rows):
            parts[i].append(f"data={r.spec.get('data')}")
            if len({x.data_digest for x in rows if x.spec.get("data") == r.spec.get("data")}) > 1:
                parts[i][-1] += f"@{r.data_digest[:6]}"
    if varies(lambda s: s.get("threads")):
        for i, r in enumerate(rows):
            parts[i].append(f"threads={r.spec.get('threads')}")
    if varies(lambda s: s.get("max_clips")):
        for i, r in enumerate(rows):
            n = r.spec.get("max_clips") or 0
            parts[i].append(f"clips<={n}" if n else "all clips")
    by_spec: dict[str, list[AggRow]] = {}
    for r in rows:
        by_spec.setdefault(r.spec_hash, []).append(r)
    for i, r in enumerate(rows):
        same = by_spec[r.spec_hash]
        if len(same) < 2:
            continue
        for attr, name in (
            ("code_fp", "code"),
            ("weights_digest", "weights"),
            ("mode", "mode"),
            ("cpu_model", "cpu"),
        ):
            if len({getattr(x, attr) for x in same}) > 1:
                v = getattr(r, attr)
                parts[i].append(f"{name}={v[:12] if attr != 'cpu_model' else v}")
    for i, r in enumerate(rows):
        if parts[i]:
            r.label = f"{r.label} [{', '.join(parts[i])}]"
    return rows


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


def _dumps(obj: Any) -> str:
    from voxmeter.result import _json_default

    return json.dumps(obj, default=_json_default)


def _row_to_result(row: tuple) -> Result:
    h, code, weights, data, mode, rep, spec, metrics, clips, env, warnings, skipped = row[:12]
    status, created = row[12:]
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
        code_fp=code,
        weights_digest=weights,
        data_digest=data,
        skipped=json.loads(skipped),
    )


def failed_result(
    spec_dict: dict[str, Any],
    spec_hash: str,
    repeat: int,
    message: str,
    *,
    ident: Identity | None = None,
    mode: str = "isolated",
    traceback: str = "",
) -> Result:
    """The row a failed repeat leaves: status 'failed', the error in metrics and warnings;
    a crash (a bug, not a user error) keeps its whole traceback."""
    metrics: dict[str, Any] = {"error": message}
    if traceback:
        metrics["traceback"] = traceback
    res = Result(
        spec_hash=spec_hash,
        spec=spec_dict,
        repeat=repeat,
        metrics=metrics,
        warnings=[message],
        mode=mode,
        status="failed",
        created_at=time.time(),
    )
    return res.with_identity(ident) if ident is not None else res
