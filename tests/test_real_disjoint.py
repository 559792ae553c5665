"""The real sets: the training set shares no audio and no speaker with any test set.

Where `voxmeter data build real` has run, the sets of the cache are checked whole. Elsewhere,
where the Debian games are installed (CI installs them), a small build of each set the builder
extracts without a model (real-train and real-test-unscreened, whose lines every other real
test set is cut from) is checked instead, so the readers and the check run on the real games;
with no games either, the test skips and says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

LIMIT = 12  # clips per game of a small build


def _real_test_sets() -> list[str]:
    from voxmeter.compress.traindata import test_set_names
    from voxmeter.data.datasets import REAL_SETS

    return [n for n in test_set_names() if n in REAL_SETS]


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path | None:
    """A folder holding small builds of real-train and real-test-unscreened, or None where the
    games are not installed."""
    from voxmeter.data.games.build import build_set
    from voxmeter.data.games.sources import GAMES, games_root, missing_packages

    root = games_root()
    if missing_packages(list(GAMES), root):
        return None
    out = tmp_path_factory.mktemp("real")
    for name in ("real-train", "real-test-unscreened"):
        build_set(name, root, out, limit=LIMIT)
    return out


def _load(name: str, small: Path | None):
    from voxmeter.data.datasets import load_dataset
    from voxmeter.data.manifest import load_manifest
    from voxmeter.errors import DataError

    try:
        return load_dataset(name), True
    except DataError as e:
        if small is None:
            pytest.skip(f"{name} is not built here and the games are not installed ({e})")
        path = small / f"{name}.jsonl"
        if not path.is_file():
            pytest.skip(f"{name} is not built here; a small build makes only the unscreened sets")
        ds = load_manifest(path)
        ds.name = name
        return ds, False


@pytest.mark.parametrize("test_name", _real_test_sets())
def test_real_train_shares_no_audio_digest_and_no_speaker_with_a_real_test_set(
    test_name, small_build
):
    from voxmeter.assets.digests import FileDigests
    from voxmeter.compress.traindata import audio_digests, check_disjoint, speakers

    train, whole = _load("real-train", small_build)
    test, _ = _load(test_name, small_build)
    files = FileDigests(None)
    assert all(c.extra.get("sha256") for c in train.clips)  # the builder lists every digest
    assert not set(audio_digests(train, files)) & set(audio_digests(test, files))
    mine, theirs = speakers(train), speakers(test)
    assert mine and theirs and not set(mine) & set(theirs)
    if whole:  # the check build runs, against the set of this name in the cache
        assert check_disjoint(train, files, tests=[test_name]) == 1
