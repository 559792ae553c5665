"""Whisper's log-mel spectrogram, for any number of frames (the xT axis).

Both engines use this one function, so any difference between them is the model's, not the
front end's. The recipe is Whisper's: 400-point Hann STFT, hop 160, power, Slaney mel filters,
log10 clamped at 1e-10, floored at (max - 8), then (x + 4) / 4. The clip is zero-padded to
exactly `n_frames` hops; the floor uses the maximum over those frames, which equals the maximum
over a full 30 s window whenever the speech lies inside them (padding only adds minima).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
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
    return torch.from_numpy(np.ascontiguousarray(fb.T, dtype=np.float32))  # (n_mels, n_freq)


@lru_cache(maxsize=2)
def _window() -> torch.Tensor:
    return torch.hann_window(N_FFT)


def frames_for(n_samples: int, step_s: float = 1.0) -> int:
    """xT 'fit': the clip's length in frames, rounded up to a multiple of step_s, capped at 30 s."""
    step = max(2, round(step_s * SAMPLE_RATE / HOP))
    step += step % 2
    frames = -(-n_samples // HOP)
    return min(3000, max(step, -(-frames // step) * step))


def log_mel(audio: np.ndarray, n_frames: int = 3000, n_mels: int = 80) -> torch.Tensor:
    """(1, n_mels, n_frames) float32 log-mel features of 16 kHz mono audio."""
    n = n_frames * HOP
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    x = x[:n] if x.numel() >= n else torch.nn.functional.pad(x, (0, n - x.numel()))
    stft = torch.stft(x, N_FFT, HOP, window=_window(), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels) @ power
    logspec = torch.clamp(mel, min=1e-10).log10()
    logspec = torch.maximum(logspec, logspec.max() - 8.0)
    return ((logspec + 4.0) / 4.0).unsqueeze(0)
