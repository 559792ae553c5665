"""The explore commands: sweep, results, recommend, report, fit.

`register(app)` adds them to voxmeter's typer app. They raise VoxmeterError subclasses for
user mistakes; cli.main turns those into one stderr line and exit status 2. `voxmeter sweep`
exits 1 when it finished but some specs failed, so scripts notice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from voxmeter.errors import SpecError, StoreError
from voxmeter.store import DEFAULT_STORE_PATH

STORE_HELP = "results store (SQLite)"


def _logging(quiet: bool) -> None:
    """Route voxmeter's log lines through rich on stderr, unless the app already set one up."""
    log = logging.getLogger("voxmeter")
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if not log.handlers and not logging.getLogger().handlers:
        from rich.console import Console
        from rich.logging import RichHandler

        h = RichHandler(console=Console(stderr=True), show_time=False, show_path=False)
        log.addHandler(h)


def _console() -> Any:
    from voxmeter.display import console

    return console  # full width when piped, so tables are not squeezed to 80 columns


def _rows(store: Path) -> list[Any]:
    from voxmeter.store import open_existing

    with open_existing(store) as s:
        rows = s.aggregate()
    if not rows:
        raise StoreError(f"{store} has no results")
    return rows


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def _constraints(
    sweep_file: Path | None,
    max_wer: float | None,
    max_rtf: float | None,
    max_memory_mb: float | None,
    max_gflops: float | None,
    minimise: str | None,
) -> Any:
    from voxmeter.sweep.grid import Constraints, check_constraints, load_sweep

    base = load_sweep(sweep_file).constraints if sweep_file else Constraints()
    c = base.merged(
        max_wer=max_wer,
        max_rtf=max_rtf,
        max_memory_mb=max_memory_mb,
        max_gflops=max_gflops,
        minimise=minimise,
    )
    check_constraints(c)
    return c


def register(app: typer.Typer) -> None:
    results_app = typer.Typer(no_args_is_help=True, help="List, show and export stored results.")
    app.add_typer(results_app, name="results")

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
                _fmt(r.value("wer")),
                _fmt(r.value("rtfx")),
                _fmt(r.value("e2e_ms_p50"), 1),
                _fmt(r.value("peak_rss_mb"), 0),
            )
        con = _console()
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
            msg = (
                results[0].warnings[0]
                if results and results[0].warnings
                else "no successful repeat"
            )
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
        con = _console()
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

    @app.command()
    def sweep(
        file: Path = typer.Argument(..., help="sweep file (TOML)"),
        store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
        executor: str = typer.Option("local", help="local (one spec after another) or ray"),
        address: str | None = typer.Option(None, help="Ray cluster address (with --executor ray)"),
        force: bool = typer.Option(False, help="re-measure specs already in the store"),
        budget_gflops: float | None = typer.Option(
            None, help="run the iso-FLOPs grid at this many GFLOPs per clip instead of [axes]"
        ),
        cache_dir: Path | None = typer.Option(None, help="conversion cache (env VOXMETER_CACHE)"),
        dry_run: bool = typer.Option(False, help="print the specs and stop"),
        quiet: bool = typer.Option(False, help="no progress bar or notes"),
    ) -> None:
        """Run every spec of a sweep file into the store; a killed sweep resumes where it stopped."""
        from voxmeter.sweep.grid import budget_specs, expand, load_sweep, sweep_budget_grid
        from voxmeter.sweep.runner import EXECUTORS

        _logging(quiet)
        if executor not in EXECUTORS:
            raise SpecError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
        sw = load_sweep(file)
        if budget_gflops is not None or sw.budget.gflops is not None:
            grid = sweep_budget_grid(sw, budget_gflops)
            for line in grid.lines():
                typer.echo(line)
            if not grid.all_points():
                raise SpecError(
                    f"{file}: no model has a setting within ±{grid.tol:.0%} of "
                    f"{grid.budget_gflops:g} GFLOPs; try another budget or more strides"
                )
            exp = budget_specs(grid, sw)
        else:
            exp = expand(sw)
        for line in exp.notes():
            typer.echo(line)
        if dry_run:
            for s in exp.specs:
                typer.echo(f"{s.spec_hash}  {s.label()}  x{s.repeats}")
            return
        from voxmeter.store import ResultStore
        from voxmeter.sweep.runner import run_sweep

        with ResultStore(store) as st:
            summary = run_sweep(
                exp.specs,
                st,
                executor=executor,
                address=address,
                force=force,
                progress=not quiet,
                cache_dir=cache_dir,
            )
        for line in summary.lines():
            typer.echo(line)
        if not summary.ok:
            raise typer.Exit(1)

    @app.command()
    def recommend(
        results: Path | None = typer.Argument(
            None, help="results store (SQLite); same as --store", show_default=False
        ),
        store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
        max_wer: float | None = typer.Option(None, help="WER limit, percent"),
        max_rtf: float | None = typer.Option(None, help="real-time factor limit"),
        max_memory_mb: float | None = typer.Option(None, help="peak RSS limit, MiB"),
        max_gflops: float | None = typer.Option(None, help="analytic GFLOPs per clip limit"),
        minimise: str | None = typer.Option(None, help="latency, energy, memory or flops"),
        sweep_file: Path | None = typer.Option(
            None, "--sweep", help="take [constraints] from this sweep file (options override)"
        ),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The cheapest stored configuration that meets the limits, with its evidence."""
        from voxmeter.analysis.budget import NoConfigurationError
        from voxmeter.analysis.budget import recommend as rec_fn

        store = results or store
        c = _constraints(sweep_file, max_wer, max_rtf, max_memory_mb, max_gflops, minimise)
        if all(
            getattr(c, k) is None for k in ("max_wer", "max_rtf", "max_memory_mb", "max_gflops")
        ):
            raise SpecError("recommend: give at least one limit, e.g. --max-wer 10")
        rec = rec_fn(_rows(store), **c.__dict__)
        if not rec.ok:
            raise NoConfigurationError(rec.reason)
        if as_json:
            typer.echo(json.dumps(rec.to_dict(), indent=2, default=str))
            return
        con = _console()
        from rich.markup import escape

        con.print(f"[bold green]recommended:[/] {escape(rec.best.label)}  ({rec.best.spec_hash})")
        con.print(rec.reason, highlight=False, markup=False)
        if rec.runner_up is not None:
            con.print(
                f"runner-up: {rec.runner_up.label}  ({rec.runner_up.spec_hash})",
                highlight=False,
                markup=False,
            )
        for n in rec.notes:
            con.print(n, highlight=False, markup=False)

    @app.command()
    def report(
        results: Path | None = typer.Argument(
            None, help="results store (SQLite); same as --store", show_default=False
        ),
        output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file"),
        store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
        max_wer: float | None = typer.Option(None, help="WER limit for the recommendation"),
        max_rtf: float | None = typer.Option(None),
        max_memory_mb: float | None = typer.Option(None),
        max_gflops: float | None = typer.Option(None),
        minimise: str | None = typer.Option(None, help="latency, energy, memory or flops"),
        sweep_file: Path | None = typer.Option(
            None, "--sweep", help="take [constraints] from this sweep file (options override)"
        ),
        title: str = typer.Option("voxmeter report"),
    ) -> None:
        """One self-contained HTML file: Pareto fronts, iso-FLOPs, stages, table, environments."""
        from voxmeter.report.html import write_report
        from voxmeter.store import open_existing

        store = results or store
        c = _constraints(sweep_file, max_wer, max_rtf, max_memory_mb, max_gflops, minimise)
        limited = any(
            getattr(c, k) is not None for k in ("max_wer", "max_rtf", "max_memory_mb", "max_gflops")
        )
        with open_existing(store) as s:
            rows = s.aggregate()
        write_report(
            rows, output, constraints=c if limited else None, title=title, source=str(store)
        )
        typer.echo(f"wrote {output}")

    @app.command()
    def fit(
        results: Path | None = typer.Argument(
            None, help="results store (SQLite); same as --store", show_default=False
        ),
        store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Fit WER ≈ a · GFLOPs^(-b) along each axis (model size, frames, stride)."""
        from voxmeter.analysis.scaling import fit_report, scaling_fits

        rows = _rows(results or store)
        if as_json:
            doc = [
                {k: v for k, v in f.__dict__.items() if k != "points"} | {"points": list(f.points)}
                for f in scaling_fits(rows)
            ]
            typer.echo(json.dumps(doc, indent=2))
            return
        for line in fit_report(rows):
            typer.echo(line)
