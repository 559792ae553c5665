"""What both Whisper engines share: prompts, token suppression, xV subsampling, detokenising."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from voxmeter.assets.bundled import ModelSource
from voxmeter.assets.convert import special_ids
from voxmeter.assets.dims import ModelDims
from voxmeter.spec import AxisSettings


def prompt_ids(dims: ModelDims) -> list[int]:
    """Greedy transcription prompt without timestamps; multilingual models get English."""
    ids = special_ids(dims)
    if dims.english_only:
        return [ids["sot"], ids["no_timestamps"]]
    return [ids["sot"], ids["en"], ids["transcribe"], ids["no_timestamps"]]


def load_suppress(source: ModelSource, ids: dict[str, int]) -> tuple[list[int], list[int]]:
    """Tokens suppressed at every step, and also at the first step (as CTranslate2 does).

    They come from the CTranslate2 config.json beside the weights; without one, only the
    blank-at-start rule (space and end-of-text) applies.
    """
    cfg: dict = {}
    if source.ct2_dir is not None and (source.ct2_dir / "config.json").is_file():
        try:
            cfg = json.loads((source.ct2_dir / "config.json").read_text())
        except ValueError:
            cfg = {}
    return list(cfg.get("suppress_ids", [])), list(cfg.get("suppress_ids_begin", [220, ids["eot"]]))


def decoder_positions(computed: int, n_audio_ctx: int, axes: AxisSettings) -> int:
    """Positions the decoder cross-attends to: after silence padding, then xV by factor k
    (the same arithmetic the analytic FLOPs use)."""
    from voxmeter.measure.flops import pooled_positions

    n = n_audio_ctx if axes.pad == "silence" else computed
    return pooled_positions(n, axes.stride, axes.pool)


def subsample(states: torch.Tensor, k: int, pool: str) -> torch.Tensor:
    """xV: (B, T, D) encoder states reduced by factor k along T before cross-attention."""
    if k == 1:
        return states
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

    def encode(self, text: str) -> list[int]:
        if self._tok is None:
            return []
        return self._tok.encode(" " + text.strip(), add_special_tokens=False).ids
