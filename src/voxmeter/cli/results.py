"""The results commands: list, show, export and compare what the store holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from voxmeter.cli.common import STORE_HELP, console, fmt, results_app
from voxmeter.errors import StoreError
from voxmeter.store import DEFAULT_STORE_PATH


def _rows(store: Path) -> list[Any]:
    from voxmeter.store import open_existing

    with open_existing(store) as s:
        rows = s.aggregate()
    if not rows:
        raise StoreError(f"{store} has no results")
    return rows


def _identity_cells(r: Any, here: str) -> tuple[str, str, str]:
    """Short code, weights and data digests; code other than this voxmeter's is starred."""
    code = r.code_fp[:18] + ("*" if r.code_fp != here else "")
    return code, r.weights_digest[:8], r.data_digest[:8]


@results_app.command("list")
def results_list(
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """One line per measured group: spec, configuration, mode, identity and headline figures."""
    from voxmeter.identity import code_fingerprint
    from voxmeter.store import open_existing

    with open_existing(store) as s:
        rows = s.aggregate()
        failures = s.failures()
    if not rows and not failures:
        raise StoreError(f"{store} has no results")
    here = code_fingerprint()
    keys = ("wer", "rtfx", "e2e_ms_p50", "peak_rss_mb")
    if as_json:
        doc = [
            {
                "spec_hash": r.spec_hash,
                "label": r.label,
                "mode": r.mode,
                "n_repeats": r.n_repeats,
                **r.identity.to_dict(),
                "this_code": r.code_fp == here,
                **{k: r.value(k) for k in keys},
            }
            for r in rows
        ]
        failed = sorted({(f.spec_hash, f.warnings[0] if f.warnings else "") for f in failures})
        out = {
            "code_fp": here,
            "results": doc,
            "failed": [{"spec_hash": h, "error": m} for h, m in failed],
        }
        typer.echo(json.dumps(out, indent=2))
        return
    _print_list(store, rows, failures, here)


def _list_table(store: Path, rows: list[Any], here: str, identity: bool) -> Any:
    """The list as a rich Table. Figures never wrap or shrink (each column is as wide as its
    widest cell); the configuration wraps first, and the identity columns (code, weights,
    data) are left out by the caller when the figures would not fit otherwise."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"{store}: {len(rows)} measured group(s)"), show_edge=False)
    t.add_column("spec", no_wrap=True)
    t.add_column("configuration", overflow="fold", ratio=1, min_width=12)
    cells = [
        [
            r.mode,
            str(r.n_repeats),
            fmt(r.value("wer")),
            fmt(r.value("rtfx")),
            fmt(r.value("e2e_ms_p50"), 1),
            fmt(r.value("peak_rss_mb"), 0),
        ]
        for r in rows
    ]
    heads = ("mode", "reps", "WER %", "RTFx", "p50 ms", "RSS MiB")
    for i, head in enumerate(heads):
        wide = max([len(head)] + [len(c[i]) for c in cells])
        t.add_column(head, justify="left" if i == 0 else "right", no_wrap=True, min_width=wide)
    if identity:
        for col in ("code", "weights", "data"):
            t.add_column(col, no_wrap=True)
    for r, figs in zip(rows, cells):
        ids = _identity_cells(r, here) if identity else ()
        t.add_row(escape(r.spec_hash), escape(r.label), *map(escape, figs), *ids)
    return t


def _fits(con: Any, table: Any) -> bool:
    """Whether `table` fits `con` with no column squeezed below its minimum (measured
    unbounded: rich clamps a measurement to the width it is given)."""
    from rich.measure import Measurement

    return Measurement.get(con, con.options.update_width(10_000), table).minimum <= con.width


def _print_list(store: Path, rows: list[Any], failures: list[Any], here: str) -> None:
    from rich.markup import escape

    con = console()
    t = _list_table(store, rows, here, identity=True)
    if not _fits(con, t):  # the identity columns give way before any figure does
        t = _list_table(store, rows, here, identity=False)
        t.caption = (
            f"code, weights and data columns left out at {con.width} columns: "
            "`results show HASH`, --json or a wider terminal shows them"
        )
    con.print(t)
    other = [r for r in rows if r.code_fp != here]
    if other:
        con.print(
            f"* {len(other)} group(s) measured by other code than this voxmeter ({here}): "
            "a re-run measures them anew; they are never averaged with today's rows",
            highlight=False,
            markup=False,
        )
    per_spec: dict[str, set] = {}
    for r in rows:
        per_spec.setdefault(r.spec_hash, set()).add((r.weights_digest, r.data_digest))
    mixed = [h for h, ids in per_spec.items() if len(ids) > 1]
    if mixed:
        con.print(
            f"{len(mixed)} spec(s) were measured with other weights or data too "
            f"(e.g. {mixed[0]}): shown as separate rows",
            highlight=False,
            markup=False,
        )
    done = {r.spec_hash for r in rows}
    for h in sorted({f.spec_hash for f in failures} - done):
        msg = next(f.warnings[0] for f in failures if f.spec_hash == h and f.warnings)
        con.print(f"[red]failed[/red] {h}: {escape(msg)}", markup=True, highlight=False)


def _group_json(row: Any) -> dict[str, Any]:
    return {
        "spec_hash": row.spec_hash,
        "label": row.label,
        "spec": row.spec,
        "mode": row.mode,
        "cpu_model": row.cpu_model,
        **row.identity.to_dict(),
        "n_repeats": row.n_repeats,
        "metrics": {k: m.to_dict() for k, m in row.metrics.items()},
        "notes": row.notes,
        "skipped_clips": row.skipped,
        "warnings": row.warnings,
    }


@results_app.command("show")
def results_show(
    spec_hash: str = typer.Argument(..., help="spec hash (or a unique prefix)"),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every figure of one spec with its 95% CI and method; rows of other code, weights, data,
    mode or CPU are shown as separate groups, never averaged together."""
    from voxmeter.store import aggregate_results, open_existing

    with open_existing(store) as s:
        results = s.get(spec_hash, include_failed=True)
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        failed = [r for r in results if r.status != "ok"]
        msg = failed[0].warnings[0] if failed and failed[0].warnings else "no successful repeat"
        raise StoreError(f"spec {spec_hash}: {msg}")
    rows = aggregate_results(ok)
    if as_json:
        doc = [_group_json(r) for r in rows]
        typer.echo(json.dumps(doc[0] if len(doc) == 1 else doc, indent=2, default=str))
        return
    con = console()
    if len(rows) > 1:
        con.print(
            f"{len(rows)} groups of this spec (other code, weights, data, mode or CPU): "
            "each summarised on its own",
            highlight=False,
            markup=False,
        )
    for i, row in enumerate(rows, 1):
        _print_group(row, f"group {i}/{len(rows)}: " if len(rows) > 1 else "")


def _print_group(row: Any, prefix: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from voxmeter.result import METRIC_UNITS

    title = f"{prefix}{row.label} ({row.spec_hash}), {row.n_repeats} {row.mode} repeat(s)"
    t = Table(title=escape(title), caption=escape(f"{row.identity.short()}; CPU {row.cpu_model}"))
    for col in ("figure", "value", "95% CI", "unit", "how"):
        t.add_column(col, justify="right" if col in ("value", "95% CI") else "left")
    order = [k for k in METRIC_UNITS if k in row.metrics] + sorted(
        k for k in row.metrics if k not in METRIC_UNITS
    )
    for k in order:
        m = row.metrics[k]
        ci = f"{m.ci_lo:.4g} - {m.ci_hi:.4g}" if m.ci_lo is not None else ""
        how = m.how + (f"; CI: {m.ci_method}" if m.ci_method else "")
        unit = METRIC_UNITS.get(k, ("", ""))[0]
        t.add_row(*map(escape, (k, f"{m.mean:.4g}", ci, unit, how)))
    con = console()
    con.print(t)
    for k, v in sorted(row.notes.items()):
        con.print(f"{k}: {v}", highlight=False, markup=False)
    for sk in row.skipped:
        con.print(f"skipped clip {sk['id']}: {sk['reason']}", highlight=False, markup=False)
    for w in row.warnings:
        con.print(f"warning: {w}", highlight=False, markup=False)


@results_app.command("export")
def results_export(
    output: Path = typer.Option(..., "-o", "--output", help="file to write"),
    fmt: str = typer.Option("csv", "--format", help="csv, json or parquet"),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
) -> None:
    """One flat row per repeat: spec.* columns, then every metric."""
    from voxmeter.paths import writable_output
    from voxmeter.store import open_existing

    writable_output(output, "results export -o")
    with open_existing(store) as s:
        n = s.export(output, fmt)
    typer.echo(f"wrote {n} row(s) to {output}")


@results_app.command("compare")
def results_compare(
    old: Path = typer.Argument(..., help="the earlier results store"),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help="the newer store"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Figures of the same specs that got worse beyond their CIs (exit 1 if any)."""
    from voxmeter.analysis.regress import compare

    regs, notes = compare(_rows(old), _rows(store))
    if as_json:
        doc = {"regressions": [r.__dict__ for r in regs], "notes": notes}
        typer.echo(json.dumps(doc, indent=2))
    else:
        for line in notes + [r.describe() for r in regs]:
            typer.echo(line)
        if not regs:
            typer.echo("no regressions")
    if regs:
        raise typer.Exit(1)
