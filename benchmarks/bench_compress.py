"""Compression: every method on tiny.en (and base) on the default set, each configuration in its
own process, in one run, beside the ct2 engine at int8 and full settings (the speed yardstick).

Configurations: fp32; bf16 (the precision axis); every int8 scheme (with and without the embedding/projection quantized);
hybrid (the two most sensitive groups kept fp32, from a sensitivity map measured on the
calibration set in this run); structured pruning 25% and 50% of heads and FFN neurons, decoder
depth 2 (tiny.en) or 2 and 3 (base), each with and without recovery by distillation; low-rank
at 90% retained energy; and compressed models combined with xT fit and xV k=2.

Figures per configuration: weight bytes, peak RSS (process and clips), RTFx, WER with its CI,
flagged clips, analytic GFLOPs per clip, and the one-off compression seconds.

Targets (checked and written in the JSON):
1. an int8 or hybrid tiny.en within 0.5 WER points of fp32, with weights at most 30% of fp32
   bytes and peak RSS below fp32's;
2. a pruned or shallower model plus recovery with at least 30% fewer FLOPs, within 2 WER points;
3. the best compressed tiny.en configuration (with the xT/xV axes), within 1.0 WER point of fp32
   full settings, at RTFx at least 8x the ct2 engine int8 at full settings.

    python benchmarks/bench_compress.py [--models tiny.en,base] [--quick] [--max-clips 0]
                                        [--only REGEX]  (fp32 always runs: the yardstick)
"""

from __future__ import annotations

import argparse
import re
import sys

from common import pick, write
from fresh import PEAK_RSS_DEFINITION

from voxmeter.run.isolate import run_spec_isolated
from voxmeter.spec import QUANT_SCHEMES, RunSpec

KEYS = ("wer", "wer_ci_lo", "wer_ci_hi", "rtfx", "weight_bytes", "peak_rss_mb",
        "process_peak_rss_mb", "rss_method", "n_flagged", "gflops_analytic_total", "compress_s", "param_count")  # fmt: skip


def configs(model: str, quick: bool) -> dict[str, dict]:
    """name -> RunSpec.with_ changes, for one model."""
    # (--precision int8 in the hf engine is q-int8-dynamic+emb: one row for both)
    out: dict[str, dict] = {"fp32": {}, "bf16": {"precision": "bf16"}}
    schemes = [q for q in QUANT_SCHEMES if q not in ("none", "int8-dynamic")]
    for q in ["int8-dynamic", *schemes]:
        out[f"q-{q}+emb"] = {"quant": q, "quant_embed": True}
        if not quick:
            out[f"q-{q}"] = {"quant": q}
    depths = (2,) if model.startswith("tiny") else (2, 3)
    steps = 100 if quick else 200
    for r in (0.25, 0.5):
        out[f"prune-{r:g}"] = {"prune_heads": r, "prune_ffn": r}
        out[f"prune-{r:g}+distill"] = {
            "prune_heads": r, "prune_ffn": r, "recover": "distill", "recover_steps": steps
        }  # fmt: skip
    for k in depths:
        out[f"dec{k}"] = {"decoder_layers": k}
        out[f"dec{k}+distill"] = {"decoder_layers": k, "recover": "distill", "recover_steps": steps}
    out["lowrank-0.9"] = {"lowrank_energy": 0.9}
    best = {"decoder_layers": 2, "recover": "distill", "recover_steps": steps}
    out["dec2+distill+int8emb+fit"] = {
        **best, "quant": "int8-dynamic", "quant_embed": True, "frames": "fit"
    }  # fmt: skip
    out["dec2+distill+int8emb+fit+k2"] = {**out["dec2+distill+int8emb+fit"], "stride": 2,
                                          "pool": "avg"}  # fmt: skip
    # the axes alone on the int8 model: what compression adds to them
    out["int8emb+fit"] = {"quant": "int8-dynamic", "quant_embed": True, "frames": "fit"}
    out["int8emb+fit+k2"] = {**out["int8emb+fit"], "stride": 2, "pool": "avg"}
    return out


def measure(spec: RunSpec) -> dict:
    (res,) = list(run_spec_isolated(spec, [0]))
    row = pick(res, KEYS)
    row["label"] = spec.label()
    row.update(wer_by_source(res.clips))
    return row


def wer_by_source(clips: list[dict]) -> dict:
    """Corpus WER over the recorded clips and over the espeak-ng ones apart. 39 of the 50
    default clips are synthesized by espeak-ng, as every calibration clip is: recovery trained
    on calib adapts the model to that synthesizer, which the recorded clips show apart."""
    from voxmeter.metrics import corpus_wer

    out = {}
    for name, synth in (("wer_recorded", False), ("wer_synth", True)):
        part = [c for c in clips if c["id"].startswith("tts-") == synth and c.get("ref")]
        if part:
            wer = corpus_wer([c["ref"] for c in part], [c["hyp"] for c in part]).wer
            out[name], out[f"n_{name[4:]}"] = wer, len(part)
    return out


def hybrid_keep(model: str, max_clips: int) -> str:
    """The two groups whose int8 weights cost the most on the calibration set (by WER change,
    then KL, per-channel scales), conv left out: no int8 scheme touches it."""
    from voxmeter.compress.sensitivity import ranked, sensitivity_map
    from voxmeter.data.datasets import load_dataset
    from voxmeter.engines import load_engine

    engine = load_engine(RunSpec(model=model))
    ds = load_dataset("calib")
    if max_clips:
        ds.clips = ds.clips[:max_clips]
    smap = sensitivity_map(engine, ds, per_channel=(True,))
    return ",".join(ranked(smap, exclude=("conv",))[:2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--data", default="default")
    ap.add_argument("--max-clips", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer schemes, 100 recovery steps")
    ap.add_argument("--only", default="", help="regex: run only the configurations it matches")
    args = ap.parse_args()
    rows: dict[str, dict] = {}
    base = RunSpec(data=args.data, max_clips=args.max_clips, repeats=1)
    rows["tiny.en/ct2-int8"] = measure(base.with_(engine="ct2", precision="int8"))
    for model in args.models.split(","):
        spec0 = base.with_(model=model)
        cfgs = configs(model, args.quick)
        try:
            if re.search(args.only, "hybrid"):
                cfgs["hybrid"] = {"quant": "int8-dynamic", "keep": hybrid_keep(model, 20)}
        except Exception as e:  # noqa: BLE001 - the benchmark goes on without the hybrid row
            print(f"{model}: no hybrid row ({e})", file=sys.stderr)
        cfgs = {k: v for k, v in cfgs.items() if k == "fp32" or re.search(args.only, k)}
        for name, change in cfgs.items():
            key = f"{model}/{name}"
            try:
                rows[key] = measure(spec0.with_(**change))
            except Exception as e:  # noqa: BLE001 - a failed configuration is a row that says so
                rows[key] = {"error": f"{type(e).__name__}: {e}"}
            r = rows[key]
            print(f"{key:42s}", {k: round(v, 2) if isinstance(v, float) else v
                                 for k, v in r.items() if k != "label"})  # fmt: skip
    goals = targets(rows)
    for name, goal in goals.items():
        print(f"target {name}: {goal}")
    write(
        "bench_compress-" + args.models.replace(",", "-"),
        {"rows": rows, "targets": goals, "peak_rss_definition": PEAK_RSS_DEFINITION},
    )


def targets(rows: dict[str, dict]) -> dict:
    ok = {k: r for k, r in rows.items() if "error" not in r and r.get("wer") is not None}
    fp32 = ok.get("tiny.en/fp32")
    ct2 = ok.get("tiny.en/ct2-int8")
    out: dict = {}
    if not fp32:
        return {"note": "no tiny.en fp32 row"}
    quant = {
        k: r for k, r in ok.items()
        if k.startswith("tiny.en/") and k.split("/")[1].startswith(("q-", "hybrid"))
    }  # fmt: skip
    t1 = [
        k for k, r in quant.items()
        if r["wer"] <= fp32["wer"] + 0.5
        and r["weight_bytes"] <= 0.30 * fp32["weight_bytes"]
        and r["process_peak_rss_mb"] < fp32["process_peak_rss_mb"]
    ]  # fmt: skip
    out["int8_or_hybrid"] = {"met": bool(t1), "configs": t1}
    rec = {k: r for k, r in ok.items() if k.startswith("tiny.en/") and "+distill" in k}
    t2 = [
        k for k, r in rec.items()
        if r["gflops_analytic_total"] <= 0.7 * fp32["gflops_analytic_total"]
        and r["wer"] <= fp32["wer"] + 2.0
    ]  # fmt: skip
    out["pruned_or_shallow_recovered"] = {
        "met": bool(t2),
        "configs": t2,
        # the same rows on the recorded clips alone (recovery trains on espeak-ng speech)
        "wer_recorded_change": {
            k: rec[k].get("wer_recorded", 0) - fp32.get("wer_recorded", 0) for k in t2
        },
    }
    if ct2:
        within = {k: r for k, r in ok.items() if k.startswith("tiny.en/")
                  and k != "tiny.en/fp32" and r["wer"] <= fp32["wer"] + 1.0}  # fmt: skip
        best = max(within, key=lambda k: within[k]["rtfx"]) if within else None
        ratio = within[best]["rtfx"] / ct2["rtfx"] if best else None
        out["speed"] = {"met": bool(ratio and ratio >= 8), "best": best, "rtfx_over_ct2": ratio}
    return out


if __name__ == "__main__":
    main()
