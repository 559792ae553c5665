"""Batches of short clips: tiny.en on the default set at batch 1, 2, 4, 8 and 16 in both
engines, each configuration in its own process (one repeat), in a random order.

Reports clips/s, per-clip latency p50/p90 (a clip waits for its whole batch), per-batch
latency, padding share and peak RSS. Target: at batch 8 the hf engine's throughput is at
least 1.5x its own at batch 1.

    python benchmarks/bench_batch.py [--data default] [--max-clips 0] [--sizes 1,2,4,8,16]
"""

from __future__ import annotations

import argparse
import random

from common import pick, write

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
    "wer",
    "n_clips",
)
TARGET = 1.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="default")
    ap.add_argument("--max-clips", type=int, default=0)
    ap.add_argument("--sizes", default="1,2,4,8,16")
    ap.add_argument("--engines", default="hf,ct2")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    configs = [(e, b) for e in args.engines.split(",") for b in sizes]
    random.Random(args.seed).shuffle(configs)
    rows: dict[str, dict] = {}
    for engine, b in configs:
        spec = RunSpec(
            engine=engine, data=args.data, max_clips=args.max_clips, repeats=1, batch_size=b
        )
        (res,) = list(run_spec_isolated(spec, [0]))
        rows[f"{engine}-b{b}"] = pick(res, KEYS)
        print(f"{engine} b={b}", {k: round(v, 2) if isinstance(v, float) else v
                                  for k, v in rows[f'{engine}-b{b}'].items()})  # fmt: skip
    out = {"order": configs, "rows": rows, "target": TARGET}
    for engine in args.engines.split(","):
        one, eight = rows.get(f"{engine}-b1"), rows.get(f"{engine}-b8")
        if one and eight:
            ratio = eight["throughput_clips_s"] / one["throughput_clips_s"]
            out[f"{engine}_b8_over_b1_throughput"] = ratio
            print(f"{engine}: throughput at batch 8 / batch 1 = {ratio:.2f} (target >= {TARGET})")
    if "hf_b8_over_b1_throughput" in out:
        out["met"] = out["hf_b8_over_b1_throughput"] >= TARGET
    write("bench_batch", out)


if __name__ == "__main__":
    main()
