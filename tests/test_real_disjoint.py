"""The real sets as built here: the training set shares no audio and no speaker with any test
set (skipped, with why, where `voxmeter data build real` has not run)."""

from __future__ import annotations

import pytest


def _built(name: str):
    from voxmeter.data.datasets import load_dataset
    from voxmeter.errors import DataError

    try:
        return load_dataset(name)
    except DataError as e:
        pytest.skip(f"{name} is not built here ({e})")


def _real_test_sets() -> list[str]:
    from voxmeter.compress.traindata import test_set_names
    from voxmeter.data.datasets import REAL_SETS

    return [n for n in test_set_names() if n in REAL_SETS]


@pytest.mark.parametrize("test_name", _real_test_sets())
def test_real_train_shares_no_audio_digest_and_no_speaker_with_a_real_test_set(test_name):
    from voxmeter.assets.digests import FileDigests
    from voxmeter.compress.traindata import audio_digests, check_disjoint, speakers

    train, test = _built("real-train"), _built(test_name)
    files = FileDigests(None)
    assert all(c.extra.get("sha256") for c in train.clips)  # the builder lists every digest
    assert not set(audio_digests(train, files)) & set(audio_digests(test, files))
    mine, theirs = speakers(train), speakers(test)
    assert mine and theirs and not set(mine) & set(theirs)
    assert check_disjoint(train, files, tests=[test_name]) == 1  # the same check, run by build
