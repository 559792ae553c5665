"""The speech that pruning importance, sensitivity maps and recovery train on, and the check
that it shares nothing with any test set.

`resolve` turns a spec's `train_data` into a data set: "" (auto) is `real-train` when it is
built, else the bundled synthetic `calib` with a logged warning; "calib", "real-train" or a
.jsonl manifest by name. `select` takes a seeded subset of `train_clips` clips spread over
games and speakers. `check_disjoint` compares a training set with every test set that exists
here (the bundled ones; the built real ones) by audio digest and by speaker, and refuses any
overlap: no clip of a test set, and no voice of one, is ever trained or ranked on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voxmeter.errors import DataError, SpecError

log = logging.getLogger("voxmeter")
AUTO_REAL, FALLBACK = "real-train", "calib"
SUBSET_SEED = 0
SELECT_VERSION = 1  # bump when `select` picks other clips for the same inputs
_warned: list[bool] = []


@dataclass
class TrainData:
    """A resolved training set: its name (as resolved, never ""), the selected clips as a
    Dataset, the labeller, and the spec's `train_clips`."""

    name: str
    dataset: Any
    labeller: str = "teacher"
    train_clips: int = 256
    n_listed: int = 0  # clips in the whole set before the subset

    def key(self, files: Any) -> dict[str, Any]:
        """What decides the training data: the artifact key and a result's identity hold it."""
        from voxmeter.identity import data_digest

        return {
            "data": self.name,
            "digest": data_digest(self.dataset, files),
            "n_clips": len(self.dataset.clips),
            "labeller": self.labeller,
            "train_clips": self.train_clips,
            "select": [SELECT_VERSION, SUBSET_SEED],
        }


def test_set_names() -> list[str]:
    """Every named set that is a test set: the bundled ones but `calib`, and the real ones
    but `real-train` (data/datasets.py's REAL_SETS, whatever names it holds)."""
    from voxmeter.data.datasets import BUNDLED, REAL_SETS
    from voxmeter.spec import TRAIN_SETS

    return [n for n in (*BUNDLED, *REAL_SETS) if n not in TRAIN_SETS]


def real_train_built() -> bool:
    from voxmeter.data.games.build import manifest_path

    return manifest_path(AUTO_REAL).is_file()


def resolve_name(train_data: str) -> str:
    """The set `train_data` names: "" is `real-train` when built, else `calib` (warned)."""
    if train_data:
        return train_data
    if real_train_built():
        return AUTO_REAL
    if not _warned:  # once a process: a sweep resolves it for every spec
        _warned.append(True)
        log.warning(
            "training data: real-train is not built (`voxmeter data build real`); training on "
            "the bundled synthetic calib set (espeak-ng), which recovers poorly on recorded speech"
        )
    return FALLBACK


def resolve(
    train_data: str, labeller: str = "teacher", train_clips: int = 256, files: Any = None
) -> TrainData:
    """The training set a spec names, checked disjoint from every test set (the whole set, not
    only the subset), its subset selected (module doc). `files`: a FileDigests to reuse."""
    from voxmeter.data.datasets import load_dataset
    from voxmeter.spec import MAX_TRAIN_CLIPS

    name = resolve_name(train_data)
    ds = load_dataset(name)
    check_disjoint(ds, files)
    n_listed = len(ds.clips)
    picked = select(ds, train_clips)
    if len(picked.clips) > MAX_TRAIN_CLIPS:
        raise SpecError(
            f"train_clips: {train_clips or 'all'} selects {len(picked.clips)} clips of {name}; "
            f"the teacher's cached outputs allow at most {MAX_TRAIN_CLIPS}: give train_clips="
            f"{MAX_TRAIN_CLIPS} or fewer"
        )
    return TrainData(name, picked, labeller, train_clips, n_listed)


def from_settings(comp: Any, files: Any = None) -> TrainData:
    return resolve(comp.train_data, comp.labeller, comp.train_clips, files)


def _rank(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([SUBSET_SEED, *parts]).encode()).hexdigest()


def select(ds: Any, n: int) -> Any:
    """A copy of `ds` with `n` of its clips (0 or n >= all: every clip, in order): round-robin
    over games, and within a game over speakers, each in a seeded order, so the subset spreads
    over voices instead of taking the first scenes. Clips without game or speaker count as
    one group. Depends on the clip ids alone, not on their order in the manifest."""
    if not n or n >= len(ds.clips):
        return ds
    games: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for c in ds.clips:
        games[str(c.extra.get("game", ""))][str(c.extra.get("speaker", ""))].append(c)
    queues = []
    for g in sorted(games, key=lambda g: _rank("game", g)):
        speakers = games[g]
        order = sorted(speakers, key=lambda s: _rank("speaker", g, s))
        clips = {s: sorted(speakers[s], key=lambda c: _rank("clip", c.id)) for s in order}
        queues.append(_round_robin([clips[s] for s in order]))
    picked = _round_robin(queues, limit=n)
    keep = {c.id for c in picked}
    return replace(ds, clips=[c for c in ds.clips if c.id in keep])


def _round_robin(lists: list[list], limit: int | None = None) -> list:
    """One item from each list in turn until all are empty (or `limit` items are taken)."""
    out: list = []
    pos = 0
    while any(pos < len(x) for x in lists):
        for x in lists:
            if pos < len(x):
                out.append(x[pos])
                if limit is not None and len(out) >= limit:
                    return out
        pos += 1
    return out


# -- disjointness --------------------------------------------------------------------------------


def audio_digests(ds: Any, files: Any) -> dict[str, str]:
    """sha256 of each clip's audio file -> clip id: the manifest's `sha256` where it has one
    (the real sets carry it), else the file's digest (cached by path, size and mtime)."""
    out = {}
    for c in ds.clips:
        sha = c.extra.get("sha256")
        out.setdefault(str(sha) if sha else files.digest(Path(c.audio)), c.id)
    out.pop("missing", None)  # a file that is not there shares no audio
    return out


def speakers(ds: Any) -> dict[str, str] | None:
    """speaker -> one clip id; None when the manifest has no speaker field at all."""
    found = {}
    for c in ds.clips:
        s = c.extra.get("speaker")
        if s not in (None, ""):
            found.setdefault(str(s), c.id)
    return found or None


def check_disjoint(train: Any, files: Any = None, tests: list[str] | None = None) -> int:
    """DataError when the training set `train` shares an audio digest or a speaker with a test
    set (`tests`: names, default every test set here; one not built is passed over); the
    number of test sets it was checked against."""
    from voxmeter.assets.digests import FileDigests
    from voxmeter.data.datasets import load_dataset

    files = files or FileDigests(None)
    mine, my_voices = audio_digests(train, files), speakers(train)
    checked = 0
    for name in test_set_names() if tests is None else tests:
        try:
            test = load_dataset(name)
        except DataError as e:  # a real set not built here: nothing to overlap with
            log.debug("overlap check: %s passed over (%s)", name, e)
            continue
        checked += 1
        theirs = audio_digests(test, files)
        shared = [d for d in mine if d in theirs]
        if shared:
            d = shared[0]
            _refuse(train, test, name, len(shared), "audio", mine[d], theirs[d])
        voices = speakers(test)
        if my_voices and voices:
            both = sorted(set(my_voices) & set(voices))
            if both:
                s = both[0]
                _refuse(train, test, name, len(both), f"speaker {s!r}", my_voices[s], voices[s])
    return checked


def _refuse(train, test, name, n, what, mine, theirs) -> None:
    raise DataError(
        f"training data {_where(train)} overlaps test set {name} ({_where(test)}): {n} shared "
        f"{'audio file(s)' if what == 'audio' else 'speaker(s)'}, e.g. {what}: training clip "
        f"{mine!r}, test clip {theirs!r}; no test clip or voice may be trained on"
    )


def _where(ds: Any) -> str:
    """A data set's manifest (its folder where it has none), for messages."""
    manifest = Path(ds.root) / f"{ds.name}.jsonl"
    if not manifest.is_file():
        from voxmeter.data.datasets import BUNDLED, bundled_manifest

        manifest = bundled_manifest(ds.name) if ds.name in BUNDLED else Path(ds.root)
    return str(manifest)
