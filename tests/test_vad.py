"""Silero VAD over streams, the segment and chunk policy, and its settings."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from voxmeter.audio.io import SAMPLE_RATE, AudioStream, load_audio
from voxmeter.audio.vad import (
    FRAME,
    SileroVad,
    Span,
    VadSettings,
    chunker,
    collect_chunks,
    find_silero,
    speech_chunks,
    speech_probs,
    speech_segments,
)
from voxmeter.data.datasets import load_dataset
from voxmeter.errors import ModelError, SpecError


@dataclass
class InMemory:
    """Samples already loaded, behind the read interface."""

    samples: np.ndarray

    def read(self, start: int, n: int) -> np.ndarray:
        return self.samples[start : start + n]


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def recordings(vad):
    """Each bundled long-form recording with its frame probabilities, read as a stream."""
    out = []
    for rec in load_dataset("longform").clips:
        with AudioStream(rec.audio) as s:
            probs, n = speech_probs(s, vad)
        out.append((rec, probs, n))
    return out


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", 0.0),
        ("threshold", 1.0),
        ("threshold", -0.2),
        ("threshold", float("nan")),
        ("threshold", True),
        ("threshold", "0.5"),
        ("min_silence_ms", -1),
        ("min_silence_ms", float("inf")),
        ("speech_pad_ms", -10),
        ("speech_pad_ms", None),
        ("max_segment_s", 0),
        ("max_segment_s", 30.5),
        ("max_segment_s", -3.0),
    ],
)
def test_bad_settings_are_one_line_spec_errors_naming_the_field(field, value):
    with pytest.raises(SpecError) as e:
        VadSettings(**{field: value})
    assert str(e.value).startswith(f"{field}: must be a finite number")
    assert "\n" not in str(e.value)


def test_edge_settings_are_accepted():
    VadSettings(threshold=0.01, min_silence_ms=0, speech_pad_ms=0, max_segment_s=30)
    VadSettings(threshold=0.99, max_segment_s=0.5)


# --- the model -----------------------------------------------------------------------------


def test_model_is_found_in_an_installed_package_and_says_which_file_ran(vad):
    path = find_silero()
    assert path.is_file() and path.suffix == ".onnx"
    assert vad.path == path
    assert vad.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_model_anywhere_is_a_model_error_naming_what_was_tried():
    with pytest.raises(ModelError, match=r"no_such_package \(not installed\).*voxmeter \(has no"):
        find_silero((("no_such_package", "x.onnx"), ("voxmeter", "no/such.onnx")))


def test_an_unusable_model_file_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="bad.onnx: not a usable ONNX model"):
        SileroVad(bad)
    with pytest.raises(ModelError, match="missing.onnx: no such model file"):
        SileroVad(tmp_path / "missing.onnx")


def test_streamed_probabilities_equal_faster_whispers_pass_over_the_whole(recordings, vad):
    from faster_whisper.vad import get_vad_model

    rec, probs, n = recordings[0]
    x = load_audio(rec.audio).samples
    assert n == len(x) and len(probs) == -(-n // FRAME)
    whole = get_vad_model()(np.pad(x, (0, FRAME - len(x) % FRAME))).reshape(-1)
    np.testing.assert_allclose(probs, whole[: len(probs)], atol=1e-5)
    small_blocks, _ = speech_probs(InMemory(x), vad, block_s=1.7)
    np.testing.assert_allclose(small_blocks, probs, atol=1e-5)


@pytest.mark.parametrize(("min_silence_ms", "pad_ms"), [(160, 400), (0, 0), (100, 30)])
def test_segments_match_faster_whisper_where_nothing_needs_splitting(
    recordings, min_silence_ms, pad_ms
):
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    rec, probs, n = recordings[1]
    settings = VadSettings(min_silence_ms=min_silence_ms, speech_pad_ms=pad_ms)
    ours = [
        (round(a * SAMPLE_RATE), round(b * SAMPLE_RATE))
        for a, b in speech_segments(probs, n, settings)
    ]
    assert max(b - a for a, b in ours) < settings.max_segment_s * SAMPLE_RATE
    opts = VadOptions(min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms)
    theirs = get_speech_timestamps(load_audio(rec.audio).samples, opts)
    assert ours == [(d["start"], d["end"]) for d in theirs]


# --- on the bundled long-form recordings ---------------------------------------------------


def overlap(a: float, b: float, spans: list[Span]) -> float:
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in spans)


def test_segments_cover_every_clip_and_leave_the_pauses(recordings):
    tight = VadSettings(min_silence_ms=100, speech_pad_ms=0)
    for rec, probs, n in recordings:
        parts = rec.extra["parts"]
        for settings in (VadSettings(), tight):
            segs = speech_segments(probs, n, settings)
            for p in parts:
                assert overlap(p["start_s"], p["end_s"], segs) > 0, (rec.id, p["id"])
        segs = speech_segments(probs, n, tight)
        pauses = [(a["end_s"], b["start_s"]) for a, b in itertools.pairwise(parts)]
        pause_total = sum(b - a for a, b in pauses)
        in_speech = sum(overlap(a, b, segs) for a, b in pauses)
        assert in_speech < 0.1 * pause_total, rec.id  # the pauses are mostly not speech
        assert all(overlap(a, b, segs) < 0.5 * (b - a) for a, b in pauses), rec.id


@pytest.mark.parametrize("max_segment_s", [30.0, 10.0, 2.5])
def test_chunks_hold_every_segment_once_in_order_within_the_limit(recordings, max_segment_s):
    settings = VadSettings(max_segment_s=max_segment_s)
    for rec, probs, n in recordings:
        segs = speech_segments(probs, n, settings)
        chunks = collect_chunks(segs, settings.max_segment_s)
        assert chunks and len(chunks) <= len(segs)
        assert [p for c in chunks for p in c.pieces] == segs  # each once, in order
        assert all(c.speech_s <= max_segment_s + 1e-9 for c in chunks), rec.id
        # greedy: the next chunk's first segment would not have fitted in this one
        for a, b in itertools.pairwise(chunks):
            assert a.speech_s + b.pieces[0].duration_s > max_segment_s, rec.id
            assert a.end_s <= b.start_s
        assert 0 <= chunks[0].start_s and chunks[-1].end_s <= n / SAMPLE_RATE


def test_a_chunk_reads_its_speech_joined_without_the_silence_between():
    x = np.arange(10 * SAMPLE_RATE, dtype=np.float32)
    segs = [Span(0.5, 1.0), Span(2.0, 4.0), Span(7.0, 9.0)]
    chunks = collect_chunks(segs, max_segment_s=3.0)
    assert [c.pieces for c in chunks] == [tuple(segs[:2]), (segs[2],)]
    first = chunks[0].read(InMemory(x))
    want = np.concatenate([x[8000:16000], x[32000:64000]])
    np.testing.assert_array_equal(first, want)
    assert chunks[0].speech_s == pytest.approx(2.5) and chunks[0].end_s == 4.0


def test_over_long_speech_is_split_within_the_limit(recordings):
    _rec, probs, n = recordings[2]
    # A silence this long never happens between the clips: all speech is one long segment.
    whole = speech_segments(probs, n, VadSettings(min_silence_ms=5000, max_segment_s=30))
    assert len(whole) > 1 and all(s.duration_s <= 30 for s in whole)
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(whole))  # pieces of one span
    for a, _ in whole[1:]:
        assert round(a * SAMPLE_RATE) % FRAME == 0  # cut at a frame boundary
    tiny = speech_segments(probs[:200], 200 * FRAME, VadSettings(max_segment_s=0.01))
    assert tiny and all(s.duration_s <= 0.01 + 1e-9 for s in tiny)


def test_silence_has_no_speech(tmp_path, vad):
    path = tmp_path / "silence.flac"
    sf.write(path, np.zeros(SAMPLE_RATE * 40), SAMPLE_RATE, subtype="PCM_16")
    with AudioStream(path) as s:
        assert speech_chunks(s, VadSettings(), vad) == []
    probs, n = speech_probs(InMemory(np.zeros(1000, dtype=np.float32)), vad)
    assert speech_segments(probs, n, VadSettings(min_silence_ms=0, speech_pad_ms=0)) == []


def test_chunks_of_a_stream_leave_it_ready_to_serve_them(recordings, vad):
    rec = recordings[0][0]
    x = load_audio(rec.audio).samples
    with AudioStream(rec.audio) as s:
        chunks = speech_chunks(s, VadSettings(), vad)
        for c in chunks:
            np.testing.assert_array_equal(c.read(s), c.read(InMemory(x)))
    assert chunks == speech_chunks(InMemory(x), VadSettings(), vad)


def test_chunker_binds_checked_settings_and_one_model(recordings, vad):
    rec = recordings[0][0]
    chunks_of = chunker(min_silence_ms=300, speech_pad_ms=100, max_segment_s=12.0, model=vad)
    with AudioStream(rec.audio) as s:
        got = chunks_of(s)
    settings = VadSettings(min_silence_ms=300, speech_pad_ms=100, max_segment_s=12.0)
    assert got == speech_chunks(InMemory(load_audio(rec.audio).samples), settings, vad)
    assert all(c.speech_s <= 12.0 for c in got)
    with pytest.raises(SpecError, match="^max_segment_s: "):
        chunker(max_segment_s=45, model=vad)
