"""The bundled long-form set: real clips joined with pauses, exact references, streamed."""

from __future__ import annotations

import numpy as np
import pytest

from voxmeter.audio.io import SAMPLE_RATE, LongAudio, info, load_audio
from voxmeter.data.datasets import MAX_CLIP_S, SAMPLE_DIR, iter_audio, load_dataset
from voxmeter.metrics import COMPRESSION_RATIO_MAX, compression_ratio, failure_flags


@pytest.fixture(scope="module")
def longform():
    return load_dataset("longform")


@pytest.fixture(scope="module")
def default_by_id():
    return {c.id: c for c in load_dataset("default").clips}


def test_longform_is_named_and_streams_every_recording(longform):
    assert longform.name == "longform" and longform.clips
    for clip, audio in iter_audio(longform):
        assert isinstance(audio, LongAudio), clip.id
        assert 60.0 <= audio.duration_s <= 300.0  # recordings of one to five minutes
        assert audio.duration_s > MAX_CLIP_S
        assert (audio.orig_sample_rate, audio.orig_channels) == (SAMPLE_RATE, 1)
        assert audio.duration_s == pytest.approx(clip.duration_s, abs=1e-3)
        assert clip.source and clip.licence


def test_at_least_three_minutes_of_real_speech(longform, default_by_id):
    speech = 0.0
    for rec in longform.clips:
        parts = rec.extra["parts"]
        assert all(not p["id"].startswith("tts-") for p in parts)  # recorded, not synthesized
        lengths = [info(default_by_id[p["id"]].audio).duration_s for p in parts]
        assert sum(lengths) == pytest.approx(rec.extra["speech_s"], abs=1e-3)
        speech += sum(lengths)
    assert speech >= 180.0


def test_reference_is_the_parts_references_joined_in_order(longform, default_by_id):
    for rec in longform.clips:
        texts = [default_by_id[p["id"]].text for p in rec.extra["parts"]]
        assert rec.text == " ".join(texts)
        licences = {default_by_id[p["id"]].licence for p in rec.extra["parts"]}
        assert all(lic in rec.licence for lic in licences)


def test_parts_are_the_clips_sample_for_sample_with_silent_pauses(longform, default_by_id):
    for rec in longform.clips:
        pause = round(rec.extra["pause_s"] * SAMPLE_RATE)
        x = load_audio(rec.audio).samples  # small enough to load whole in a test
        pos = 0
        for p in rec.extra["parts"]:
            clip = load_audio(default_by_id[p["id"]].audio).samples
            start = round(p["start_s"] * SAMPLE_RATE)
            assert start == pos + (pause if pos else 0), (rec.id, p["id"])
            assert not np.any(x[pos:start])  # the pause is digital silence
            np.testing.assert_array_equal(x[start : start + len(clip)], clip)
            assert round(p["end_s"] * SAMPLE_RATE) == start + len(clip)
            pos = start + len(clip)
        assert pos == len(x)


def test_each_recording_plays_every_real_clip_once_in_its_own_order(longform, default_by_id):
    # the long-form set joins the pocketsphinx-testdata recordings (not the Drascula lines)
    real = sorted(k for k, c in default_by_id.items() if "pocketsphinx-testdata" in c.source)
    orders = set()
    for rec in longform.clips:
        ids = [p["id"] for p in rec.extra["parts"]]
        assert sorted(ids) == real
        orders.add(tuple(ids))
    assert len(orders) == len(longform.clips)


def test_a_correct_transcript_does_not_look_like_a_loop(longform):
    # Whisper rejects a decode whose zlib compression ratio passes 2.4; so do our flags.
    for rec in longform.clips:
        assert compression_ratio(rec.text) < COMPRESSION_RATIO_MAX, rec.id
        assert failure_flags(rec.text, rec.duration_s or 0.0, rec.text, False) == []


def test_sources_md_describes_the_set_and_files_stay_small(longform):
    sources = (SAMPLE_DIR / "SOURCES.md").read_text()
    assert "## Long-form set" in sources
    for rec in longform.clips:
        assert f"| {rec.id} |" in sources
    assert "digital silence" in sources
    size = sum(rec.audio.stat().st_size for rec in longform.clips)
    assert size < 6e6
