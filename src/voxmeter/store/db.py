"""The results store's SQLite storage: one row per (identity, mode, repeat), written as soon
as a repeat finishes. A row's identity is its spec hash plus the code fingerprint, weights
digest and data digest that decided its numbers (voxmeter.identity); rows of different modes
(in-process, isolated, ray) are kept apart, because only an isolated row's peak RSS is the
configuration's own.

SQLite in WAL mode with synchronous=NORMAL: each `add` is its own transaction, so a process
killed mid-sweep leaves every finished repeat intact and no half-written row (WAL commits are
atomic; NORMAL may lose the last commit on a power cut, never corrupt the file). The file is
marked with an application id, so opening some other SQLite file is a clear StoreError rather
than a silent new table in someone's database. Aggregation is in `aggregate`, export in
`export`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxmeter.errors import SpecError, StoreError
from voxmeter.identity import Identity
from voxmeter.result import Result
from voxmeter.store.aggregate import AggRow, aggregate_results
from voxmeter.store.export import EXPORT_FORMATS, flat_rows, write_flat

if TYPE_CHECKING:
    from typing_extensions import Self

DEFAULT_STORE_PATH = "voxmeter-results.sqlite"
APPLICATION_ID = 0x56584D31  # "VXM1": marks a file as a voxmeter store

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
