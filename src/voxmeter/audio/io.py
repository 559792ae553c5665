"""Load any audio file as 16 kHz mono float32, or fail with one line that names the file.

Every engine consumes the same thing: a float32 mono array at 16 kHz (Whisper's rate). What
the file was (rate, channels) is recorded beside the samples, so a result can say a clip was
resampled or mixed down instead of hiding it. Files are read with soundfile (wav, flac, ogg
and whatever else libsndfile reads); headerless `.raw`/`.pcm` files are taken as 16-bit
little-endian 16 kHz mono PCM, the format of the CMU Sphinx test clips.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxmeter.errors import AudioError

SAMPLE_RATE = 16000
RAW_SUFFIXES = (".raw", ".pcm")


@dataclass
class LoadedAudio:
    """Samples ready for an engine, and what had to be done to get them."""

    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    sample_rate: int
    duration_s: float
    orig_sample_rate: int
    orig_channels: int
    resampled: bool
    mixed_down: bool
    path: Path


def load_audio(path: str | Path) -> LoadedAudio:
    """Read `path`, mix it to mono, resample it to 16 kHz and check every sample is finite."""
    p = Path(path)
    try:
        return _load(p)
    except OSError as e:  # permissions, I/O errors, a name too long: the file cannot be read
        raise AudioError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None


def _load(p: Path) -> LoadedAudio:
    _check_file(p)
    if p.suffix.lower() in RAW_SUFFIXES:
        x, rate, channels = raw_pcm16(p), SAMPLE_RATE, 1
    else:
        x, rate = _read_soundfile(p)
        channels = x.shape[1]
        # Averaging (not summing) keeps the level of a stereo recording of one voice unchanged.
        x = x.mean(axis=1, dtype=np.float32) if channels > 1 else x[:, 0]
    validate_samples(x, p)
    resampled = rate != SAMPLE_RATE
    if resampled:
        x = soxr.resample(x, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
        # A clip of a few samples at a high rate can resample to nothing.
        validate_samples(x, p)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return LoadedAudio(
        samples=x,
        sample_rate=SAMPLE_RATE,
        duration_s=len(x) / SAMPLE_RATE,
        orig_sample_rate=rate,
        orig_channels=channels,
        resampled=resampled,
        mixed_down=channels > 1,
        path=p,
    )


def raw_pcm16(path: str | Path) -> np.ndarray:
    """Samples of a headerless 16-bit little-endian mono PCM file, as float32 in [-1, 1)."""
    p = Path(path)
    _check_file(p)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise AudioError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None
    if len(data) % 2:
        raise AudioError(f"{p}: raw 16-bit PCM has an odd byte count ({len(data)}); truncated?")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def validate_samples(x: np.ndarray, path: str | Path) -> np.ndarray:
    """Raise AudioError unless `x` is a non-empty 1-D array of finite samples; return it.

    Silence is valid: a silent clip is a legitimate test of a model (it should output nothing).
    """
    if x.ndim != 1:
        raise AudioError(f"{path}: expected mono samples, got an array of shape {x.shape}")
    if x.size == 0:
        raise AudioError(f"{path}: holds no audio samples")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise AudioError(f"{path}: {bad} of {x.size} samples are NaN or infinite")
    return x


def _check_file(p: Path) -> None:
    if not p.exists():
        raise AudioError(f"{p}: no such audio file")
    if not p.is_file():
        raise AudioError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")


def _read_soundfile(p: Path) -> tuple[np.ndarray, int]:
    """(frames x channels float32, rate); every libsndfile failure becomes an AudioError."""
    try:
        info = sf.info(str(p))
        x, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, EOFError) as e:
        # libsndfile's text repeats the path and says "Error"; keep only the reason.
        reason = str(e).replace(f"Error opening {str(p)!r}", "").replace("Error :", "")
        reason = reason.strip(" :.") or type(e).__name__
        raise AudioError(
            f"{p}: not a readable audio file, corrupt or truncated ({reason})"
        ) from None
    # libsndfile can return what it decoded from a cut-off FLAC without complaint; STREAMINFO
    # still says how much there should have been. (Other formats' counts may be estimates.)
    if info.format == "FLAC" and len(x) < info.frames:
        raise AudioError(f"{p}: truncated: header declares {info.frames} frames, read {len(x)}")
    if info.format == "WAV":
        _check_wav_complete(p)
    return x, int(rate)


def _check_wav_complete(p: Path) -> None:
    """Raise if the WAV's data chunk declares more bytes than the file holds.

    libsndfile shortens the frame count of a cut-off WAV to what is present, so the check
    above cannot see it; the declared chunk size can.
    """
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF":
            return  # RF64 or another variant: trust libsndfile
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_len = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                # 0 and 0xFFFFFFFF are what streaming writers leave when the length was unknown.
                if chunk_len not in (0, 0xFFFFFFFF) and pos + 8 + chunk_len > size:
                    have = size - pos - 8
                    raise AudioError(
                        f"{p}: truncated: data chunk declares {chunk_len} bytes, file holds {have}"
                    )
                return
            pos += 8 + chunk_len + (chunk_len & 1)  # chunks are padded to even length
