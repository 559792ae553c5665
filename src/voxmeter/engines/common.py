"""What both Whisper engines share: prompts, token suppression, xV subsampling, detokenising.

No torch here (nor in anything it imports at module level): the ct2 engine imports this
module, and a process that runs it must not pay torch's ~195 MiB of RSS. Helpers that take
tensors from the hf engine import torch inside themselves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxmeter.assets.bundled import ModelSource
from voxmeter.assets.convert import special_ids
from voxmeter.assets.dims import ModelDims
from voxmeter.errors import SpecError
from voxmeter.spec import AxisSettings, RunSpec

if TYPE_CHECKING:
    import torch

MAX_INITIAL_TIMESTAMP_S = 1.0  # openai-whisper's and faster-whisper's default


def max_initial_index(n_audio_ctx: int, seconds: float = MAX_INITIAL_TIMESTAMP_S) -> int:
    """Timestamp steps in `seconds`: one step per encoder position of a 30 s window (0.02 s)."""
    return round(seconds / (30.0 / n_audio_ctx))


def sot_sequence(dims: ModelDims) -> list[int]:
    """The start-of-transcript sequence; multilingual models get English transcription."""
    ids = special_ids(dims)
    if dims.english_only:
        return [ids["sot"]]
    return [ids["sot"], ids["en"], ids["transcribe"]]


def prompt_ids(
    dims: ModelDims,
    *,
    timestamps: bool = False,
    prefix: Sequence[int] | None = None,
    forced: Sequence[int] | None = None,
) -> list[int]:
    """A greedy transcription prompt (openai-whisper's initial tokens).

    Without timestamps the sot sequence ends in <|notimestamps|>. A non-empty `prefix` (the
    previous text, for condition_on_previous_text) goes first, after <|startofprev|>, cut to
    its last n_text_ctx // 2 - 1 tokens. `forced` tokens follow the sot sequence: the start
    of the transcription itself, which decoding continues (faster-whisper's `prefix`).
    """
    ids = special_ids(dims)
    prompt = sot_sequence(dims) + ([] if timestamps else [ids["no_timestamps"]])
    if prefix:
        keep = dims.n_text_ctx // 2 - 1
        prompt = [ids["sot_prev"], *list(prefix)[-keep:], *prompt]
    return prompt + list(forced or [])


def batch_prompts(
    dims: ModelDims,
    n: int,
    timestamps: bool,
    prefixes: Sequence[Sequence[int] | None] | None,
    forced: Sequence[Sequence[int] | None] | None = None,
) -> list[list[int]]:
    """One prompt per item of a batch of n."""
    for name, per_item in (("prefixes", prefixes), ("forced prefixes", forced)):
        if per_item is not None and len(per_item) != n:
            raise SpecError(f"decode: {len(per_item)} {name} for a batch of {n}")
    return [
        prompt_ids(
            dims,
            timestamps=timestamps,
            prefix=prefixes[i] if prefixes else None,
            forced=forced[i] if forced else None,
        )
        for i in range(n)
    ]


def token_limit(max_new: int | None, engine_max: int) -> int:
    """Tokens a decode may generate: the caller's `max_new` where given, never more than the
    engine's own limit."""
    return min(max_new or engine_max, engine_max)


def frontend_of(spec: RunSpec) -> str:
    """The spec's front end ("audio" or "features"); "audio" where the spec has none."""
    return getattr(getattr(spec, "workload", None), "frontend", "audio")


def as_batch(audios: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """A list of clips; one 1-D array is taken as a batch of one (for older callers)."""
    if isinstance(audios, np.ndarray) and audios.ndim == 1:
        return [audios]
    out = list(audios)
    if not out:
        raise SpecError("features: an empty batch (no clips)")
    return out


def steps_per_item(n_steps: int | Sequence[int] | None, n: int) -> list[int] | None:
    """Forced decoder steps (cost-only models) per item of a batch of n, or None."""
    if n_steps is None:
        return None
    steps = [int(n_steps)] * n if isinstance(n_steps, int) else [int(s) for s in n_steps]
    if len(steps) != n or min(steps) < 1:
        raise SpecError(f"decode: n_steps must be >= 1 for each of {n} items, got {n_steps!r}")
    return steps


def load_suppress(source: ModelSource, ids: dict[str, int]) -> tuple[list[int], list[int]]:
    """Tokens suppressed at every step, and also at the first step (as CTranslate2 does).

    They come from the CTranslate2 config.json beside the weights, or for a transformers
    directory (a compressed model) from its generation_config.json (`suppress_tokens`,
    `begin_suppress_tokens`); without either, only the blank-at-start rule (space and
    end-of-text) applies.
    """
    every, begin = "suppress_ids", "suppress_ids_begin"
    path = source.ct2_dir / "config.json" if source.ct2_dir is not None else None
    if source.ct2_dir is None and source.hf_dir is not None:
        path = source.hf_dir / "generation_config.json"
        every, begin = "suppress_tokens", "begin_suppress_tokens"
    cfg: dict = {}
    if path is not None and path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except ValueError:
            cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    return list(cfg.get(every) or []), list(cfg.get(begin) or [220, ids["eot"]])


def decoder_positions(computed: int, n_audio_ctx: int, axes: AxisSettings) -> int:
    """Positions the decoder cross-attends to: after silence padding, then xV by factor k
    (the same arithmetic the analytic FLOPs use)."""
    from voxmeter.measure.flops import pooled_positions

    n = n_audio_ctx if axes.pad == "silence" else computed
    return pooled_positions(n, axes.stride, axes.pool)


def subsample(states: np.ndarray | torch.Tensor, k: int, pool: str) -> np.ndarray | torch.Tensor:
    """xV: (B, T, D) encoder states reduced by factor k along T before cross-attention.

    "stride" keeps every k-th state; "avg" averages each full group of k, dropping a shorter
    tail as torch's avg_pool1d does (fewer than k states average into one). A numpy array (the
    ct2 engine's) gets numpy, a torch tensor (the hf engine's) torch's own kernels, so the
    ct2 path never imports torch; the two give the same numbers (tests/test_engines.py).
    """
    if k == 1:
        return states
    if isinstance(states, np.ndarray):
        return _subsample_numpy(states, k, pool)
    return _subsample_torch(states, k, pool)


def _subsample_numpy(states: np.ndarray, k: int, pool: str) -> np.ndarray:
    if pool == "stride":
        return np.ascontiguousarray(states[:, ::k])
    b, t, d = states.shape
    if t < k:
        return states.mean(axis=1, keepdims=True, dtype=states.dtype)
    n = t // k
    return states[:, : n * k].reshape(b, n, k, d).mean(axis=2, dtype=states.dtype)


def _subsample_torch(states: torch.Tensor, k: int, pool: str) -> torch.Tensor:
    import torch.nn.functional as F

    if pool == "stride":
        return states[:, ::k].contiguous()
    if states.shape[1] < k:
        return states.mean(dim=1, keepdim=True)
    return F.avg_pool1d(states.transpose(1, 2), k, k).transpose(1, 2).contiguous()


class Tokenizer:
    """Detokeniser over the tokenizer.json shipped with the weights (tokenizers library)."""

    def __init__(self, path: Path | None) -> None:
        self._tok = None
        if path is not None and Path(path).is_file():
            from tokenizers import Tokenizer as _T

            self._tok = _T.from_file(str(path))

    @property
    def available(self) -> bool:
        return self._tok is not None

    def decode(self, tokens: list[int]) -> str:
        if self._tok is None:
            return ""
        return self._tok.decode(tokens, skip_special_tokens=True).strip()

    def piece(self, token: int) -> str:
        """One token's text as it sits in a sentence (a leading space starts a word)."""
        if self._tok is None:
            return ""
        return self._tok.decode([token], skip_special_tokens=True)

    def text(self, tokens: list[int], eot: int) -> str:
        """The text of generated tokens, timestamp and other special tokens left out."""
        return self.decode([t for t in tokens if t < eot])

    def encode(self, text: str) -> list[int]:
        if self._tok is None:
            return []
        return self._tok.encode(" " + text.strip(), add_special_tokens=False).ids


def features_for(
    spec: RunSpec,
    dims: ModelDims,
    audios: Sequence[np.ndarray] | np.ndarray,
    n_frames: int | None,
) -> np.ndarray:
    """(B, n_mels, T) float32 features of a batch by the spec's front end.

    T is `n_frames` if given, else the spec's frames: an int, or with "fit" the longest clip's
    fitted length (every clip of the batch runs at it).
    """
    from voxmeter.audio.features import batch_features, batch_frames

    clips = as_batch(audios)
    a = spec.axes
    t = (
        batch_frames([len(c) for c in clips], a.frames, a.fit_step_s)
        if n_frames is None
        else n_frames
    )
    if isinstance(t, bool) or not isinstance(t, int) or not 2 <= t <= 3000:
        raise SpecError(f"features: n_frames must be an integer in [2, 3000], got {t!r}")
    return batch_features(clips, t, dims.n_mels, frontend_of(spec))


def silence_features(spec: RunSpec, dims: ModelDims) -> np.ndarray:
    """(1, n_mels, 3000): what the front end pads with, over a whole window (the input of the
    cached silence states that pad="silence" appends past the computed positions)."""
    from voxmeter.audio.features import padding_features

    return padding_features(3000, dims.n_mels, frontend_of(spec))


def encode_batch(
    engine: Any, audios: Sequence[np.ndarray], n_frames: int, stage: Any, rec: dict
) -> tuple[list[int], Any]:
    """Features and encoder states of a batch, timed into `rec` as the feat and enc stages:
    the input frames each item ran at, and the batch's Encoded.

    With workload.encoder_batch 0 (or >= B) the batch runs as one tensor at n_frames.
    Otherwise the encoder runs parts of encoder_batch items and the decoder still gets the
    whole batch: under frames="fit" with silence padding each part runs at its own longest
    item's fitted length (the decoder sees the same positions either way, the silence states
    past them being exact), so a short item no longer pays for the batch's longest; under a
    fixed frames every part runs at n_frames.
    """
    eb = engine.spec.workload.encoder_batch
    b = len(audios)
    if not eb or eb >= b:
        with stage("feat", rec):
            feats = engine.features(audios, n_frames)
        with stage("enc", rec):
            enc = engine.encode(feats)
        return [int(feats.shape[-1])] * b, enc
    a = engine.spec.axes
    own = a.frames == "fit" and a.pad == "silence"
    parts = [list(audios[i : i + eb]) for i in range(0, b, eb)]
    frames = [
        min(n_frames, max(engine.n_frames(len(x)) for x in part)) if own else n_frames
        for part in parts
    ]
    with stage("feat", rec):
        feats = [engine.features(part, f) for part, f in zip(parts, frames)]
    with stage("enc", rec):
        enc = engine.join([engine.encode(f) for f in feats])
    per_item = [f for part, f in zip(parts, frames) for _ in part]
    return per_item, enc
