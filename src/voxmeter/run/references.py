"""The rule for WER on clips that have no reference text.

A manifest marks a clip without a reference with `"has_text": false` (`real-train`: the teacher
labels it, nobody transcribed it). Scoring such a clip would count every word heard as an
insertion against an empty reference, so:

- a run that scores WER (any run without `--cost-only`) on a set where *any* clip lacks a
  reference is refused with one line, before any model work: the set, how many clips of how
  many lack one, and what to do instead;
- a `--cost-only` run on such a set measures latency, memory, FLOPs and energy on every clip
  and reports no WER (the result's `accuracy_note` says why).

A set where only some clips lack a reference is refused too, not scored on the referenced
clips alone: that WER would be stored under the whole set's data digest beside the timing of
every clip, and read later as the set's. Write a manifest of the referenced clips instead.
The whole manifest is checked, whatever `max_clips` keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from voxmeter.errors import DataError


def unreferenced(dataset: Any) -> list[str]:
    """Ids of the clips of `dataset` (data.manifest.Dataset) that have no reference text."""
    return [c.id for c in dataset.clips if not getattr(c, "has_text", True)]


def check_references(spec: Any, dataset: Any) -> int:
    """How many clips of `dataset` lack a reference; a DataError when `spec` would score WER
    on them (module docstring)."""
    missing = unreferenced(dataset)
    if not missing or spec.cost_only:
        return len(missing)
    n = len(dataset.clips)
    what = (
        f"none of its {n} clips has a reference text"
        if len(missing) == n
        else f"{len(missing)} of its {n} clips have no reference text (first: {missing[0]}); "
        "WER is never scored on part of a set: write a manifest of the referenced clips"
    )
    raise DataError(
        f"data {spec.data!r}: {what}, so no WER can be scored; measure cost only (latency, "
        "memory, FLOPs, no WER) with --cost-only, or choose a set with references "
        "(e.g. real-test or default)"
    )


def check_specs(specs: Iterable[Any]) -> None:
    """check_references for every spec of a sweep, each data set loaded once, so a sweep that
    would score WER on clips without references stops before its first spec runs."""
    from voxmeter.data.datasets import load_dataset

    loaded: dict[str, Any] = {}
    for spec in specs:
        if spec.data not in loaded:
            try:
                loaded[spec.data] = load_dataset(spec.data)
            except DataError:  # the sweep's planner fails that spec alone, and goes on
                loaded[spec.data] = None
        if loaded[spec.data] is not None:
            check_references(spec, loaded[spec.data])
