"""Emotion corpora read from the file names of small trees built here; speaker splits."""

import logging

import numpy as np
import pytest
import soundfile as sf

from voxmeter.data.emotion import labels_of, load_emotion, speaker_folds, speaker_split
from voxmeter.data.manifest import load_manifest, write_manifest
from voxmeter.errors import DataError


def _tree(root, names):
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, np.zeros(1600, dtype=np.float32), 16000)
    return root


CREMA = [
    "1001_DFA_ANG_XX.wav",
    "1001_IEO_HAP_HI.wav",
    "1002_DFA_NEU_XX.wav",
    "1003_TIE_SAD_LO.wav",
    "sub/1004_DFA_FEA_MD.wav",
]


def test_crema_d_labels_speakers_and_no_transcript(tmp_path):
    ds = load_emotion(_tree(tmp_path, CREMA), "crema-d")
    assert labels_of(ds) == ["angry", "happy", "neutral", "sad", "fear"]
    assert [c.extra["speaker"] for c in ds.clips][:3] == ["crema-d:1001"] * 2 + ["crema-d:1002"]
    assert all(not c.has_text and c.text == "" for c in ds.clips)


def test_ravdess_takes_audio_only_speech(tmp_path):
    names = [
        "Actor_01/03-01-05-01-02-01-01.wav",
        "Actor_02/03-01-02-02-01-02-02.wav",
        "Actor_02/03-02-05-01-01-01-02.wav",
        "Actor_02/01-01-05-01-01-01-02.wav",
    ]
    ds = load_emotion(_tree(tmp_path, names), "ravdess")
    assert labels_of(ds) == ["angry", "calm"]  # the song and the AV file are skipped
    assert [c.extra["speaker"] for c in ds.clips] == ["ravdess:01", "ravdess:02"]


def test_emodb_german_initials(tmp_path, caplog):
    names = ["03a01Wa.wav", "08b02Ta.wav", "16a05Lb.wav", "readme.wav"]
    with caplog.at_level(logging.WARNING, logger="voxmeter"):
        ds = load_emotion(_tree(tmp_path, names), "emodb")
    assert labels_of(ds) == ["angry", "sad", "boredom"]
    assert "1 file(s) skipped" in caplog.text and "readme.wav" in caplog.text


def test_bad_folders_are_one_line_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_emotion(tmp_path / "absent", "crema-d")
    with pytest.raises(DataError, match="no .wav file named as crema-d"):
        load_emotion(_tree(tmp_path, ["hello.wav"]), "crema-d")
    with pytest.raises(DataError, match="expected one of"):
        load_emotion(tmp_path, "iemocap")


def test_labels_survive_a_manifest_round_trip(tmp_path):
    ds = load_emotion(_tree(tmp_path / "c", CREMA), "crema-d")
    write_manifest(ds, tmp_path / "c" / "m.jsonl")
    back = load_manifest(tmp_path / "c" / "m.jsonl")
    assert labels_of(back) == labels_of(ds)
    assert [c.extra["speaker"] for c in back.clips] == [c.extra["speaker"] for c in ds.clips]
    back.clips[0].extra.pop("label")
    with pytest.raises(DataError, match="has no 'label'"):
        labels_of(back)


def _speakers(ds):
    return {c.extra["speaker"] for c in ds.clips}


def test_speaker_split_holds_out_whole_speakers(tmp_path):
    ds = load_emotion(_tree(tmp_path, CREMA), "crema-d")
    train, test = speaker_split(ds, test_share=0.25, seed=3)
    assert _speakers(train).isdisjoint(_speakers(test))
    assert len(_speakers(test)) == 1 and len(train.clips) + len(test.clips) == len(ds.clips)
    assert speaker_split(ds, 0.25, seed=3)[1].clips == test.clips  # seeded


def test_speaker_folds_test_every_speaker_once(tmp_path):
    ds = load_emotion(_tree(tmp_path, CREMA), "crema-d")
    folds = speaker_folds(ds, 2, seed=1)
    tested = [s for _, te in folds for s in sorted(_speakers(te))]
    assert sorted(tested) == sorted(_speakers(ds))
    for tr, te in folds:
        assert _speakers(tr).isdisjoint(_speakers(te))
        assert len(tr.clips) + len(te.clips) == len(ds.clips)
    with pytest.raises(DataError, match="folds need 2 to 4"):
        speaker_folds(ds, 5)


def test_the_cli_writes_speaker_split_manifests(tmp_path, cli):
    root = _tree(tmp_path / "crema", CREMA)
    got = cli("data", "labelled", "crema-d", root, "-o", tmp_path / "m", "--folds", "2")
    assert got.exit_code == 0, got.output
    assert "5 clips, 4 speakers" in got.output
    for i in range(2):
        tr = load_manifest(tmp_path / "m" / f"crema-d-fold{i}-train.jsonl")
        te = load_manifest(tmp_path / "m" / f"crema-d-fold{i}-test.jsonl")
        assert _speakers(tr).isdisjoint(_speakers(te))
    assert len(load_manifest(tmp_path / "m" / "crema-d.jsonl").clips) == 5


def test_a_missing_corpus_folder_is_one_line_and_exit_2(tmp_path, capsys):
    from voxmeter.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["data", "labelled", "crema-d", str(tmp_path / "absent"), "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "absent: no such directory" in err[0]
