"""The sets made from the extracted Drascula lines: the real-test screen (run/screen.py) and
real-longform (data/games/longform.py), on tiny synthetic clips and records.

The screen's rule and cache are tested with a counting transcriber: the model's hypotheses are
data here, the rule and the bookkeeping are what is checked. The one test that runs the base
model on real Drascula lines is marked slow and needs the game installed.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxmeter.data.games import longform
from voxmeter.errors import DataError
from voxmeter.run import screen

RATE = 16000


def write_clip(root: Path, clip_id: str, seconds: float, value: int) -> dict:
    """A FLAC of constant samples (so a part can be found in the joined recording)."""
    rel = Path("clips") / "drascula" / f"{clip_id}.flac"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(root / rel, np.full(round(seconds * RATE), value, np.int16), RATE, subtype="PCM_16")
    import hashlib

    return {
        "id": clip_id,
        "audio": rel.as_posix(),
        "text": f"LINE {clip_id}",
        "has_text": True,
        "source": "drascula",
        "licence": "Drascula licence",
        "duration_s": seconds,
        "speaker": "",
        "game": "drascula",
        "entry": "",
        "language": "en",
        "native_rate": 11025,
        "sha256": hashlib.sha256((root / rel).read_bytes()).hexdigest(),
    }


def line(root: Path, prefix: str, number: int, speaker: str, seconds: float) -> dict:
    rec = write_clip(root, f"drascula-en-{prefix}{number}", seconds, 100 + number)
    return rec | {"speaker": speaker, "entry": f"{prefix}{number}.ALS", "value": 100 + number}


# -- the screen ---------------------------------------------------------------------------------


def test_clip_cer_normalises_both_sides_and_counts_characters():
    assert screen.clip_cer("THAT'S THE DOOR", "That's the door.") == 0.0
    # "abcd" vs "abce": one substitution over four characters
    assert screen.clip_cer("ABCD", "abce") == pytest.approx(0.25)
    assert screen.clip_cer("HMM!", "anything") is None  # a filler: nothing left to divide by


def _records(n: int) -> list[dict]:
    return [
        {"id": f"c{i}", "sha256": f"s{i}", "text": "HELLO THERE", "speaker": f"p{i % 2}"}
        | {"duration_s": 1.0 + i}
        for i in range(n)
    ]


def test_screen_keeps_clips_within_the_cer_and_reports_the_rest():
    recs = _records(5)
    recs[3]["text"] = "?!"  # normalises to nothing
    hyps = {"s0": "hello there", "s1": "hello where", "s2": "good evening", "s3": "hi"}
    hyps["s4"] = "hello " * 30  # a decoding loop: the model failed, the subtitle may be right
    rule = screen.ScreenRule(max_cer=0.1)  # "hello where": 1 edit in 11 characters, 0.091
    out = screen.screen_records(recs, hyps, rule, "base test")
    assert [r["id"] for r in out.kept] == ["c0", "c1"]
    assert out.kept[1]["screen_cer"] == pytest.approx(1 / 11, abs=1e-4)
    assert out.kept[0]["screen_model"] == "base test" and out.kept[0]["speaker"] == "p0"
    assert [(d["id"], d["reason"], d["model_failure"]) for d in out.dropped] == [
        ("c2", screen.DROP_CER, []),
        ("c3", screen.DROP_EMPTY_REF, []),
        ("c4", screen.DROP_CER, ["repetition_loop"]),
    ]
    r = out.report
    assert (r["n_clips"], r["n_kept"], r["n_dropped"]) == (5, 2, 3)
    assert r["dropped_by_reason"] == {screen.DROP_CER: 2, screen.DROP_EMPTY_REF: 1}
    assert r["dropped_with_model_failure_flags"] == 1
    assert r["minutes_all"] == pytest.approx(15 / 60, abs=0.01)
    assert r["kept_of_total_by_speaker"] == {"p0": [1, 3], "p1": [1, 2]}
    assert r["screen_model_wer_kept"] == pytest.approx(25.0)  # 1 of 4 words
    assert r["screen_model_wer_all"] > r["screen_model_wer_kept"]


def test_hypotheses_are_cached_by_clip_digest_and_survive_a_cut_line(tmp_path):
    recs = [write_clip(tmp_path, f"c{i}", 0.2, i) for i in range(3)]
    heard: list[int] = []

    def transcribe(audio: np.ndarray) -> str:
        heard.append(len(audio))
        return "hello"

    rule = screen.ScreenRule()
    cache = screen.HypothesisCache(tmp_path / "screen", rule, "d1")
    ticks: list[int] = []
    hyps = screen.transcribe_missing(recs, tmp_path, cache, transcribe, ticks.append)
    assert len(heard) == 3 and len(ticks) == 3 and set(hyps.values()) == {"hello"}
    assert heard[0] == round(0.2 * RATE)
    with cache.path.open("a") as f:
        f.write('{"sha256": "cut sho')  # a kill mid-line
    again = screen.HypothesisCache(tmp_path / "screen", rule, "d1")
    assert screen.transcribe_missing(recs, tmp_path, again, transcribe) == hyps
    assert len(heard) == 3  # nothing transcribed twice
    other = screen.HypothesisCache(tmp_path / "screen", rule, "d2")  # another model digest
    screen.transcribe_missing(recs[:1], tmp_path, other, transcribe)
    assert len(heard) == 4


def test_write_screened_writes_kept_manifest_and_report(tmp_path):
    from voxmeter.data.manifest import load_manifest

    recs = [write_clip(tmp_path, f"c{i}", 0.3, i) for i in range(2)]
    hyps = {recs[0]["sha256"]: "line c0", recs[1]["sha256"]: "something else entirely"}
    out = screen.screen_records(recs, hyps, screen.ScreenRule(), "m")
    path = screen.write_screened(tmp_path, out)
    ds = load_manifest(path)
    assert [c.id for c in ds.clips] == ["c0"] and ds.clips[0].extra["screen_cer"] == 0.0
    report = json.loads((tmp_path / screen.REPORT).read_text())
    assert report["n_dropped"] == 1 and report["dropped"][0]["hyp"] == "something else entirely"


def test_screen_without_the_unscreened_set_says_how_to_build(tmp_path):
    with pytest.raises(DataError, match="real-test-unscreened.jsonl missing.*data build real"):
        screen.screen_set(tmp_path, tmp_path)


# -- real-longform --------------------------------------------------------------------------------


@pytest.fixture
def story(tmp_path) -> tuple[Path, list[dict]]:
    """Lines of three speakers, written out of story order: D10 before D2 on disk order."""
    recs = [line(tmp_path, "D", n, "drascula-drascula", 2.0) for n in (10, 2, 1, 3, 4, 5)]
    recs += [line(tmp_path, "", n, "drascula-hacker", 1.0) for n in (1, 2)]
    recs += [line(tmp_path, "T", n, "drascula-bartender", 0.5) for n in (3,)]
    return tmp_path, recs


def test_plan_keeps_story_order_and_merges_small_speakers(story):
    _, recs = story
    plans = longform.plan(recs, target_s=8.0, min_s=5.0)
    big = [p for p in plans if p.speaker == "drascula-drascula"]
    assert len(big) == 2  # 6 lines x (2 s + ~1 s pause) = 18 s: about 8 s each
    order = [r["entry"] for p in big for r in p.lines]
    assert order == ["D1.ALS", "D2.ALS", "D3.ALS", "D4.ALS", "D5.ALS", "D10.ALS"]
    mixed = [p for p in plans if p.speaker == longform.MIXED]
    assert len(mixed) == 1
    assert [r["entry"] for r in mixed[0].lines] == ["T3.ALS", "1.ALS", "2.ALS"]
    ids = [r["id"] for p in plans for r in p.lines]
    assert sorted(ids) == sorted(r["id"] for r in recs)  # every line exactly once


def test_longform_recordings_join_lines_with_seeded_pauses(story):
    out, recs = story
    written = longform.build_longform(out, recs, target_s=8.0, min_s=5.0)
    for index, rec in enumerate(written, start=1):
        audio, rate = sf.read(out / rec["audio"], dtype="int16")
        assert rate == RATE and rec["duration_s"] == pytest.approx(len(audio) / RATE, abs=1e-3)
        parts = rec["parts"]
        gaps = [b["start_s"] - a["end_s"] for a, b in itertools.pairwise(parts)]
        assert gaps == pytest.approx(list(longform.pauses(index, len(parts))), abs=1e-4)
        assert all(0.5 <= g <= 1.5 for g in gaps)
        by_id = {r["id"]: r for r in recs}
        for p in parts:  # each part holds its line's constant sample value
            a, b = round(p["start_s"] * RATE), round(p["end_s"] * RATE)
            assert b - a == round(by_id[p["id"]]["duration_s"] * RATE)
            assert np.unique(audio[a:b]).tolist() == [by_id[p["id"]]["value"]]
            assert not audio[b : b + 10].any()  # then the pause's digital silence
        assert rec["text"] == " ".join(by_id[p["id"]]["text"] for p in parts)
        assert rec["speech_s"] == pytest.approx(sum(by_id[p["id"]]["duration_s"] for p in parts))
    manifest = out / "real-longform.jsonl"
    assert [json.loads(x)["id"] for x in manifest.read_text().splitlines()] == [
        r["id"] for r in written
    ]


def test_longform_rebuild_reuses_intact_recordings_and_redoes_damaged_ones(story):
    out, recs = story
    first = longform.build_longform(out, recs, target_s=8.0, min_s=5.0)
    paths = [out / r["audio"] for r in first]
    stamps = [p.stat().st_mtime_ns for p in paths]
    paths[0].write_bytes(b"damaged")
    again = longform.build_longform(out, recs, target_s=8.0, min_s=5.0)
    assert again == first
    assert paths[0].stat().st_mtime_ns != stamps[0]  # rewritten
    assert [p.stat().st_mtime_ns for p in paths[1:]] == stamps[1:]  # reused
    fewer = longform.build_longform(out, recs[:6], target_s=100.0, min_s=5.0)
    assert len(fewer) == 1 and not paths[-1].exists()  # a recording no plan makes is removed


def test_longform_loads_as_long_audio(tmp_path, monkeypatch):
    from voxmeter.audio.io import LongAudio
    from voxmeter.data.datasets import iter_audio, load_dataset

    monkeypatch.setenv("VOXMETER_CACHE", str(tmp_path / "vx"))
    real = tmp_path / "vx" / "real"
    with pytest.raises(DataError, match="'real-longform' is not built.*--set real-longform"):
        load_dataset("real-longform")
    real.mkdir(parents=True)
    long_recs = [line(real, "D", n, "drascula-drascula", 8.0) for n in range(1, 6)]
    longform.build_longform(real, long_recs, target_s=1000.0, min_s=1.0)
    ds = load_dataset("real-longform")
    assert ds.name == "real-longform" and len(ds.clips) == 1
    ((_, audio),) = list(iter_audio(ds))
    assert isinstance(audio, LongAudio) and audio.duration_s > 40.0


@pytest.mark.slow
def test_screen_runs_the_base_model_on_real_drascula_lines(tmp_path, cache_dir):
    """Three real lines through `screen_set`; a second run transcribes nothing."""
    from voxmeter.data.games.build import build_set
    from voxmeter.data.games.sources import games_root, missing_packages

    if missing_packages(["drascula"], games_root()):
        pytest.skip("drascula and scummvm-data are not installed")
    out = tmp_path / "real"
    build_set("real-test-unscreened", games_root(), out, limit=3)
    first = screen.screen_set(out, Path(cache_dir))
    assert first.report["n_clips"] == 3 and first.report["model"].startswith("base ct2 int8")
    cached = next((out / "screen").glob("base-ct2-int8-*.jsonl"))
    assert len(cached.read_text().splitlines()) == 3
    assert "second biggest door" in cached.read_text()  # drascula-en-1, as base hears it
    again = screen.screen_set(out, Path(cache_dir))
    assert len(cached.read_text().splitlines()) == 3 and again.report == first.report


# -- recorded speech in the bundled default set -------------------------------------------------


def test_default_set_bundles_attributed_drascula_lines():
    from voxmeter.data.datasets import SAMPLE_DIR, load_dataset

    clips = load_dataset("default").clips
    lines = [c for c in clips if c.id.startswith("drascula-en-")]
    assert len(clips) == 50 and len(lines) >= 20
    assert sum(c.duration_s for c in lines) >= 120.0  # minutes of it, not seconds
    assert len({c.extra["speaker"] for c in lines}) >= 5  # spread over the voices
    for c in lines:
        assert "Alcachofa Soft" in c.licence and "modified by voxmeter" in c.licence
        assert c.extra["screen_cer"] <= 0.5 and c.text.strip()
    licences = (SAMPLE_DIR / "LICENCES.md").read_text()
    assert "modified version" in licences and "Drascula-License" in licences


def test_bundle_pick_is_seeded_round_robin_within_the_length_range():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "bundle_real_speech.py"
    spec = importlib.util.spec_from_file_location("bundle_real_speech", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kept = [
        {"id": f"{s}-{i}", "speaker": s, "duration_s": d}
        for s in ("a", "b", "c")
        for i, d in enumerate((3.0, 7.0, 8.0, 9.0, 13.0))
    ]
    picked = mod.pick(kept, 7)
    assert [r["speaker"] for r in picked] == ["a", "b", "c", "a", "b", "c", "a"]
    assert all(mod.MIN_S <= r["duration_s"] <= mod.MAX_S for r in picked)
    assert picked == mod.pick(list(reversed(kept)), 7)  # the input order does not matter
    with pytest.raises(SystemExit, match="only 9 lines"):
        mod.pick(kept, 10)


def test_games_tree_to_screened_and_longform_sets(tmp_path, monkeypatch):
    """The synthetic Drascula tree through extraction, the screen's rule and the joining; the
    hypotheses stand in for a model (one agrees with its subtitle, one does not)."""
    from test_games import make_drascula

    from voxmeter.data.games.build import build_set
    from voxmeter.data.manifest import load_manifest

    root = tmp_path / "games"
    make_drascula(root)
    out = tmp_path / "real"
    build_set("real-test-unscreened", root, out)
    recs = screen.read_manifest_records(out / f"{screen.UNSCREENED}.jsonl")
    hyps = {r["sha256"]: ("Hello there." if r["entry"] == "1.ALS" else "bats") for r in recs}
    kept = screen.write_screened(out, screen.screen_records(recs, hyps, screen.ScreenRule(), "m"))
    kept_recs = screen.read_manifest_records(kept)
    assert [r["id"] for r in kept_recs] == ["drascula-en-1"]
    (rec,) = longform.build_longform(out, kept_recs)
    assert rec["text"] == "HELLO THERE" and rec["parts"][0]["id"] == "drascula-en-1"
    assert load_manifest(out / "real-longform.jsonl").clips[0].audio.is_file()
