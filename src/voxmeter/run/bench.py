"""`voxmeter bench`: measure one spec into the store, skipping repeats already there."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from voxmeter.result import Result
from voxmeter.spec import RunSpec

log = logging.getLogger("voxmeter")

# runner(spec, repeats, cache_dir=..., data=..., progress=...) -> one Result per repeat
Runner = Callable[..., Iterator[Result]]


def measure_spec(
    spec: RunSpec,
    store_path: Path,
    *,
    cache_dir: Path | None = None,
    force: bool = False,
    isolated: bool = False,
    show: bool = True,
    rss_limit_mb: float | None = None,
    runner: Runner | None = None,
) -> tuple[list[Result], str]:
    """Run the repeats of `spec` that the store lacks; return all its results and a note.
    `rss_limit_mb` (isolated runs only): stop the child past this resident set (OverBudget).
    `runner` measures in process, called as harness.run_spec (its default) is: a stream
    spec's caller passes stream.run.run_stream_spec (run never imports stream)."""
    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.data.datasets import load_dataset
    from voxmeter.run.identify import identity_of
    from voxmeter.run.references import check_references
    from voxmeter.store import ResultStore

    check_references(spec, load_dataset(spec.data))  # before the store, digests or model
    store = ResultStore(store_path)
    key = spec.spec_hash
    mode = "isolated" if isolated else "inprocess"
    ident = identity_of(spec, default_cache_dir(cache_dir))
    if force:
        store.delete(key, ident, mode)
    done = store.done_repeats(key, ident, mode)
    todo = [r for r in range(spec.repeats) if r not in done]
    notes = []
    if not todo:
        notes.append(
            f"spec {key} ({spec.label()}) already has {len(done)} {mode} repeat(s) of this "
            f"code, weights and data in {store_path}: skipped (use --force to measure again)"
        )
    elif done:
        notes.append(f"{len(done)} repeat(s) already in the store; measuring {len(todo)} more")
    others = [i for i in store.identities(key) if i != ident]
    if others:
        notes.append(
            f"the store also holds {len(others)} other measurement(s) of this spec by other "
            f"code, weights or data ({'; '.join(i.short() for i in others[:2])}): kept apart, "
            "never averaged with these"
        )
    for n in notes:
        log.info(n)
    try:
        if todo:
            for res in _run(spec, todo, cache_dir, isolated, show, rss_limit_mb, runner):
                store.add(res)  # each repeat lands as soon as it is finished
        results = _matching(store, spec, ident, mode)
    finally:  # a stopped or crashed child (the budget tries the next candidate) leaks nothing
        store.close()
    return results, " ".join(notes)


def _matching(store, spec: RunSpec, ident, mode: str) -> list[Result]:
    if not store.identities(spec.spec_hash):
        return []  # never measured (get() would call that an error)
    found = store.get(spec.spec_hash)
    mine = [r for r in found if r.identity == ident and r.mode == mode and r.repeat < spec.repeats]
    return sorted(mine, key=lambda r: r.repeat)


def stored_results(
    spec: RunSpec, store_path: Path, cache_dir: Path | None = None, *, mode: str = "isolated"
) -> list[Result]:
    """The results of `spec` already in the store for this code, weights and data, in `mode`;
    none when there is no store yet."""
    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.run.identify import identity_of
    from voxmeter.store import ResultStore

    if not Path(store_path).exists():
        return []
    with ResultStore(store_path) as store:
        return _matching(store, spec, identity_of(spec, default_cache_dir(cache_dir)), mode)


def _run(
    spec: RunSpec,
    todo: list[int],
    cache_dir,
    isolated: bool,
    show: bool,
    rss_limit_mb,
    runner: Runner | None,
):
    if isolated:
        from voxmeter.run.isolate import run_spec_isolated

        yield from run_spec_isolated(spec, todo, cache_dir=cache_dir, rss_limit_mb=rss_limit_mb)
        return
    from voxmeter.run.harness import prepare_data, run_spec

    measure = runner or run_spec

    data = prepare_data(spec)
    for cid, reason in data.skipped:
        log.warning("skipped clip %s: %s", cid, reason)
    if data.skipped:
        log.warning("%d clip(s) skipped as bad input: WER is partial", len(data.skipped))
    if not show:
        yield from measure(spec, todo, cache_dir=cache_dir, data=data)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    total = len(todo) * len(data.clips)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[clip]}"),
        transient=True,
    ) as bar:
        task = bar.add_task(f"loading {spec.label()}", total=total, clip="")
        state = {"repeat": 0}

        def progress(clip_id: str, i: int, n: int) -> None:
            bar.update(
                task,
                advance=1,
                description=f"{spec.label()} repeat {todo[state['repeat']] + 1}/{spec.repeats}",
                clip=clip_id,
            )

        for res in measure(spec, todo, cache_dir=cache_dir, data=data, progress=progress):
            state["repeat"] += 1
            yield res
