"""Turn one repeat's per-clip records and instrument windows into the flat metrics of a Result."""

from __future__ import annotations

from typing import Any

import numpy as np

from voxmeter.assets.bundled import ModelSource
from voxmeter.metrics import accuracy_bootstrap_cis, corpus_wer, failure_flags, normalize
from voxmeter.result import PERCENTILES
from voxmeter.spec import RunSpec
from voxmeter.stats import percentiles

GFLOP = 1e9


def _encoder_parts(dims: Any, shape: Any, n_frames: int) -> tuple[float, float]:
    from voxmeter.measure.flops import analytic_encoder_flops

    f = analytic_encoder_flops(dims, n_frames, shape)
    return float(f.linear), float(f.conv + f.attention)


def clip_encoder_flops(dims: Any, engine: Any, rec: dict) -> tuple[float, float]:
    """Analytic encoder FLOPs of what this clip ran, as (Linear, conv + attention): the two
    may run in different dtypes (run/peakshare.py). A long recording: the sum over its
    windows, each item of a batched window at its own input (workload.encoder_batch)."""
    shape = getattr(engine, "shape", None)  # the layers it really has, once compressed
    if "windows" not in rec:
        return _encoder_parts(dims, shape, rec["n_frames"])
    lin = rest = 0.0
    for w in (w for w in rec["windows"] if "n_frames" in w):
        frames = [w["n_frames"]]
        if rec.get("longform") == "batched":  # a window is a batch: count each of its items
            frames = w.get("item_frames") or [w["n_frames"]] * w["batch"]
        for f in frames:
            a, b = _encoder_parts(dims, shape, f)
            lin, rest = lin + a, rest + b
    return lin, rest


def clip_decoder_flops(dims: Any, engine: Any, rec: dict) -> float:
    """Analytic decoder FLOPs of the shapes this clip ran (a long recording: the sum over its
    windows, a batched window's once per item)."""
    from voxmeter.measure.flops import analytic_decoder_flops

    if "windows" in rec:
        batched = rec.get("longform") == "batched"  # a window is a batch: once per item
        return sum(
            clip_decoder_flops(dims, engine, w) * (w["batch"] if batched else 1)
            for w in rec["windows"]
            if "n_frames" in w
        )
    return analytic_decoder_flops(
        dims,
        rec["decoder_positions"],
        len(engine.prompt),
        rec["n_steps"],
        kv_positions=rec.get("kv_projected"),
        shape=getattr(engine, "shape", None),
    ).total


def clip_flops(dims: Any, engine: Any, rec: dict) -> tuple[float, float]:
    """Analytic encoder and decoder FLOPs of the shapes this clip actually ran (a long
    recording: the sum over its windows; a batched clip: at its own input length)."""
    return sum(clip_encoder_flops(dims, engine, rec)), clip_decoder_flops(dims, engine, rec)


def once_per_batch(recs: list[dict]) -> list[dict]:
    """The records whose stage times are distinct runs. Every clip of a batch carries its
    batch's times (what it waited for), so only the batch's first clip is kept; a clip at
    batch 1 and a long recording (whose batched windows are its own) are kept as they are."""
    seen: set[int] = set()
    out = []
    for r in recs:
        if "batch" in r:
            if r["batch"] in seen:
                continue
            seen.add(r["batch"])
        out.append(r)
    return out


def stage_s(recs: list[dict], key: str) -> float:
    """Seconds the repeat spent in stage `key` ("e2e": processing), each batch counted once."""
    return sum(r.get(f"{key}_ms", 0.0) for r in once_per_batch(recs)) / 1e3


def decode_units(recs: list[dict]) -> list[dict]:
    """What the decoder ran as one loop: a clip at batch 1, a batch (once, with its longest
    item's steps), or each window of a long recording."""
    units: list[dict] = []
    for r in once_per_batch(recs):
        if "windows" in r:
            units += [w for w in r["windows"] if "n_frames" in w]
        elif "batch" in r:
            unit = {k: r[k] for k in ("dec_ms", "e2e_ms", "prefill_ms") if k in r}
            unit["n_steps"] = max(x["n_steps"] for x in recs if x.get("batch") == r["batch"])
            units.append(unit)
        else:
            units.append(r)
    return units


def per_token_ms(recs: list[dict]) -> float | None:
    """Decoder ms per decoding step after the prefill: sum(dec - prefill) / sum(steps - 1),
    over what the decoder ran as one loop (a clip, a batch, a window; see decode_units).

    The prefill (prompt and cross-attention K/V, up to the first token) is its own figure:
    counted here it would make the per-token cost move with xV and clip length alone. At
    batch B one step yields up to B tokens.
    """
    units = decode_units(recs)
    if not units or not all("prefill_ms" in u for u in units):
        return None
    steps = sum(u["n_steps"] - 1 for u in units)
    if steps <= 0:
        return None
    return sum(u["dec_ms"] - u["prefill_ms"] for u in units) / steps


def processing_s(recs: list[dict]) -> float:
    """Seconds the repeat spent processing: each batch counted once, not once per clip."""
    return stage_s(recs, "e2e")


def workload_metrics(recs: list[dict]) -> dict[str, Any]:
    """Batch and long-form figures of one repeat (absent when the workload has none)."""
    m: dict[str, Any] = {}
    batched = [r for r in recs if "batch" in r]
    if batched:
        units = {r["batch"]: r for r in batched}
        # each clip at the input it ran (the batch's, or its encoder part's); the share is
        # the batch's
        frames_run = sum(r["n_frames"] for r in batched)
        padded = sum(r["batch_padding_share"] * r["n_frames"] for r in batched)
        m["n_batches"] = len(units)
        m["padding_share"] = 100.0 * padded / frames_run if frames_run else None
        for q, v in zip(PERCENTILES, percentiles([r["e2e_ms"] for r in units.values()])):
            m[f"batch_ms_p{q}"] = float(v)
    long = [r for r in recs if "windows" in r]
    if long:
        wins = [w for r in long for w in r["windows"] if "n_frames" in w]
        m["n_recordings"] = len(long)
        m["n_windows"] = len(wins)
        m["n_windows_flagged"] = sum(1 for w in wins if w.get("flags"))
        m["longform_decoding"] = long[0]["decoding"]
        if wins:
            for q, v in zip(PERCENTILES, percentiles([w["e2e_ms"] for w in wins])):
                m[f"window_ms_p{q}"] = float(v)
        vad = [w["vad_ms"] for r in long for w in r["windows"] if "vad_ms" in w]
        if vad:
            m["vad_ms_total"] = float(sum(vad))
    return m


def timing_metrics(engine: Any, data: Any, recs: list[dict]) -> dict[str, Any]:
    """Throughput (RTF, RTFx, clips/s: each batch's time counted once), this repeat's stage
    percentiles over its clips (a clip at batch B waited for its batch), decoder per token,
    and the workload's batch and long-form figures."""
    for r in recs:  # every window's own end-to-end time, for window latency
        for w in r.get("windows", []):
            w["e2e_ms"] = sum(w.get(f"{k}_ms", 0.0) for k in ("feat", "enc", "dec", "vad"))
    audio_s = sum(r["duration_s"] for r in recs)
    proc_s = processing_s(recs)
    m: dict[str, Any] = dict(
        n_clips=len(recs),
        n_skipped=len(data.skipped),
        audio_s=audio_s,
        rtf=proc_s / audio_s,
        rtfx=audio_s / proc_s,
        throughput_clips_s=len(recs) / proc_s,
    )
    # this repeat's percentiles over its clips; aggregation pools clips x repeats instead
    keys = [st.key for st in engine.stages]
    m["stage_keys"] = ",".join(keys)
    for stage in [*keys, "prefill", "e2e"]:
        vals = [r[f"{stage}_ms"] for r in recs if f"{stage}_ms" in r]
        if vals:
            for q, v in zip(PERCENTILES, percentiles(vals)):
                m[f"{stage}_ms_p{q}"] = float(v)
        mem = [r[f"{stage}_mem_mb"] for r in recs if r.get(f"{stage}_mem_mb") is not None]
        if mem:
            m[f"{stage}_mem_mb"] = float(max(mem))
    m["dec_ms_per_token"] = per_token_ms(recs)
    m.update(workload_metrics(recs))
    return m


def precision_ran(spec: RunSpec, engine: Any) -> str:
    """The precision the engine really runs: the quantization it applied at load (the spec's,
    precision int8's, or what a compressed directory carries), else the precision axis."""
    c = getattr(engine, "compression", None) or spec.compression
    if c.quant != "none":
        return c.quant + ("+emb" if c.quant_embed else "")
    return "fp32, int8 emb" if c.quant_embed else spec.axes.precision


def model_metrics(spec: RunSpec, engine: Any) -> dict[str, Any]:
    """Parameters and weight bytes as loaded, and how each was found."""
    return dict(
        param_count=engine.param_count(),
        weight_bytes=engine.weight_bytes(),
        precision=precision_ran(spec, engine),
        precision_method=getattr(engine, "precision_method", None),
        weight_bytes_method=(
            "from shapes and compute type (CTranslate2 has no memory query)"
            if engine.name == "ct2"
            else "tensor bytes as loaded"
        ),
    )


def accuracy_metrics(
    spec: RunSpec, engine: Any, source: ModelSource, data: Any, recs: list[dict]
) -> dict[str, Any]:
    """Corpus WER/CER with the WER bootstrap CI, each clip's own WER/CER and failure flags
    (written into the records)."""
    m: dict[str, Any] = {}
    for r in recs:
        r["flags"] = failure_flags(r["hyp"], r["duration_s"], r["ref"], r["hit_max_length"])
        if "windows" in r:
            # Whisper judges loops per 30 s window, not over a whole recording's text: keep
            # the windows' own flags, plus an early end against the recording's reference
            win = {f for w in r["windows"] for f in w.get("flags", [])}
            r["flags"] = sorted(win | ({"early_end"} & set(r["flags"])))
    m["n_flagged"] = sum(1 for r in recs if r["flags"])
    if data.skipped:
        m["wer_scope"] = (
            f"partial: {len(data.skipped)} of {len(data.skipped) + len(recs)} clips skipped "
            "as bad input, their words not counted"
        )
    if getattr(data, "unreferenced", 0):  # a cost-only run (run/references.py)
        m["wer"] = m["cer"] = None
        m["accuracy_note"] = (
            f"not measured: {data.unreferenced} of {len(data.dataset.clips)} clips of "
            f"{data.name!r} have no reference text (cost-only run)"
        )
    elif source.has_weights and engine.tokenizer.available:
        refs, hyps = [r["ref"] for r in recs], [r["hyp"] for r in recs]
        w = corpus_wer(refs, hyps)
        m["wer"], m["cer"] = w.wer, w.cer
        for key, ci in accuracy_bootstrap_cis(refs, hyps, seed=spec.seed).items():
            m[f"{key}_ci_lo"], m[f"{key}_ci_hi"] = ci if ci else (None, None)
        for r in recs:
            cw = corpus_wer([r["ref"]], [r["hyp"]])
            r["wer"], r["cer"] = cw.wer, cw.cer
    else:
        m["wer"] = m["cer"] = None
        m["accuracy_note"] = "not available: cost-only model with random weights"
    return m


def counted_metrics(dims: Any, engine: Any, counted: dict | None) -> dict[str, Any]:
    """FlopCounterMode's per-clip FLOPs (hf engine), beside the analytic ones of the same
    counted clips' shapes."""
    m: dict[str, Any] = {}
    if not counted:
        m["gflops_counted_enc"] = m["gflops_counted_dec"] = None
        m["flops_counted_method"] = (
            "not countable: CTranslate2 runs outside torch" if engine.name == "ct2" else "off"
        )
        return m
    n = len(counted["shapes"])
    an = [clip_flops(dims, engine, s) for s in counted["shapes"]]
    m["gflops_counted_enc"] = counted["enc"] / GFLOP
    m["gflops_counted_dec"] = counted["dec"] / GFLOP
    # the comparison is made on the same clips: analytic of the counted clips' shapes
    m["gflops_analytic_counted_enc"] = sum(a for a, _ in an) / n / GFLOP
    m["gflops_analytic_counted_dec"] = sum(d for _, d in an) / n / GFLOP
    m["flops_counted_vs_analytic_enc"] = counted["enc"] / (sum(a for a, _ in an) / n)
    m["flops_counted_vs_analytic_dec"] = counted["dec"] / (sum(d for _, d in an) / n)
    m["flops_counted_method"] = (
        f"FlopCounterMode on the first {n} clip(s), eager attention, untimed pass"
    )
    return m


def flops_metrics(
    spec: RunSpec, engine: Any, dims: Any, recs: list[dict], peaks: dict[str, Any]
) -> dict[str, Any]:
    """Analytic FLOPs per clip (mean; each clip's written into its record), the paper's
    formula, and the encoder's achieved GFLOP/s and share of peak: all clips' FLOPs over the
    encoder's time with each batch counted once (every clip of a batch carries the batch's
    time), divided by the peak of the dtype each matmul runs in (run/peakshare.py)."""
    from voxmeter.measure.flops import achieved_gflops, paper_flops
    from voxmeter.run.peakshare import encoder_peak_share

    m: dict[str, Any] = {}
    enc_parts = [clip_encoder_flops(dims, engine, r) for r in recs]
    dec_fl = np.array([clip_decoder_flops(dims, engine, r) for r in recs])
    enc_fl = np.array([lin + rest for lin, rest in enc_parts])
    for r, e, d in zip(recs, enc_fl, dec_fl):
        r["gflops_analytic_enc"], r["gflops_analytic_dec"] = float(e) / GFLOP, float(d) / GFLOP
    m["gflops_analytic_enc"] = float(enc_fl.mean()) / GFLOP
    m["gflops_analytic_dec"] = float(dec_fl.mean()) / GFLOP
    m["gflops_analytic_total"] = m["gflops_analytic_enc"] + m["gflops_analytic_dec"]
    m["gflops_paper_total"] = paper_flops(dims, stride_k=spec.axes.stride).total / GFLOP
    enc_s = stage_s(recs, "enc")
    m["enc_gflops_per_s"] = achieved_gflops(float(enc_fl.sum()), enc_s) if enc_s > 0 else None
    linear = sum(lin for lin, _ in enc_parts)
    rest = sum(r for _, r in enc_parts)
    m.update(encoder_peak_share(spec, linear, rest, enc_s, peaks))
    return m


def energy_metrics(m: dict[str, Any], recs: list[dict]) -> dict[str, Any]:
    """Energy per second of audio and per reference word: the repeat's energy window, which
    spans every batch once, over the repeat's audio and words."""
    if m.get("energy_j") is None:
        return {}
    ref_words = sum(len(normalize(r["ref"]).split()) for r in recs)
    return {
        "j_per_audio_s": m["energy_j"] / m["audio_s"],
        "j_per_word": m["energy_j"] / ref_words if ref_words else None,
    }


def input_warnings(recs: list[dict], n_flagged: int) -> tuple[dict[str, Any], list[str]]:
    """Audio the encoder never heard (clips longer than their input) and decoding failures."""
    # the encoder hears n_frames x 10 ms: audio past that was never transcribed, and WER pays
    cut = [r for r in recs if "n_frames" in r and r["duration_s"] > r["n_frames"] / 100 + 0.01]
    m = {
        "n_clips_cut": len(cut),
        "audio_cut_s": sum(r["duration_s"] - r["n_frames"] / 100 for r in cut),
    }
    warnings = []
    if cut:
        warnings.append(
            f"{len(cut)} clip(s) are longer than the {cut[0]['n_frames'] / 100:g} s input "
            f"({m['audio_cut_s']:.1f} s of audio never reached the encoder, e.g. {cut[0]['id']}): "
            "their WER counts the missing words"
        )
    if n_flagged:
        warnings.append(
            f"{n_flagged} clip(s) look like decoding failures (early end or loop); "
            "one such clip can move WER by several points"
        )
    return m, warnings


def summarize_repeat(
    spec: RunSpec,
    engine: Any,
    source: ModelSource,
    data: Any,
    recs: list[dict],
    window: Any,
    counted: dict | None,
) -> tuple[dict[str, Any], list[str]]:
    """One repeat's flat metrics and warnings, from its per-clip records and its instrument
    window (memory, energy, CPU, the cached matmul peaks)."""
    m = timing_metrics(engine, data, recs)
    m.update(model_metrics(spec, engine))
    m.update(accuracy_metrics(spec, engine, source, data, recs))
    m.update(flops_metrics(spec, engine, source.dims, recs, window.peaks))
    m.update(counted_metrics(source.dims, engine, counted))
    m.update(window.metrics)  # memory (its per-stage transients replace the clips'), energy, CPU
    m.update(energy_metrics(m, recs))
    cut, warnings = input_warnings(recs, m["n_flagged"])
    m.update(cut)
    return m, [*window.warnings, *warnings]
