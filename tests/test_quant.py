"""Dynamic int8: per-channel weights, and full-range activations only where VNNI makes them safe."""

import pytest
import torch
from torch import nn

from voxmeter.compress.quantize import _torch_dynamic
from voxmeter.engines.quant import full_range_is_safe
from voxmeter.measure.envinfo import cpu_info


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(384, 1536), nn.GELU(), nn.Linear(1536, 384))


def quantize_int8(model: nn.Module, flags: list[str]) -> tuple[nn.Module, str]:
    """int8-dynamic (what --precision int8 runs in the hf engine) on the toy model's Linears."""
    return model, _torch_dynamic(model, ["0", "2"], tuple(flags), per_channel=True)


def test_full_range_needs_vnni():
    assert full_range_is_safe(["avx2", "avx512_vnni"])
    assert full_range_is_safe(["avx_vnni"]) and full_range_is_safe(["amx_int8"])
    assert not full_range_is_safe(["avx", "avx2", "fma", "avx512f"])
    assert not full_range_is_safe([])


@pytest.mark.parametrize("flags", [[], ["avx512_vnni"]])
def test_quantize_int8_picks_the_kernel_and_says_which(flags):
    q, method = quantize_int8(_model(), flags)
    linears = [m for m in q.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(linears) == 2
    per_channel = (torch.per_channel_affine, torch.per_channel_symmetric)
    assert all(m.weight().qscheme() in per_channel for m in linears)
    names = {type(m).__name__ for m in linears}
    if flags:
        assert names == {"FullRangeDynamicLinear"} and "8 bits (VNNI)" in method
    else:
        assert names == {"Linear"} and "7 bits, reduced range" in method  # torch's own class


@pytest.mark.skipif(not full_range_is_safe(cpu_info().flags), reason="this CPU has no VNNI")
def test_full_range_is_closer_to_float_than_the_stock_7_bits():
    ref = _model()
    x = torch.randn(1500, 384)
    x[:, :4] *= 20  # a few large channels, as transformer activations have
    with torch.no_grad():
        want = ref(x)
        err = {}
        for name, flags in (("stock", []), ("full", ["avx512_vnni"])):
            q, _ = quantize_int8(_model(), flags)
            err[name] = (q(x) - want).pow(2).mean().sqrt().item()
    assert err["full"] < 0.75 * err["stock"], err
