"""The data commands: `voxmeter data build real` extracts the recorded speech of Debian's voiced
games into real-train and real-test-unscreened, screens real-test out of the latter with the
base model, and joins real-longform from the kept lines (see docs/real-speech.md); `voxmeter
data labelled` writes an emotion corpus's folder as labelled manifests, split by speaker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxmeter.cli.common import app
from voxmeter.errors import SpecError

data_app = typer.Typer(no_args_is_help=True, help="Build offline data sets.")
app.add_typer(data_app, name="data", rich_help_panel="Data")

WHATS = ("real",)
# what each --set needs, in build order: extracted sets, then "screen", then "longform"
STAGES = {
    "real-train": ("real-train",),
    "real-test-unscreened": ("real-test-unscreened",),
    "real-test": ("real-test-unscreened", "screen"),
    "real-longform": ("real-test-unscreened", "screen", "longform"),
}


@data_app.command("build")
def data_build(
    what: Annotated[str, typer.Argument(help="which data to build: real")],
    cache_dir: Annotated[
        Path | None, typer.Option(help="cache dir (env VOXMETER_CACHE); the sets go to <it>/real")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="at most N clips per game (0 = all)")] = 0,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="real-train, real-test or real-longform (default all)"),
    ] = None,
    screen_max_cer: Annotated[
        float,
        typer.Option(min=0.0, help="real-test keeps clips whose subtitle-vs-base CER is <= this"),
    ] = 0.5,
    install: Annotated[
        bool, typer.Option("--install", help="as root with apt: install missing game packages")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Extract the games' speech as 16 kHz FLAC with JSONL manifests, screen real-test, join
    real-longform; a killed build resumes."""
    from voxmeter.data.games.build import real_dir
    from voxmeter.data.games.sources import SETS, games_root, require
    from voxmeter.paths import default_cache_dir

    if what not in WHATS:
        raise SpecError(f"data build: unknown data {what!r} (expected one of: {', '.join(WHATS)})")
    for name in sets or ():
        if name not in STAGES:
            raise SpecError(f"--set: unknown set {name!r} (expected one of: {', '.join(STAGES)})")
    wanted = sets or ["real-train", "real-longform"]
    stages = list(dict.fromkeys(s for name in wanted for s in STAGES[name]))
    extract = [s for s in stages if s in SETS]
    root = games_root()
    require(list(dict.fromkeys(g for n in extract for g in SETS[n])), root, install)
    cache = default_cache_dir(cache_dir)  # a one-line error before any work if not writable
    out = real_dir(cache_dir)
    for name in extract:
        _build_one(name, root, out, limit, progress)
    if "screen" in stages:
        _screen(out, cache, screen_max_cer, progress)
    if "longform" in stages:
        _longform(out, progress)


def _bar(progress: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )


def _build_one(name: str, root: Path, out: Path, limit: int, progress: bool) -> None:
    from voxmeter.data.games.build import build_set, set_entries

    total = len(set_entries(name, root, limit)[0])
    bar = _bar(progress)
    with bar:
        task = bar.add_task(name, total=total)
        summary = build_set(name, root, out, limit, lambda n: bar.advance(task, n))
    games = ", ".join(
        f"{g} {int(c)} clips {s / 60:.1f} min" for g, (c, s) in summary.by_game.items()
    )
    no_text = f"; {summary.skipped_no_text} lines without subtitles left out" * (
        summary.skipped_no_text > 0
    )
    bar.console.print(
        f"{name}: {summary.clips} clips ({summary.reused} already built), "
        f"{summary.seconds / 60:.1f} min, {len(summary.speakers)} speaker ids ({games})"
        f"{no_text} -> {out / (name + '.jsonl')}",
        soft_wrap=True,
    )


def _screen(out: Path, cache: Path, max_cer: float, progress: bool) -> None:
    """real-test-unscreened -> real-test: transcribe with base (cached), keep by CER."""
    from voxmeter.run.screen import REPORT, UNSCREENED, ScreenRule, screen_set

    rule = ScreenRule(max_cer=max_cer)
    total = sum(1 for _ in (out / f"{UNSCREENED}.jsonl").open(encoding="utf-8"))
    bar = _bar(progress)
    with bar:
        task = bar.add_task(f"real-test: screen by {rule.model}", total=total)
        screened = screen_set(out, cache, rule, lambda n: bar.advance(task, n))
    r = screened.report
    reasons = ", ".join(f"{k} {v}" for k, v in r["dropped_by_reason"].items()) or "none"
    bar.console.print(
        f"real-test: kept {r['n_kept']} of {r['n_clips']} clips ({r['minutes_kept']} of "
        f"{r['minutes_all']} min) with CER <= {max_cer:g} against {r['model']}; dropped "
        f"{r['n_dropped']} ({reasons}); the screen model's own WER {r['screen_model_wer_all']:.2f}"
        f" on all, {r['screen_model_wer_kept']:.2f} on kept (lower by construction) -> "
        f"{out / 'real-test.jsonl'}, report {out / REPORT}",
        soft_wrap=True,
    )


def _longform(out: Path, progress: bool) -> None:
    """real-test (kept lines) -> real-longform recordings of a few minutes each."""
    from voxmeter.data.games.longform import NAME_OUT, build_longform, plan
    from voxmeter.run.screen import SCREENED, read_manifest_records

    records = read_manifest_records(out / f"{SCREENED}.jsonl")
    bar = _bar(progress)
    with bar:
        task = bar.add_task(NAME_OUT, total=len(plan(records)))
        written = build_longform(out, records, lambda n: bar.advance(task, n))
    total = sum(r["duration_s"] for r in written)
    speech = sum(r["speech_s"] for r in written)
    bar.console.print(
        f"{NAME_OUT}: {len(written)} recordings, {total / 60:.1f} min, of which "
        f"{speech / 60:.1f} min unique speech (every kept line once) -> {out / NAME_OUT}.jsonl",
        soft_wrap=True,
    )


@data_app.command("labelled")
def data_labelled(
    corpus: Annotated[str, typer.Argument(help="crema-d, ravdess or emodb")],
    root: Annotated[Path, typer.Argument(help="the corpus's folder (its .wav files, any depth)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="folder for the JSONL manifests")],
    folds: Annotated[
        int, typer.Option(min=0, help="k folds by speaker (0: one train/test split)")
    ] = 0,
    test_share: Annotated[
        float, typer.Option(help="share of the speakers held out whole (one split)")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the speaker shuffle")] = 0,
) -> None:
    """Write CORPUS's clips (label and speaker from each file's name) as <corpus>.jsonl, and
    speaker-independent <corpus>-train/-test.jsonl (or -fold<i>-train/-test with --folds)."""
    from collections import Counter

    from voxmeter.data.emotion import labels_of, load_emotion, speaker_folds, speaker_split
    from voxmeter.data.manifest import write_manifest

    ds = load_emotion(root, corpus)
    pairs = speaker_folds(ds, folds, seed) if folds else [speaker_split(ds, test_share, seed)]
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(ds, out / f"{ds.name}.jsonl")
    for part in (p for pair in pairs for p in pair):
        write_manifest(part, out / f"{part.name}.jsonl")
    counts = Counter(labels_of(ds))
    speakers = len({c.extra["speaker"] for c in ds.clips})
    shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    typer.echo(f"{ds.name}: {len(ds.clips)} clips, {speakers} speakers ({shown}) -> {out}")
    for train, test in pairs:
        typer.echo(f"  {test.name}: {len(test.clips)} clips of speakers not in {train.name}")
