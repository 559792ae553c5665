"""The two front ends: hand checks of the pure functions, and faster-whisper's own hypotheses.

"audio" pads the audio (openai-whisper); "features" pads the normalised log-mel with zeros
(faster-whisper 1.x). With "features", the ct2 engine must produce faster-whisper's greedy
hypotheses exactly; with "audio" some clips differ, and that difference is the point of the
spec field.
"""

from __future__ import annotations

import numpy as np
import pytest

from voxmeter.audio.features import (
    HOP,
    N_FFT,
    batch_features,
    clip_features,
    log_mel,
    log_mel_clip,
    mel_filters,
    pad_frames,
    padding_features,
)

# faster-whisper's transcribe as one greedy pass, the way voxmeter decodes: no temperature
# fallback, no thresholds that skip or re-decode a window, no VAD, no previous text; its
# suppression is its default, which is the ct2 engine's
ONE_GREEDY_PASS = dict(
    beam_size=1,
    temperature=0.0,
    condition_on_previous_text=False,
    vad_filter=False,
    no_speech_threshold=None,
    log_prob_threshold=None,
    compression_ratio_threshold=None,
    suppress_blank=True,
    suppress_tokens=[-1],
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
    assert np.array_equal(padded[0, :, :6], feats[:, :6])  # 1000 // 160 = 6 frames
    assert bool((padded[0, :, 6:] == 0).all())
    cut = pad_frames(feats, len(audio), 4)  # a shorter input keeps the first frames
    assert np.array_equal(cut[0], feats[:, :4])


def test_a_tone_peaks_in_its_mel_band_and_the_floor_is_max_minus_8():
    """A 1 kHz tone: the loudest band is the one whose filter peaks nearest 1 kHz, and the
    normalised range is at most 2 (8 decades of power / 4) in both front ends."""
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    peak_band = int(mel_filters(80)[:, round(1000 / (16000 / 400))].argmax())
    for feats in (log_mel(tone, 100)[0], log_mel_clip(tone)):
        assert int(feats[:, 50].argmax()) == peak_band
        assert feats.max() - feats.min() <= 2.0 + 1e-6


def _torch_log_mel(audio: np.ndarray, n_frames: int, n_mels: int) -> np.ndarray:
    """openai-whisper's log-mel by torch.stft (centred, reflect-padded), as the "audio" front
    end computed it before it became numpy: the reference the numpy STFT must reproduce."""
    import torch

    n = n_frames * HOP
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    x = x[:n] if x.numel() >= n else torch.nn.functional.pad(x, (0, n - x.numel()))
    stft = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(mel_filters(n_mels).copy()) @ power
    logspec = torch.clamp(mel, min=1e-10).log10()
    logspec = torch.maximum(logspec, logspec.max() - 8.0)
    return ((logspec + 4.0) / 4.0).numpy()


@pytest.mark.parametrize("n_frames", [3000, 1000, 1001, 37, 2])
def test_audio_front_end_equals_torch_stft(default_clips, n_frames):
    """The numpy "audio" front end equals torch.stft's to float32 rounding (2.5e-5 at most
    when measured on these clips): recorded speech, odd-length noise, a clip cut at 30 s."""
    rng = np.random.default_rng(1)
    audios = [a.samples for _, a in default_clips[:3]] + [
        (rng.standard_normal(16000 * 3 + 77) * 0.1).astype(np.float32),
        (rng.standard_normal(16000 * 31 + 1) * 0.1).astype(np.float32),
    ]
    for n_mels in (80, 128):
        for audio in audios:
            ours = log_mel(audio, n_frames, n_mels)
            assert ours.dtype == np.float32 and ours.shape == (1, n_mels, n_frames)
            diff = float(np.abs(ours[0] - _torch_log_mel(audio, n_frames, n_mels)).max())
            assert diff < 1e-4, (n_mels, len(audio), diff)


def test_the_mel_projection_runs_on_one_blas_thread_and_restores_the_setting(monkeypatch):
    """OpenBLAS threads left spinning after the projection slow the encoder that runs next
    (audio/features.py's doc): the product must run on one BLAS thread, and leave the
    process's own setting as it was."""
    from threadpoolctl import threadpool_info

    from voxmeter.audio import features

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    seen: list[list[int]] = []
    real = features.mel_filters

    class Probe:
        def __init__(self, n_mels: int) -> None:
            self.filters = real(n_mels)

        def __matmul__(self, other: np.ndarray) -> np.ndarray:
            seen.append(blas_threads())
            return self.filters @ other

    before = blas_threads()
    assert before, "numpy has no BLAS that threadpoolctl sees"
    monkeypatch.setattr(features, "mel_filters", Probe)
    out = log_mel(np.zeros(HOP * 100, dtype=np.float32), 100)
    assert seen == [[1] * len(before)]
    assert blas_threads() == before
    assert out.shape == (1, 80, 100)


def test_front_ends_return_float32_numpy():
    """numpy in, numpy out: the ct2 engine hands the arrays to CTranslate2 without torch."""
    audio = np.zeros(1000, dtype=np.float32)
    for frontend in ("audio", "features"):
        feats = batch_features([audio, audio], 20, frontend=frontend)
        assert isinstance(feats, np.ndarray) and feats.dtype == np.float32
        assert feats.shape == (2, 80, 20)
        assert padding_features(20, frontend=frontend).dtype == np.float32


def test_features_are_bit_identical_to_faster_whisper(default_clips):
    """Operation for operation, at one BLAS thread (voxmeter's projection always runs on one:
    audio/features.py). faster-whisper's own `mel_filters @ magnitudes` runs on numpy's
    default BLAS threads, whose sums round differently in the last bit, so across thread
    counts the features agree to float32 rounding only."""
    from faster_whisper.feature_extractor import FeatureExtractor
    from threadpoolctl import threadpool_limits

    fe = FeatureExtractor(80)
    for clip, audio in default_clips[:6]:
        ours = log_mel_clip(audio.samples)
        with threadpool_limits(limits=1, user_api="blas"):
            assert np.array_equal(ours, fe(audio.samples)), clip.id
        assert np.allclose(ours, fe(audio.samples), rtol=0, atol=1e-6), clip.id


REAL = ("librivox", "cards", "goforward")  # recorded speech; the tts clips are synthesized


def _faster_whisper_texts(ct2_dir, clips) -> dict[str, str]:
    """faster-whisper's own transcribe, reduced to one greedy pass per clip: no temperature
    fallback, no no-speech / log-probability / compression-ratio checks (each could drop or
    re-decode a clip), no VAD, no previous text; its blank and token suppression are the
    defaults, which are the ct2 engine's (suppress_tokens=[-1] expands to the same 90 ids as
    the model's config), and its max_length (448) is the engine's limit."""
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=2)
    out = {}
    for clip, audio in clips:
        segments, _ = fw.transcribe(
            audio.samples, language="en", without_timestamps=True, **ONE_GREEDY_PASS
        )
        out[clip.id] = "".join(s.text for s in segments).strip()
    return out


def _engine_texts(frontend, clips, cache_dir, source) -> dict[str, str]:
    from voxmeter.engines import load_engine
    from voxmeter.spec import RunSpec

    e = load_engine(RunSpec(engine="ct2").with_(frontend=frontend), cache_dir, source)
    return {c.id: e.decode(e.encode(e.features([a.samples])))[0].text for c, a in clips}


def _check_parity(clips, cache_dir, source, record_property) -> None:
    from voxmeter.metrics import normalize

    theirs = _faster_whisper_texts(source.ct2_dir, clips)
    ours = _engine_texts("features", clips, cache_dir, source)
    openai_way = _engine_texts("audio", clips, cache_dir, source)
    differ = [
        f"{cid}: ours {ours[cid]!r} vs faster-whisper {theirs[cid]!r}"
        for cid in theirs
        if normalize(ours[cid]) != normalize(theirs[cid])
    ]
    assert not differ, f"{len(differ)} of {len(clips)} clips differ: " + "; ".join(differ)
    assert ours == theirs  # not only normalised: the very same text
    moved = [cid for cid in theirs if normalize(openai_way[cid]) != normalize(theirs[cid])]
    record_property("audio_front_end_differs", f"{len(moved)} of {len(clips)}: {moved}")
    assert moved, "padding the audio instead of the features should move some hypotheses"


def test_features_front_end_gives_faster_whisper_hypotheses_on_real_speech(
    default_clips, cache_dir, tiny_source, record_property
):
    """The recorded clips (LibriVox, card commands, go forward): identical; the "audio" front
    end moves at least cards-002 ("for Queen of Clothes" -> "4. Queen of Clothes")."""
    real = [(c, a) for c, a in default_clips if c.id.startswith(REAL)]
    assert len(real) == 11
    _check_parity(real, cache_dir, tiny_source, record_property)


@pytest.mark.slow
def test_features_front_end_gives_faster_whisper_hypotheses_on_the_default_set(
    default_clips, cache_dir, tiny_source, record_property
):
    """The default set's other 39 clips (tts and Drascula lines; the 11 LibriVox, cards and
    go-forward clips are the test above's, which decodes them alike, so the two together
    cover all 50): identical texts. The two tests' `audio_front_end_differs` properties add
    up to the count over all 50 on which the "audio" front end gives another normalised
    text (11 when measured with tiny.en fp32, ctranslate2 4.8.5, faster-whisper 1.2.1)."""
    assert len(default_clips) == 50
    rest = [(c, a) for c, a in default_clips if not c.id.startswith(REAL)]
    assert len(rest) == 39
    _check_parity(rest, cache_dir, tiny_source, record_property)


@pytest.mark.slow
def test_long_form_with_the_features_front_end_gives_faster_whispers_text(cache_dir):
    """Sequential long-form (timestamps, greedy, no previous text) on two of the bundled
    long-form recordings: the ct2 engine with frontend='features' against faster-whisper's
    own `transcribe` with the same settings. Our log-mel is computed per 30 s window (a
    recording is streamed), faster-whisper's over the whole recording then sliced: the
    assertion names any recording whose normalised text differs, with both texts.

    Recordings 01-02, not all five: each plays the same 11 real clips in its own order, and
    two give six windows and their seeks. Recordings 03-05 are held to faster-whisper's
    long-form text, streamed with the features front end, by test_workloads.py's batched
    parity test; their clips, one by one, by the real-speech test above."""
    from faster_whisper import WhisperModel

    from voxmeter.assets.bundled import resolve_model
    from voxmeter.metrics import normalize
    from voxmeter.run.harness import prepare_data, run_spec
    from voxmeter.spec import RunSpec

    spec = RunSpec(engine="ct2", data="longform", max_clips=2, repeats=1, warmup=0)
    spec = spec.with_(frontend="features")
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir, instruments=False))
    ours = {c["id"]: c["hyp"] for c in res.clips}
    assert sorted(ours) == ["longform-01", "longform-02"]
    assert all(len(c["windows"]) >= 3 for c in res.clips), res.clips
    # two threads, as the engine runs (CTranslate2's default is 4, on a 2-core runner too)
    ct2_dir = str(resolve_model("tiny.en", cache_dir).ct2_dir)
    fw = WhisperModel(ct2_dir, compute_type="float32", cpu_threads=2)
    differ = []
    for clip in prepare_data(spec).clips:
        with clip.stream() as s:
            audio = s.read(0, s.n_samples)
        segs, _ = fw.transcribe(audio, without_timestamps=False, **ONE_GREEDY_PASS)
        theirs = " ".join(s.text.strip() for s in segs)
        if normalize(theirs) != normalize(ours[clip.id]):
            differ.append(
                f"{clip.id}:\n  faster-whisper: {theirs}\n  voxmeter:       {ours[clip.id]}"
            )
    assert not differ, "long-form texts differ:\n" + "\n".join(differ)
