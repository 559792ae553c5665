"""Whisper's log-mel spectrogram for any number of frames (the xT axis), by two front ends.

Both engines use these functions, so any difference between them is the model's, not the front
end's. The recipe is Whisper's: 400-point periodic Hann STFT, hop 160, power, Slaney mel
filters, log10 clamped at 1e-10, floored at (max - 8), then (x + 4) / 4. The front ends differ
only in *what is padded* to reach `n_frames` (the spec's `workload.frontend`):

- "audio" (openai-whisper, `log_mel`): the clip is zero-padded to exactly `n_frames` hops and
  then transformed, so padded frames are the log-mel of silence, and the floor uses the
  maximum over those frames (which equals the maximum over a full 30 s window whenever the
  speech lies inside them: padding only adds minima).
- "features" (faster-whisper 1.x, `log_mel_clip` then `pad_frames`): the clip alone is
  transformed (with 160 zero samples appended, as its FeatureExtractor does), normalised by
  its own maximum, cut to its content frames (samples // 160) and the *normalised* log-mel is
  zero-padded. A padded frame is then 0.0, a loud value, not silence (-1.5 or lower); this is
  what moves faster-whisper's hypotheses on short clips. The arithmetic follows its numpy
  path operation for operation, so the features are bit-identical to its own.

Everything here is numpy and returns float32 arrays, so a process that runs the ct2 engine
never imports torch (about 195 MiB of RSS, which faster-whisper does not pay either); the hf
engine turns the arrays into tensors itself. Both front ends share one STFT, which equals
openai-whisper's `torch.stft` (centred, reflect-padded frames) to float32 rounding.

The mel projection is numpy's one BLAS call, and it runs on one BLAS thread (threadpoolctl).
Let OpenBLAS use its default (a thread per core) and its worker threads go on spinning after
the call, for long enough to take a core from the encoder and decoder that run next: on a
2-core machine (tiny.en ct2 int8, 2 threads) a 3 s buffer's encode took 26 ms after the
features instead of 13, its decode 128 ms instead of 71, and a 500 ms stream's compute/elapsed
was 0.336 instead of 0.233. The projection itself is small (80 x 201 by the frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
FRONTENDS = ("audio", "features")


BANDS = (80, 128)  # whisper's mel bands (large-v3 has 128): shipped in mel_filters.npz
SHIPPED = Path(__file__).with_name("mel_filters.npz")


def compute_mel_filters(n_mels: int) -> np.ndarray:
    """(n_mels, n_freq) float32 Slaney mel filters, computed by transformers (numpy only)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return np.ascontiguousarray(fb.T, dtype=np.float32)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """(n_mels, n_freq) float32 Slaney mel filters, read-only (one cached copy is shared).
    The usual band counts come from the shipped mel_filters.npz (scripts/make_mel_filters.py:
    transformers' filters, saved, so a process need not import transformers); others are
    computed."""
    key = f"mel_{n_mels}"
    if n_mels in BANDS and SHIPPED.is_file():
        with np.load(SHIPPED) as shipped:
            out = np.ascontiguousarray(shipped[key], dtype=np.float32)
    else:
        out = compute_mel_filters(n_mels)
    out.flags.writeable = False
    return out


@cache
def _blas() -> object:
    """threadpoolctl's controller of the BLAS libraries this process has loaded (found once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def mel_project(power: np.ndarray, n_mels: int) -> np.ndarray:
    """The mel filters applied to a power spectrum, on one BLAS thread (see module doc)."""
    with _blas().limit(limits=1, user_api="blas"):
        return mel_filters(n_mels) @ power


def frames_for(n_samples: int, step_s: float = 1.0) -> int:
    """xT 'fit': the clip's length in frames, rounded up to a multiple of step_s, capped at 30 s."""
    step = max(2, round(step_s * SAMPLE_RATE / HOP))
    step += step % 2
    frames = -(-n_samples // HOP)
    return min(3000, max(step, -(-frames // step) * step))


def _power(x: np.ndarray) -> np.ndarray:
    """(n_freq, len(x) // 160) float32 power spectrum of centred, reflect-padded frames (the
    framing of torch.stft(center=True) and of faster-whisper), the last frame dropped."""
    x = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    spectrum = np.fft.rfft(frames * window, n=N_FFT, axis=-1).T.astype(np.complex64)
    return np.abs(spectrum[:, :-1]) ** 2


def _normalised(power: np.ndarray, n_mels: int) -> np.ndarray:
    """Whisper's scaling of a power spectrum: mel, log10 clamped, floored at max - 8, (x+4)/4."""
    mel = mel_project(power, n_mels)
    logspec = np.log10(np.clip(mel, 1e-10, None))
    logspec = np.maximum(logspec, logspec.max() - 8.0)
    return (logspec + 4.0) / 4.0


def log_mel(audio: np.ndarray, n_frames: int = 3000, n_mels: int = 80) -> np.ndarray:
    """Front end "audio": (1, n_mels, n_frames) log-mel of the clip zero-padded to n_frames."""
    n = n_frames * HOP
    x = np.asarray(audio, dtype=np.float32)[:n]
    x = np.pad(x, (0, n - len(x)))
    return _normalised(_power(x), n_mels)[None]


def log_mel_clip(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Front end "features", first half: (n_mels, len // 160 + 1) normalised log-mel of the clip
    alone, computed as faster-whisper's FeatureExtractor computes it (160 zero samples
    appended, reflect-padded centred frames, numpy float32 FFT, the last frame dropped)."""
    x = np.pad(np.asarray(audio, dtype=np.float32), (0, HOP))
    return _normalised(_power(x), n_mels)


def pad_frames(feats: np.ndarray, n_samples: int, n_frames: int) -> np.ndarray:
    """Front end "features", second half: the content frames (n_samples // 160, as
    faster-whisper counts them) of `log_mel_clip`, cut or zero-padded to n_frames."""
    content = feats[:, : min(n_samples // HOP, n_frames)]
    out = np.zeros((1, feats.shape[0], n_frames), dtype=np.float32)
    out[0, :, : content.shape[1]] = content
    return out


def clip_features(
    audio: np.ndarray, n_frames: int, n_mels: int = 80, frontend: str = "audio"
) -> np.ndarray:
    """(1, n_mels, n_frames) features of one clip by the named front end."""
    if frontend == "audio":
        return log_mel(audio, n_frames, n_mels)
    if frontend == "features":
        return pad_frames(log_mel_clip(audio, n_mels), len(audio), n_frames)
    raise ValueError(f"frontend: expected one of {FRONTENDS}, got {frontend!r}")


def batch_frames(lengths: Sequence[int], frames: int | str, fit_step_s: float) -> int:
    """The frames a batch runs at: the spec's int, or with "fit" the longest clip's fit."""
    if frames == "fit":
        return max(frames_for(n, fit_step_s) for n in lengths)
    return int(frames)


def batch_features(
    audios: Sequence[np.ndarray], n_frames: int, n_mels: int = 80, frontend: str = "audio"
) -> np.ndarray:
    """(B, n_mels, n_frames): every clip brought to n_frames by its own front end."""
    return np.concatenate([clip_features(a, n_frames, n_mels, frontend) for a in audios])


def padding_features(n_frames: int, n_mels: int = 80, frontend: str = "audio") -> np.ndarray:
    """(1, n_mels, n_frames): what the front end pads a clip with, for a clip with no audio
    (the input of the cached 'silence' encoder states): the log-mel of zeros for "audio",
    zeros for "features"."""
    if frontend == "features":
        return np.zeros((1, n_mels, n_frames), dtype=np.float32)
    return log_mel(np.zeros(n_frames * HOP, dtype=np.float32), n_frames, n_mels)
