"""torch.ao dynamic int8 for the hf engine (compress/quantize.py's int8 schemes), with two choices
made for accuracy.

- Weights get one scale per output channel (as CTranslate2 does), not one per tensor.
- Activations are quantized per tensor at run time. torch's dynamic Linear always asks for a
  *reduced* range (7 bits) because on plain AVX2 the u8 x s8 pair sums of `vpmaddubsw` saturate
  int16 at full range. CPUs with VNNI (AVX512-VNNI, AVX-VNNI, AMX-INT8) accumulate straight into
  int32, so there the full 8 bits are safe, and they matter: on the default set tiny.en int8
  went from 17.3% to 14.6% WER at full settings (fp32: 15.1%), base from 17.6% to 13.4%.
  Without VNNI the stock 7-bit path is kept, and the result says which one ran.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
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
