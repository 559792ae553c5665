"""Load any audio file as 16 kHz mono float32, or fail with one line that names the file.

Every engine consumes the same thing: a float32 mono array at 16 kHz (Whisper's rate). What
the file was (rate, channels) is recorded beside the samples, so a result can say a clip was
resampled or mixed down instead of hiding it. Files are read with soundfile (wav, flac, ogg
and whatever else libsndfile reads); headerless `.raw`/`.pcm` files are taken as 16-bit
little-endian 16 kHz mono PCM, the format of the CMU Sphinx test clips.

A short clip is loaded whole (`load_audio`). A recording of hours is not: `info` reads its
header, `LongAudio` stands for it in a data set, and `AudioStream` decodes it forward a block
at a time (mixed down, then resampled by soxr's streaming resampler, which gives the same
samples as resampling the whole), keeping only the window still needed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from voxmeter.errors import AudioError

if TYPE_CHECKING:
    from typing_extensions import Self

SAMPLE_RATE = 16000
RAW_SUFFIXES = (".raw", ".pcm")
SF_ERRORS = (sf.LibsndfileError, RuntimeError, EOFError)  # what libsndfile raises on bad data


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
    except SF_ERRORS as e:
        raise _unreadable(p, e) from None
    # libsndfile can return what it decoded from a cut-off FLAC without complaint; STREAMINFO
    # still says how much there should have been. (Other formats' counts may be estimates.)
    if info.format == "FLAC" and len(x) < info.frames:
        raise AudioError(f"{p}: truncated: header declares {info.frames} frames, read {len(x)}")
    if info.format == "WAV":
        _check_wav_complete(p)
    return x, int(rate)


def _unreadable(p: Path, e: Exception) -> AudioError:
    # libsndfile's text repeats the path and says "Error"; keep only the reason.
    reason = str(e).replace(f"Error opening {str(p)!r}", "").replace("Error :", "")
    reason = reason.strip(" :.") or type(e).__name__
    return AudioError(f"{p}: not a readable audio file, corrupt or truncated ({reason})")


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


# --- long recordings: header facts, and a stream that never holds the whole file -------------


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, from its header alone (nothing is decoded)."""

    path: Path
    sample_rate: int  # the file's own
    channels: int
    frames: int  # at the file's rate (libsndfile may estimate it for OGG and MP3)
    format: str  # libsndfile's name ("FLAC", "WAV", ...) or "RAW"

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def n_samples(self) -> int:
        """Length at 16 kHz: what a stream of the file yields (soxr rounds the same way)."""
        return round(self.frames * SAMPLE_RATE / self.sample_rate)


def info(path: str | Path) -> AudioInfo:
    """Rate, channels and length of `path` without decoding it; AudioError naming it if unusable.

    Catches what the header shows: a missing, empty or unrecognised file, a WAV whose data
    chunk runs past the end, a raw PCM file with an odd byte count. Damage inside the audio
    shows only when it is decoded (by `load_audio` or an `AudioStream`).
    """
    p = Path(path)
    try:
        return _info(p)
    except OSError as e:
        raise AudioError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None


def _info(p: Path) -> AudioInfo:
    _check_file(p)
    if p.suffix.lower() in RAW_SUFFIXES:
        size = p.stat().st_size
        if size % 2:
            raise AudioError(f"{p}: raw 16-bit PCM has an odd byte count ({size}); truncated?")
        head = AudioInfo(p, SAMPLE_RATE, 1, size // 2, "RAW")
    else:
        try:
            i = sf.info(str(p))
        except SF_ERRORS as e:
            raise _unreadable(p, e) from None
        if i.format == "WAV":
            _check_wav_complete(p)
        head = AudioInfo(p, int(i.samplerate), int(i.channels), int(i.frames), str(i.format))
    if head.frames <= 0 or head.sample_rate <= 0:
        raise AudioError(f"{p}: holds no audio samples")
    return head


@dataclass(frozen=True)
class LongAudio:
    """A recording too long to hold in memory: its header facts, and a way to stream it.

    It stands where a `LoadedAudio` stands for a short clip, with the same field names, so
    resampling and mix-down are reported alike; it holds no samples. Each `stream()` call
    opens a fresh `AudioStream` of 16 kHz mono float32 from the start of the file.
    """

    path: Path
    duration_s: float  # frames / the file's rate, from the header
    n_samples: int  # length at 16 kHz
    orig_sample_rate: int
    orig_channels: int
    sample_rate: int = SAMPLE_RATE  # what stream() yields

    @classmethod
    def from_info(cls, head: AudioInfo) -> LongAudio:
        return cls(head.path, head.duration_s, head.n_samples, head.sample_rate, head.channels)

    @property
    def resampled(self) -> bool:
        return self.orig_sample_rate != SAMPLE_RATE

    @property
    def mixed_down(self) -> bool:
        return self.orig_channels > 1

    def stream(self) -> AudioStream:
        return AudioStream(self.path)


class AudioStream:
    """A file as 16 kHz mono float32, decoded forward and kept only as far back as needed.

    `read(start, n)` returns samples [start, start + n) at 16 kHz: fewer at the end of the
    file, none past it. Starts must not decrease, and each read drops what lies before its
    start, so memory stays at about one window plus one decoded block however long the file
    is. That is how Whisper's sequential long-form algorithm reads (windows at a seek that
    only moves forward) and how VAD chunks in time order are read. `blocks(block_s)` is one
    pass in consecutive blocks.

    The file is decoded `decode_s` at a time, mixed to mono by averaging the channels (as
    `load_audio` does) and resampled with soxr's streaming resampler at the same quality as
    `load_audio`, which gives the samples resampling the whole file would give (to float32
    rounding). Each decoded block is checked as it arrives: a read error, NaN or infinite
    samples, or a FLAC shorter than its header raise AudioError naming the file, and so does
    every later read of that stream.
    """

    def __init__(self, path: str | Path, decode_s: float = 1.0) -> None:
        self.info = info(path)
        self.path = self.info.path
        self.n_samples = self.info.n_samples  # from the header
        self.decode_s = decode_s
        rate = self.info.sample_rate
        self._block_frames = max(1, round(decode_s * rate))
        self._resampler = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # stream position of _buf[0]; nothing before it is kept
        self._frames_read = 0  # at the file's rate
        self._eof = False
        self._failed: AudioError | None = None  # once a block fails, every later read does
        self._file = self._open()

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start + n) as a new float32 array; drops everything before `start`."""
        if n < 0:
            raise ValueError(f"AudioStream.read: n must be >= 0, got {n}")
        if start < self._buf_start:
            raise ValueError(
                f"AudioStream.read: sample {start} was already dropped (the stream keeps "
                f"from {self._buf_start}); starts must not decrease"
            )
        if self._failed is not None:
            raise AudioError(str(self._failed))
        end = start + n
        pending, pos = [self._buf], self._buf_start  # pos: stream position of pending[0][0]
        have = pos + len(self._buf)
        while have < end and not self._eof:
            try:
                y = self._next_block()
            except AudioError as e:
                self._failed = e  # the file has moved on: what follows would be misplaced
                raise
            have += len(y)
            if have <= start:  # all of it lies before the window (a skip ahead): keep none
                pending, pos = [], have
            else:
                pending.append(y)
        buf = np.concatenate(pending) if len(pending) > 1 else (pending or [self._buf[:0]])[0]
        cut = min(max(start - pos, 0), len(buf))
        self._buf, self._buf_start = buf[cut:], pos + cut
        return self._buf[:n].copy()

    def blocks(self, block_s: float = 30.0) -> Iterator[np.ndarray]:
        """Consecutive blocks of `block_s` seconds (the last one shorter) from the first sample
        still kept, which for a new stream is the start of the file."""
        n = round(block_s * SAMPLE_RATE)
        if n < 1:
            raise ValueError(f"AudioStream.blocks: block_s must give >= 1 sample, got {block_s}")
        pos = self._buf_start
        while len(x := self.read(pos, n)):
            yield x
            pos += len(x)

    def reopen(self) -> AudioStream:
        """A new stream of the same file from its start (this one keeps its position)."""
        return AudioStream(self.path, self.decode_s)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> sf.SoundFile | BinaryIO:
        p = self.path
        try:
            return open(p, "rb") if self.info.format == "RAW" else sf.SoundFile(str(p))
        except SF_ERRORS as e:
            raise _unreadable(p, e) from None
        except OSError as e:
            raise AudioError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None

    def _next_block(self) -> np.ndarray:
        """The next decoded block at 16 kHz (possibly empty); sets _eof at the end of the file."""
        x = self._decode()
        if x is None:
            self._eof = True
            self._check_complete()
            if self._resampler is None:
                return np.zeros(0, dtype=np.float32)
            return self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if self._resampler is None:
            return x
        return self._resampler.resample_chunk(x, last=False)

    def _decode(self) -> np.ndarray | None:
        """The next block at the file's rate, mixed to mono; None at the end of the file."""
        p, k = self.path, self._block_frames
        try:
            if self.info.format == "RAW":
                data = self._file.read(2 * k)
                x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            else:
                y = self._file.read(k, dtype="float32", always_2d=True)
                x = y.mean(axis=1, dtype=np.float32) if y.shape[1] > 1 else y[:, 0]
        except SF_ERRORS as e:
            raise _unreadable(p, e) from None
        except OSError as e:
            raise AudioError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None
        if not len(x):
            return None
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            t = self._frames_read / self.info.sample_rate
            raise AudioError(f"{p}: {bad} samples are NaN or infinite in the block at {t:.2f} s")
        self._frames_read += len(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _check_complete(self) -> None:
        p, head = self.path, self.info
        if head.format == "FLAC" and self._frames_read < head.frames:
            raise AudioError(
                f"{p}: truncated: header declares {head.frames} frames, read {self._frames_read}"
            )
        if self._frames_read == 0:
            raise AudioError(f"{p}: holds no audio samples")


def stream_blocks(path: str | Path, block_s: float = 30.0) -> Iterator[np.ndarray]:
    """16 kHz mono float32 blocks of `block_s` seconds from any file, never holding it whole."""
    with AudioStream(path) as s:
        yield from s.blocks(block_s)
