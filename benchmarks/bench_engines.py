"""tiny.en on the default set: hf fp32, ct2 fp32, ct2 int8 (and hf int8), one isolated run each,
in a random order. Target: hf fp32 RTFx >= 0.8 x ct2 fp32 (our engine must not be a straw man).

    python benchmarks/bench_engines.py [--data default] [--max-clips 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import random

from common import pick, write
from fresh import PEAK_RSS_DEFINITION

from voxmeter.run.isolate import run_spec_isolated
from voxmeter.spec import RunSpec

KEYS = ("rtfx", "enc_ms_p50", "dec_ms_per_token", "peak_rss_mb", "process_peak_rss_mb",
        "rss_method", "wer", "e2e_ms_p50", "n_clips")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="default")
    ap.add_argument("--max-clips", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    configs = [("hf", "fp32"), ("ct2", "fp32"), ("ct2", "int8"), ("hf", "int8")]
    random.Random(args.seed).shuffle(configs)
    rows = {}
    for engine, precision in configs:
        spec = RunSpec(engine=engine, data=args.data, max_clips=args.max_clips, repeats=1)
        spec = spec.with_(precision=precision)
        (res,) = list(run_spec_isolated(spec, [0]))
        rows[f"{engine}-{precision}"] = pick(res, KEYS)
        print(engine, precision, rows[f"{engine}-{precision}"])
    ratio = rows["hf-fp32"]["rtfx"] / rows["ct2-fp32"]["rtfx"]
    write(
        "bench_engines",
        {
            "order": configs,
            "peak_rss_definition": PEAK_RSS_DEFINITION,
            "rows": rows,
            "hf_fp32_over_ct2_fp32_rtfx": ratio,
            "target": 0.8,
            "met": ratio >= 0.8,
        },
    )
    print(f"hf fp32 RTFx / ct2 fp32 RTFx = {ratio:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
