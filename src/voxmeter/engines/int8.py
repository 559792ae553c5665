"""int8 modules for the hf engine: torch.ao's dynamic Linear with full-range activations where
VNNI makes that safe, and voxmeter's own int8 Linear, embedding and output projection.

- Weights get one scale per output channel (as CTranslate2 does), not one per tensor.
- Activations are quantized per tensor at run time. torch's dynamic Linear always asks for a
  *reduced* range (7 bits) because on plain AVX2 the u8 x s8 pair sums of `vpmaddubsw` saturate
  int16 at full range. CPUs with VNNI (AVX512-VNNI, AVX-VNNI, AMX-INT8) accumulate straight into
  int32, so there the full 8 bits are safe, and they matter (docs/compression-notes.md). Without
  VNNI the stock 7-bit path is kept, and the result says which one ran.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def full_range_is_safe(cpu_flags: Iterable[str]) -> bool:
    """Whether int8 dot products accumulate without int16 saturation on this CPU."""
    flags = set(cpu_flags)
    return any(f in flags for f in VNNI_FLAGS)


def _dynamic_linear() -> type[nn.Module]:
    import torch.ao.nn.quantized.dynamic as nnqd

    return nnqd.Linear


class _FullRangeMixin:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_params._packed_params  # type: ignore[attr-defined]
        y = torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False)
        return y.to(x.dtype)

    def _get_name(self) -> str:
        return "DynamicQuantizedLinear8bit"


@functools.cache
def full_range_linear() -> type[nn.Module]:
    """torch's dynamic int8 Linear, asking for all 8 bits of activation range (one class)."""
    return type("FullRangeDynamicLinear", (_FullRangeMixin, _dynamic_linear()), {})


def _per_row_int8(w: torch.Tensor, rows: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 rows of `w` and their fp32 scales (an all-zero row gets scale 1).

    Done `rows` rows at a time, so the fp32 temporaries stay small: on a whole 51864x384
    embedding they would add 160 MB to the peak of the very load that int8 should shrink."""
    w = w.detach()
    q = torch.empty(w.shape, dtype=torch.int8)
    scale = torch.empty(w.shape[0], dtype=torch.float32)
    for i in range(0, w.shape[0], rows):
        part = w[i : i + rows].float()
        amax = part.abs().amax(dim=1)
        s = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        q[i : i + rows] = torch.round(part / s[:, None]).clamp_(-127, 127)
        scale[i : i + rows] = s
    return q, scale


class Int8WeightLinear(nn.Module):
    """Weight-only int8 Linear: int8 rows with one fp32 scale each, fp32 activations. The
    weight is cast to fp32 at each matmul and the scales applied to the output columns."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.out_features, linear.in_features
        q, scale = _per_row_int8(linear.weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.qweight.to(x.dtype)) * self.scale
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class Int8Embedding(nn.Module):
    """Token embedding held as int8 rows with one fp32 scale each; a lookup dequantizes only
    the rows it returns, so no fp32 copy of the matrix exists."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].float() * self.scale[ids].unsqueeze(-1)


class Int8Projection(nn.Module):
    """The bias-free output projection over the embedding's own int8 matrix: activations are
    quantized per row (token) at run time and multiplied int8 by int8 (torch._int_mm), so the
    matrix is never dequantized (that copy would be the 80 MB this replaces, at every step)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        amax = rows.abs().amax(dim=1, keepdim=True)
        x_scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        xq = torch.round(rows / x_scale).clamp_(-127, 127).to(torch.int8)
        y = torch._int_mm(xq, self.qweight.t()).float() * x_scale * self.scale
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
