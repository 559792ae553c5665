"""Low-rank factorisation: each Linear of the transformer layers becomes two thin Linears.

A weight W (out x in) with singular values s_1 >= s_2 >= ... is replaced by its truncated SVD
W ~ B A, A = sqrt(S_r) Vh_r (r x in), B = U_r sqrt(S_r) (out x r); the square root of the
singular values goes to both factors so neither holds all the scale (better conditioned for
fine-tuning afterwards, the same product). By Eckart-Young this is the best rank-r
approximation in the Frobenius norm, and its relative error is sqrt(1 - kept energy).

The rank per layer is the smallest r whose singular values keep `energy` of the squared
(Frobenius) energy, sum(s_1..s_r ** 2) >= energy * sum(s ** 2): one knob for every layer, the
rank following each layer's own spectrum. A layer is replaced only when the two factors are
smaller than the weight, r * (in + out) < in * out; otherwise (always at energy 1.0, where r is
the full rank) it stays dense and its report entry reads (full rank, full rank).

Only the Linears of the encoder and decoder layers (attention q/k/v/out, cross-attention,
fc1/fc2) are factorised: the convolutions are not Linears, and the token embedding is tied to
the output projection, which a factorisation would untie.

The replacement is `LowRankLinear`, an `nn.Sequential(Linear(in, r, bias=False),
Linear(r, out, bias=...))` that also answers `in_features`, `out_features` and `rank`, so code
that calls the module, or reads a Linear's widths, works on either.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from voxmeter.engines.hf_weights import LowRankLinear
from voxmeter.errors import SpecError

__all__ = ["LowRankLinear", "factorize", "is_low_rank", "rank_for_energy"]


def is_low_rank(m: nn.Module) -> bool:
    """A factorised Linear: a LowRankLinear, or the plain Sequential of two Linears (the first
    without bias) that a saved model is rebuilt as (compress/artifact.py)."""
    return (
        isinstance(m, nn.Sequential)
        and len(m) == 2
        and all(type(x) is nn.Linear for x in m)
        and m[0].bias is None
        and m[0].out_features == m[1].in_features
    )


def _dense_params(m: nn.Sequential) -> int:
    bias = m[-1].bias
    return m[0].in_features * m[-1].out_features + (bias.numel() if bias is not None else 0)


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """The smallest r with sum(s[:r] ** 2) >= energy * sum(s ** 2); s sorted descending."""
    e2 = s.double() ** 2
    cum = torch.cumsum(e2, 0)
    if cum[-1] <= 0:
        return 1
    r = int(torch.searchsorted(cum, energy * cum[-1]).item()) + 1
    return min(r, len(s))


def weight_svd(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, s, Vh) of the weight, in float64 (a float32 SVD loses the small singular values).

    On one thread: LAPACK's SVD of a matrix a few hundred wide is mostly sequential steps, and
    threads only add barriers; on a busy 2-core machine the 64 tiny.en layer Linears took
    3.2 s on one thread and 16-27 s on two.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
    finally:
        torch.set_num_threads(threads)


def split_linear(
    linear: nn.Linear, rank: int, svd: tuple[torch.Tensor, ...] | None = None
) -> LowRankLinear:
    """`linear` as a LowRankLinear of rank `rank` (truncated SVD; `svd` = its `weight_svd`
    when already computed), with the original dtype, device and bias."""
    w = linear.weight.detach()
    u, s, vh = svd if svd is not None else weight_svd(linear)
    root = s[:rank].sqrt()
    first = nn.Linear(linear.in_features, rank, bias=False, device=w.device, dtype=w.dtype)
    second = nn.Linear(
        rank, linear.out_features, bias=linear.bias is not None, device=w.device, dtype=w.dtype
    )
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if linear.bias is not None:
            second.bias.copy_(linear.bias.detach())
    first.train(linear.training)
    second.train(linear.training)
    return LowRankLinear(first, second)


def _selected(name: str, include: Iterable[str] | None) -> bool:
    if include is None:
        return True
    return any(name == p or name.startswith(p + ".") for p in include)


def layer_linears(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """(qualified name, parent, attribute, Linear) for the dense Linears inside the encoder
    and decoder layers (not the embeddings, convolutions or output projection)."""
    found = []
    for stack in ("encoder", "decoder"):
        layers = getattr(model.model, stack).layers
        prefix = f"model.{stack}.layers"
        for parent_name, parent in layers.named_modules(prefix=prefix):
            if is_low_rank(parent):
                continue
            for attr, child in parent.named_children():
                if type(child) is nn.Linear:
                    found.append((f"{parent_name}.{attr}", parent, attr, child))
    return found


def factorize(
    model: nn.Module, energy: float, *, include: Iterable[str] | None = None
) -> dict[str, tuple[int, int]]:
    """Factorise the layers' Linears in place at `energy`; returns, per Linear, (rank kept,
    full rank), the two equal where the layer stayed dense.

    include: module-name prefixes to restrict it to (e.g. "model.decoder" or
        "model.encoder.layers.0.fc1"); None = every layer Linear. Layers already factorised
        are left as they are (and not reported).
    """
    if isinstance(energy, bool) or not isinstance(energy, int | float) or not 0 < energy <= 1:
        raise SpecError(f"lowrank_energy: must be in (0, 1], got {energy!r}")
    include = None if include is None else list(include)
    if include is not None:
        names = [n for n, _ in model.named_modules()]
        for p in include:
            if not any(_selected(n, [p]) for n in names):
                raise SpecError(f"include: {p!r} names no module of the model")
    report: dict[str, tuple[int, int]] = {}
    for name, parent, attr, linear in layer_linears(model):
        if not _selected(name, include):
            continue
        svd = weight_svd(linear)  # one decomposition per layer: it is most of the cost
        full = len(svd[1])
        r = rank_for_energy(svd[1], energy)
        if (
            r * (linear.in_features + linear.out_features)
            < linear.in_features * linear.out_features
        ):
            setattr(parent, attr, split_linear(linear, r, svd))
            report[name] = (r, full)
        else:
            report[name] = (full, full)
    return report


def low_rank_params(model: nn.Module) -> tuple[int, int]:
    """(parameters the factorised layers hold now, parameters they held as dense Linears)."""
    now = dense = 0
    for m in model.modules():
        if is_low_rank(m):
            now += sum(p.numel() for p in m.parameters())
            dense += _dense_params(m)
    return now, dense
