"""Structured pruning: whole attention heads and FFN neurons leave the weight matrices.

A share of the heads of every attention module and of the FFN neurons of every layer, those of
lowest first-order Taylor importance on calibration speech, are sliced out of the matrices by
Torch-Pruning's DependencyGraph (our scores, our count rule: floor(share * n), at least one
kept); each attention's `num_heads` follows, so transformers' own forward still runs. Why these
choices, and what was measured: docs/compression-notes.md#structured-pruning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from voxmeter.errors import DataError, SpecError

Calibration = Sequence[tuple[torch.Tensor, list[int]]]
IMPORTANCE = "taylor: |sum of activation x gradient| per head / neuron per clip, summed over clips"


@dataclass
class Scores:
    """Measured importance: per attention module one score per head, per layer one per neuron."""

    heads: dict[str, torch.Tensor]
    ffn: dict[str, torch.Tensor]


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, WhisperAttention) for every attention module of the encoder and decoder layers."""
    found = []
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model.model, stack).layers):
            for attr in ("self_attn", "encoder_attn"):
                if hasattr(layer, attr):
                    found.append((f"model.{stack}.layers.{i}.{attr}", getattr(layer, attr)))
    return found


def ffn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) for every encoder and decoder layer (each has fc1 and fc2)."""
    return [
        (f"model.{stack}.layers.{i}", layer)
        for stack in ("encoder", "decoder")
        for i, layer in enumerate(getattr(model.model, stack).layers)
    ]


def n_kept(n: int, share: float) -> int:
    """Units kept of n when `share` is removed: n - floor(share * n), at least 1 (the 1e-9
    absorbs float error such as 0.29 * 100 = 28.999...)."""
    return max(1, n - math.floor(share * n + 1e-9))


def _check_share(name: str, v: float) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
        raise SpecError(f"{name}: a pruning ratio must be in [0, 1), got {v!r}")


def _out_leaf(m: nn.Module) -> nn.Linear:
    """The Linear whose output rows are m's outputs (the second factor of a low-rank pair)."""
    return m if isinstance(m, nn.Linear) else m[-1]


def _in_leaf(m: nn.Module) -> nn.Linear:
    """The Linear whose input columns are m's inputs (the first factor of a low-rank pair)."""
    return m if isinstance(m, nn.Linear) else m[0]


def _prompt_len(ids: Sequence[int], sot: int) -> int:
    """The decoder prompt: the leading run of special tokens (ids >= start-of-transcript)."""
    n = 0
    while n < len(ids) and ids[n] >= sot:
        n += 1
    return n


def _check_calib(calib: Calibration, sot: int) -> None:
    if not calib:
        raise DataError("pruning calibration: no (features, tokens) pairs were given")
    for feats, ids in calib:
        if feats.dim() != 3 or feats.shape[0] != 1:
            raise DataError(
                f"pruning calibration: features must be (1, mels, frames), got {tuple(feats.shape)}"
            )
        p = _prompt_len(ids, sot)
        if p == 0 or len(ids) <= p:
            raise DataError(
                "pruning calibration: tokens must be a prompt followed by the reference"
            )


def _grad_probe(store: torch.Tensor, group: int):
    """A forward pre-hook that adds |sum over positions of x * dL/dx| (per block of `group`
    channels) of the module's input into `store` once the gradient arrives.

    The gradient hook holds a detached view, never `x` itself: a hook on `x` that refers to
    `x` is a reference cycle, which kept every clip's activations (~55 MB a clip for tiny.en)
    alive until Python's cycle collector happened to run; 256 clips reached 16 GB."""

    def pre_hook(_module, args):
        x = args[0]
        if not x.requires_grad:
            return
        xd = x.detach()

        def on_grad(g):
            s = (xd * g).sum(dim=1)  # (B, C): one value per item and channel
            s = s.view(s.shape[0], -1, group).sum(-1).abs().sum(0)
            store.add_(s.to(store.dtype))

        x.register_hook(on_grad)

    return pre_hook


@contextmanager
def _requires_grad(model: nn.Module, on: bool):
    """Set every parameter's requires_grad for the block, then restore each one's own."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(on)
        yield
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)


def importance(model: nn.Module, calib: Calibration) -> Scores:
    """Taylor importance of every head and FFN neuron on the calibration pairs (module doc)."""
    sot = model.config.decoder_start_token_id
    _check_calib(calib, sot)
    p0 = next(model.parameters())
    heads = {n: torch.zeros(a.num_heads, dtype=torch.float64) for n, a in attention_modules(model)}
    ffn = {
        n: torch.zeros(_out_leaf(layer.fc1).out_features, dtype=torch.float64)
        for n, layer in ffn_layers(model)
    }
    handles = [
        a.out_proj.register_forward_pre_hook(_grad_probe(heads[n], a.head_dim))
        for n, a in attention_modules(model)
    ] + [
        layer.fc2.register_forward_pre_hook(_grad_probe(ffn[n], 1))
        for n, layer in ffn_layers(model)
    ]
    try:
        # gradients reach the activations through the input; no weight gradients are computed
        with _requires_grad(model, False), torch.enable_grad():
            for feats, ids in calib:
                x = feats.to(device=p0.device, dtype=p0.dtype).requires_grad_(True)
                start = _prompt_len(ids, sot) - 1  # the first position that predicts the text
                inp = torch.tensor([ids[:-1]], device=p0.device)
                target = torch.tensor(ids[1:], device=p0.device)
                logits = model(input_features=x, decoder_input_ids=inp, use_cache=False).logits
                F.cross_entropy(logits[0, start:].float(), target[start:]).backward()
    finally:
        for h in handles:
            h.remove()
    return Scores(heads, ffn)


def _dependency_graph(model: nn.Module):
    """Torch-Pruning's graph of the model, traced through transformers' forward on a silent
    30 s window and a two-token prompt (the trace needs shapes, not speech)."""
    import torch_pruning as tp

    p0, cfg = next(model.parameters()), model.config
    frames = 2 * cfg.max_source_positions  # the encoder's convolutions halve the frames
    example = {
        "input_features": torch.zeros(
            1, cfg.num_mel_bins, frames, device=p0.device, dtype=p0.dtype
        ),
        "decoder_input_ids": torch.full((1, 2), cfg.decoder_start_token_id, device=p0.device),
        "use_cache": False,
    }
    with _requires_grad(model, True), torch.enable_grad():  # the trace follows autograd
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=example, output_transform=lambda out: out.logits, verbose=False
        )


def _prune_coupled(dg, root: nn.Linear, idxs: list[int], expected: dict[nn.Linear, str]) -> None:
    """Remove output channels `idxs` of `root` and whatever the graph couples to them, after
    checking the coupled parameterised layers are exactly `expected` (layer -> "out"/"in")."""
    import torch_pruning as tp

    group = dg.get_pruning_group(root, tp.prune_linear_out_channels, idxs=idxs)
    found = {}
    for dep, dep_idxs in group:
        m = dep.target.module
        if isinstance(m, nn.Module) and any(True for _ in m.parameters(recurse=False)):
            side = "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"
            if sorted(int(i) for i in dep_idxs) != sorted(idxs):
                raise RuntimeError(
                    f"torch-pruning mapped channels of {type(m).__name__} unexpectedly"
                )
            found[m] = side
    if found != expected:
        names = sorted(f"{dg._module2name.get(m, m)}:{s}" for m, s in found.items())
        raise RuntimeError(f"torch-pruning coupled unexpected layers to a pruned group: {names}")
    group.prune()


def _check_scores(scores: Scores, attns: list, layers: list) -> None:
    """Scores must be this model's: one per head of each module, one per neuron of each layer."""
    want_heads = {n: a.num_heads for n, a in attns}
    want_ffn = {n: _out_leaf(layer.fc1).out_features for n, layer in layers}
    got_heads = {n: len(v) for n, v in scores.heads.items()}
    got_ffn = {n: len(v) for n, v in scores.ffn.items()}
    if got_heads != want_heads or got_ffn != want_ffn:
        raise ValueError("prune: the scores were measured on a model of another shape")


def _lowest(scores: torch.Tensor, n_remove: int) -> list[int]:
    """Indices of the n_remove lowest scores (ties: the lower index goes first)."""
    order = torch.argsort(scores, stable=True)
    return sorted(int(i) for i in order[:n_remove])


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune(
    model: nn.Module,
    heads: float,
    ffn: float,
    calib: Calibration,
    *,
    scores: Scores | None = None,
) -> dict:
    """Prune a share `heads` of every attention module's heads and `ffn` of every layer's FFN
    neurons, lowest measured importance first, in place. Returns a report: per attention
    module (heads kept, heads before) and the original indices of the kept heads, per layer
    (neurons kept, neurons before), and the parameter count before and after.

    scores: importance already measured on this model (`importance(model, calib)`), e.g. to
        prune copies of one model at several ratios; calib is then not read.
    """
    _check_share("prune_heads", heads)
    _check_share("prune_ffn", ffn)
    attns, layers = attention_modules(model), ffn_layers(model)
    before = n_params(model)
    head_plan = {n: (a.num_heads - n_kept(a.num_heads, heads)) for n, a in attns}
    ffn_plan = {
        n: _out_leaf(layer.fc1).out_features - n_kept(_out_leaf(layer.fc1).out_features, ffn)
        for n, layer in layers
    }
    report: dict = {"heads": {}, "head_indices": {}, "ffn": {}, "importance": IMPORTANCE}
    if any(head_plan.values()) or any(ffn_plan.values()):
        if scores is None:
            scores = importance(model, calib)
        _check_scores(scores, attns, layers)
        dg = _dependency_graph(model)
    for name, a in attns:
        total, drop = a.num_heads, []
        if head_plan[name]:
            drop = _lowest(scores.heads[name], head_plan[name])
            d = a.head_dim
            idxs = [h * d + j for h in drop for j in range(d)]
            expected = {_out_leaf(getattr(a, p)): "out" for p in ("q_proj", "k_proj", "v_proj")}
            expected[_in_leaf(a.out_proj)] = "in"
            _prune_coupled(dg, _out_leaf(a.q_proj), idxs, expected)
            a.num_heads = total - len(drop)
        report["heads"][name] = (a.num_heads, total)
        report["head_indices"][name] = [h for h in range(total) if h not in drop]
    for name, layer in layers:
        total = _out_leaf(layer.fc1).out_features
        if ffn_plan[name]:
            drop = _lowest(scores.ffn[name], ffn_plan[name])
            expected = {_out_leaf(layer.fc1): "out", _in_leaf(layer.fc2): "in"}
            _prune_coupled(dg, _out_leaf(layer.fc1), drop, expected)
        report["ffn"][name] = (_out_leaf(layer.fc1).out_features, total)
    report["params_before"], report["params_after"] = before, n_params(model)
    report["calibration_clips"] = len(calib) if calib is not None else 0
    return report
