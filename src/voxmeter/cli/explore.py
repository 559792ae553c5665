"""The explore commands: sweep, recommend, report, fit.

`voxmeter sweep` exits 1 when it finished but some specs failed, so scripts notice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from voxmeter.cli.common import CACHE_HELP, STORE_HELP, app, console, setup_logging
from voxmeter.errors import SpecError
from voxmeter.store import DEFAULT_STORE_PATH


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


@app.command(rich_help_panel="Explore")
def sweep(
    file: Path = typer.Argument(..., help="sweep file (TOML)"),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    executor: str = typer.Option("local", help="local (one spec after another) or ray"),
    address: str | None = typer.Option(None, help="Ray cluster address (with --executor ray)"),
    force: bool = typer.Option(False, help="re-measure specs already in the store"),
    budget_gflops: float | None = typer.Option(
        None, help=r"run the iso-FLOPs grid at this many GFLOPs per clip instead of \[axes]"
    ),
    cache_dir: Path | None = typer.Option(None, help=CACHE_HELP),
    dry_run: bool = typer.Option(False, help="print the specs and stop"),
    quiet: bool = typer.Option(False, help="no progress bar or notes"),
) -> None:
    """Run every spec of a sweep file into the store; a killed sweep resumes where it stopped."""
    from voxmeter.sweep.grid import budget_specs, expand, load_sweep, sweep_budget_grid
    from voxmeter.sweep.runner import EXECUTORS

    setup_logging(quiet)
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
    from voxmeter.run.references import check_specs
    from voxmeter.store import ResultStore
    from voxmeter.sweep.runner import run_sweep

    check_specs(exp.specs)  # WER on clips without references: one line, before any spec
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


# typer renders help as rich markup: "\[" keeps a sweep file's [section] name as text
SWEEP_HELP = r"only this sweep's cells (isolated rows); its \[constraints] (options override)"


def _selection(store: Path, sweep_file: Path | None, empty_note: str = "") -> Any:
    from voxmeter.analysis.select import select
    from voxmeter.store import open_existing

    with open_existing(store) as s:
        rows = s.aggregate()
    sel = select(rows, sweep_file, str(store), empty_note)
    for n in sel.notes:
        typer.echo(n, err=True)
    return sel


@app.command(rich_help_panel="Explore")
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
    sweep_file: Path | None = typer.Option(None, "--sweep", help=SWEEP_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The cheapest stored configuration that meets the limits, per data set, with evidence."""
    from voxmeter.analysis.budget import NoConfigurationError
    from voxmeter.analysis.budget import recommend as rec_fn

    store = results or store
    c = _constraints(sweep_file, max_wer, max_rtf, max_memory_mb, max_gflops, minimise)
    if not c.limits():
        raise SpecError("recommend: give at least one limit, e.g. --max-wer 10")
    sel = _selection(store, sweep_file)
    recs = [(title, rec_fn(rows, **c.__dict__)) for title, rows in sel.groups]
    if not any(rec.ok for _, rec in recs):
        raise NoConfigurationError("; ".join(_titled(t, rec.reason, recs) for t, rec in recs))
    if as_json:
        doc = [dict(rec.to_dict(), data_set=t) for t, rec in recs]
        typer.echo(json.dumps(doc[0] if len(doc) == 1 else doc, indent=2, default=str))
        return
    for title, rec in recs:
        _print_recommendation(title if len(recs) > 1 else "", rec)


def _titled(title: str, text: str, groups: list) -> str:
    return f"{title}: {text}" if len(groups) > 1 else text


def _print_recommendation(title: str, rec: Any) -> None:
    from rich.markup import escape

    con = console()
    if title:
        con.print(f"[bold]{escape(title)}[/]")
    if not rec.ok:
        con.print(rec.reason, highlight=False, markup=False)
        return
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


@app.command(rich_help_panel="Explore")
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
    sweep_file: Path | None = typer.Option(None, "--sweep", help=SWEEP_HELP),
    title: str = typer.Option("voxmeter report"),
    sensitivity: list[Path] | None = typer.Option(
        None,
        "--sensitivity",
        metavar="MAP.json",
        help="a map written by `voxmeter sensitivity`, shown as a heat map; repeatable",
    ),
    capacity: list[Path] | None = typer.Option(
        None,
        "--capacity",
        metavar="FILE.json",
        help="capacity curves (`voxmeter load --find-capacity --json`, bench_stream.py) "
        "for the live-streaming section; repeatable",
    ),
) -> None:
    """One self-contained HTML file: Pareto fronts, iso-FLOPs, stages, table, environments,
    live streams (with any --capacity curves) and a heat map per --sensitivity map; one file
    per data set when the rows come from several."""
    from voxmeter.report.html import read_sensitivity_map, write_report
    from voxmeter.report.stream_figures import read_capacity

    store = results or store
    # every file is checked first: a bad one is one line, before the store is read
    maps = [(str(p), read_sensitivity_map(p)) for p in sensitivity or []]
    curves = [(str(p), read_capacity(p)) for p in capacity or []]
    c = _constraints(sweep_file, max_wer, max_rtf, max_memory_mb, max_gflops, minimise)
    limited = bool(c.limits())
    _writable(output, "report")
    sel = _selection(store, sweep_file, "; nothing written")
    for i, (group_title, rows) in enumerate(sel.groups):
        out = output if len(sel.groups) == 1 else _numbered(output, i + 1)
        heading = title if len(sel.groups) == 1 else f"{title}: {group_title}"
        write_report(
            rows,
            out,
            constraints=c if limited else None,
            title=heading,
            source=str(store),
            sensitivity=maps,
            capacity=curves,
        )
        typer.echo(f"wrote {out}" + (f" ({group_title})" if len(sel.groups) > 1 else ""))


def _numbered(path: Path, i: int) -> Path:
    return path.with_name(f"{path.stem}-{i}{path.suffix}")


def _writable(path: Path, what: str) -> None:
    """Refuse an output that cannot be written, in one line, before the store is read.

    os.access says yes to root almost everywhere (/proc, /sys, read-only mounts), so the
    report's own temporary file is created and removed once as a probe.
    """
    from voxmeter.paths import writable_output

    p = writable_output(path, what)
    probe = p.with_name(p.name + ".tmp")
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise SpecError(f"{what} {p}: cannot write ({e.strerror or type(e).__name__})") from None


@app.command(rich_help_panel="Explore")
def fit(
    results: Path | None = typer.Argument(
        None, help="results store (SQLite); same as --store", show_default=False
    ),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    sweep_file: Path | None = typer.Option(None, "--sweep", help=SWEEP_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fit WER ≈ a · GFLOPs^(-b) along each axis (model size, frames, stride), per data set."""
    from voxmeter.analysis.scaling import fit_report, scaling_fits

    sel = _selection(results or store, sweep_file)
    if as_json:
        doc = [
            {k: v for k, v in f.__dict__.items() if k != "points"}
            | {"points": list(f.points), "data_set": t}
            for t, rows in sel.groups
            for f in scaling_fits(rows)
        ]
        typer.echo(json.dumps(doc, indent=2))
        return
    for t, rows in sel.groups:
        if len(sel.groups) > 1:
            typer.echo(t)
        for line in fit_report(rows):
            typer.echo(line)
