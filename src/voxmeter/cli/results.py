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


@results_app.command("list")
def results_list(
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """One line per spec: label, repeats, WER, RTFx, p50 latency, peak RSS."""
    from voxmeter.store import open_existing

    with open_existing(store) as s:
        rows = s.aggregate()
        failures = s.failures()
    if not rows and not failures:
        raise StoreError(f"{store} has no results")
    keys = ("wer", "rtfx", "e2e_ms_p50", "peak_rss_mb")
    if as_json:
        doc = [
            {
                "spec_hash": r.spec_hash,
                "label": r.label,
                "n_repeats": r.n_repeats,
                **{k: r.value(k) for k in keys},
            }
            for r in rows
        ]
        failed = sorted({(f.spec_hash, f.warnings[0] if f.warnings else "") for f in failures})
        out = {"results": doc, "failed": [{"spec_hash": h, "error": m} for h, m in failed]}
        typer.echo(json.dumps(out, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"{store}: {len(rows)} spec(s)"))
    t.add_column("spec", no_wrap=True)
    t.add_column("configuration", no_wrap=True)
    for col in ("repeats", "WER %", "RTFx", "p50 ms", "peak RSS MiB"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            r.spec_hash,
            escape(r.label),
            str(r.n_repeats),
            fmt(r.value("wer")),
            fmt(r.value("rtfx")),
            fmt(r.value("e2e_ms_p50"), 1),
            fmt(r.value("peak_rss_mb"), 0),
        )
    con = console()
    con.print(t)
    done = {r.spec_hash for r in rows}
    for h in sorted({f.spec_hash for f in failures} - done):
        msg = next(f.warnings[0] for f in failures if f.spec_hash == h and f.warnings)
        con.print(f"[red]failed[/red] {h}: {msg}", markup=True, highlight=False)


@results_app.command("show")
def results_show(
    spec_hash: str = typer.Argument(..., help="spec hash (or a unique prefix)"),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every figure of one spec: mean over repeats with its 95% CI, the spec, warnings."""
    from voxmeter.result import METRIC_UNITS
    from voxmeter.store import aggregate_results, open_existing

    with open_existing(store) as s:
        results = s.get(spec_hash, include_failed=True)
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        msg = results[0].warnings[0] if results and results[0].warnings else "no successful repeat"
        raise StoreError(f"spec {spec_hash}: {msg}")
    row = aggregate_results(ok)[0]
    if as_json:
        doc = {
            "spec_hash": row.spec_hash,
            "label": row.label,
            "spec": row.spec,
            "n_repeats": row.n_repeats,
            "metrics": {
                k: {
                    "mean": m.mean,
                    "ci": [m.ci_lo, m.ci_hi] if m.ci_lo is not None else None,
                    "ci_method": m.ci_method,
                    "n": m.n,
                }
                for k, m in row.metrics.items()
            },
            "notes": row.notes,
            "warnings": row.warnings,
        }
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"{row.label} ({row.spec_hash}), {row.n_repeats} repeat(s)"))
    for col in ("figure", "mean", "95% CI", "unit"):
        t.add_column(col, justify="left" if col in ("figure", "unit") else "right")
    order = [k for k in METRIC_UNITS if k in row.metrics] + sorted(
        k for k in row.metrics if k not in METRIC_UNITS
    )
    for k in order:
        m = row.metrics[k]
        ci = f"{m.ci_lo:.4g} - {m.ci_hi:.4g}" if m.ci_lo is not None else ""
        t.add_row(k, f"{m.mean:.4g}", ci, METRIC_UNITS.get(k, ("", ""))[0])
    con = console()
    con.print(t)
    for k, v in sorted(row.notes.items()):
        con.print(f"{k}: {v}", highlight=False, markup=False)
    for w in row.warnings:
        con.print(f"warning: {w}", highlight=False, markup=False)


@results_app.command("export")
def results_export(
    output: Path = typer.Option(..., "-o", "--output", help="file to write"),
    fmt: str = typer.Option("csv", "--format", help="csv, json or parquet"),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
) -> None:
    """One flat row per repeat: spec.* columns, then every metric."""
    from voxmeter.store import open_existing

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
