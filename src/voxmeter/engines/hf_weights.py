"""Whisper weights for the hf engine: a transformers directory, or a compressed model
directory (compress/artifact.py writes it) whose shapes transformers' config cannot express.

A compressed directory is a transformers Whisper directory plus `voxmeter.json` (what made
it, and the quantization it carries). Shapes that WhisperConfig cannot hold (a different head
count or FFN width per layer, a Linear replaced by two thin ones) are rebuilt from the saved
tensors' shapes before the weights load strictly, so a file that does not match its own shapes
fails loudly. Reading lives here, below compress/, so that engines never import compress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from voxmeter.errors import ModelError

META = "voxmeter.json"
FORMAT = 1
HEAD_DIM = 64  # Whisper's head width at every size; pruning removes whole heads


class LowRankLinear(nn.Sequential):
    """Two thin Linears standing in for one: x -> x A^T -> (x A^T) B^T + bias."""

    def __init__(self, first: nn.Linear, second: nn.Linear) -> None:
        super().__init__(first, second)

    @property
    def in_features(self) -> int:
        return self[0].in_features

    @property
    def out_features(self) -> int:
        return self[-1].out_features

    @property
    def rank(self) -> int:
        return self[0].out_features

    def dense_params(self) -> int:
        """Parameters the dense Linear it replaced held (weight and bias)."""
        bias = self[-1].bias
        return self.in_features * self.out_features + (0 if bias is None else bias.numel())


def quiet_transformers() -> None:
    """Ready transformers for a voxmeter run, before its model code is imported.

    - Its weight-loading bar and notices would be noise on our stderr.
    - It imports torchao at model-loading time whenever torchao is installed (for its own
      torchao quantizer): ~11 MiB of RSS and half a second in every hf run, and warnings
      about CUDA kernels a CPU build cannot load. voxmeter calls torchao itself, only for its
      torchao quantization schemes, so transformers is told torchao is absent and the plain
      fp32 and int8 runs keep the footprint they had before torchao was a dependency.
      Harmless if transformers changes: the check is only answered earlier.
    """
    import transformers.utils as tu
    import transformers.utils.import_utils as iu
    from transformers.utils import logging as hf_logging

    def absent(*args: object, **kwargs: object) -> bool:
        return False

    iu.is_torchao_available = absent  # type: ignore[assignment]
    tu.is_torchao_available = absent  # type: ignore[attr-defined]
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def is_artifact(path: Path) -> bool:
    return (Path(path) / META).is_file()


def read_meta(path: Path) -> dict[str, Any]:
    from voxmeter.assets.bundled import read_json_object

    meta = read_json_object(Path(path) / META)
    if meta.get("format") != FORMAT:
        raise ModelError(f"{Path(path) / META}: format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def carried_quantization(path: Path | None) -> dict[str, Any]:
    """The quantization a compressed directory carries (`voxmeter compress` with quant=...):
    the CompressionSettings fields quant, quant_embed and keep; {} for any other directory."""
    if path is None or not is_artifact(Path(path)):
        return {}
    carried = read_meta(Path(path)).get("quantization") or {}
    if not isinstance(carried, dict) or set(carried) - {"quant", "quant_embed", "keep"}:
        raise ModelError(f"{Path(path) / META}: 'quantization' is not quant/quant_embed/keep")
    return carried


def load_model(path: Path) -> Any:
    """The WhisperForConditionalGeneration saved in `path`, its shapes rebuilt, weights strict."""
    import torch
    from safetensors.torch import load_file
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    path = Path(path)
    try:
        config = WhisperConfig.from_json_file(str(path / "config.json"))
        state = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read the compressed model ({e})") from None
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    reshape_to(model, state)
    try:
        model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not fit their own shapes ({e})") from None
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelError(
            f"{path}: model.safetensors lacks {len(missing)} tensors ({missing[0]}, ...)"
        )
    for name, buf in model.named_buffers():
        if buf.is_meta:  # non-persistent buffers: recompute as a fresh model would
            raise ModelError(f"{path}: buffer {name} was not restored")
    return model.eval()


def reshape_to(model: Any, state: dict[str, Any]) -> None:
    """Give `model` the module shapes its saved `state` has: resized Linears, Linears split in
    two (low-rank `name.0` / `name.1`, rebuilt as the LowRankLinear that made them), and each
    attention's head count from its q_proj."""
    from torch import nn

    modules = dict(model.named_modules())
    for name, mod in list(modules.items()):
        if not isinstance(mod, nn.Linear) or name == "proj_out":
            continue
        w = state.get(f"{name}.weight")
        first, second = state.get(f"{name}.0.weight"), state.get(f"{name}.1.weight")
        if w is not None and tuple(w.shape) != tuple(mod.weight.shape):
            new: nn.Module = _linear(w.shape[1], w.shape[0], f"{name}.bias" in state)
        elif w is None and first is not None and second is not None:
            new = LowRankLinear(
                _linear(first.shape[1], first.shape[0], f"{name}.0.bias" in state),
                _linear(second.shape[1], second.shape[0], f"{name}.1.bias" in state),
            )
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent], attr, new)
    for name, mod in model.named_modules():
        if hasattr(mod, "q_proj") and hasattr(mod, "num_heads"):
            mod.num_heads = mod.q_proj.out_features // HEAD_DIM  # what prune.py sets


def _linear(n_in: int, n_out: int, bias: bool) -> Any:
    import torch
    from torch import nn

    with torch.device("meta"):
        return nn.Linear(int(n_in), int(n_out), bias=bias)
