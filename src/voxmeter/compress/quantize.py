"""Post-training quantization, as compress/ sees it: the schemes themselves run at load and
live in engines/quant.py (re-exported here); fake quantization, which probes one layer group
at a time for the sensitivity map without changing the modules, lives here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from voxmeter.engines.groups import layer_groups
from voxmeter.engines.int8 import Int8Embedding, Int8Projection, Int8WeightLinear
from voxmeter.engines.quant import (
    _SCHEMES,
    _int4_kernel_runs,
    _replace,
    _torch_dynamic,
    check_groups,
    own_bias,
    own_float_tensors,
    quantize,
    quantize_embedding,
    silence_torchao_noise,
    weight_bytes,
)
from voxmeter.errors import SpecError

__all__ = [
    "_SCHEMES",
    "Int8Embedding",
    "Int8Projection",
    "Int8WeightLinear",
    "_int4_kernel_runs",
    "_replace",
    "_torch_dynamic",
    "check_groups",
    "fake_quantize",
    "fake_quantized",
    "own_bias",
    "own_float_tensors",
    "quantize",
    "quantize_embedding",
    "silence_torchao_noise",
    "weight_bytes",
]


# -- fake quantization, for sensitivity analysis ---------------------------------------------


def fake_quantized(w: torch.Tensor, bits: int = 8, per_channel: bool = True) -> torch.Tensor:
    """`w` rounded to symmetric `bits`-bit levels and back, with one scale per output channel
    (dim 0: a Linear's row, a Conv1d's filter) or one for the whole tensor."""
    qmax = 2 ** (bits - 1) - 1
    dims = tuple(range(1, w.dim())) if per_channel else tuple(range(w.dim()))
    amax = w.abs().amax(dim=dims, keepdim=True)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return torch.round(w / scale).clamp_(-qmax, qmax) * scale


@contextlib.contextmanager
def fake_quantize(
    model: nn.Module, group: str, bits: int = 8, *, per_channel: bool = True
) -> Iterator[nn.Module]:
    """Within the block, the weights of every Linear and Conv1d of `group` are fake-quantized
    in place (fp32, symmetric); on exit the originals come back bit for bit. "proj" rounds the
    tied token embedding too, as quant_embed would."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise SpecError(f"bits: expected an integer from 2 to 16, got {bits!r}")
    (name,) = check_groups("group", [group], model)
    weights: dict[int, torch.Tensor] = {}
    for member in layer_groups(model)[name]:
        m = model.get_submodule(member)
        if isinstance(m, nn.Linear | nn.Conv1d) and m.weight.dtype.is_floating_point:
            weights.setdefault(id(m.weight), m.weight)
    saved = [w.detach().clone() for w in weights.values()]
    try:
        with torch.no_grad():
            for w in weights.values():
                w.copy_(fake_quantized(w, bits, per_channel))
        yield model
    finally:
        with torch.no_grad():
            for w, orig in zip(weights.values(), saved):
                w.copy_(orig)
