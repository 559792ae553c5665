"""Training data for pruning and recovery: the spec's fields, which set "" resolves to, the
seeded subset over speakers, the refusal of any overlap with a test set, and that the data
reaches the artifact key and a result's identity."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from voxmeter.errors import DataError, SpecError
from voxmeter.spec import CompressionSettings, RunSpec


def _write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _calib_recs(n: int, **extra) -> list[dict]:
    """Manifest lines for the first n calib clips (absolute audio paths)."""
    from voxmeter.data.datasets import load_dataset

    out = []
    for c in load_dataset("calib").clips[:n]:
        out.append({"id": c.id, "audio": str(c.audio), "text": c.text, **extra})
    return out


# -- the fields ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"labeller": "small"}, "labeller"),
        ({"train_clips": -1}, "train_clips"),
        ({"train_clips": 5000}, "train_clips"),
        ({"train_clips": True}, "train_clips"),
        ({"train_data": "default"}, "train_data"),  # a test set is no training set
        ({"train_data": 3}, "train_data"),
    ],
)
def test_bad_training_fields_are_spec_errors_naming_the_field(fields, words):
    with pytest.raises(SpecError, match=words):
        CompressionSettings(prune_ffn=0.1, **fields).validate()


def test_training_fields_without_a_method_that_trains_are_refused():
    for comp in ({"decoder_layers": 2}, {"quant": "int8-dynamic"}):
        with pytest.raises(SpecError, match="train_data: only pruning"):
            CompressionSettings(train_data="calib", **comp).validate()
    CompressionSettings(decoder_layers=2, recover="lora", labeller="base").validate()


def test_tag_shows_training_fields_off_their_defaults_and_old_hashes_hold():
    spec = RunSpec().with_(prune_ffn=0.25)
    assert spec.compression.tag() == "ffn-0.25"
    d = spec.hash_dict()["compression"]
    assert not {"train_data", "labeller", "train_clips"} & set(d)  # a stored spec's hash holds
    other = spec.with_(train_data="real-train", labeller="base", train_clips=32)
    assert other.compression.tag() == "ffn-0.25 train_data=real-train labeller=base train_clips=32"
    assert other.spec_hash != spec.spec_hash
    assert RunSpec.from_dict(other.to_dict()) == other


# -- resolving and selecting ---------------------------------------------------------------------


def test_auto_is_real_train_when_built_else_calib_with_a_warning(tmp_path, monkeypatch, caplog):
    from voxmeter.compress.traindata import resolve

    monkeypatch.setenv("VOXMETER_CACHE", str(tmp_path))
    monkeypatch.setattr("voxmeter.compress.traindata._warned", [])
    with caplog.at_level(logging.WARNING, logger="voxmeter"):
        got = resolve("", train_clips=0)
        resolve("", train_clips=0)
    assert got.name == "calib" and caplog.text.count("real-train is not built") == 1
    (tmp_path / "real").mkdir()
    recs = _calib_recs(6, speaker="sky-x", game="sky")
    _write(tmp_path / "real" / "real-train.jsonl", recs)
    caplog.clear()
    got = resolve("", train_clips=4)
    assert got.name == "real-train" and got.n_listed == 6 and len(got.dataset.clips) == 4
    assert not caplog.text


def test_the_subset_is_seeded_spread_over_games_and_speakers_and_order_free():
    from voxmeter.compress.traindata import select
    from voxmeter.data.manifest import Clip, Dataset

    clips = [
        Clip(f"{g}-{s}-{i}", Path(f"/x/{g}{s}{i}.flac"), "t", extra={"game": g, "speaker": s})
        for g, speakers in (("sky", "ab"), ("queen", "cdef"))
        for s in speakers
        for i in range(10)
    ]
    ds = Dataset("t", clips, Path("/x"))
    got = select(ds, 8)
    games = [c.extra["game"] for c in got.clips]
    assert games.count("sky") == 4 and games.count("queen") == 4  # games in turn
    assert {c.extra["speaker"] for c in got.clips} == set("abcdef")  # every voice reached
    shuffled = Dataset("t", clips[::-1], Path("/x"))
    assert {c.id for c in select(shuffled, 8).clips} == {c.id for c in got.clips}
    assert [c.id for c in got.clips] == [c.id for c in select(ds, 8).clips]
    assert select(ds, 0) is ds and select(ds, 500) is ds  # 0 and more than all: every clip


def test_more_clips_than_the_teachers_cache_allows_is_refused(tmp_path, monkeypatch):
    from voxmeter.compress import traindata

    monkeypatch.setattr("voxmeter.spec.MAX_TRAIN_CLIPS", 3)
    with pytest.raises(SpecError, match="at most 3"):
        traindata.resolve("calib", train_clips=0)


# -- no test clip, no test voice -----------------------------------------------------------------


def test_a_training_manifest_holding_a_test_clip_is_refused_naming_both(tmp_path):
    from voxmeter.compress.traindata import check_disjoint
    from voxmeter.data.datasets import bundled_manifest, load_dataset

    test_clip = load_dataset("default").clips[3]
    recs = _calib_recs(2) + [{"id": "stolen", "audio": str(test_clip.audio), "text": "x"}]
    train = load_dataset(_write(tmp_path / "mine.jsonl", recs))
    with pytest.raises(DataError) as e:
        check_disjoint(train)
    msg = str(e.value)
    assert "\n" not in msg and "overlaps test set default" in msg
    assert str(tmp_path / "mine.jsonl") in msg and str(bundled_manifest("default")) in msg
    assert "1 shared audio" in msg and "'stolen'" in msg and repr(test_clip.id) in msg
    assert check_disjoint(load_dataset("calib")) >= 3  # the bundled training set is clean


def test_the_manifests_sha256_counts_as_the_audio_digest(tmp_path):
    from voxmeter.assets.digests import FileDigests
    from voxmeter.compress.traindata import check_disjoint
    from voxmeter.data.datasets import load_dataset

    test_clip = load_dataset("noisy").clips[0]
    sha = FileDigests(None).digest(Path(test_clip.audio))
    copy = tmp_path / "renamed.flac"
    shutil.copy(_calib_recs(1)[0]["audio"], copy)  # another file, whose listed sha256 lies
    train = load_dataset(_write(tmp_path / "t.jsonl", [{"audio": str(copy), "text": "", "sha256": sha}]))  # fmt: skip
    with pytest.raises(DataError, match="overlaps test set noisy"):
        check_disjoint(train)


def test_a_shared_speaker_is_refused_only_where_both_name_speakers(tmp_path):
    from voxmeter.compress.traindata import check_disjoint
    from voxmeter.data.datasets import load_dataset

    recs = _calib_recs(4)
    (tmp_path / "a").mkdir()
    train = _write(tmp_path / "a" / "train.jsonl", [dict(r, speaker=f"s{i % 2}") for i, r in enumerate(recs[:2])])  # fmt: skip
    test = _write(tmp_path / "test.jsonl", [dict(recs[2], speaker="s1"), dict(recs[3], speaker="s9")])  # fmt: skip
    with pytest.raises(DataError, match=r"1 shared speaker\(s\), e.g. speaker 's1'"):
        check_disjoint(load_dataset(train), tests=[str(test)])
    plain = _write(tmp_path / "plain.jsonl", recs[2:4])  # no speaker field: nothing to compare
    assert check_disjoint(load_dataset(train), tests=[str(plain)]) == 1


def test_compress_refuses_overlapping_train_data_in_one_line_before_any_work(tmp_path, capsys):
    from voxmeter.cli import main
    from voxmeter.data.datasets import load_dataset

    clip = load_dataset("longform").clips[0]
    bad = _write(tmp_path / "bad.jsonl", [{"id": "lf", "audio": str(clip.audio), "text": ""}])
    out = tmp_path / "m"
    with pytest.raises(SystemExit) as e:
        main(["compress", "--compress", "prune_ffn=0.1", "--train-data", str(bad), "-o", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overlaps test set longform" in err[0] and "'lf'" in err[0]
    assert not out.exists()


def test_train_data_given_twice_differently_is_one_line(tmp_path, capsys):
    from voxmeter.cli import main

    argv = ["compress", "--compress", "prune_ffn=0.1", "--compress", "train_data=calib"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--train-data", "real-train", "-o", str(tmp_path / "m")])
    assert e.value.code == 2 and "give one" in capsys.readouterr().err


# -- the data is part of what a result is --------------------------------------------------------


def test_training_data_labeller_and_clip_count_change_the_identity(tmp_path, cache_dir):
    from voxmeter.assets.digests import FileDigests
    from voxmeter.compress import train_identity
    from voxmeter.run.identify import identity_of

    few = _write(tmp_path / "few.jsonl", _calib_recs(5))
    spec = RunSpec().with_(prune_ffn=0.1, train_data="calib", train_clips=4)
    files = FileDigests(None)
    variants = [
        spec,
        spec.with_(train_data=str(few)),
        spec.with_(labeller="base"),
        spec.with_(train_clips=3),
    ]
    keys = [json.dumps(train_identity(s.compression, files), sort_keys=True) for s in variants]
    assert len(set(keys)) == 4
    ids = {identity_of(s, cache_dir).weights_digest for s in variants}
    plain = identity_of(RunSpec().with_(decoder_layers=2), cache_dir).weights_digest
    assert len(ids) == 4 and plain not in ids
    assert plain == identity_of(RunSpec(), cache_dir).weights_digest  # nothing trains: base's
    assert train_identity(RunSpec().with_(decoder_layers=2).compression, files) is None


def test_sensitivity_refuses_a_test_set_as_training_data(tmp_path, capsys):
    from voxmeter.cli import main
    from voxmeter.data.datasets import bundled_manifest

    with pytest.raises(SystemExit) as e:
        main(["sensitivity", "--train-data", str(bundled_manifest("default")), "-o", str(tmp_path / "s.json")])  # fmt: skip
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overlaps test set default" in err[0]
