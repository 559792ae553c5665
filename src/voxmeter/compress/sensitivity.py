"""Which layer groups int8 hurts: quantize one group at a time, measure, and keep the worst fp32.

`sensitivity_map` quantizes one layer group at a time with the scheme the hybrid it recommends
runs (int8-dynamic: torch.ao int8 weights and activations quantized at run time; "proj" as
quant_embed's int8 matrix), or with `weights_only` rounds the weights alone (fake
quantization, any bit width), and measures on calibration audio the corpus WER change, with a
paired bootstrap interval over clips, and the KL of next-token distributions, which ranks the
groups that WER (whole words) cannot tell apart. "all" quantizes every group the hybrid can at
once, beside the additive estimate of the same configuration. `choose_keep` turns a map into a
hybrid-precision spec under a WER or weight budget. Measured findings: docs/compression-notes.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from voxmeter.compress.hybrid import (
    ALL,
    PER_CHANNEL,
    PER_TENSOR,
    SCALE_BYTES,
    _delta,
    _other_bytes,
    additive_estimate,
    choose_keep,
    estimate,
    group_bytes,
    keep_spec,
    measured_label,
    per_channel_gain,
    ranked,
)
from voxmeter.errors import SpecError

__all__ = ["ALL", "PER_CHANNEL", "PER_TENSOR", "additive_estimate", "choose_keep", "estimate"]
__all__ += [
    "keep_spec",
    "measured_label",
    "noise_warnings",
    "per_channel_gain",
    "ranked",
    "sensitivity_map",
]

FORMAT = 1
CHUNK = 8  # clips per batch with weights_only; bounds the fp32 log-probs held for the KL
NO_INT8 = ("conv",)  # groups no int8 scheme quantizes: fp32 in every hybrid and in "all"
WORD_WARN = 0.5  # warn when one word is worth more WER points than this
N_BOOT = 2000

Progress = Callable[[str, int, int], Any] | None


def granularity(per_channel: bool) -> str:
    return PER_CHANNEL if per_channel else PER_TENSOR


def method_text(bits: int, weights_only: bool = False) -> str:
    """What the map measured, in words (stored with it, printed under every view of it)."""
    if weights_only:
        how = (
            f"each group's Linear and Conv1d weights fake-quantized to symmetric {bits}-bit "
            "levels (one scale per output channel, or one per tensor) and restored after; "
            "'proj' rounds the tied token embedding too; activations fp32 (weight rounding "
            "only: the int8-dynamic hybrid also quantizes activations, which this does not "
            f"measure). 'all': every group. Batches of up to {CHUNK} clips"
        )
    else:
        how = (
            "each group quantized as the hybrid runs it: its Linears by torch.ao dynamic int8 "
            "(int8-dynamic: per-channel weights; int8-dynamic-tensor: per-tensor), activations "
            "quantized per tensor at run time; 'proj' as quant_embed (one int8 matrix for the "
            "tied embedding and output projection, per-row scales, activations per token, the "
            "same at both granularities); modules restored after. 'conv': no int8 scheme "
            f"quantizes a Conv1d, so its row is {bits}-bit weight rounding only, and 'all' "
            "(every other group at once) leaves it fp32, as every hybrid does. One clip per "
            "batch, as bench runs at batch 1 (dynamic int8 shares one activation scale per batch)"
        )
    return (
        f"{how}. WER: greedy decoding through the hf engine's stages (3000 frames), corpus WER "
        "after Whisper's English normalizer; delta = quantized - fp32, in points, with a 95% "
        f"paired percentile bootstrap interval over clips ({N_BOOT} resamples). KL: mean over "
        "reference positions (pooled over clips) of KL(fp32 || quantized) of next-token "
        "distributions, teacher-forced on prompt + reference + end-of-text; dlogp: mean "
        "|change| of the reference token's log-probability there. Additive estimate: the sum "
        "of the quantized groups' WER changes, increases only. Weight bytes: fp32 weights and "
        f"biases; quantized: ceil(bits/8) bytes per weight, {SCALE_BYTES} per scale, fp32 bias"
    )


# -- measuring ---------------------------------------------------------------------------------


def sensitivity_map(
    engine: Any,
    dataset: Any,
    *,
    per_channel: Sequence[bool] = (True, False),
    bits: int = 8,
    weights_only: bool = False,
    progress: Progress = None,
) -> dict[str, Any]:
    """The sensitivity of each layer group of `engine`'s model (an fp32 hf engine) on `dataset`'s
    clips; a JSON-serialisable dict (see the module doc and `method_text`). Clips are processed
    in chunks: the fp32 baseline of a chunk, then every (group, granularity) on it, so only one
    chunk's fp32 log-probs are held. The encoder runs again only for groups inside it."""
    from voxmeter.engines.groups import layer_groups
    from voxmeter.engines.quant import cpu_flags

    if not weights_only and bits != 8:
        raise SpecError(f"bits: {bits} needs weights_only (the int8 schemes are 8-bit)")
    model = _fp32_model(engine)
    clips, skipped = _clips(dataset)
    groups = list(layer_groups(model))
    joint = groups if weights_only else [g for g in groups if g not in NO_INT8]
    grans = [granularity(bool(pc)) for pc in per_channel]
    if not grans:
        raise SpecError("sensitivity: no granularity to measure (per_channel is empty)")
    conds = [(g, bool(pc)) for pc in per_channel for g in [*groups, ALL]]
    tally = {c: _Tally() for c in [None, *conds]}
    size = CHUNK if weights_only else 1
    chunks = [clips[i : i + size] for i in range(0, len(clips), size)]
    total, done = len(chunks) * (1 + len(conds)), 0
    how = _How(bits, weights_only, tuple(cpu_flags()))
    for chunk in chunks:
        feats = engine.features([a.samples for _, a in chunk])
        refs = [c.text for c, _ in chunk]
        targets = [_reference_ids(engine, t) for t in refs]
        enc0 = engine.encode(feats)
        base_hyps = [o.text for o in engine.decode(enc0)]
        base_logp = _teacher_forced(engine, enc0, targets)
        tally[None].add(refs, base_hyps, base_hyps, base_logp, base_logp, targets)
        done += 1
        _tick(progress, "fp32 baseline", done, total)
        for group, pc in conds:
            with _quantized(model, joint if group == ALL else [group], pc, how):
                enc = enc0 if _decoder_side(group) else engine.encode(feats)
                hyps = [o.text for o in engine.decode(enc)]
                logp = _teacher_forced(engine, enc, targets)
            tally[(group, pc)].add(refs, hyps, base_hyps, base_logp, logp, targets)
            done += 1
            _tick(progress, f"{group} {granularity(pc)}", done, total)
    smap = _assemble(engine, dataset, clips, skipped, groups, joint, grans, conds, tally, how)
    smap["weights"] = group_bytes(model, groups, bits)
    smap["other_fp32_bytes"] = _other_bytes(model, groups)
    return smap


@dataclass(frozen=True)
class _How:
    """How a group is quantized in the map: the bits, weights only or the int8 scheme, and the
    CPU flags that decide torch.ao's activation range (as the engine's own load does)."""

    bits: int
    weights_only: bool
    flags: tuple[str, ...]


def _assemble(engine, dataset, clips, skipped, groups, joint, grans, conds, tally, how) -> dict:
    """The map's dict from the tallies: cells with WER change, interval and KL; the additive
    estimate beside the joint row; a warning when one word is worth too many points."""
    from voxmeter.identity import FileDigests, data_digest

    base = tally[None].summary()
    cells: dict[str, dict[str, Any]] = {g: {} for g in grans}
    for group, pc in conds:
        cell = tally[(group, pc)].summary()
        cell["delta_wer"] = _delta(cell["wer"], base["wer"])
        cell["delta_wer_ci"] = _gap_ci(tally[None], tally[(group, pc)])
        cells[granularity(pc)][group] = cell
    word = 100.0 / base["ref_words"] if base["ref_words"] else None
    return {
        "format": FORMAT,
        "model": getattr(engine.source, "name", str(engine.spec.model)),
        "model_spec": str(engine.spec.model),
        "data": {
            "name": getattr(dataset, "name", ""),
            "digest": data_digest(dataset, FileDigests(None)),
            "n_clips": len(clips),
            "clip_ids": [c.id for c, _ in clips],
            "skipped": skipped,
        },
        "bits": how.bits,
        "measured": "weights-only" if how.weights_only else "int8-dynamic",
        "method": method_text(how.bits, how.weights_only),
        "groups": groups,
        "all_groups": joint,
        "granularities": grans,
        "baseline": {k: base[k] for k in ("wer", "ref_words")},
        "one_word_points": word,
        "warnings": noise_warnings(word, len(clips)),
        "cells": cells,
        "additivity": {g: _additivity(cells[g], joint) for g in grans},
    }


def noise_warnings(word_points: float | None, n_clips: int) -> list[str]:
    """A warning when one word moves WER by more than WORD_WARN points: then a group's change
    of a word or two is within the noise, and its interval (or the KL) should decide."""
    if word_points is None or word_points <= WORD_WARN:
        return []
    text = (
        f"one word is worth {word_points:.2f} WER points here ({n_clips} clips; warned above "
        f"{WORD_WARN:g}): changes of a word or two are noise; read the intervals and the KL, "
        "or measure on more clips"
    )
    return [text]


def _gap_ci(base: _Tally, quant: _Tally) -> list[float] | None:
    """[lo, hi] of quantized - fp32 WER, paired bootstrap over clips (metrics.wer_gap_ci)."""
    from voxmeter.metrics import wer_gap_ci

    got = wer_gap_ci(base.refs, [quant.hyps], [base.hyps], n_boot=N_BOOT)
    return None if got is None else [got[1], got[2]]


def _fp32_model(engine: Any) -> Any:
    model = getattr(engine, "model", None)
    spec = getattr(engine, "spec", None)
    if model is None or spec is None or getattr(engine, "name", "") != "hf":
        raise SpecError("sensitivity: needs the hf engine (torch weights to fake-quantize)")
    comp = getattr(engine, "compression", spec.compression)  # with what a directory carries
    if any(p.dtype != torch.float32 for p in model.parameters()) or not comp.is_none:
        raise SpecError("sensitivity: the model must load fp32 and unquantized (no --compress)")
    if spec.axes.precision != "fp32" or spec.axes.frames != 3000 or spec.axes.stride != 1:
        raise SpecError("sensitivity: measured at fp32, 3000 frames, stride 1 (the model as is)")
    return model


def _clips(dataset: Any) -> tuple[list[tuple[Any, Any]], list[dict[str, str]]]:
    """(clip, audio) of every clip that loads and fits one window; the others with why."""
    from voxmeter.audio.io import LoadedAudio
    from voxmeter.data.datasets import iter_audio

    ok, skipped = [], []
    for clip, audio in iter_audio(dataset):
        if isinstance(audio, LoadedAudio):
            ok.append((clip, audio))
        else:
            why = str(audio) if isinstance(audio, Exception) else "longer than 30 s"
            skipped.append({"id": clip.id, "reason": why})
    if not ok:
        raise SpecError(f"sensitivity: data {getattr(dataset, 'name', '')!r} has no usable clip")
    return ok, skipped


def _reference_ids(engine: Any, text: str) -> tuple[list[int], int]:
    """(prompt + reference tokens + end-of-text, prompt length)."""
    if not engine.tokenizer.available:
        raise SpecError(f"sensitivity: model {engine.spec.model!r} has no tokenizer")
    ids = [*engine.prompt, *engine.tokenizer.encode(text), engine.ids["eot"]]
    return ids, len(engine.prompt)


@torch.inference_mode()
def _teacher_forced(engine: Any, enc: Any, targets: list[tuple[list[int], int]]) -> list[Any]:
    """Per clip, (n_targets, vocab) log-probabilities of the tokens after the prompt, the
    decoder fed the reference (transformers' forward over the engine's own modules). The
    batch is right-padded: attention is causal, so padding never reaches a real position."""
    model, eot = engine.model, engine.ids["eot"]
    width = max(len(ids) - 1 for ids, _ in targets)
    rows = [ids[:-1] + [eot] * (width - len(ids) + 1) for ids, _ in targets]
    x = torch.tensor(rows, device=enc.states.device)
    hidden = model.model.decoder(
        input_ids=x, encoder_hidden_states=enc.states[: len(rows)], use_cache=False
    ).last_hidden_state
    out = []
    for i, (ids, n_prompt) in enumerate(targets):
        logits = model.proj_out(hidden[i, n_prompt - 1 : len(ids) - 1]).float()
        out.append(torch.log_softmax(logits, dim=-1))
    return out


@contextlib.contextmanager
def _quantized(model: Any, names: Iterable[str], per_channel: bool, how: _How):
    """Within the block, the named groups are quantized as `how` says; restored on exit."""
    from voxmeter.compress.quantize import fake_quantize

    names = list(names)
    fake = names if how.weights_only else [n for n in names if n in NO_INT8]
    real = [] if how.weights_only else [n for n in names if n not in NO_INT8]
    with contextlib.ExitStack() as stack:
        for name in fake:
            stack.enter_context(fake_quantize(model, name, how.bits, per_channel=per_channel))
        if real:
            stack.enter_context(_scheme_quantized(model, real, per_channel, how.flags))
        yield model


@contextlib.contextmanager
def _scheme_quantized(model: Any, names: list[str], per_channel: bool, flags: tuple[str, ...]):
    """The named groups' Linears swapped for torch.ao dynamic int8 ones (int8-dynamic, or
    int8-dynamic-tensor), "proj" for quant_embed's int8 embedding and projection: what the
    engine loads for a hybrid. The original modules (and their weights) are put back on exit."""
    from voxmeter.engines.groups import EMBED, PROJ, layer_groups
    from voxmeter.engines.quant import _replace, _torch_dynamic, quantize_embedding

    members = layer_groups(model)
    linears = [m for g in names if g != "proj" for m in members[g]]
    saved = {n: model.get_submodule(n) for n in linears}
    if "proj" in names:
        saved.update({n: model.get_submodule(n) for n in (EMBED, PROJ)})
    try:
        if linears:
            _torch_dynamic(model, linears, flags, per_channel)
        if "proj" in names:
            quantize_embedding(model)
        yield model
    finally:
        for name, module in saved.items():
            _replace(model, name, module)
            module.__dict__.pop("qconfig", None)  # what torch.ao's conversion set on it


def _decoder_side(group: str) -> bool:
    """Groups whose rounding leaves the encoder's output unchanged."""
    return group == "proj" or group.startswith("dec.")


def _tick(progress: Progress, what: str, done: int, total: int) -> None:
    if progress is not None:
        progress(what, done, total)


class _Tally:
    """One condition's hypotheses and divergence sums, over the chunks."""

    def __init__(self) -> None:
        self.refs: list[str] = []
        self.hyps: list[str] = []
        self.changed = self.tokens = 0
        self.kl = self.dlogp = 0.0

    def add(self, refs, hyps, base_hyps, base_logp, logp, targets) -> None:
        from voxmeter.metrics import normalize

        self.refs += refs
        self.hyps += hyps
        self.changed += sum(normalize(h) != normalize(b) for h, b in zip(hyps, base_hyps))
        for p0, p1, (ids, n_prompt) in zip(base_logp, logp, targets):
            ref = torch.tensor(ids[n_prompt:])
            self.kl += float((p0.exp() * (p0 - p1)).sum())
            self.dlogp += float(
                (p0.gather(1, ref[:, None]) - p1.gather(1, ref[:, None])).abs().sum()
            )
            self.tokens += len(ref)

    def summary(self) -> dict[str, Any]:
        from voxmeter.metrics import corpus_wer

        stats = corpus_wer(self.refs, self.hyps)
        n = max(self.tokens, 1)
        return {
            "wer": stats.wer,
            "ref_words": stats.ref_words,
            "kl": self.kl / n,
            "dlogp": self.dlogp / n,
            "n_changed": self.changed,
            "n_tokens": self.tokens,
        }


def _additivity(cells: dict[str, dict[str, Any]], joint: list[str]) -> dict[str, Any]:
    """The additive estimate of "all" (the same groups) beside its joint measurement."""
    every = cells[ALL]
    return {
        "estimate_delta_wer": additive_estimate(cells, joint),
        "all_delta_wer": every["delta_wer"],
        "all_delta_wer_ci": every.get("delta_wer_ci"),
        "sum_kl": sum(cells[g]["kl"] for g in joint),
        "all_kl": every["kl"],
    }
