"""Reading a sensitivity map (compress/sensitivity.py): weight bytes per group, rank groups, estimate a hybrid's
WER change and weight bytes, choose the groups to keep fp32 under a budget, and write the bench
options that run that hybrid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from voxmeter.errors import SpecError

ALL = "all"  # every group the hybrid can quantize, at once
PER_CHANNEL, PER_TENSOR = "per-channel", "per-tensor"
SCHEME = {PER_CHANNEL: "int8-dynamic", PER_TENSOR: "int8-dynamic-tensor"}
SCALE_BYTES = 4  # one fp32 scale per output channel, or per tensor


def measured_label(smap: dict[str, Any]) -> str:
    """What a map quantized, in a few words (a map without the field predates int8-dynamic
    maps: it rounded weights only)."""
    if smap.get("measured", "weights-only") == "int8-dynamic":
        return "int8-dynamic (int8 weights and activations)"
    return f"{smap.get('bits', 8)}-bit weights only (fp32 activations)"


def additive_estimate(cells: dict[str, dict[str, Any]], quantized: Iterable[str]) -> float:
    """The one additive estimate, for the table's row and for a hybrid alike: the sum of the
    quantized groups' WER changes, increases only (a group that measured better is not
    counted on to save another's words)."""
    return sum(max(cells[g]["delta_wer"] or 0.0, 0.0) for g in quantized)


def per_channel_gain(smap: dict[str, Any]) -> dict[str, Any] | None:
    """What per-channel scales gain over per-tensor ones, per group and with every group
    quantized (WER points and KL), and the conv front end's share of the joint gain: the
    Moonshine question. None unless both granularities were measured."""
    cells = smap.get("cells", {})
    if PER_CHANNEL not in cells or PER_TENSOR not in cells:
        return None
    pc, pt = cells[PER_CHANNEL], cells[PER_TENSOR]
    gain = {
        g: {"wer": _delta(pt[g]["wer"], pc[g]["wer"]), "kl": pt[g]["kl"] - pc[g]["kl"]}
        for g in [*smap["groups"], ALL]
    }

    def share(key: str) -> float | None:
        joint = gain[ALL][key]
        return None if not joint or joint <= 0 else (gain["conv"][key] or 0.0) / joint

    return {"gain": gain, "conv_share_wer": share("wer"), "conv_share_kl": share("kl")}


def ranked(smap: dict[str, Any], gran: str = PER_CHANNEL, exclude: Iterable[str] = ()) -> list[str]:
    """The map's groups, most sensitive first: by WER change, then by KL."""
    cells = _cells(smap, gran)
    skip = set(exclude)
    groups = [g for g in smap["groups"] if g not in skip]
    return sorted(groups, key=lambda g: (-(cells[g]["delta_wer"] or 0.0), -cells[g]["kl"]))


def _cells(smap: dict[str, Any], gran: str) -> dict[str, dict[str, Any]]:
    cells = smap.get("cells", {}).get(gran)
    if not cells:
        raise SpecError(
            f"sensitivity map: no {gran} figures (measured: {smap.get('granularities')})"
        )
    return cells


def estimate(
    smap: dict[str, Any], keep: Iterable[str], gran: str = PER_CHANNEL, always_fp32=("conv",)
) -> dict[str, float]:
    """A hybrid's estimated WER change (the sum of its quantized groups' changes, negative
    ones counted as 0: an assumption of additivity, which the map's "all" row tests) and its
    weight bytes (kept and always-fp32 groups fp32, the rest quantized, plus the rest fp32)."""
    cells, w = _cells(smap, gran), smap["weights"]
    fp32 = set(keep) | set(always_fp32)
    quant = [g for g in smap["groups"] if g not in fp32]
    return {
        "delta_wer": additive_estimate(cells, quant),
        "weight_bytes": smap["other_fp32_bytes"]
        + sum(w[g]["fp32_bytes"] for g in smap["groups"] if g in fp32)
        + sum(w[g]["quant_bytes"][gran] for g in quant),
    }


def choose_keep(
    smap: dict[str, Any],
    *,
    max_wer_increase: float | None = None,
    max_weight_bytes: float | None = None,
    gran: str = PER_CHANNEL,
    always_fp32: Sequence[str] = ("conv",),
) -> list[str]:
    """Groups to keep fp32, most sensitive first: the fewest whose estimated WER change (see
    `estimate`) is within `max_wer_increase` points, or, in sensitivity order, every group that
    still fits `max_weight_bytes`. `always_fp32` groups are never quantized by the target
    scheme (the conv front end), so they are counted fp32 and not listed."""
    if (max_wer_increase is None) == (max_weight_bytes is None):
        raise SpecError("choose_keep: give one budget, a WER increase or weight bytes")
    order = ranked(smap, gran, always_fp32)
    if max_wer_increase is not None:
        if max_wer_increase < 0:
            raise SpecError(f"WER budget: must be >= 0 points, got {max_wer_increase}")
        for k in range(len(order) + 1):
            if estimate(smap, order[:k], gran, always_fp32)["delta_wer"] <= max_wer_increase:
                return order[:k]
    floor = estimate(smap, [], gran, always_fp32)["weight_bytes"]
    if floor > max_weight_bytes:
        raise SpecError(
            f"weight budget {max_weight_bytes / 2**20:.2f} MiB fits nothing: with every group "
            f"quantized ({gran}) the weights take {floor / 2**20:.2f} MiB"
        )
    keep: list[str] = []
    for g in order:
        if estimate(smap, [*keep, g], gran, always_fp32)["weight_bytes"] <= max_weight_bytes:
            keep.append(g)
    return keep


def keep_spec(keep: Sequence[str], gran: str = PER_CHANNEL) -> str:
    """The bench options that run this hybrid: per-channel int8-dynamic (per-tensor:
    int8-dynamic-tensor); the embedding/projection quantized too unless 'proj' is kept."""
    scheme = SCHEME[gran]
    parts = [f"--compress quant={scheme}"]
    if "proj" not in keep:
        parts.append("--compress quant_embed=true")
    layers = [g for g in keep if g != "proj"]
    if layers:
        parts.append(f"--compress keep={','.join(layers)}")
    return " ".join(parts)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# -- weight bytes ------------------------------------------------------------------------------


def _group_tensors(model: Any, members: list[str]) -> list[tuple[Any, Any]]:
    """(weight, bias) of each Linear/Conv1d member, a shared weight once."""
    import torch

    seen, out = set(), []
    for name in members:
        m = model.get_submodule(name)
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and id(w) not in seen:
            seen.add(id(w))
            out.append((w, getattr(m, "bias", None)))
    return out


def group_bytes(model: Any, groups: list[str], bits: int) -> dict[str, dict[str, Any]]:
    """Per group: parameters, fp32 bytes and bytes quantized per channel and per tensor."""
    from voxmeter.engines.groups import layer_groups

    members = layer_groups(model)
    out = {}
    for g in groups:
        n = fp32 = pc = pt = 0
        for w, b in _group_tensors(model, members[g]):
            bias = 0 if b is None else b.numel() * 4
            q = -(-w.numel() * bits // 8)
            n += w.numel() + (0 if b is None else b.numel())
            fp32 += w.numel() * 4 + bias
            pc += q + SCALE_BYTES * w.shape[0] + bias
            pt += q + SCALE_BYTES + bias
        out[g] = {
            "n_params": n,
            "fp32_bytes": fp32,
            "quant_bytes": {PER_CHANNEL: pc, PER_TENSOR: pt},
        }
    return out


def _other_bytes(model: Any, groups: list[str]) -> int:
    """fp32 bytes of everything outside the groups (norms, positions, buffers)."""
    from voxmeter.engines.groups import layer_groups

    members = layer_groups(model)
    inside = {
        id(t)
        for g in groups
        for w, b in _group_tensors(model, members[g])
        for t in (w, b)
        if t is not None
    }
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for k, t in tensors.items() if k not in inside)
