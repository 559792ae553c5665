"""Every user error is one stderr line naming the input, exit status 2, never a traceback.

One command-line check per kind of bad input, through `python -m voxmeter.cli` as a user runs
it. Each fails before any model runs; the one that must run (a missing clip is skipped, not
fatal) uses one clip and one repeat. writable_output, which the -o options call, is checked
directly.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_cli import assert_one_line_error, voxmeter

from voxmeter.errors import SpecError
from voxmeter.paths import default_cache_dir, writable_output


def bench(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    return voxmeter("bench", "--store", str(tmp_path / "s.sqlite"), *args, env_extra=env)


def write_wav(path: Path, seconds: float = 1.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    return path


def write_manifest(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def regular_file(tmp_path: Path) -> Path:
    f = tmp_path / "plain-file"
    f.write_text("not a folder")
    return f


# -- 1. seed ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seed_out_of_numpy_range(tmp_path, seed):
    assert_one_line_error(bench(tmp_path, "--seed", seed), "seed", seed)


# -- 2. cache dir -----------------------------------------------------------------------------
def test_cache_dir_under_a_file(tmp_path, regular_file):
    bad = regular_file / "cache"
    p = bench(tmp_path, "--cache-dir", str(bad))
    assert_one_line_error(p, str(bad), "--cache-dir", f"{regular_file} is a file")


def test_voxmeter_cache_env_under_a_file(tmp_path, regular_file):
    bad = regular_file / "cache"
    p = bench(tmp_path, env={"VOXMETER_CACHE": str(bad)})
    assert_one_line_error(p, str(bad), "VOXMETER_CACHE")


def test_cache_dir_that_is_a_file(tmp_path, regular_file):
    p = bench(tmp_path, "--cache-dir", str(regular_file))
    assert_one_line_error(p, str(regular_file), "not a folder")


def test_peak_cache_under_a_file(regular_file):
    p = voxmeter("peak", env_extra={"VOXMETER_CACHE": str(regular_file / "c")})
    assert_one_line_error(p, str(regular_file / "c"))


def test_cache_dir_is_created_and_resolved_in_one_place(tmp_path, monkeypatch):
    from voxmeter.assets import bundled
    from voxmeter.measure.peak import cache_path

    assert bundled.default_cache_dir is default_cache_dir  # the old import path still works
    target = tmp_path / "a" / "b"
    monkeypatch.setenv("VOXMETER_CACHE", str(target))
    assert default_cache_dir() == target and target.is_dir()
    assert cache_path() == target / "matmul_peak.json"
    assert default_cache_dir(tmp_path / "c") == tmp_path / "c"  # --cache-dir wins
    monkeypatch.delenv("VOXMETER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "voxmeter"


def _read_only_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write: by mode when not root, else a read-only mount."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d
    for d in (Path("/proc/sys"), Path("/sys/fs")):
        if d.is_dir() and not os.access(d, os.W_OK):
            return d
    pytest.skip("running as root without a read-only folder to try")


def test_read_only_cache_dir(tmp_path):
    ro = _read_only_dir(tmp_path)
    with pytest.raises(SpecError, match=f"cache dir {ro}.*(not writable|cannot be created)"):
        default_cache_dir(ro)


# -- 3. writable_output (called by `results export -o` and `report -o`) ----------------------
def test_writable_output_accepts_new_and_existing_files(tmp_path):
    assert writable_output(tmp_path / "new.html", "report") == tmp_path / "new.html"
    (tmp_path / "old.csv").write_text("x")
    assert writable_output(tmp_path / "old.csv", "--output") == tmp_path / "old.csv"


def test_writable_output_refuses_a_folder(tmp_path):
    with pytest.raises(SpecError, match=f"report {tmp_path}: is a folder"):
        writable_output(tmp_path, "report")


def test_writable_output_refuses_a_missing_folder(tmp_path):
    out = tmp_path / "nope" / "r.html"
    with pytest.raises(SpecError, match=f"report {out}: folder {out.parent} does not exist"):
        writable_output(out, "report")


def test_writable_output_refuses_a_file_as_folder(regular_file):
    out = regular_file / "r.html"
    with pytest.raises(SpecError, match=f"{regular_file} is not a folder"):
        writable_output(out, "--output")


def test_writable_output_refuses_a_read_only_folder(tmp_path):
    ro = _read_only_dir(tmp_path)
    with pytest.raises(SpecError, match=f"folder {ro} is not writable"):
        writable_output(ro / "r.html", "report")


# -- 4. a model dir holding no model ----------------------------------------------------------
def test_model_dir_without_a_model(tmp_path):
    d = tmp_path / "not-a-model"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    assert_one_line_error(bench(tmp_path, "--model", str(d)), str(d), "no model.bin")


# -- 5. corrupt model files, unreadable clips, non-UTF-8 transcripts --------------------------
def test_model_bin_with_a_huge_byte_count(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    name = b"w\0"
    blob = struct.pack("<I", 6) + struct.pack("<H", 5) + b"spec\0" + struct.pack("<II", 1, 1)
    blob += struct.pack("<H", len(name)) + name + struct.pack("<BIBI", 1, 4, 0, 0xFFFFFFFF)
    (d / "model.bin").write_bytes(blob + b"\0" * 16)
    p = bench(tmp_path, "--model", str(d))
    assert_one_line_error(p, str(d / "model.bin"), "4294967295")


@pytest.mark.parametrize("config", ["[1, 2, 3]", "7"])
def test_config_json_not_an_object(tmp_path, config):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"\0" * 8)
    (d / "config.json").write_text(config)
    p = bench(tmp_path, "--model", str(d))
    assert_one_line_error(p, str(d / "config.json"), "expected a JSON object")


def test_unreadable_clips_are_bad_clips(tmp_path):
    (tmp_path / "folder.wav").mkdir()
    long_name = "x" * 300 + ".wav"
    m = write_manifest(
        tmp_path / "set.jsonl",
        [{"audio": "folder.wav", "text": "a"}, {"audio": long_name, "text": "b", "id": "long"}],
    )
    # every clip is bad, so the set has none left: one line that names the first bad file
    p = bench(tmp_path, "--data", str(m), "--max-clips", "1", "--repeats", "1")
    assert_one_line_error(p, "no usable clips", "folder.wav: not a file")


def test_manifest_not_utf8(tmp_path):
    m = tmp_path / "latin1.jsonl"
    m.write_bytes(b'{"audio": "a.wav", "text": "na\xefve"}\n')
    assert_one_line_error(bench(tmp_path, "--data", str(m)), str(m), "not UTF-8")


def test_librispeech_transcript_not_utf8(tmp_path):
    d = tmp_path / "ls" / "1" / "2"
    d.mkdir(parents=True)
    t = d / "1-2.trans.txt"
    t.write_bytes(b"1-2-0000 CAF\xc9\n")
    p = bench(tmp_path, "--data", str(tmp_path / "ls"))
    assert_one_line_error(p, str(t), "not UTF-8")


# -- 6. peak --device -------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["X", "cuda:x", "gpu"])
def test_peak_unknown_device(device):
    assert_one_line_error(voxmeter("peak", "--device", device), repr(device), "cuda:N")


# -- 7. a missing clip is skipped, unless no clip is left ------------------------------------
def test_all_clips_missing_is_one_error(tmp_path):
    m = write_manifest(tmp_path / "set.jsonl", [{"audio": "gone.wav", "text": "x"}])
    p = bench(tmp_path, "--data", str(m), "--max-clips", "1", "--repeats", "1")
    assert_one_line_error(
        p, str(m), "none of its 1 audio file(s) exists", str(tmp_path), "'gone.wav' -> "
    )
    assert f"{tmp_path / 'gone.wav'}: no such audio file" in p.stderr


def test_one_missing_clip_is_skipped_and_counted(tmp_path, cache_dir):
    write_wav(tmp_path / "ok.wav")
    m = write_manifest(
        tmp_path / "set.jsonl",
        [
            {"id": "gone", "audio": "gone.wav", "text": "x"},
            {"id": "ok", "audio": "ok.wav", "text": "a"},
        ],
    )
    args = ["--data", str(m), "--max-clips", "1", "--repeats", "1", "--warmup", "0", "--json"]
    args += ["--engine", "ct2"]  # the skip is the harness's: no torch import, no FLOP count
    p = bench(tmp_path, *args, env={"VOXMETER_CACHE": str(cache_dir)})
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    doc = json.loads(p.stdout)
    met = doc["repeats"][0]["metrics"]
    assert met["n_clips"] == 1 and met["n_skipped"] == 1
    assert doc["skipped_clips"][0]["id"] == "gone"
    assert "gone.wav: no such audio file" in doc["skipped_clips"][0]["reason"]


# -- click usage errors -----------------------------------------------------------------------
def test_unknown_option_is_one_line(tmp_path):
    assert_one_line_error(bench(tmp_path, "--nope"), "--nope")


def test_out_of_range_option_is_one_line(tmp_path):
    p = bench(tmp_path, "--repeats", "0")
    assert_one_line_error(p, "--repeats", "greater than or equal to 1")
