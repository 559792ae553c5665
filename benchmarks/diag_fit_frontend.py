"""xT fit on short recorded lines: which front end keeps the decoder from looping.

On `real-test`'s Drascula lines (about 3.6 s each), ct2 int8 with `--frames fit` and the
default front end (`audio`: the audio padded with zeros, then the log-mel) ran some lines into
repetition loops up to the length limit, which the stream benchmark's offline reference showed
as an offline WER near twice the streamed one. This runs the same clips at full settings and
under xT fit with each front end (`features` is faster-whisper's: the log-mel of the clip
alone, then padded), each configuration in its own process, and counts the lines that hit the
length limit.

    python benchmarks/diag_fit_frontend.py [--data real-test] [--spread 100] [--engines ct2,hf]
"""

from __future__ import annotations

import argparse
import sys

from bench_compress import test_set
from common import machine_name, named, pick, write

from voxmeter.paths import default_cache_dir
from voxmeter.run.isolate import run_spec_isolated
from voxmeter.spec import RunSpec

KEYS = ("wer", "wer_ci_lo", "wer_ci_hi", "cer", "rtfx", "e2e_ms_p50", "dec_ms_p50", "enc_ms_p50")
CONFIGS = {
    "full-audio": {},
    "fit-audio": {"frames": "fit"},
    "fit-features": {"frames": "fit", "frontend": "features"},
}
PRECISION = {"ct2": "int8", "hf": "fp32"}


def measure(spec: RunSpec) -> dict:
    (res,) = list(run_spec_isolated(spec, [0]))
    row = pick(res, KEYS)
    row["label"] = spec.label()
    row["n_clips"] = len(res.clips)
    row["hit_max_length"] = sorted(c["id"] for c in res.clips if c.get("hit_max_length"))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="real-test")
    ap.add_argument("--spread", type=int, default=100, help="clips spread over the set (0: all)")
    ap.add_argument("--engines", default="ct2,hf")
    args = ap.parse_args()
    subset = test_set(args.data, args.spread, default_cache_dir() / "bench_compress")
    rows: dict[str, dict] = {}
    for engine in args.engines.split(","):
        base = RunSpec(engine=engine, data=subset.data, repeats=1).with_(
            precision=PRECISION[engine]
        )
        for name, change in CONFIGS.items():
            key = f"{engine}-{PRECISION[engine]}-{name}"
            rows[key] = r = measure(base.with_(**change).validate())
            print(f"{key:24s} WER {r['wer']:6.1f} [{r['wer_ci_lo']:.1f}, {r['wer_ci_hi']:.1f}]  "
                  f"RTFx {r['rtfx']:5.1f}  at the length limit: {len(r['hit_max_length'])}",
                  flush=True)  # fmt: skip
    payload = {"test_set": subset.__dict__, "machine_name": machine_name(), "rows": rows}
    write(named("diag_fit_frontend", subset.data, "real-test"), payload)


if __name__ == "__main__":
    sys.exit(main())
