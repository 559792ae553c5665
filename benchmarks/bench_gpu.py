"""The CUDA paths, measured: tiny.en on a GPU, every configuration in its own process.

What issues 8 and 9 ask of a lent GPU: long-form (sequential and VAD-batched) and batch 8
with `--device cuda --precision fp16`, fp16 and int8 where an engine supports them, each
with RTFx, CUDA memory (torch's allocator peak for hf, this process's NVML figure for ct2)
and NVML energy. fp32 and bf16 rows sit beside them for scale. A configuration the machine
cannot run (an engine whose CUDA libraries are missing, a scheme with no CUDA kernel) is
recorded with its one-line error, not dropped.

    python benchmarks/bench_gpu.py [--engines hf,ct2] [--only REGEX] [--name bench_gpu]

Never part of the test suite: it needs a CUDA device and says so in one line without one.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback

from common import pick, write

from voxmeter.errors import VoxmeterError
from voxmeter.run.isolate import ChildCrashed, run_spec_isolated
from voxmeter.spec import RunSpec

KEYS = (
    "wer",
    "rtfx",
    "throughput_clips_s",
    "e2e_ms_p50",
    "e2e_ms_p90",
    "batch_ms_p50",
    "window_ms_p50",
    "n_windows",
    "n_windows_flagged",
    "padding_share",
    "cuda_max_alloc_mb",
    "gpu_process_mb",
    "gpu_mem_method",
    "energy_j",
    "j_per_audio_s",
    "energy_method",
    "peak_rss_mb",
    "process_peak_rss_mb",
    "n_clips",
    "audio_s",
    "precision_method",
)

FIT_K2 = {"frames": "fit", "stride": 2, "pool": "avg"}


def configs(engines: list[str]) -> list[tuple[str, dict]]:
    """(label, spec fields) for each configuration, most wanted first, so a run cut short
    still holds what the issues ask for: fp16 at batch 1 and 8, then long-form."""
    out: list[tuple[str, dict]] = []
    for e in engines:
        lf = {
            s: dict(engine=e, precision="fp16", data="longform", longform=s,
                    batch_size=8 if s == "batched" else 1)
            for s in ("sequential", "batched")
        }  # fmt: skip
        out += [
            (f"{e}-fp16-b1", dict(engine=e, precision="fp16", batch_size=1)),
            (f"{e}-fp16-b8", dict(engine=e, precision="fp16", batch_size=8)),
            (f"{e}-fp16-longform-sequential", lf["sequential"]),
            (f"{e}-fp16-longform-batched", lf["batched"]),
            (f"{e}-fp32-b1", dict(engine=e, precision="fp32", batch_size=1)),
        ]
        if e == "ct2":
            out += [
                ("ct2-int8-b1", dict(engine=e, precision="int8", batch_size=1)),
                ("ct2-int8-b8", dict(engine=e, precision="int8", batch_size=8)),
                ("ct2-int8-longform-batched", dict(lf["batched"], precision="int8")),
            ]
        else:
            out.append(("hf-bf16-b1", dict(engine=e, precision="bf16", batch_size=1)))
        out += [
            (f"{e}-fp16-b16", dict(engine=e, precision="fp16", batch_size=16)),
            (f"{e}-fp16-b8-fitk2", dict(engine=e, precision="fp16", batch_size=8, **FIT_K2)),
            (f"{e}-fp16-longform-sequential-fitk2", dict(lf["sequential"], **FIT_K2)),
            (f"{e}-fp16-longform-batched-fitk2", dict(lf["batched"], **FIT_K2)),
        ]
        if e == "hf":
            # the compression stage's schemes on a CUDA model: torchao's int8 has CUDA
            # kernels (torch._int_mm); torch.ao's dynamic int8 is CPU-only and says so
            for q in ("torchao-int8-dynamic", "int8-dynamic"):
                out.append((f"hf-q-{q}-b1", dict(engine=e, precision="fp32", quant=q)))
    return out


def measure(fields: dict) -> dict:
    fields = dict(fields)
    top = {k: fields.pop(k) for k in ("engine", "data", "batch_size") if k in fields}
    spec = RunSpec(device="cuda", repeats=1, **top).with_(**fields)
    t0 = time.perf_counter()
    try:
        (res,) = list(run_spec_isolated(spec, [0]))
    except VoxmeterError as e:  # the machine cannot run it: keep the one line
        return {"label": spec.label(), "error": str(e)}
    except ChildCrashed as e:  # not a user error: keep the traceback's tail
        return {"label": spec.label(), "error": e.message, "stderr_tail": e.stderr[-3000:]}
    row = pick(res, KEYS)
    row["label"] = spec.label()
    row["wall_s"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default="hf,ct2")
    ap.add_argument("--only", default="", help="regex: run only the matching labels")
    ap.add_argument(
        "--name", default="bench_gpu", help="benchmark name: results/NAME-DATE-CPU-GPU.json"
    )
    args = ap.parse_args()
    try:
        import torch

        have_cuda = torch.cuda.is_available()
    except ImportError:
        have_cuda = False
    if not have_cuda:
        print("bench_gpu: no CUDA device here; nothing measured", file=sys.stderr)
        raise SystemExit(2)
    rows: dict[str, dict] = {}
    for label, fields in configs(args.engines.split(",")):
        if args.only and not re.search(args.only, label):
            continue
        try:
            rows[label] = measure(fields)
        except Exception:  # noqa: BLE001 -- a bug in one configuration must not lose the others
            rows[label] = {"error": "bench crashed", "traceback": traceback.format_exc()}
        r = rows[label]
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()
                 if k not in ("stderr_tail", "traceback") and v is not None}  # fmt: skip
        print(label, shown, flush=True)
        write(args.name, {"rows": rows}, device="cuda")  # after each row: a cut run keeps it


if __name__ == "__main__":
    main()
