"""Manifests, LibriSpeech trees, load_dataset, iter_audio and the bundled sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxmeter.audio.io import LoadedAudio, LongAudio, load_audio
from voxmeter.data.datasets import BUNDLED, SAMPLE_DIR, iter_audio, load_dataset
from voxmeter.data.librispeech import load_librispeech
from voxmeter.data.manifest import Clip, Dataset, load_manifest, write_manifest
from voxmeter.errors import AudioError, DataError


def write_flac(path: Path, seconds: float = 0.25, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), rate)
    return path


def write_jsonl(path: Path, records: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- manifests -------------------------------------------------------------------------------


def test_manifest_resolves_relative_paths_and_keeps_extra_fields(tmp_path):
    write_flac(tmp_path / "clips" / "a.flac")
    absolute = write_flac(tmp_path / "elsewhere" / "b.flac")
    m = write_jsonl(
        tmp_path / "set.jsonl",
        [
            {
                "id": "a",
                "audio": "clips/a.flac",
                "text": "Hello.",
                "source": "me",
                "licence": "CC0",
                "duration_s": 0.25,
                "snr_db": 10,
            },
            "",  # blank lines are allowed
            {"audio": str(absolute), "text": "World."},
        ],
    )
    ds = load_manifest(m)
    assert ds.name == "set" and ds.root == tmp_path
    a, b = ds.clips
    assert a == Clip(
        "a", tmp_path / "clips" / "a.flac", "Hello.", "me", "CC0", 0.25, {"snr_db": 10}
    )
    assert b.id == "b" and b.audio == absolute and b.duration_s is None  # id from the stem
    assert ds.listed_duration_s is None


def test_write_then_load_round_trips(tmp_path):
    clips = [
        Clip("x", write_flac(tmp_path / "x.flac"), "One.", "s", "l", 0.25, {"k": [1, 2]}),
        Clip("y", write_flac(tmp_path / "sub" / "y.flac"), "Two.", duration_s=0.25),
    ]
    write_manifest(Dataset("d", clips, tmp_path), tmp_path / "d.jsonl")
    lines = [json.loads(s) for s in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [r["audio"] for r in lines] == ["x.flac", "sub/y.flac"]  # relative to the manifest
    back = load_manifest(tmp_path / "d.jsonl")
    assert back.clips == clips
    assert back.listed_duration_s == pytest.approx(0.5)


def manifest_error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_manifest(path)
    return str(info.value)


def test_manifest_missing(tmp_path):
    msg = manifest_error(tmp_path / "absent.jsonl")
    assert "absent.jsonl" in msg and "no such file" in msg


def test_manifest_bad_json_names_file_and_line(tmp_path):
    write_flac(tmp_path / "a.flac")
    m = write_jsonl(tmp_path / "m.jsonl", [{"audio": "a.flac", "text": "ok"}, '{"audio": "a.fl'])
    msg = manifest_error(m)
    assert "m.jsonl line 2" in msg and "not valid JSON" in msg


def test_manifest_line_must_be_object(tmp_path):
    msg = manifest_error(write_jsonl(tmp_path / "m.jsonl", ['["a.flac", "text"]']))
    assert "line 1" in msg and "JSON object" in msg


def test_manifest_missing_key_names_line_and_key(tmp_path):
    write_flac(tmp_path / "a.flac")
    m = write_jsonl(tmp_path / "m.jsonl", [{"audio": "a.flac", "text": "x"}, {"audio": "a.flac"}])
    msg = manifest_error(m)
    assert "m.jsonl line 2" in msg and "'text'" in msg


def test_manifest_empty(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text("\n\n")
    assert "no clips" in manifest_error(m)


def test_manifest_duplicate_ids(tmp_path):
    write_flac(tmp_path / "a.flac")
    rec = {"id": "same", "audio": "a.flac", "text": "x"}
    msg = manifest_error(write_jsonl(tmp_path / "m.jsonl", [rec, rec]))
    assert "line 2" in msg and "duplicate id 'same'" in msg and "line 1" in msg


def test_manifest_missing_audio_is_a_bad_clip_not_an_error(tmp_path):
    recs = []
    for i in range(10):
        if i >= 3:
            write_flac(tmp_path / f"c{i}.flac")
        recs.append({"id": f"c{i}", "audio": f"c{i}.flac", "text": "x"})
    ds = load_manifest(write_jsonl(tmp_path / "m.jsonl", recs))
    assert len(ds.clips) == 10  # the set loads; each missing file is reported per clip
    out = {c.id: a for c, a in iter_audio(ds)}
    bad = {k: str(v) for k, v in out.items() if isinstance(v, AudioError)}
    assert sorted(bad) == ["c0", "c1", "c2"]
    assert bad["c0"] == f"{tmp_path / 'c0.flac'}: no such audio file"
    assert sum(isinstance(a, LoadedAudio) for a in out.values()) == 7


def test_manifest_copied_out_of_its_folder_names_the_path_it_tried(tmp_path, monkeypatch):
    """A new user copied a manifest away from its clips and got "no such audio file" with
    no word of which path was tried or against what a relative path was resolved."""
    write_flac(tmp_path / "data" / "clips" / "a.flac")
    recs = [{"audio": "clips/a.flac", "text": "x"}, {"audio": "clips/b.flac", "text": "y"}]
    write_jsonl(tmp_path / "data" / "set.jsonl", recs)
    assert len(load_manifest(tmp_path / "data" / "set.jsonl").clips) == 2  # beside its clips
    (tmp_path / "copy").mkdir()
    write_jsonl(tmp_path / "copy" / "set.jsonl", recs)
    monkeypatch.chdir(tmp_path / "copy")  # named relatively, as a user types it
    with pytest.raises(DataError) as e:
        load_dataset("set.jsonl")
    msg = str(e.value)
    assert "none of its 2 audio file(s) exists" in msg
    assert f"resolve against the manifest's folder {tmp_path / 'copy'} " in msg
    assert f"line 1: 'clips/a.flac' -> {tmp_path / 'copy' / 'clips' / 'a.flac'}" in msg
    assert "\n" not in msg


def test_missing_clip_of_a_relatively_named_manifest_names_its_absolute_path(tmp_path, monkeypatch):
    write_flac(tmp_path / "ok.flac")
    write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "gone", "audio": "gone.flac", "text": "x"}, {"audio": "ok.flac", "text": "y"}],
    )
    monkeypatch.chdir(tmp_path)
    ds = load_manifest("m.jsonl")
    (bad,) = [str(a) for c, a in iter_audio(ds) if isinstance(a, AudioError)]
    assert bad == f"{tmp_path / 'gone.flac'}: no such audio file"  # not "gone.flac: ..."


def test_manifest_not_utf8_names_file_and_byte(tmp_path):
    m = tmp_path / "latin1.jsonl"
    m.write_bytes(b'{"audio": "a.flac", "text": "caf\xe9"}\n')  # Latin-1, not UTF-8
    msg = manifest_error(m)
    assert "latin1.jsonl" in msg and "not UTF-8" in msg and "0xe9" in msg


def test_manifest_lines_split_on_newlines_only(tmp_path):
    write_flac(tmp_path / "a.flac")
    # U+2028 is legal inside a JSON string; str.splitlines would cut the line there
    m = tmp_path / "m.jsonl"
    m.write_text(
        json.dumps({"audio": "a.flac", "text": "one\u2028two"}, ensure_ascii=False) + "\r\n"
    )
    assert load_manifest(m).clips[0].text == "one\u2028two"


@pytest.mark.parametrize(
    "line, needle",
    [
        ('{"audio": "a.flac", "text": "x", "duration_s": -1}', "'duration_s'"),
        ('{"audio": "a.flac", "text": "x", "duration_s": NaN}', "'duration_s'"),
        ('{"audio": "a.flac", "text": "x", "id": {"a": 1}}', "'id'"),
        ('{"audio": "a.flac", "text": "x", "n": ' + "9" * 5000 + "}", "not usable JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"audio": "a\\u0000.flac", "text": "x"}', "NUL character"),
    ],
)
def test_manifest_unusable_values_name_the_line(tmp_path, line, needle):
    msg = manifest_error(write_jsonl(tmp_path / "m.jsonl", [line]))
    assert "m.jsonl line 1" in msg and needle in msg


# --- LibriSpeech -------------------------------------------------------------------------------


def make_librispeech(root: Path, skip: str = "") -> Path:
    """Two speakers, one chapter each, in LibriSpeech's layout."""
    for spk, chap, utts in [("19", "198", ["0000", "0001"]), ("26", "495", ["0004"])]:
        d = root / spk / chap
        d.mkdir(parents=True)
        lines = []
        for u in utts:
            uid = f"{spk}-{chap}-{u}"
            lines.append(f"{uid} THIS IS UTTERANCE {u}")
            if uid != skip:
                write_flac(d / f"{uid}.flac")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_tree(tmp_path):
    root = make_librispeech(tmp_path / "test-clean")
    ds = load_librispeech(root)
    assert ds.name == "test-clean"
    assert [c.id for c in ds.clips] == ["19-198-0000", "19-198-0001", "26-495-0004"]
    assert ds.clips[1].text == "THIS IS UTTERANCE 0001"
    assert ds.clips[2].audio == root / "26" / "495" / "26-495-0004.flac"
    assert ds.clips[0].licence == "CC BY 4.0"


def test_librispeech_without_transcripts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no \\*.trans.txt"):
        load_librispeech(tmp_path / "empty")


def test_librispeech_missing_flac_is_a_bad_clip(tmp_path):
    root = make_librispeech(tmp_path / "ls", skip="19-198-0001")
    ds = load_librispeech(root)
    bad = [(c.id, str(a)) for c, a in iter_audio(ds) if isinstance(a, AudioError)]
    assert bad == [("19-198-0001", f"{ds.clips[1].audio}: no such audio file")]


def test_librispeech_transcript_not_utf8(tmp_path):
    root = make_librispeech(tmp_path / "ls")
    t = root / "26" / "495" / "26-495.trans.txt"
    t.write_bytes(b"26-495-0004 CAF\xc9\n")
    with pytest.raises(DataError, match="26-495.trans.txt: not UTF-8 text .*0xc9"):
        load_librispeech(root)


@pytest.mark.parametrize("line", ["1-2-0000", "1-2-\x000 A NUL IN THE ID"])
def test_librispeech_malformed_line(tmp_path, line):
    d = tmp_path / "ls" / "1" / "2"
    d.mkdir(parents=True)
    (d / "1-2.trans.txt").write_text(f"{line}\n")
    with pytest.raises(DataError, match="1-2.trans.txt line 1"):
        load_librispeech(tmp_path / "ls")


# --- load_dataset and iter_audio ---------------------------------------------------------------


def test_load_dataset_dispatches_on_path(tmp_path):
    write_flac(tmp_path / "a.flac")
    m = write_jsonl(tmp_path / "mine.jsonl", [{"audio": "a.flac", "text": "x"}])
    assert load_dataset(str(m)).name == "mine"
    root = make_librispeech(tmp_path / "LibriSpeech")
    assert len(load_dataset(str(tmp_path)).clips) == 3  # transcripts found at any depth
    assert load_dataset(str(root / "19")).clips[0].id == "19-198-0000"


def test_load_dataset_errors_name_the_input(tmp_path):
    with pytest.raises(DataError, match="'nonsense'.*not a bundled set"):
        load_dataset("nonsense")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="plain.*no LibriSpeech"):
        load_dataset(str(tmp_path / "plain"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="x.txt.*expected a .jsonl manifest"):
        load_dataset(str(tmp_path / "x.txt"))


def test_iter_audio_yields_errors_and_keeps_going(tmp_path):
    write_flac(tmp_path / "good.flac")
    (tmp_path / "bad.flac").write_bytes(b"not a flac file at all" * 10)
    write_flac(tmp_path / "long.flac", seconds=31.0, rate=8000)
    write_flac(tmp_path / "good2.flac")
    ds = load_manifest(
        write_jsonl(
            tmp_path / "m.jsonl",
            [{"audio": f"{n}.flac", "text": n} for n in ("good", "bad", "long", "good2")],
        )
    )
    out = list(iter_audio(ds))
    assert [c.id for c, _ in out] == ["good", "bad", "long", "good2"]
    kinds = [type(a) for _, a in out]
    assert kinds == [LoadedAudio, AudioError, LongAudio, LoadedAudio]
    assert "bad.flac" in str(out[1][1])


def test_iter_audio_streams_clips_over_30_s_instead_of_loading_them(tmp_path):
    write_flac(tmp_path / "short.flac", seconds=30.0, rate=8000)
    write_flac(tmp_path / "long.flac", seconds=31.0, rate=8000)
    ds = load_manifest(
        write_jsonl(
            tmp_path / "m.jsonl", [{"audio": f"{n}.flac", "text": n} for n in ("short", "long")]
        )
    )
    (_, short), (_, long) = iter_audio(ds)
    assert isinstance(short, LoadedAudio)  # up to 30 s: loaded as before
    assert isinstance(long, LongAudio)
    assert long.duration_s == pytest.approx(31.0)
    assert (long.orig_sample_rate, long.orig_channels, long.sample_rate) == (8000, 1, 16000)
    assert long.resampled and not long.mixed_down
    with long.stream() as s:
        streamed = np.concatenate(list(s.blocks(10.0)))
    assert len(streamed) == long.n_samples
    np.testing.assert_allclose(streamed, load_audio(long.path).samples, atol=1e-6)


def test_iter_audio_reports_a_bad_long_file_from_its_header(tmp_path):
    path = write_flac(tmp_path / "long.wav", seconds=40.0, rate=8000)
    path.write_bytes(path.read_bytes()[:-1000])  # the data chunk now runs past the end
    ds = load_manifest(write_jsonl(tmp_path / "m.jsonl", [{"audio": "long.wav", "text": "x"}]))
    [(_, err)] = iter_audio(ds)
    assert isinstance(err, AudioError) and "long.wav: truncated" in str(err)


# --- the bundled sets --------------------------------------------------------------------------


def test_default_set_is_five_minutes_of_clean_16k_speech(default_clips):
    ds = load_dataset("default")
    assert len(default_clips) == len(ds.clips)  # every clip loads
    total = sum(a.duration_s for _, a in default_clips)
    assert total >= 300.0
    for clip, a in default_clips:
        assert a.sample_rate == 16000 and not a.resampled and not a.mixed_down
        assert 0.5 <= a.duration_s <= 28.0
        assert a.duration_s == pytest.approx(clip.duration_s, abs=1e-3)
        assert clip.text.strip() and clip.source and clip.licence
    assert len({c.id for c in ds.clips}) == len(ds.clips)


def test_bundled_manifests_use_relative_paths_and_full_fields():
    for name in ("default.jsonl", "noisy.jsonl", "longform.jsonl"):
        for line in (SAMPLE_DIR / name).read_text().splitlines():
            rec = json.loads(line)
            assert {"id", "audio", "text", "source", "licence", "duration_s"} <= rec.keys()
            assert not Path(rec["audio"]).is_absolute()


def test_bundled_folder_lists_every_flac_once():
    listed = set()
    for name in BUNDLED:
        listed |= {c.audio.name for c in load_dataset(name).clips}
    on_disk = {p.name for p in SAMPLE_DIR.glob("*.flac")}
    assert listed == on_disk
    assert (SAMPLE_DIR / "SOURCES.md").is_file()


def snr_db(clean: np.ndarray, noisy: np.ndarray, gain: float) -> float:
    noise = noisy - gain * clean
    return 10 * np.log10(np.mean(clean**2) / np.mean((noise / gain) ** 2))


def test_noisy_set_has_three_snrs_per_clip_and_the_stated_snr():
    noisy = load_dataset("noisy")
    clean = {c.id: c for c in load_dataset("default").clips}
    by_source: dict[str, set] = {}
    for c in noisy.clips:
        assert c.extra["clean_id"] in clean
        assert c.text == clean[c.extra["clean_id"]].text
        by_source.setdefault(c.extra["clean_id"], set()).add(c.extra["snr_db"])
    assert all(s == {20, 10, 5} for s in by_source.values())
    assert sum(k.startswith("tts-") for k in by_source) >= 5
    # Measure every noisy clip against its clean source (some were scaled down not to clip).
    assert any(c.extra["gain"] < 1.0 for c in noisy.clips)
    for c in noisy.clips:
        x = load_audio(clean[c.extra["clean_id"]].audio).samples.astype(np.float64)
        y = load_audio(c.audio).samples.astype(np.float64)
        assert snr_db(x, y, c.extra["gain"]) == pytest.approx(c.extra["snr_db"], abs=0.5), c.id
