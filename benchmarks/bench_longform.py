"""Long recordings: tiny.en on the bundled long-form set, every configuration in its own
process, in one run: faster-whisper itself (sequential `transcribe` with timestamps, greedy;
and BatchedInferencePipeline at batch 8), and voxmeter's ct2 and hf engines at fp32 and int8,
sequential and VAD-batched, at full settings, with xT fit, and with xT fit + xV k=2 avg.
Batched runs three ways (BATCHED): as faster-whisper's pipeline does (each recording's chunks
alone, batch 8); with the encoder in parts of one chunk at its own fitted length; and with
the chunks of consecutive recordings pooled into batches of 16.

Targets: our best long-form configuration within 0.5 WER points of faster-whisper sequential
int8, at RTFx at least 1.5x faster-whisper batched int8, with no higher peak RSS.

    python benchmarks/bench_longform.py [--data longform] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import write

from voxmeter.run.isolate import run_spec_isolated
from voxmeter.spec import RunSpec

HERE = Path(__file__).parent
KEYS = ("wer", "rtfx", "process_peak_rss_mb", "peak_rss_mb", "n_windows", "n_windows_flagged",
        "window_ms_p50", "vad_ms_total", "audio_s")  # fmt: skip


def faster_whisper(data: str, compute_type: str, batched: int = 0) -> dict:
    cmd = [sys.executable, str(HERE / "fw_run.py"), "--data", data, "--compute-type", compute_type]
    if batched:
        cmd += ["--batched", str(batched)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


AXES = {
    "": {},
    "-fit": {"frames": "fit"},
    "-fit-k2avg": {"frames": "fit", "stride": 2, "pool": "avg"},
}


# batched variants: each recording's chunks batched alone, the encoder on the whole batch
# (faster-whisper's pipeline); the encoder in parts of one chunk at its own fitted length;
# and the chunks of consecutive recordings pooled into batches of 16 (spec.workload)
BATCHED = {
    "": {"batch_size": 8},
    "-enc1": {"batch_size": 8, "encoder_batch": 1},
    "-pooled16-enc1": {"batch_size": 16, "encoder_batch": 1, "pool_recordings": True},
}


def ours(
    data: str, engine: str, precision: str, longform: str, axes: dict, work: dict | None = None
) -> dict:
    spec = RunSpec(engine=engine, data=data, repeats=1)
    spec = spec.with_(precision=precision, longform=longform, **(work or {}))
    spec = spec.with_(**axes)
    (res,) = list(run_spec_isolated(spec, [0]))
    row = {k: res.metrics.get(k) for k in KEYS}
    row["label"] = spec.label()
    row["hyps"] = [c["hyp"] for c in res.clips]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="longform")
    ap.add_argument("--quick", action="store_true", help="int8 only, fewer configurations")
    args = ap.parse_args()
    rows: dict[str, dict] = {}
    for ct in ("int8",) if args.quick else ("int8", "float32"):
        rows[f"fw-seq-{ct}"] = faster_whisper(args.data, ct)
        rows[f"fw-batched8-{ct}"] = faster_whisper(args.data, ct, batched=8)
    precisions = ("int8",) if args.quick else ("int8", "fp32")
    for engine in ("ct2", "hf"):
        for precision in precisions:
            for suffix, axes in AXES.items():
                key = f"{engine}-{precision}-sequential{suffix}"
                rows[key] = ours(args.data, engine, precision, "sequential", axes)
                for variant, work in BATCHED.items():
                    if variant and "frames" not in axes:
                        continue  # parts at their own length need frames=fit
                    key = f"{engine}-{precision}-batched{variant}{suffix}"
                    rows[key] = ours(args.data, engine, precision, "batched", axes, work)
    for k, r in rows.items():
        print(f"{k:34s} WER {r['wer']:6.2f}  RTFx {r['rtfx']:6.1f}  "
              f"peak RSS {r['process_peak_rss_mb']:7.1f} MiB")  # fmt: skip
    ref_seq, ref_bat = rows["fw-seq-int8"], rows["fw-batched8-int8"]
    qualifying = {
        k: r
        for k, r in rows.items()
        if not k.startswith("fw-")
        and r["wer"] <= ref_seq["wer"] + 0.5
        and r["process_peak_rss_mb"] <= ref_bat["process_peak_rss_mb"]
    }
    best = max(qualifying, key=lambda k: qualifying[k]["rtfx"]) if qualifying else None
    out = {
        "rows": rows,
        "reference_seq_int8": ref_seq["wer"],
        "reference_batched_rtfx": ref_bat["rtfx"],
    }
    if best:
        ratio = rows[best]["rtfx"] / ref_bat["rtfx"]
        out.update(best=best, best_rtfx_over_fw_batched=ratio, met=ratio >= 1.5)
        print(f"best within 0.5 WER of fw sequential int8 and no more RSS than fw batched: "
              f"{best}: RTFx {rows[best]['rtfx']:.1f} = {ratio:.2f}x fw batched int8 (target >= 1.5)")  # fmt: skip
    else:
        out["met"] = False
        print("no configuration within 0.5 WER points of faster-whisper sequential int8 "
              "at no higher peak RSS than faster-whisper batched")  # fmt: skip
    write("bench_longform", out)


if __name__ == "__main__":
    main()
