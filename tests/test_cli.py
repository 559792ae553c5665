"""The command line as a user meets it: one-line errors with exit 2, results in the store."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf


def voxmeter(*args, cwd=None, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "voxmeter.cli", *args],
        capture_output=True,
        check=False,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_model(tmp_path):
    p = voxmeter("bench", "--model", "huge", "--store", str(tmp_path / "s.sqlite"))
    assert_one_line_error(p, "huge")


def test_bad_axis_value(tmp_path):
    p = voxmeter("bench", "--frames", "3001", "--store", str(tmp_path / "s.sqlite"))
    assert_one_line_error(p, "frames")


def test_missing_manifest(tmp_path):
    p = voxmeter("bench", "--data", str(tmp_path / "nope.jsonl"), "--store", str(tmp_path / "s"))
    assert_one_line_error(p, "nope.jsonl")


def test_corrupt_model_dir(tmp_path, tiny_source):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "model.bin").write_bytes(b"\x06\x00\x00\x00" + b"\x05\x00abc")
    p = voxmeter("bench", "--model", str(d), "--store", str(tmp_path / "s.sqlite"))
    assert_one_line_error(p, "model.bin")


def _manifest(tmp_path, default_clips, bad: bool):
    """Two real clips (one resampled to 44.1 kHz stereo) plus, optionally, broken files."""
    import soxr

    lines = []
    for i, (clip, audio) in enumerate(default_clips[:2]):
        path = tmp_path / f"c{i}.wav"
        if i == 1:
            x = soxr.resample(audio.samples, 16000, 44100)
            sf.write(path, np.stack([x, x], axis=1), 44100)
        else:
            sf.write(path, audio.samples, 16000)
        lines.append({"audio": path.name, "text": clip.text, "id": f"c{i}"})
    if bad:
        (tmp_path / "empty.wav").write_bytes(b"")
        (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
        nan = tmp_path / "nan.wav"
        sf.write(nan, np.full(8000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
        for name in ("empty.wav", "junk.wav", "nan.wav"):
            lines.append({"audio": name, "text": "x", "id": name})
    m = tmp_path / "set.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return m


@pytest.mark.slow
def test_bench_json_store_and_skip(tmp_path, default_clips, cache_dir):
    m = _manifest(tmp_path, default_clips, bad=True)
    store = tmp_path / "r.sqlite"
    env = {"VOXMETER_CACHE": str(cache_dir)}
    args = ["bench", "--data", str(m), "--repeats", "2", "--store", str(store), "--json"]
    p = voxmeter(*args, env_extra=env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    reps = doc["repeats"]
    assert len(reps) == 2
    met = reps[0]["metrics"]
    assert met["n_clips"] == 2 and met["n_skipped"] == 3
    assert met["wer"] is not None and met["wer"] < 50
    assert met["gflops_counted_enc"] == pytest.approx(met["gflops_analytic_enc"], rel=0.01)
    assert met["rtfx"] > 0 and met["peak_rss_mb"] > 100 and met["weight_bytes"] > 1e8
    assert met["energy_method"]
    # the resampled clip says so
    assert any("resampled" in " ".join(c.get("notes", [])) for c in reps[0]["clips"])
    # a second run skips the finished spec
    p2 = voxmeter(*args, env_extra=env)
    assert p2.returncode == 0 and "already" in json.loads(p2.stdout)["note"]
    assert len(json.loads(p2.stdout)["repeats"]) == 2
