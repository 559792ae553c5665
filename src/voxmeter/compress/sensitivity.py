"""Which layer groups int8 hurts: quantize one group at a time, measure, and keep the worst fp32.

`sensitivity_map` fake-quantizes the weights of one layer group at a time (quantize.py's
`fake_quantize`: symmetric rounding to `bits` levels and back, restored bit for bit on exit),
per output channel and per tensor, and measures on calibration audio what that costs: the
corpus WER of greedy decoding through the engine's own stages, and the mean KL(fp32 ||
quantized) of next-token distributions teacher-forced on the reference tokens, with the mean
|change| of the reference tokens' log-probabilities. WER is what a user sees but moves in whole
words, so on a few clips most groups show 0.0; the KL is continuous and ranks the groups that
WER cannot tell apart. "all" quantizes every group at once, so the sum of the groups' changes
can be held against the joint one (additivity, which `choose_keep`'s WER estimate assumes).
Fake quantization isolates weight rounding: dynamic int8 schemes also round activations at
run time, which this does not measure.

`choose_keep` turns a map into a hybrid-precision spec (`--compress keep=...`): the most
sensitive groups stay fp32, the fewest that meet a WER budget or the most that fit a
weight-bytes budget. The conv front end is always fp32 there, since neither int8 path of
quantize.py quantizes a Conv1d; the map still measures it, as the question below needs.

The Moonshine question. Moonshine reported that moving int8 from per-tensor to per-channel
scales took its Tiny model from 7.57 to 4.83 WER, about 90% of it from the conv front end.
Whisper tiny.en, bundled calib set (60 clips, 558 words: one word is 0.18 points), 8 bits,
`voxmeter sensitivity --threads 1`: fp32 WER 10.93; every group at once per tensor 15.77
(+4.84), per channel 11.11 (+0.18), so per-channel scales recover 96% of the loss, as in
Moonshine. But not through the conv front end: alone it moves WER by 0.00 per tensor and -0.18
per channel (one word), 4% of the joint gain in WER and 8.5% in KL (1.5e-3 of 1.78e-2). The
gain sits in the tied token embedding / output projection ("proj": +2.69 -> +0.18 WER, 43% of
the KL gain), the first and last encoder blocks (enc.0 +2.33 -> +0.54, 15%; enc.3 +2.51 ->
0.00, 6%) and the last decoder block (dec.3 +2.33 -> +0.36, 11%). So Whisper does not behave
the same way: its per-tensor loss is spread over the projection and the outer blocks. Per
group, WER changes of one to three words are near the noise; the KL ranks are the firmer
evidence. KL adds up (sum of groups 2.0e-2 vs 2.04e-2 jointly per tensor) while WER does not
(+10.93 summed vs +4.84 jointly), so on this set `choose_keep`'s WER estimate erred on the safe side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from voxmeter.errors import SpecError

FORMAT = 1
ALL = "all"  # every group quantized at once
PER_CHANNEL, PER_TENSOR = "per-channel", "per-tensor"
CHUNK = 8  # clips decoded as one batch; bounds the fp32 log-probs held for the KL
SCALE_BYTES = 4  # one fp32 scale per output channel, or per tensor

Progress = Callable[[str, int, int], Any] | None


def granularity(per_channel: bool) -> str:
    return PER_CHANNEL if per_channel else PER_TENSOR


def method_text(bits: int) -> str:
    return (
        f"each group's Linear and Conv1d weights fake-quantized to symmetric {bits}-bit levels "
        "(one scale per output channel, or one per tensor) and restored after; 'proj' rounds the "
        "tied token embedding too; activations fp32. WER: greedy decoding through the hf "
        "engine's stages (3000 frames, batches of up to "
        f"{CHUNK} clips), corpus WER after Whisper's English normalizer; delta = quantized - "
        "fp32, in points. KL: mean over reference positions (pooled over clips) of KL(fp32 || "
        "quantized) of next-token distributions, teacher-forced on prompt + reference + "
        "end-of-text; dlogp: mean |change| of the reference token's log-probability there. "
        "Weight bytes: fp32 weights and biases; quantized: ceil(bits/8) bytes per weight, "
        f"{SCALE_BYTES} per scale, fp32 bias"
    )


# -- measuring ---------------------------------------------------------------------------------


def sensitivity_map(
    engine: Any,
    dataset: Any,
    *,
    per_channel: Sequence[bool] = (True, False),
    bits: int = 8,
    progress: Progress = None,
) -> dict[str, Any]:
    """The sensitivity of each layer group of `engine`'s model (an fp32 hf engine) on `dataset`'s
    clips; a JSON-serialisable dict (see the module doc). Clips are processed in chunks: the
    fp32 baseline of a chunk, then every (group, granularity) on it, so only one chunk's fp32
    log-probs are held. The encoder runs again only for groups inside it."""
    from voxmeter.compress.groups import layer_groups
    from voxmeter.identity import FileDigests, data_digest

    model = _fp32_model(engine)
    clips, skipped = _clips(dataset)
    groups = list(layer_groups(model))
    grans = [granularity(bool(pc)) for pc in per_channel]
    if not grans:
        raise SpecError("sensitivity: no granularity to measure (per_channel is empty)")
    conds = [(g, pc) for pc in per_channel for g in [*groups, ALL]]
    tally = {c: _Tally() for c in [None, *conds]}
    chunks = [clips[i : i + CHUNK] for i in range(0, len(clips), CHUNK)]
    total, done = len(chunks) * (1 + len(conds)), 0
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
            with _quantized(model, groups if group == ALL else [group], bits, bool(pc)):
                enc = enc0 if _decoder_side(group) else engine.encode(feats)
                hyps = [o.text for o in engine.decode(enc)]
                logp = _teacher_forced(engine, enc, targets)
            tally[(group, pc)].add(refs, hyps, base_hyps, base_logp, logp, targets)
            done += 1
            _tick(progress, f"{group} {granularity(bool(pc))}", done, total)
    base = tally[None].summary()
    cells: dict[str, dict[str, Any]] = {g: {} for g in grans}
    for group, pc in conds:
        cell = tally[(group, pc)].summary()
        cell["delta_wer"] = _delta(cell["wer"], base["wer"])
        cells[granularity(bool(pc))][group] = cell
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
        "bits": bits,
        "method": method_text(bits),
        "groups": groups,
        "granularities": grans,
        "baseline": {k: base[k] for k in ("wer", "ref_words")},
        "cells": cells,
        "additivity": {g: _additivity(cells[g], groups) for g in grans},
        "weights": group_bytes(model, groups, bits),
        "other_fp32_bytes": _other_bytes(model, groups),
    }


def _fp32_model(engine: Any) -> Any:
    model = getattr(engine, "model", None)
    spec = getattr(engine, "spec", None)
    if model is None or spec is None or getattr(engine, "name", "") != "hf":
        raise SpecError("sensitivity: needs the hf engine (torch weights to fake-quantize)")
    if any(p.dtype != torch.float32 for p in model.parameters()) or not spec.compression.is_none:
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
def _quantized(model: Any, names: Iterable[str], bits: int, per_channel: bool):
    from voxmeter.compress.quantize import fake_quantize

    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(fake_quantize(model, name, bits, per_channel=per_channel))
        yield model


def _decoder_side(group: str) -> bool:
    """Groups whose rounding leaves the encoder's output unchanged."""
    return group == "proj" or group.startswith("dec.")


def _tick(progress: Progress, what: str, done: int, total: int) -> None:
    if progress is not None:
        progress(what, done, total)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


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


def _additivity(cells: dict[str, dict[str, Any]], groups: list[str]) -> dict[str, Any]:
    every = cells[ALL]
    return {
        "sum_delta_wer": sum(cells[g]["delta_wer"] or 0.0 for g in groups),
        "all_delta_wer": every["delta_wer"],
        "sum_kl": sum(cells[g]["kl"] for g in groups),
        "all_kl": every["kl"],
    }


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


# -- weight bytes ------------------------------------------------------------------------------


def _group_tensors(model: Any, members: list[str]) -> list[tuple[Any, Any]]:
    """(weight, bias) of each Linear/Conv1d member, a shared weight once."""
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
    from voxmeter.compress.groups import layer_groups

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
    from voxmeter.compress.groups import layer_groups

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


# -- choosing what to keep ---------------------------------------------------------------------


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
        "delta_wer": sum(max(cells[g]["delta_wer"] or 0.0, 0.0) for g in quant),
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
    scheme = "int8-dynamic" if gran == PER_CHANNEL else "int8-dynamic-tensor"
    parts = [f"--compress quant={scheme}"]
    if "proj" not in keep:
        parts.append("--compress quant_embed=true")
    layers = [g for g in keep if g != "proj"]
    if layers:
        parts.append(f"--compress keep={','.join(layers)}")
    return " ".join(parts)
