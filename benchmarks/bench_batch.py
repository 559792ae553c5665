"""Batches of short clips: tiny.en on the default set at batch 1, 2, 4, 8 and 16 in both
engines, each configuration in its own process (one repeat), in a random order.

Reports clips/s, per-clip latency p50/p90 (a clip waits for its whole batch), per-batch
latency, padding share and peak RSS. Target: at batch 8 the hf engine's throughput is at
least 1.5x its own at batch 1.

`--draws N` runs every configuration N times (each draw its own process; all draws' runs in
one shuffled order, so slow spells of the machine fall on every configuration alike). A row
is then the median of its draws, with each draw's throughput kept beside it, and the target
is judged on the ratio of the medians; one draw of the ratio moves by about +-0.1 on 2 cores.

    python benchmarks/bench_batch.py [--data default] [--max-clips 0] [--sizes 1,2,4,8,16]
        [--engines hf,ct2] [--draws 1]
"""

from __future__ import annotations

import argparse
import random
import statistics

from common import pick, write
from fresh import PEAK_RSS_DEFINITION

from voxmeter.run.isolate import run_spec_isolated
from voxmeter.spec import RunSpec

KEYS = (
    "throughput_clips_s",
    "rtfx",
    "e2e_ms_p50",
    "e2e_ms_p90",
    "batch_ms_p50",
    "padding_share",
    "peak_rss_mb",
    "process_peak_rss_mb",
    "rss_method",
    "wer",
    "n_clips",
)
TARGET = 1.5


def median_row(runs: list[dict]) -> dict:
    """The median of each numeric figure over a configuration's draws (one draw: itself),
    with every draw's throughput."""
    if len(runs) == 1:
        return runs[0]
    row = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if len(vals) < len(runs) or len(set(vals)) == 1:
            row[k] = runs[0][k]  # absent in some draw, or the same in all (counts, WER)
        else:
            row[k] = statistics.median(vals)
    row["throughput_draws"] = [r["throughput_clips_s"] for r in runs]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="default")
    ap.add_argument("--max-clips", type=int, default=0)
    ap.add_argument("--sizes", default="1,2,4,8,16")
    ap.add_argument("--engines", default="hf,ct2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=1, help="runs of each configuration")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    configs = [(e, b) for e in args.engines.split(",") for b in sizes] * max(1, args.draws)
    random.Random(args.seed).shuffle(configs)
    draws: dict[str, list[dict]] = {}
    for engine, b in configs:
        spec = RunSpec(
            engine=engine, data=args.data, max_clips=args.max_clips, repeats=1, batch_size=b
        )
        (res,) = list(run_spec_isolated(spec, [0]))
        row = pick(res, KEYS)
        draws.setdefault(f"{engine}-b{b}", []).append(row)
        print(f"{engine} b={b}", {k: round(v, 2) if isinstance(v, float) else v
                                  for k, v in row.items()})  # fmt: skip
    rows = {name: median_row(runs) for name, runs in draws.items()}
    out = {"order": configs, "draws": max(1, args.draws), "rows": rows, "target": TARGET,
           "peak_rss_definition": PEAK_RSS_DEFINITION}  # fmt: skip
    for engine in args.engines.split(","):
        one, eight = rows.get(f"{engine}-b1"), rows.get(f"{engine}-b8")
        if one and eight:
            ratio = eight["throughput_clips_s"] / one["throughput_clips_s"]
            out[f"{engine}_b8_over_b1_throughput"] = ratio
            # each draw's own ratio (the i-th batch-8 run over the i-th batch-1 run)
            per = [
                e["throughput_clips_s"] / o["throughput_clips_s"]
                for o, e in zip(draws[f"{engine}-b1"], draws[f"{engine}-b8"], strict=True)
            ]
            out[f"{engine}_b8_over_b1_per_draw"] = per
            spread = f" (draws {min(per):.2f}-{max(per):.2f})" if len(per) > 1 else ""
            print(f"{engine}: throughput at batch 8 / batch 1 = {ratio:.2f}{spread} "
                  f"(target >= {TARGET})")  # fmt: skip
    if "hf_b8_over_b1_throughput" in out:
        out["met"] = out["hf_b8_over_b1_throughput"] >= TARGET
    write("bench_batch", out)


if __name__ == "__main__":
    main()
