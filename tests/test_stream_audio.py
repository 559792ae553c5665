"""AudioStream, info and LongAudio: long files read window by window, never held whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf
import soxr

from voxmeter.audio.io import (
    SAMPLE_RATE,
    AudioStream,
    LongAudio,
    info,
    load_audio,
    stream_blocks,
)
from voxmeter.data.datasets import SAMPLE_DIR
from voxmeter.errors import AudioError

CLIPS = ("librivox-0870", "cards-005", "goforward")  # real speech from the bundled set


def noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((round(seconds * rate), channels)) * 0.1
    return x.astype(np.float32)


def test_44k_stereo_streamed_equals_resampling_the_whole(tmp_path):
    x = noise(7.3, 44100, channels=2)
    path = tmp_path / "stereo.wav"
    sf.write(path, x, 44100, subtype="FLOAT")
    whole = soxr.resample(x.mean(axis=1, dtype=np.float32), 44100, SAMPLE_RATE, quality="HQ")

    with AudioStream(path, decode_s=0.37) as s:  # decode blocks that do not divide the file
        streamed = np.concatenate(list(s.blocks(2.5)))
        assert s.n_samples == len(whole)

    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    np.testing.assert_allclose(streamed, load_audio(path).samples, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_n_samples_from_the_header_is_what_the_stream_yields(tmp_path, rate):
    path = tmp_path / f"x{rate}.flac"
    sf.write(path, noise(3.001, rate), rate, subtype="PCM_16")
    head = info(path)
    assert (head.sample_rate, head.channels, head.format) == (rate, 1, "FLAC")
    assert head.duration_s == pytest.approx(3.001, abs=1 / rate)
    total = sum(len(b) for b in stream_blocks(path, block_s=1.0))
    assert total == head.n_samples == len(load_audio(path).samples)


def test_read_serves_forward_overlapping_windows_and_drops_the_past(tmp_path):
    path = tmp_path / "clip.flac"
    sf.write(path, noise(20.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    ref = load_audio(path).samples
    s = AudioStream(path)
    # Whisper-like windows: 5 s long, each starting before the last one ended (or at it).
    for start in (0, 30_000, 30_000, 75_000, 200_000, 310_000):
        np.testing.assert_array_equal(s.read(start, 80_000), ref[start : start + 80_000])
    assert len(s.read(len(ref) - 10, 100)) == 10  # shorter at the end
    assert len(s.read(len(ref) + 5, 100)) == 0  # nothing past it
    with pytest.raises(ValueError, match="already dropped"):
        s.read(310_000, 10)
    s.close()


def test_raw_pcm_streams_like_it_loads(tmp_path):
    pcm = (noise(2.0, SAMPLE_RATE)[:, 0] * 32767).astype("<i2")
    path = tmp_path / "x.raw"
    path.write_bytes(pcm.tobytes())
    streamed = np.concatenate(list(stream_blocks(path, block_s=0.3)))
    np.testing.assert_array_equal(streamed, load_audio(path).samples)
    assert info(path).format == "RAW"


def test_long_audio_holds_no_samples_and_streams(tmp_path):
    path = tmp_path / "stereo.flac"
    sf.write(path, noise(2.0, 22050, channels=2), 22050, subtype="PCM_16")
    la = LongAudio.from_info(info(path))
    assert (la.orig_sample_rate, la.orig_channels, la.sample_rate) == (22050, 2, SAMPLE_RATE)
    assert la.resampled and la.mixed_down
    assert not any(isinstance(v, np.ndarray) for v in vars(la).values())
    with la.stream() as s:
        assert sum(len(b) for b in s.blocks(0.5)) == la.n_samples


def test_bad_files_are_one_line_audio_errors_naming_the_file(tmp_path):
    missing = tmp_path / "missing.flac"
    with pytest.raises(AudioError, match="missing.flac: no such audio file"):
        AudioStream(missing)
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"not audio at all" * 20)
    with pytest.raises(AudioError, match="junk.flac: not a readable audio file"):
        info(junk)
    odd = tmp_path / "odd.raw"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(AudioError, match="odd.raw: raw 16-bit PCM has an odd byte count"):
        AudioStream(odd)
    for e in _errors_while_streaming(tmp_path):
        assert "\n" not in str(e)


def _errors_while_streaming(tmp_path: Path) -> list[AudioError]:
    """Damage past the header shows when the stream reaches it, named by file and place."""
    errors = []
    nan = noise(4.0, SAMPLE_RATE)
    nan[3 * SAMPLE_RATE + 7] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, nan, SAMPLE_RATE, subtype="FLOAT")
    s = AudioStream(path)
    assert len(s.read(0, 2 * SAMPLE_RATE)) == 2 * SAMPLE_RATE  # the audio before it is fine
    with pytest.raises(AudioError, match=r"nan.wav: 1 samples are NaN or infinite .* 3.00 s"):
        s.read(2 * SAMPLE_RATE, 2 * SAMPLE_RATE)
    errors.append(_raised(lambda: s.read(2 * SAMPLE_RATE, 1)))

    whole = tmp_path / "whole.flac"
    sf.write(whole, noise(6.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(AudioError, match="cut.flac: (truncated|not a readable)"):
        list(stream_blocks(cut, block_s=1.0))
    errors.append(_raised(lambda: list(stream_blocks(cut))))
    return errors


def _raised(fn) -> AudioError:
    try:
        fn()
    except AudioError as e:
        return e
    raise AssertionError("expected an AudioError")


def rss() -> int:
    return psutil.Process().memory_info().rss


@pytest.mark.parametrize(("rate", "channels", "hours"), [(16000, 1, 2.0), (22050, 2, 1.0)])
def test_hours_long_file_streams_in_bounded_memory_with_clips_at_their_offsets(
    tmp_path, rate, channels, hours
):
    """Hours of silence with real clips at known offsets, written and read block by block.

    At 16 kHz mono (2 h) the clips come back sample for sample; at 22.05 kHz stereo (1 h:
    writing and resampling 2 h of it took 12 s) the stream's output around each clip equals
    soxr's resampling of that clip with silence around it (offsets are multiples of 441
    frames, 20 ms, so both sample grids line up).
    """
    step = 441
    total = round(hours * 3600 * rate)
    clips = {}
    for k, name in enumerate(CLIPS):
        x = load_audio(SAMPLE_DIR / f"{name}.flac").samples
        if rate != SAMPLE_RATE:
            x = soxr.resample(x, SAMPLE_RATE, rate, quality="HQ")
        x = np.round(np.clip(x, -1, 1 - 2**-15) * 32768).astype(np.int16)  # exact in PCM_16
        # near the start, across a write-block and read-block boundary mid-file, near the end
        at = (rate, total // 2 - rate * 3, total - len(x) - rate)[k]
        clips[name] = (at - at % step, x)
    path = tmp_path / "hours.flac"
    write_in_blocks(path, rate, channels, total, clips)

    expected = {}
    for name, (at, x) in clips.items():
        a = at * SAMPLE_RATE // rate  # exact: `at` is a multiple of 441
        if rate == SAMPLE_RATE:
            expected[name] = (a, x.astype(np.float32) / 32768)
        else:
            pad = step * 10
            around = np.concatenate([np.zeros(pad), x / 32768, np.zeros(pad)]).astype(np.float32)
            y = soxr.resample(around, rate, SAMPLE_RATE, quality="HQ")
            lead = pad * SAMPLE_RATE // rate
            expected[name] = (a - lead, y)

    before = rss()
    peak = before
    got = {name: np.zeros(len(y), dtype=np.float32) for name, (_, y) in expected.items()}
    rest_energy, n = 0.0, 0
    with AudioStream(path) as s:
        assert s.n_samples == round(total * SAMPLE_RATE / rate)
        for block in s.blocks(30.0):
            peak = max(peak, rss())
            outside = block.copy()
            for name, (a, y) in expected.items():
                lo, hi = max(a, n), min(a + len(y), n + len(block))
                if lo < hi:
                    got[name][lo - a : hi - a] = block[lo - n : hi - n]
                    outside[lo - n : hi - n] = 0
            rest_energy += float(np.sum(outside.astype(np.float64) ** 2))
            n += len(block)

    assert n == round(total * SAMPLE_RATE / rate)
    decoded_bytes = n * 4  # float32 at 16 kHz: what holding it whole would take
    assert peak - before < min(100 * 2**20, decoded_bytes / 4), (peak - before, decoded_bytes)
    for name, (_, y) in expected.items():
        if rate == SAMPLE_RATE:
            np.testing.assert_array_equal(got[name], y, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], y, atol=1e-4, err_msg=name)
    assert rest_energy < 1e-6  # silence everywhere else


def write_in_blocks(path: Path, rate: int, channels: int, total: int, clips: dict) -> None:
    """Silence with `clips` (name -> (frame offset, int16 samples)), a minute per write."""
    block = rate * 60
    with sf.SoundFile(path, "w", rate, channels, "PCM_16", format="FLAC") as f:
        for start in range(0, total, block):
            buf = np.zeros((min(block, total - start), channels), dtype=np.int16)
            for at, x in clips.values():
                lo, hi = max(at, start), min(at + len(x), start + len(buf))
                if lo < hi:
                    buf[lo - start : hi - start] = x[lo - at : hi - at, None]
            f.write(buf)
