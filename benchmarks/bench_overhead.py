"""The same run with all instruments on and off, alternating, in one process after warm-up.
Target: instruments cost at most 3% of RTFx.

    python benchmarks/bench_overhead.py [--pairs 3] [--max-clips 0]
"""

from __future__ import annotations

import argparse
import statistics

from common import write

from voxmeter.run.harness import prepare_data, run_spec
from voxmeter.spec import RunSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--max-clips", type=int, default=0)
    args = ap.parse_args()
    spec = RunSpec(max_clips=args.max_clips, repeats=1)
    data = prepare_data(spec)
    on, off = [], []
    for i in range(args.pairs):
        # alternate the order so drift (heat, caches) does not favour one side
        for enabled in (True, False) if i % 2 == 0 else (False, True):
            (res,) = list(run_spec(spec, [0], data=data, instruments=enabled))
            (on if enabled else off).append(res.metrics["rtfx"])
            print("instruments", "on " if enabled else "off", f"RTFx {res.metrics['rtfx']:.2f}")
    cost = 1 - statistics.median(on) / statistics.median(off)
    write(
        "bench_overhead",
        {"rtfx_on": on, "rtfx_off": off, "overhead": cost, "target": 0.03, "met": cost <= 0.03},
    )
    print(f"instrument overhead: {100 * cost:.2f}% of RTFx (target <= 3%)")


if __name__ == "__main__":
    main()
