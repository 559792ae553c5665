"""The data commands: `voxmeter data build real` extracts the recorded speech of Debian's voiced
games into the real-train and real-test sets (see docs/real-speech.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxmeter.cli.common import app
from voxmeter.errors import SpecError

data_app = typer.Typer(no_args_is_help=True, help="Build offline data sets.")
app.add_typer(data_app, name="data", rich_help_panel="Data")

WHATS = ("real",)


@data_app.command("build")
def data_build(
    what: Annotated[str, typer.Argument(help="which data to build: real")],
    cache_dir: Annotated[
        Path | None, typer.Option(help="cache dir (env VOXMETER_CACHE); the sets go to <it>/real")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="at most N clips per game (0 = all)")] = 0,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="real-train or real-test (default both)")
    ] = None,
    install: Annotated[
        bool, typer.Option("--install", help="as root with apt: install missing game packages")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Extract the games' speech as 16 kHz FLAC with JSONL manifests, resuming a killed build."""
    from voxmeter.data.games.build import real_dir
    from voxmeter.data.games.sources import SETS, games_root, require
    from voxmeter.paths import default_cache_dir

    if what not in WHATS:
        raise SpecError(f"data build: unknown data {what!r} (expected one of: {', '.join(WHATS)})")
    names = list(dict.fromkeys(sets or SETS))
    for name in names:
        if name not in SETS:
            raise SpecError(f"--set: unknown set {name!r} (expected {' or '.join(SETS)})")
    root = games_root()
    require(list(dict.fromkeys(g for n in names for g in SETS[n])), root, install)
    default_cache_dir(cache_dir)  # a one-line error before any work if it cannot be written
    out = real_dir(cache_dir)
    for name in names:
        _build_one(name, root, out, limit, progress)


def _build_one(name: str, root: Path, out: Path, limit: int, progress: bool) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from voxmeter.data.games.build import build_set, set_entries

    total = len(set_entries(name, root, limit)[0])
    err = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        disable=not progress,
    )
    with bar:
        task = bar.add_task(name, total=total)
        summary = build_set(name, root, out, limit, lambda n: bar.advance(task, n))
    games = ", ".join(
        f"{g} {int(c)} clips {s / 60:.1f} min" for g, (c, s) in summary.by_game.items()
    )
    no_text = f"; {summary.skipped_no_text} lines without subtitles left out" * (
        summary.skipped_no_text > 0
    )
    err.print(
        f"{name}: {summary.clips} clips ({summary.reused} already built), "
        f"{summary.seconds / 60:.1f} min, {len(summary.speakers)} speaker ids ({games})"
        f"{no_text} -> {out / (name + '.jsonl')}",
        soft_wrap=True,
    )
