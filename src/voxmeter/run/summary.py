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


def clip_flops(dims, engine, rec: dict) -> tuple[float, float]:
    """Analytic encoder and decoder FLOPs of the shapes this clip actually ran (a long
    recording: the sum over its windows; a batched clip: at its batch's input length)."""
    from voxmeter.measure.flops import analytic_decoder_flops, analytic_encoder_flops

    shape = getattr(engine, "shape", None)  # the layers it really has, once compressed
    if "windows" in rec:
        wins = [w for w in rec["windows"] if "n_frames" in w]
        parts = [clip_flops(dims, engine, w) for w in wins]
        if rec.get("longform") == "batched":  # a window is a batch: count each of its items
            parts = [
                (
                    # encoder parts at their own lengths (workload.encoder_batch)
                    sum(analytic_encoder_flops(dims, f, shape).total for f in w["item_frames"])
                    if "item_frames" in w
                    else e * w["batch"],
                    d * w["batch"],
                )
                for (e, d), w in zip(parts, wins)
            ]
        return sum(e for e, _ in parts), sum(d for _, d in parts)
    enc = analytic_encoder_flops(dims, rec["n_frames"], shape).total
    dec = analytic_decoder_flops(
        dims,
        rec["decoder_positions"],
        len(engine.prompt),
        rec["n_steps"],
        kv_positions=rec.get("kv_projected"),
        shape=shape,
    ).total
    return enc, dec


def decode_units(recs: list[dict]) -> list[dict]:
    """What the decoder ran as one loop: a clip at batch 1, a batch (once, with its longest
    item's steps), or each window of a long recording."""
    units: list[dict] = []
    seen: set[int] = set()
    for r in recs:
        if "windows" in r:
            units += [w for w in r["windows"] if "n_frames" in w]
        elif "batch" in r:
            if r["batch"] in seen:
                continue
            seen.add(r["batch"])
            same = [x for x in recs if x.get("batch") == r["batch"]]
            unit = {k: r[k] for k in ("dec_ms", "e2e_ms", "prefill_ms") if k in r}
            unit["n_steps"] = max(x["n_steps"] for x in same)
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
    total, seen = 0.0, set()
    for r in recs:
        if "batch" in r:
            if r["batch"] in seen:
                continue
            seen.add(r["batch"])
        total += r["e2e_ms"]
    return total / 1e3


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


def summarize_repeat(
    spec: RunSpec,
    engine: Any,
    source: ModelSource,
    data: Any,
    recs: list[dict],
    window: Any,
    counted: dict | None,
) -> tuple[dict[str, Any], list[str]]:
    from voxmeter.measure.flops import paper_flops

    dims = source.dims
    m: dict[str, Any] = {}
    warnings: list[str] = list(window.warnings)
    audio_s = sum(r["duration_s"] for r in recs)
    for r in recs:  # every window's own end-to-end time, for window latency
        for w in r.get("windows", []):
            w["e2e_ms"] = sum(w.get(f"{k}_ms", 0.0) for k in ("feat", "enc", "dec", "vad"))
    proc_s = processing_s(recs)
    m.update(
        n_clips=len(recs),
        n_skipped=len(data.skipped),
        audio_s=audio_s,
        rtf=proc_s / audio_s,
        rtfx=audio_s / proc_s,
        throughput_clips_s=len(recs) / proc_s,
        param_count=engine.param_count(),
        weight_bytes=engine.weight_bytes(),
        precision_method=getattr(engine, "precision_method", None),
        weight_bytes_method=(
            "from shapes and compute type (CTranslate2 has no memory query)"
            if engine.name == "ct2"
            else "tensor bytes as loaded"
        ),
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

    # accuracy
    ref_words = sum(len(normalize(r["ref"]).split()) for r in recs)
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
    if source.has_weights and engine.tokenizer.available:
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

    # FLOPs: analytic per clip (mean), counted on the counting pass, paper's formula
    per_clip = [clip_flops(dims, engine, r) for r in recs]
    for r, (e, d) in zip(recs, per_clip):
        r["gflops_analytic_enc"], r["gflops_analytic_dec"] = e / GFLOP, d / GFLOP
    enc_fl = np.array([e for e, _ in per_clip])
    dec_fl = np.array([d for _, d in per_clip])
    m["gflops_analytic_enc"] = float(enc_fl.mean()) / GFLOP
    m["gflops_analytic_dec"] = float(dec_fl.mean()) / GFLOP
    m["gflops_analytic_total"] = m["gflops_analytic_enc"] + m["gflops_analytic_dec"]
    m["gflops_paper_total"] = paper_flops(dims, stride_k=spec.axes.stride).total / GFLOP
    if counted:
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
    else:
        m["gflops_counted_enc"] = m["gflops_counted_dec"] = None
        m["flops_counted_method"] = (
            "not countable: CTranslate2 runs outside torch" if engine.name == "ct2" else "off"
        )
    enc_s = sum(r["enc_ms"] for r in recs) / 1e3
    m["enc_gflops_per_s"] = float(enc_fl.sum()) / GFLOP / enc_s if enc_s else None

    # memory, energy, CPU
    m.update(window.metrics)
    if m.get("energy_j") is not None:
        m["j_per_audio_s"] = m["energy_j"] / audio_s
        m["j_per_word"] = m["energy_j"] / ref_words if ref_words else None
    peak = window.peak_gflops
    if peak and m["enc_gflops_per_s"]:
        m["enc_peak_share"] = 100.0 * m["enc_gflops_per_s"] / peak
        m["peak_note"] = f"of {peak:.1f} GFLOP/s measured by `voxmeter peak`"
    else:
        m["enc_peak_share"] = None
        m["peak_note"] = "run `voxmeter peak` once to measure the machine's matmul peak"
    # the encoder hears n_frames x 10 ms: audio past that was never transcribed, and WER pays
    cut = [r for r in recs if "n_frames" in r and r["duration_s"] > r["n_frames"] / 100 + 0.01]
    m["n_clips_cut"] = len(cut)
    m["audio_cut_s"] = sum(r["duration_s"] - r["n_frames"] / 100 for r in cut)
    if cut:
        warnings.append(
            f"{len(cut)} clip(s) are longer than the {cut[0]['n_frames'] / 100:g} s input "
            f"({m['audio_cut_s']:.1f} s of audio never reached the encoder, e.g. {cut[0]['id']}): "
            "their WER counts the missing words"
        )
    if m["n_flagged"]:
        warnings.append(
            f"{m['n_flagged']} clip(s) look like decoding failures (early end or loop); "
            "one such clip can move WER by several points"
        )
    return m, warnings
