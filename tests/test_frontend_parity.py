"""The two front ends: hand checks of the pure functions, and faster-whisper's own hypotheses.

"audio" pads the audio (openai-whisper); "features" pads the normalised log-mel with zeros
(faster-whisper 1.x). With "features", the ct2 engine must produce faster-whisper's greedy
hypotheses exactly; with "audio" some clips differ, and that difference is the point of the
spec field.
"""

from __future__ import annotations

import numpy as np

from voxmeter.audio.features import (
    HOP,
    clip_features,
    log_mel,
    log_mel_clip,
    pad_frames,
    padding_features,
)

SILENCE = (-10.0 + 4.0) / 4.0  # log10 of the 1e-10 clamp, floored at itself, then scaled


def test_an_empty_clip_shows_what_each_front_end_pads_with():
    """Zeros: every power is clamped to 1e-10, so every frame is (log10(1e-10) + 4) / 4."""
    zeros = np.zeros(10 * HOP, dtype=np.float32)
    a = clip_features(zeros, 30, frontend="audio")
    f = clip_features(zeros, 30, frontend="features")
    assert tuple(a.shape) == tuple(f.shape) == (1, 80, 30)
    # float32 cannot hold 1e-10 exactly: its log10 is -10 to within a few ulps
    assert np.allclose(a, SILENCE, atol=1e-6)  # the log-mel of silence, all the way
    assert np.allclose(f[..., :10], SILENCE, atol=1e-6)  # the clip's 10 content frames
    assert bool((f[..., 10:] == 0.0).all())  # then the normalised log-mel padded with zeros
    assert np.allclose(padding_features(30, frontend="audio"), SILENCE, atol=1e-6)
    assert bool((padding_features(30, frontend="features") == 0.0).all())


def test_features_front_end_frame_counts():
    """faster-whisper appends 160 samples: len // 160 + 1 frames, len // 160 of content."""
    audio = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 0.1
    feats = log_mel_clip(audio)
    assert feats.shape == (80, 1000 // HOP + 1)
    padded = pad_frames(feats, len(audio), 10)
    assert tuple(padded.shape) == (1, 80, 10)
    assert np.array_equal(padded[0, :, :6].numpy(), feats[:, :6])  # 1000 // 160 = 6 frames
    assert bool((padded[0, :, 6:] == 0).all())
    cut = pad_frames(feats, len(audio), 4)  # a shorter input keeps the first frames
    assert np.array_equal(cut[0].numpy(), feats[:, :4])


def test_a_tone_peaks_in_its_mel_band_and_the_floor_is_max_minus_8():
    """A 1 kHz tone: the loudest band is the one whose filter peaks nearest 1 kHz, and the
    normalised range is at most 2 (8 decades of power / 4) in both front ends."""
    from voxmeter.audio.features import mel_filters

    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    peak_band = int(mel_filters(80)[:, round(1000 / (16000 / 400))].argmax())
    for feats in (log_mel(tone, 100)[0].numpy(), log_mel_clip(tone)):
        assert int(feats[:, 50].argmax()) == peak_band
        assert feats.max() - feats.min() <= 2.0 + 1e-6


def test_features_are_bit_identical_to_faster_whisper(default_clips):
    from faster_whisper.feature_extractor import FeatureExtractor

    fe = FeatureExtractor(80)
    for clip, audio in default_clips[:6]:
        assert np.array_equal(log_mel_clip(audio.samples), fe(audio.samples)), clip.id
