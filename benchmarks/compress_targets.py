"""The targets of issue 28 checked on bench_compress's rows, and its markdown tables.

A row is {"changes": the CompressionSettings and axis fields off their defaults, "training":
{"train_data", "labeller", "train_clips"}, "by_data": {test set: figures}}; rows are keyed
"<model>/<configuration>", and a recovered configuration's name ends in a TRAINING suffix.
"""

from __future__ import annotations

# how a recovered row was trained: suffix -> CompressionSettings fields
TRAINING = {
    "@real": {"train_data": "real-train", "labeller": "teacher"},
    "@real/base": {"train_data": "real-train", "labeller": "base"},
    "@calib": {"train_data": "calib"},  # synthetic speech with references
}


def tiny_rows(rows: dict[str, dict], ts: str) -> dict[str, dict]:
    """tiny.en's rows measured without error on test set `ts`: name -> figures."""
    out = {}
    for key, row in rows.items():
        fig = row.get("by_data", {}).get(ts, {})
        if key.startswith("tiny.en/") and fig.get("wer") is not None and "error" not in fig:
            out[key.split("/", 1)[1]] = {**fig, "changes": row["changes"], **row["training"]}
    return out


STRUCTURAL = ("decoder_layers", "prune_heads", "prune_ffn", "lowrank_energy")


def is_axes(r: dict) -> bool:
    return "frames" in r["changes"] or "stride" in r["changes"]


def trained_on(r: dict, name: str) -> bool:
    """Whether the row trained (or took importance) on set `name` ("real-train (auto)" too)."""
    return str(r.get("train_data") or "").startswith(name)


def target1(ok: dict[str, dict], fp32: dict) -> list[dict]:
    """Pruned or shallower + recovery on real-train (no quant, no axes): FLOPs and WER."""
    out = []
    for name, r in ok.items():
        c = r["changes"]
        if (
            c.get("recover")
            and r["train_data"] == "real-train"
            and not is_axes(r)
            and "quant" not in c
        ):
            flops = r["gflops_analytic_total"] / fp32["gflops_analytic_total"]
            d = r["wer"] - fp32["wer"]
            out.append(
                {
                    "config": name,
                    "flops_share": flops,
                    "wer_change": d,
                    "met": flops <= 0.70 and d <= 2.0,
                }
            )
    return out


def target2(ok: dict[str, dict], fp32: dict, ct2: dict | None) -> list[dict]:
    """Compression with xT/xV, not trained on calib: WER change and RTFx over ct2 int8."""
    out = []
    for name, r in ok.items():
        c = r["changes"]
        if is_axes(r) and ("quant" in c or c.get("recover")) and not trained_on(r, "calib"):
            d = r["wer"] - fp32["wer"]
            ratio = r["rtfx"] / ct2["rtfx"] if ct2 and ct2.get("rtfx") else None
            out.append(
                {
                    "config": name,
                    "wer_change": d,
                    "rtfx_over_ct2_int8": ratio,
                    "met": d <= 1.0 and ratio is not None and ratio >= 8,
                }
            )
    return sorted(out, key=lambda x: -(x["rtfx_over_ct2_int8"] or 0))


def target3(ok: dict[str, dict], fp32: dict) -> list[dict]:
    """Each recovered configuration trained on calib, on real-train and with base labels."""
    out = []
    for name in [n for n in ok if n.endswith("@calib")]:
        base = name.removesuffix("@calib")
        wer = {s: ok[base + s]["wer"] for s in TRAINING if base + s in ok}
        real = wer.get("@real")
        out.append(
            {
                "config": base,
                "fp32_wer": fp32["wer"],
                "wer": wer,
                "real_minus_synthetic": real - wer["@calib"] if real is not None else None,
            }
        )
    return out


def target4(ok: dict[str, dict], fp32: dict) -> list[dict]:
    """int8 or hybrid alone: WER, weight bytes and peak RSS against fp32."""
    out = []
    for name, r in ok.items():
        c = r["changes"]
        if "quant" in c and not is_axes(r) and not any(k in c for k in STRUCTURAL):
            d = r["wer"] - fp32["wer"]
            w = r["weight_bytes"] / fp32["weight_bytes"]
            rss = r["process_peak_rss_mb"] - fp32["process_peak_rss_mb"]
            out.append(
                {
                    "config": name,
                    "wer_change": d,
                    "weights_share": w,
                    "peak_rss_change_mb": rss,
                    "met": d <= 0.5 and w <= 0.30 and rss < 0,
                }
            )
    return out


def targets(rows: dict[str, dict], sets: list[str]) -> dict:
    """Each target per test set (the configurations and their figures), and met overall:
    one configuration meets it on every test set (target 3: every pair was measured)."""
    per: dict[str, dict] = {"1": {}, "2": {}, "3": {}, "4": {}}
    for ts in sets:
        ok = tiny_rows(rows, ts)
        fp32 = ok.get("fp32")
        if not fp32:
            for t in per.values():
                t[ts] = "no tiny.en fp32 row"
            continue
        ct2 = rows.get("tiny.en/ct2-int8", {}).get("by_data", {}).get(ts)
        per["1"][ts], per["2"][ts] = target1(ok, fp32), target2(ok, fp32, ct2)
        per["3"][ts], per["4"][ts] = target3(ok, fp32), target4(ok, fp32)
    out = {}
    for t, by_set in per.items():
        if t == "3":
            pairs = [p for v in by_set.values() if isinstance(v, list) for p in v]
            met = bool(pairs) and all(p["real_minus_synthetic"] is not None for p in pairs)
            out[t] = {"met": met, "by_set": by_set}
            continue
        passing = [
            {x["config"] for x in v if x["met"]} if isinstance(v, list) else set()
            for v in by_set.values()
        ]
        both = sorted(set.intersection(*passing)) if passing else []
        out[t] = {"met": bool(both), "configs": both, "by_set": by_set}
    return out


HEAD = (
    "| configuration | trained on | labeller | WER [95% CI] | ΔWER | GFLOPs/clip | RTFx | "
    "weights MiB | peak RSS MiB |"
)
HEAD3_TITLE = "Recovery trained on synthetic vs recorded speech (WER on the same test clips):"
HEAD3 = (
    "| recovery | test set | fp32 | on calib (espeak-ng) | on real-train (tiny.en labels) | "
    "on real-train (base labels) |"
)


def fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(rows: dict[str, dict], sets: list[str], title: str = "") -> str:
    """One table per test set, then recovery on calib vs real-train side by side (target 3)."""
    lines = [title] if title else []
    for ts in sets:
        fp32 = rows.get("tiny.en/fp32", {}).get("by_data", {}).get(ts, {}).get("wer")
        lines += [f"\n{ts}:\n", HEAD, "|---" * HEAD.count(" | ") + "|---|"]
        for key, row in rows.items():
            r = row["by_data"].get(ts, {})
            if "error" in r or r.get("wer") is None:
                lines.append(f"| {key} | | | {r.get('error', 'no WER')[:60]} | | | | | |")
                continue
            d = r["wer"] - fp32 if fp32 is not None else None
            t = row["training"]
            lines.append(
                f"| {key} | {t['train_data'] or '–'} | {t['labeller'] or '–'} | "
                f"{fmt(r['wer'])} [{fmt(r['wer_ci_lo'])}, {fmt(r['wer_ci_hi'])}] | "
                f"{'+' if d and d > 0 else ''}{fmt(d)} | {fmt(r['gflops_analytic_total'])} | "
                f"{fmt(r['rtfx'])} | {fmt((r['weight_bytes'] or 0) / 2**20)} | "
                f"{fmt(r['process_peak_rss_mb'], 0)} |"
            )
    lines += [f"\n{HEAD3_TITLE}\n", HEAD3, "|---" * HEAD3.count(" | ") + "|---|"]
    for ts in sets:
        for p in targets(rows, [ts])["3"]["by_set"].get(ts) or []:
            if isinstance(p, dict):
                w = p["wer"]
                lines.append(
                    f"| {p['config']} | {ts} | {fmt(p['fp32_wer'])} | "
                    f"{fmt(w.get('@calib'))} | {fmt(w.get('@real'))} | "
                    f"{fmt(w.get('@real/base'))} |"
                )
    return "\n".join(lines)
