"""load_audio on files made here: resampling, mix-down, raw PCM, and every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from voxmeter.audio.io import LoadedAudio, load_audio, raw_pcm16, validate_samples
from voxmeter.errors import AudioError, VoxmeterError


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_44k_stereo_becomes_16k_mono_and_says_so(tmp_path):
    left, right = tone(1.5, 44100, 440.0), tone(1.5, 44100, 440.0, amp=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100)

    a = load_audio(path)

    assert isinstance(a, LoadedAudio)
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.sample_rate == 16000
    assert abs(len(a.samples) - 24000) <= 1  # 1.5 s at 16 kHz
    assert a.duration_s == pytest.approx(1.5, abs=1e-3)
    assert (a.orig_sample_rate, a.orig_channels) == (44100, 2)
    assert a.resampled and a.mixed_down
    assert a.path == path
    # Mixing averages the channels: a 440 Hz tone of amplitude (0.5 + 0.25) / 2.
    mid = a.samples[4000:20000]
    assert np.max(np.abs(mid)) == pytest.approx(0.375, abs=0.01)
    spectrum = np.abs(np.fft.rfft(mid))
    assert np.argmax(spectrum) * 16000 / len(mid) == pytest.approx(440.0, abs=2.0)


def test_16k_mono_flac_is_read_unchanged(tmp_path):
    x = tone(0.5, 16000)
    path = tmp_path / "mono.flac"
    sf.write(path, x, 16000, subtype="PCM_16")
    a = load_audio(path)
    assert not a.resampled and not a.mixed_down
    assert (a.orig_sample_rate, a.orig_channels) == (16000, 1)
    np.testing.assert_allclose(a.samples, x, atol=1 / 32768)


def test_ogg_is_read(tmp_path):
    path = tmp_path / "clip.ogg"
    sf.write(path, tone(0.5, 16000), 16000, format="OGG", subtype="VORBIS")
    assert load_audio(path).duration_s == pytest.approx(0.5, abs=0.01)


def test_silence_is_valid(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(8000, dtype=np.float32), 16000)
    a = load_audio(path)
    assert a.duration_s == 0.5 and not np.any(a.samples)


def test_raw_pcm16_by_extension(tmp_path):
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2")
    path = tmp_path / "clip.raw"
    path.write_bytes(pcm.tobytes())
    a = load_audio(path)
    np.testing.assert_array_equal(a.samples, pcm / 32768.0)
    assert a.sample_rate == 16000 and not a.resampled
    np.testing.assert_array_equal(raw_pcm16(path), a.samples)


def error_for(path) -> str:
    with pytest.raises(AudioError) as info:
        load_audio(path)
    msg = str(info.value)
    assert "\n" not in msg  # one line, as the CLI prints it
    return msg


def test_missing_file(tmp_path):
    assert "nope.wav" in error_for(tmp_path / "nope.wav")
    assert "no such" in error_for(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    msg = error_for(path)
    assert "empty.wav" in msg and "0 bytes" in msg


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not a recording\n" * 20)
    msg = error_for(path)
    assert "notes.wav" in msg and "not a readable audio file" in msg


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, tone(1.0, 16000), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:20000])
    msg = error_for(path)
    assert "cut.wav" in msg and "truncated" in msg


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, 32000), 16000)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "cut.flac" in error_for(path)


def test_flac_header_only(tmp_path):
    path = tmp_path / "head.flac"
    sf.write(path, tone(1.0, 16000), 16000)
    path.write_bytes(path.read_bytes()[:40])
    assert "head.flac" in error_for(path)


def test_odd_length_raw(tmp_path):
    path = tmp_path / "odd.raw"
    path.write_bytes(b"\x00\x01\x02")
    msg = error_for(path)
    assert "odd.raw" in msg and "odd byte count" in msg


def test_zero_samples(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    msg = error_for(path)
    assert "nothing.wav" in msg and "no audio samples" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = tone(0.1, 16000)
    x[100] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    msg = error_for(path)
    assert "nan.wav" in msg and "1 of 1600 samples are NaN or infinite" in msg


def test_validate_samples_returns_good_input_and_rejects_2d():
    x = np.zeros(10, dtype=np.float32)
    assert validate_samples(x, "a.wav") is x
    with pytest.raises(AudioError, match="a.wav: expected mono"):
        validate_samples(np.zeros((10, 2), dtype=np.float32), "a.wav")


def test_audio_error_is_a_voxmeter_error():
    # The CLI catches VoxmeterError to print one line; AudioError must be one.
    assert issubclass(AudioError, VoxmeterError)


def test_directory_is_not_an_audio_file(tmp_path):
    d = tmp_path / "clip.wav"
    d.mkdir()
    msg = error_for(d)
    assert "clip.wav" in msg and "not a file" in msg


def test_os_error_while_reading_is_an_audio_error(tmp_path):
    # a name longer than the file system allows fails in stat() with an OSError other than
    # "not found" (root cannot be denied by file modes, so this is how a test gets one)
    msg = error_for(tmp_path / ("x" * 300 + ".wav"))
    assert "xxxx" in msg and "cannot be read (File name too long)" in msg
