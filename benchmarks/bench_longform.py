"""Long recordings: tiny.en on the bundled long-form set, every configuration in its own
process, in one run: faster-whisper itself (sequential `transcribe` with timestamps, greedy;
and BatchedInferencePipeline at batch 8), and voxmeter's ct2 and hf engines at fp32 and int8,
sequential and VAD-batched, at full settings, with xT fit, and with xT fit + xV k=2 avg.
Batched runs three ways (BATCHED): as faster-whisper's pipeline does (each recording's chunks
alone, batch 8); with the encoder in parts of one chunk at its own fitted length; and with
the chunks of consecutive recordings pooled into batches of 16.

Targets: our best long-form configuration within 0.5 WER points of faster-whisper sequential
int8, at RTFx at least 1.5x faster-whisper batched int8, with no higher peak RSS. Both sides
are measured with one definition of peak RSS and one warm-up (fresh.py); the JSON states them.

    python benchmarks/bench_longform.py [--data longform] [--configs full|quick|readme]
        [--max-recordings N]

`--configs readme` runs only the three configurations the README's long-form comparison
quotes (README_KEYS: ours, faster-whisper batched 8 and sequential, all int8; about 5 min on
2 cores); `quick` runs int8 only; `--max-recordings 1` is a smoke run of the code path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from common import named, write
from fresh import PEAK_RSS_DEFINITION, WARMUP_DEFINITION, python_script, run_json

from voxmeter.run.isolate import run_spec_isolated
from voxmeter.spec import RunSpec

HERE = Path(__file__).parent
KEYS = ("wer", "rtfx", "rtfx_wall", "wall_s", "process_peak_rss_mb", "peak_rss_mb", "n_windows", "n_windows_flagged",
        "window_ms_p50", "vad_ms_total", "audio_s", "rss_method")  # fmt: skip
README_OURS = "ct2-int8-batched-pooled16-enc1-fit-k2avg"
README_KEYS = ("fw-seq-int8", "fw-batched8-int8", README_OURS)
CONFIGS = ("full", "quick", "readme")
RTFX_DEFINITION = (
    "total audio / wall-clock seconds of the whole pass after warm-up, on both sides: "
    "faster-whisper's transcribe calls (audio decoded before), voxmeter's repeat (rtfx_wall: "
    "stages, the code between them, audio streamed from disk, instruments); voxmeter's "
    "stage-sum RTFx is kept beside it as rtfx_stages"
)


def faster_whisper(spec: RunSpec, compute_type: str, batched: int = 0) -> dict:
    """faster-whisper in a fresh interpreter, with the spec's data, threads and warm-up."""
    args = ["--data", spec.data, "--compute-type", compute_type, "--threads", str(spec.threads),
            "--warmup", str(spec.warmup), "--max-clips", str(spec.max_clips)]  # fmt: skip
    if batched:
        args += ["--batched", str(batched)]
    row = run_json(python_script(str(HERE / "fw_run.py"), *args))
    shared = {"peak_rss_definition": PEAK_RSS_DEFINITION, "warmup_definition": WARMUP_DEFINITION}
    for key, definition in shared.items():  # stated once, at the top of the JSON
        if row.pop(key) != definition:
            raise RuntimeError(f"fw_run.py measured with another {key}")
    return row


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


def ours(base: RunSpec, engine: str, precision: str, longform: str, axes: dict,
         work: dict | None = None) -> dict:  # fmt: skip
    spec = base.with_(engine=engine, precision=precision, longform=longform, **(work or {}))
    spec = spec.with_(**axes)
    (res,) = list(run_spec_isolated(spec, [0]))
    row = {k: res.metrics.get(k) for k in KEYS}
    row["label"] = spec.label()
    row["hyps"] = [c["hyp"] for c in res.clips]
    return row


def plan(base: RunSpec, configs: str) -> Iterator[tuple[str, Callable[[], dict]]]:
    """(row key, the run that measures it) for each configuration of `configs`."""
    cts = ("int8",) if configs != "full" else ("int8", "float32")
    runs: list[tuple[str, Callable[[], dict]]] = []
    for ct in cts:
        runs.append((f"fw-seq-{ct}", lambda ct=ct: faster_whisper(base, ct)))
        runs.append((f"fw-batched8-{ct}", lambda ct=ct: faster_whisper(base, ct, batched=8)))
    precisions = ("int8",) if configs != "full" else ("int8", "fp32")
    for engine in ("ct2", "hf"):
        for precision in precisions:
            for suffix, axes in AXES.items():
                key = f"{engine}-{precision}-sequential{suffix}"
                args = (engine, precision, "sequential", axes)
                runs.append((key, lambda a=args: ours(base, *a)))
                for variant, work in BATCHED.items():
                    if variant and "frames" not in axes:
                        continue  # parts at their own length need frames=fit
                    key = f"{engine}-{precision}-batched{variant}{suffix}"
                    args = (engine, precision, "batched", axes, work)
                    runs.append((key, lambda a=args: ours(base, *a)))
    yield from ((k, run) for k, run in runs if configs != "readme" or k in README_KEYS)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="longform")
    ap.add_argument("--configs", choices=CONFIGS, default="full")
    ap.add_argument("--quick", action="store_true", help="the same as --configs quick")
    ap.add_argument("--max-recordings", type=int, default=0, help="0: every recording")
    args = ap.parse_args()
    if args.quick:
        args.configs = "quick"
    return args


def main() -> None:
    args = parse_args()
    base = RunSpec(engine="ct2", data=args.data, repeats=1, max_clips=args.max_recordings)
    rows: dict[str, dict] = {}
    for key, run in plan(base, args.configs):
        rows[key] = run()
        r = rows[key]
        wall = f"  wall {r['rtfx_wall']:6.1f}" if r.get("rtfx_wall") else ""
        print(f"{key:40s} WER {r['wer']:6.2f}  RTFx {r['rtfx']:6.1f}{wall}  "
              f"peak RSS {r['process_peak_rss_mb']:7.1f} MiB", flush=True)  # fmt: skip
    out = {
        "configs": args.configs,
        "data": args.data,
        "max_recordings": args.max_recordings,
        "peak_rss_definition": PEAK_RSS_DEFINITION,
        "warmup_definition": WARMUP_DEFINITION,
        "warmup": base.warmup,
        "threads": base.threads,
        "rtfx_definition": RTFX_DEFINITION,
        "rss_methods": sorted({str(r.get("rss_method")) for r in rows.values()}),
        **judge(rows),
        "rows": rows,
    }
    if len(out["rss_methods"]) > 1:
        print(f"warning: peak RSS read in different ways: {out['rss_methods']}", file=sys.stderr)
    write(named("bench_longform", args.data, "longform"), out, threads=base.threads)


def judge(rows: dict[str, dict]) -> dict:
    """The target's verdict, and the README's comparison (ours over fw batched int8)."""
    ref_seq, ref_bat = rows["fw-seq-int8"], rows["fw-batched8-int8"]
    out: dict = {"reference_seq_int8": ref_seq["wer"], "reference_batched_rtfx": ref_bat["rtfx"]}
    # faster-whisper's RTFx times its whole transcribe call; ours is judged on the same
    # definition (rtfx_wall: the repeat's wall clock), its stage-sum RTFx kept beside it
    for key, r in rows.items():
        if not key.startswith("fw-"):
            r["rtfx_over_fw_batched8_int8"] = r["rtfx_wall"] / ref_bat["rtfx"]
            r["stage_rtfx_over_fw_batched8_int8"] = r["rtfx"] / ref_bat["rtfx"]
    if README_OURS in rows:
        ours_row = rows[README_OURS]
        out["readme"] = {
            "ours": README_OURS,
            "wer": ours_row["wer"],
            "rtfx_wall": ours_row["rtfx_wall"],
            "rtfx_stages": ours_row["rtfx"],
            "process_peak_rss_mb": ours_row["process_peak_rss_mb"],
            "fw_batched8_int8": {k: ref_bat[k] for k in ("wer", "rtfx", "process_peak_rss_mb")},
            "fw_seq_int8": {k: ref_seq[k] for k in ("wer", "rtfx", "process_peak_rss_mb")},
            "rtfx_over_fw_batched8_int8": ours_row["rtfx_over_fw_batched8_int8"],
            "stage_rtfx_over_fw_batched8_int8": ours_row["stage_rtfx_over_fw_batched8_int8"],
            "rtfx_definition": RTFX_DEFINITION,
        }
        print(f"README comparison: {README_OURS} RTFx (wall) {ours_row['rtfx_wall']:.1f} = "
              f"{ours_row['rtfx_over_fw_batched8_int8']:.2f}x fw batched8 int8 "
              f"({ref_bat['rtfx']:.1f}); peak RSS {ours_row['process_peak_rss_mb']:.0f} vs "
              f"{ref_bat['process_peak_rss_mb']:.0f} MiB; WER {ours_row['wer']:.2f} vs "
              f"fw sequential int8 {ref_seq['wer']:.2f}")  # fmt: skip
    qualifying = {
        k: r
        for k, r in rows.items()
        if not k.startswith("fw-")
        and r["wer"] <= ref_seq["wer"] + 0.5
        and r["process_peak_rss_mb"] <= ref_bat["process_peak_rss_mb"]
    }
    best = max(qualifying, key=lambda k: qualifying[k]["rtfx_wall"]) if qualifying else None
    if not best:
        print("no configuration within 0.5 WER points of faster-whisper sequential int8 "
              "at no higher peak RSS than faster-whisper batched")  # fmt: skip
        return dict(out, met=False)
    ratio = rows[best]["rtfx_over_fw_batched8_int8"]
    print(f"best within 0.5 WER of fw sequential int8 and no more RSS than fw batched: "
          f"{best}: RTFx (wall) {rows[best]['rtfx_wall']:.1f} = {ratio:.2f}x fw batched int8 "
          "(target >= 1.5)")  # fmt: skip
    return dict(out, best=best, best_rtfx_over_fw_batched=ratio, met=ratio >= 1.5)


if __name__ == "__main__":
    main()
