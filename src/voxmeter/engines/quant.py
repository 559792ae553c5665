"""Post-training quantization of a Whisper model's Linear layers, by scheme and layer group:
the `quant=` schemes, and what the precision axis's int8 runs.

The schemes (spec.QUANT_SCHEMES) differ in what is int8 (weights only, or activations too),
in how finely weights are scaled (per output channel or per tensor) and in which library runs
the matmul. Each quantizes the Linears of the encoder and decoder layers, minus the groups kept
fp32 (engines/groups.py); the conv front end stays fp32. With `embed`, the tied token
embedding and output projection become one int8 matrix, the fp32 one freed. It lives in
engines/ because the hf engine applies it at load; compress/ re-exports it. Why each choice
was made, as measured: docs/compression-notes.md.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from voxmeter.engines.groups import EMBED, PROJ, layer_groups
from voxmeter.engines.int8 import (
    Int8Embedding,
    Int8Projection,
    Int8WeightLinear,
    _per_row_int8,
    full_range_is_safe,
    full_range_linear,
)
from voxmeter.errors import SpecError
from voxmeter.spec import QUANT_SCHEMES

INT4_GROUP_SIZES = (128, 64, 32)  # the CPU int4 kernel's group sizes, coarsest first
INT4_N_MULTIPLE = 16  # the CPU int4 packing needs out_features divisible by this

# -- torchao: imported only when a torchao scheme runs, without its CUDA-extension noise ------

_NOISE = {
    "torchao": "Failed to load ",  # one warning per CUDA-only extension, at import
    "torch.utils._pytree": "is an Enum subclass",  # torch, about an Enum torchao registers
}


class _DropNoise(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@functools.cache
def silence_torchao_noise() -> None:
    """Drop the warnings importing torchao logs on a CPU (nothing else from those loggers).
    transformers imports torchao whenever it is installed, so callers that import
    transformers should call this first."""
    for name, text in _NOISE.items():
        logging.getLogger(name).addFilter(_DropNoise(text))


@functools.cache
def _torchao():
    silence_torchao_noise()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchao
        import torchao.prototype.quantization.int4
        import torchao.quantization
    return torchao


# -- the schemes: each quantizes the named float Linears in place and says how ---------------


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _torch_dynamic(model: nn.Module, names: list[str], flags: tuple, per_channel: bool) -> str:
    import torch.ao.nn.quantized.dynamic as nnqd
    import torch.ao.quantization as tq

    full = full_range_is_safe(flags)
    cls = full_range_linear() if full else nnqd.Linear
    qconfig = tq.per_channel_dynamic_qconfig if per_channel else tq.default_dynamic_qconfig
    with warnings.catch_warnings():
        # torch.ao's deprecation notices: still the CPU's dynamic int8 path in torch 2.13
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        for name in names:
            linear = model.get_submodule(name)
            linear.qconfig = qconfig
            own_bias(linear)  # the packed params keep the bias tensor the Linear had
            _replace(model, name, cls.from_float(linear))
    acts = "8 bits (VNNI)" if full else "7 bits, reduced range (no VNNI)"
    gran = "per-channel" if per_channel else "per-tensor"
    return (
        f"torch.ao dynamic int8 (torch {torch.__version__}, fbgemm): {gran} symmetric int8 "
        f"weights, activations quantized per tensor at run time to {acts}"
    )


def _int8_weight(model: nn.Module, names: list[str], flags: tuple) -> str:
    for name in names:
        _replace(model, name, Int8WeightLinear(model.get_submodule(name)))
    return (
        f"weight-only int8 (voxmeter Int8WeightLinear, torch {torch.__version__}): per-channel "
        "symmetric int8 weights cast to fp32 at each matmul, fp32 activations"
    )


def _torchao_int8_dynamic(model: nn.Module, names: list[str], flags: tuple) -> str:
    ao = _torchao()
    wanted = set(names)
    config = ao.quantization.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    ao.quantization.quantize_(model, config, filter_fn=lambda m, fqn: fqn in wanted)
    return (
        f"torchao {ao.__version__} Int8DynamicActivationInt8WeightConfig (quantize_): per-channel"
        " symmetric int8 weights, activations quantized per token (symmetric) at run time"
    )


def _bf16_in(module: nn.Module, args: tuple) -> tuple:
    return (args[0].to(torch.bfloat16), *args[1:])


def _fp32_out(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    return out.float()


def _torchao_int4_weight(model: nn.Module, names: list[str], flags: tuple) -> str:
    ao = _torchao()
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    if not _int4_kernel_runs():
        raise SpecError(
            "quant: torchao-int4-weight: torch has no int4 weight-only matmul "
            "(_weight_int4pack_mm_for_cpu) on this CPU"
        )
    by_size: dict[int, set[str]] = {}
    left = 0
    for name in names:
        lin = model.get_submodule(name)
        size = next((g for g in INT4_GROUP_SIZES if lin.in_features % g == 0), 0)
        if not size or lin.out_features % INT4_N_MULTIPLE:
            left += 1
            continue
        by_size.setdefault(size, set()).add(name)
        lin.to(torch.bfloat16)
        lin.register_forward_pre_hook(_bf16_in)
        lin.register_forward_hook(_fp32_out)
    for size, group in by_size.items():
        config = PrototypeInt4WeightOnlyConfig(group_size=size, set_inductor_config=False)
        ao.quantization.quantize_(model, config, filter_fn=lambda m, fqn, g=group: fqn in g)
    sizes = "/".join(str(s) for s in sorted(by_size, reverse=True)) or "-"
    note = f"; {left} Linear left fp32 (shape unfit for the int4 kernel)" if left else ""
    return (
        f"torchao {ao.__version__} PrototypeInt4WeightOnlyConfig (quantize_, Int4OpaqueTensor, "
        f"torch's _weight_int4pack_mm_for_cpu): asymmetric 4-bit weights in groups of {sizes} "
        "inputs, bf16 scale and zero per group; activations cast to bf16 around each matmul "
        f"(A16W4; the kernel's fp32 path is scalar), bias bf16, outputs fp32{note}"
    )


@functools.cache
def _int4_kernel_runs() -> bool:
    """Whether torch's CPU int4 packing and matmul run here (a tiny probe, once)."""
    try:
        w = torch.randint(0, 16, (32, 64), dtype=torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w, 1)
        sz = torch.ones(2, 32, 2, dtype=torch.bfloat16)
        x = torch.ones(1, 64, dtype=torch.bfloat16)
        torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, sz)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


_SCHEMES: dict[str, Callable[[nn.Module, list[str], tuple], str]] = {
    "int8-dynamic": lambda m, n, f: _torch_dynamic(m, n, f, per_channel=True),
    "int8-dynamic-tensor": lambda m, n, f: _torch_dynamic(m, n, f, per_channel=False),
    "int8-weight": _int8_weight,
    "torchao-int8-dynamic": _torchao_int8_dynamic,
    "torchao-int4-weight": _torchao_int4_weight,
}


# -- the entry points ------------------------------------------------------------------------


def _known(groups: Iterable[str]) -> str:
    """'conv, enc.0..enc.3, dec.0..dec.3, proj': group names, briefly."""
    out: list[str] = []
    for kind in ("enc.", "dec."):
        run = [g for g in groups if g.startswith(kind)]
        out += [f"{run[0]}..{run[-1]}" if len(run) > 1 else run[0]] if run else []
    return ", ".join(["conv", *out, "proj"])


def check_groups(field: str, names: Iterable[str] | str, model: nn.Module) -> frozenset[str]:
    """The named groups as a set ("a,b" strings split); an unknown one raises SpecError."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    groups = layer_groups(model)
    for name in names:
        if name not in groups:
            raise SpecError(
                f"{field}: unknown layer group {name!r}; this model has {_known(groups)}"
            )
    return frozenset(names)


def _is_float_linear(module: nn.Module) -> bool:
    """An nn.Linear not yet quantized (torchao keeps the class and swaps the weight)."""
    return (
        isinstance(module, nn.Linear)
        and module.weight.dtype == torch.float32
        and not hasattr(type(module.weight), "tensor_data_names")
    )


def quantize(
    model: nn.Module,
    scheme: str,
    *,
    keep: Iterable[str] | str = frozenset(),
    embed: bool = False,
    cpu_flags: Iterable[str] = (),
) -> tuple[nn.Module, str]:
    """Quantize `model` (a WhisperForConditionalGeneration) in place; returns (model, method).

    Every fp32 nn.Linear of the encoder and decoder layers is quantized by `scheme`, except
    those of the `keep` groups; with `embed`, the token embedding and the output projection
    too (one int8 matrix for both). `cpu_flags` decide torch.ao's activation range (VNNI)."""
    if scheme not in QUANT_SCHEMES:
        raise SpecError(f"quant: expected one of {QUANT_SCHEMES}, got {scheme!r}")
    kept = check_groups("keep", keep, model)
    if embed and "proj" in kept:
        raise SpecError(
            "keep: 'proj' keeps the output projection fp32, but quant_embed quantizes it"
        )
    groups = layer_groups(model)
    layers = [g for g in groups if g not in ("conv", "proj")]
    parts = []
    if scheme != "none":
        names = [
            n
            for g in layers
            if g not in kept
            for n in groups[g]
            if _is_float_linear(model.get_submodule(n))
        ]
        done = _SCHEMES[scheme](model, names, tuple(cpu_flags))
        fp32 = ", ".join(["conv (always)", *(g for g in layers if g in kept)])
        parts += [f"{scheme}: {done}", f"{len(names)} Linear layers quantized; fp32: {fp32}"]
    else:
        parts.append("none: Linear layers fp32")
    if embed:
        parts.append(quantize_embedding(model))
    else:
        parts.append("token embedding and output projection fp32 (one tied matrix)")
    own_float_tensors(model)
    return model, "; ".join(parts)


def own_bias(linear: nn.Module) -> None:
    """Give a Linear's bias memory of its own before a quantizer keeps a reference to it."""
    if getattr(linear, "bias", None) is not None:
        linear.bias.data = linear.bias.data.clone()


def own_float_tensors(model: nn.Module) -> None:
    """Copy every plain float parameter and buffer left in `model` into memory of its own.

    transformers loads safetensors weights as views into a memory map of the file. The map
    stays open (and every page that was read stays in the resident set) while any one view
    survives: after quantization, the fp32 layer norms, conv, position embeddings and biases
    would keep all 151 MB of tiny.en's fp32 file resident beside its int8 copy. Copying the few
    survivors (about 25 MB in tiny.en) lets the map close. Call it after quantizing: before, it
    would copy the fp32 matrices that quantization is about to drop."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype.is_floating_point and type(p.data) is torch.Tensor:
                p.data = p.data.clone()
        copies: dict[int, torch.Tensor] = {}  # a buffer two modules share stays shared
        for m in model.modules():
            for name, b in m._buffers.items():
                if b is not None and b.dtype.is_floating_point and type(b) is torch.Tensor:
                    m._buffers[name] = copies.setdefault(id(b), b.clone())


def quantize_embedding(model: nn.Module) -> str:
    """Replace the tied embedding and output projection by one int8 matrix; free the fp32."""
    emb, proj = model.get_submodule(EMBED), model.get_submodule(PROJ)
    if not isinstance(emb, nn.Embedding) or not isinstance(proj, nn.Linear):
        raise SpecError("quant_embed: the token embedding or output projection is not fp32")
    if emb.weight is not proj.weight and not torch.equal(emb.weight, proj.weight):
        raise SpecError("quant_embed: the output projection is not tied to the token embedding")
    q, scale = _per_row_int8(emb.weight)
    _replace(model, EMBED, Int8Embedding(q, scale))
    _replace(model, PROJ, Int8Projection(q, scale))  # the same tensors: one int8 matrix
    return (
        f"token embedding and output projection: one int8 {q.shape[0]}x{q.shape[1]} matrix, "
        "symmetric per-row scales, fp32 matrix freed; the projection quantizes activations "
        "per token at run time (torch._int_mm)"
    )


# -- accounting ------------------------------------------------------------------------------


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds; a torchao tensor subclass is the sum of its inner tensors."""
    names = getattr(type(t), "tensor_data_names", None)
    if names is None:
        return t.numel() * t.element_size()
    names = [*names, *getattr(type(t), "optional_tensor_data_names", ())]
    inner = (getattr(t, n, None) for n in names)
    return sum(_tensor_bytes(x) for x in inner if isinstance(x, torch.Tensor))


def _packed_bytes(module: nn.Module) -> int:
    """A torch.ao dynamic Linear's weights, in packed params that .parameters() cannot see: a
    byte per int8 weight, 16 per scale (fp64 scale and int64 zero point, as the unpacked
    tensor holds them: the hf engine's convention), and the fp32 bias."""
    w, b = module.weight(), module.bias()
    per_channel = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    n_scales = w.q_per_channel_scales().numel() if per_channel else 1
    return w.numel() * w.element_size() + 16 * n_scales + (0 if b is None else b.nbytes)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of `model`'s weights as stored: parameters and buffers (a tensor that two modules
    share counted once; torchao subclasses by their inner tensors) and packed torch.ao ones."""
    total = sum(_tensor_bytes(p) for p in model.parameters())
    total += sum(_tensor_bytes(b) for b in model.buffers())
    for m in model.modules():
        if getattr(m, "_packed_params", None) is not None and callable(getattr(m, "weight", None)):
            total += _packed_bytes(m)
    return total


def apply_quantization(model: nn.Module, comp: Any, cpu_flags: Iterable[str]) -> tuple[Any, str]:
    """Apply a CompressionSettings' quantization (quant, keep, quant_embed) to a loaded fp32
    model; (model, method in words)."""
    keep = frozenset(g.strip() for g in comp.keep.split(",") if g.strip())
    return quantize(model, comp.quant, keep=keep, embed=comp.quant_embed, cpu_flags=cpu_flags)


def cpu_flags() -> tuple[str, ...]:
    """This CPU's flags, which decide torch.ao's activation range (full_range_is_safe)."""
    from voxmeter.measure.envinfo import cpu_info

    return tuple(cpu_info().flags)
