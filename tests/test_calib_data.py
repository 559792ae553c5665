"""The bundled calibration / training set: speech the compression work may learn from.

The rule it serves: train only on speech available here, never on the test clips. So `calib`
must share no audio and no sentence with the test sets (`default`, `noisy`, `longform`): no
file or decoded signal in common, no reference equal, and no run of six words in common after
normalizing (Whisper's English normalizer, which also writes numbers as digits, and a plain
lower-case split, which does not).
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import soundfile as sf

from voxmeter.data.datasets import BUNDLED, SAMPLE_DIR, iter_audio, load_dataset
from voxmeter.metrics import normalize

TEST_SETS = ("default", "noisy", "longform")
NGRAM = 6


@pytest.fixture(scope="module")
def calib():
    return load_dataset("calib")


@pytest.fixture(scope="module")
def test_clips():
    return [c for name in TEST_SETS for c in load_dataset(name).clips]


def plain_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def whisper_words(text: str) -> list[str]:
    return normalize(text).split()


def ngrams(words: list[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_calib_is_a_bundled_set_of_short_16k_clips(calib):
    assert "calib" in BUNDLED and calib.name == "calib"
    assert 50 <= len(calib.clips) <= 80
    loaded = list(iter_audio(calib))
    total = 0.0
    for clip, audio in loaded:
        assert not isinstance(audio, Exception), (clip.id, audio)
        assert audio.sample_rate == 16000 and not audio.resampled and not audio.mixed_down
        assert 1.0 <= audio.duration_s <= 20.0, clip.id
        assert audio.duration_s == pytest.approx(clip.duration_s, abs=1e-3)
        assert clip.id.startswith("calib-") and clip.text.strip()
        assert clip.source.startswith("espeak-ng ") and "MIT" in clip.licence
        total += audio.duration_s
    assert 180.0 <= total <= 240.0  # three to four minutes
    assert len({c.id for c in calib.clips}) == len(calib.clips)
    assert len({normalize(c.text) for c in calib.clips}) == len(calib.clips)


def test_manifest_lines_carry_the_synthesis_settings():
    for line in (SAMPLE_DIR / "calib.jsonl").read_text().splitlines():
        rec = json.loads(line)
        need = {"id", "audio", "text", "source", "licence", "duration_s"}
        assert need | {"voice", "speed_wpm", "pitch", "word_gap_ms"} <= rec.keys()
        assert rec["audio"] == f"{rec['id']}.flac"  # relative, beside the manifest
        assert rec["voice"].startswith("en")
        assert 140 <= rec["speed_wpm"] <= 185 and 0 <= rec["pitch"] <= 99


def test_voices_speeds_and_pitches_are_spread(calib):
    voices = {c.extra["voice"] for c in calib.clips}
    bases = {v.split("+")[0] for v in voices}
    speeds = [c.extra["speed_wpm"] for c in calib.clips]
    pitches = [c.extra["pitch"] for c in calib.clips]
    assert len(voices) >= 15 and len(bases) >= 6
    assert any("+f" in v for v in voices) and any("+m" in v for v in voices)
    assert min(speeds) <= 145 and max(speeds) >= 180
    assert max(pitches) - min(pitches) >= 30


def test_no_calib_text_is_or_overlaps_a_test_reference(calib, test_clips):
    for words in (whisper_words, plain_words):
        test_texts = {" ".join(words(c.text)) for c in test_clips}
        test_grams = set().union(*(ngrams(words(c.text)) for c in test_clips))
        assert test_grams  # the check has something to check against
        for c in calib.clips:
            w = words(c.text)
            assert " ".join(w) not in test_texts, c.id
            # A test text shorter than six words must not appear inside a calib text either.
            joined = f" {' '.join(w)} "
            for t in test_texts:
                if len(t.split()) < NGRAM:
                    assert f" {t} " not in joined, (c.id, t)
            shared = ngrams(w) & test_grams
            assert not shared, (c.id, sorted(shared)[:3])


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_no_calib_audio_is_a_test_file_or_signal(calib, test_clips):
    test_paths = {c.audio.resolve() for c in test_clips}
    calib_paths = {c.audio.resolve() for c in calib.clips}
    assert not test_paths & calib_paths
    test_files = {digest(p.read_bytes()) for p in test_paths}
    test_pcm = {digest(sf.read(p, dtype="int16")[0].tobytes()) for p in test_paths}
    for c in calib.clips:
        assert digest(c.audio.read_bytes()) not in test_files, c.id
        pcm = sf.read(c.audio, dtype="int16")[0]
        assert digest(pcm.tobytes()) not in test_pcm, c.id
        assert np.any(pcm), c.id  # not silence


def test_bundled_folder_lists_every_flac_once_across_all_sets():
    listed: list[str] = []
    for name in BUNDLED:
        listed += sorted({c.audio.name for c in load_dataset(name).clips})
    assert len(listed) == len(set(listed))  # no file serves two sets
    assert set(listed) == {p.name for p in SAMPLE_DIR.glob("*.flac")}


def test_sources_md_lists_every_calib_clip_and_says_it_is_not_a_test_set(calib):
    md = (SAMPLE_DIR / "SOURCES.md").read_text()
    assert "## Calibration / training set" in md
    assert "Not a test set" in md
    for c in calib.clips:
        assert f"| {c.id} | {c.duration_s:.2f} | {c.source} | {c.licence} |" in md
