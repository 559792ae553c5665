"""Where the streaming-vs-offline WER gap of issue 10 comes from, clip by clip.

Streams the default set as `voxmeter stream --data default` does (one joined stream, the
spec's chunking, policy and VAD), and sets three transcriptions of every clip side by side:
- stream: the words the session committed, assigned to the clip whose span holds their middle;
- offline: the clip decoded alone as `bench` does (greedy, no timestamps): the figure the
  stream's `offline_wer` is;
- offline-ts: the clip decoded alone with timestamp tokens by the sequential long-form
  algorithm (voxmeter's, as openai-whisper's), the decoding mode the stream itself uses.

If offline-ts is far from offline, part of the gap is the decoding mode, not the streaming.

`--shifts-ms 0,4,10` repeats all three with that many milliseconds of digital silence before
every clip (in the stream and offline alike). tiny.en's hypotheses move with shifts far below
a word's length (the log-mel frames fall elsewhere on the audio, 10 ms apart), so one shift is
one draw: the mean over a few shifts is the figure to compare configurations with.
Prints the clips whose texts differ (first shift) and the corpus WERs per shift and their
mean; writes benchmarks/results/diag_stream_gap-DATE-CPU.json.

    python benchmarks/diag_stream_gap.py [--agreement 3] [--chunk-ms 500] [--holdback-s 0]
        [--no-prompt] [--final-pass plain|timestamps] [--step-pass timestamps|plain]
        [--force] [--shifts-ms 0] [--trim-s 15] [--pause-cut-ms 0]
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from typing import Any

import numpy as np
from common import write

from voxmeter.assets.bundled import default_cache_dir
from voxmeter.engines.longform import ArrayAudio, transcribe_sequential
from voxmeter.metrics import corpus_wer, normalize, wer_gap_ci
from voxmeter.run.harness import prepare_data
from voxmeter.spec import RunSpec
from voxmeter.stream import open_engine
from voxmeter.stream.align import Span, reference_aligner
from voxmeter.stream.measures import match_by_utterance, p50_p90_p99
from voxmeter.stream.replay import JoinedAudio, replay
from voxmeter.stream.run import make_session, offline_text, reference_words, warm_up
from voxmeter.stream.session import SAMPLE_RATE

EDGE_S = 0.3  # a committed word belongs to the clip its middle falls in, this much early


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="default")
    ap.add_argument("--engine", default="ct2")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--agreement", type=int, default=3)
    ap.add_argument("--chunk-ms", type=int, default=500)
    ap.add_argument("--holdback-s", type=float, default=0.0)
    ap.add_argument("--no-vad", action="store_true")
    ap.add_argument("--no-prompt", action="store_true")
    ap.add_argument("--final-pass", default="plain", choices=("plain", "timestamps"))
    ap.add_argument(
        "--force", action="store_true", help="start each step's decode with the committed words"
    )
    ap.add_argument("--step-pass", default="timestamps", choices=("timestamps", "plain"))
    ap.add_argument("--shifts-ms", default="0", help="comma-separated, e.g. 0,4,10")
    ap.add_argument("--pause-cut-ms", type=int, default=0, help="cut in pauses this long")
    ap.add_argument(
        "--trim-s",
        type=float,
        default=15.0,
        help="cut the buffer at a committed segment end past this",
    )
    ap.add_argument(
        "--max-wait-s",
        type=float,
        default=0.0,
        help="commit a word not agreed on this long after its end (s; 0: off)",
    )
    ap.add_argument(
        "--relax-s",
        type=float,
        default=0.0,
        help="a word not agreed on this long after its end needs only two hypotheses (s)",
    )
    ap.add_argument("--stride", type=int, default=1, help="xV: subsample encoder states by k")
    ap.add_argument("--pool", default="stride", choices=("stride", "avg"))
    args = ap.parse_args()
    spec = RunSpec(engine=args.engine, data=args.data, repeats=1).with_(
        precision=args.precision,
        frames="fit",
        stream_chunk_ms=args.chunk_ms,
        stream_agreement=args.agreement,
        stream_vad=not args.no_vad,
        stream_holdback_s=args.holdback_s,
        stream_prompt=not args.no_prompt,
        stream_final_pass=args.final_pass,
        stream_force_committed=args.force,
        stream_step_pass=args.step_pass,
        stream_trim_s=args.trim_s,
        stream_pause_cut_ms=args.pause_cut_ms,
        stream_max_wait_s=args.max_wait_s,
        stream_relax_s=args.relax_s,
        stride=args.stride,
        pool=args.pool,
    )
    shifts = [float(s) for s in args.shifts_ms.split(",")]
    out = over_shifts(spec, shifts)
    runs, mean = out["runs"], out["mean_wer"]
    for row in runs[0]["clips"]:
        if len({row["stream"], row["offline"], row["offline_ts"]}) > 1:
            print(row["id"])
            for k in ("ref", "stream", "offline", "offline_ts"):
                print(f"  {k:10s} {row[k]}")
    for shift, run in zip(shifts, runs):
        wers = "  ".join(f"{k} {v:.2f}" for k, v in run["wer"].items())
        n = run["committed"]
        print(
            f"shift {shift:g} ms: {wers}  compute/elapsed {run['compute_ratio']:.3f}  "
            f"committed {n['all']} words ({n['relaxed']} on two hypotheses, "
            f"{n['unagreed']} on none)"
        )
    print("mean: " + "  ".join(f"{k} {v:.2f}" for k, v in mean.items()))
    print(f"compute/elapsed, mean: {out['compute_ratio']:.3f}")
    lat = out["commit_ms"]
    if lat["p50"] is not None:
        print(
            "commit latency over all shifts (as fast as possible, compute counted): "
            f"p50 {lat['p50']:.0f}  p90 {lat['p90']:.0f}  p99 {lat['p99']:.0f} ms"
        )
    ci = out["gap_ci95"]
    band = "" if ci is None else f" (95% CI {ci[0]:.2f} to {ci[1]:.2f}, clips resampled, paired)"
    print(f"gap stream - offline: {out['gap']:.2f} points{band}")
    write("diag_stream_gap", {"spec": spec.to_dict(), **out})


KINDS = ("stream", "offline", "offline_ts")


def over_shifts(spec: RunSpec, shifts: list[float], offline_ts: bool = True) -> dict:
    """`compare` at every shift in one engine, with the mean WER of each transcription and
    the mean gap (stream - offline). bench_stream.py calls it in a child process per
    configuration, without offline_ts (the sequential long-form pass is the diagnosis only)."""
    clips = [c for c in prepare_data(spec).clips if not c.is_long]
    aligner = reference_aligner(default_cache_dir(None))
    engine, _, _ = open_engine(spec, default_cache_dir(None))
    try:
        warm_up(engine, spec, clips[0].audio)
        runs = [compare(engine, spec, clips, shift, offline_ts, aligner) for shift in shifts]
    finally:
        engine.close()
    kinds = [k for k in KINDS if k in runs[0]["wer"]]
    mean = {k: float(np.mean([r["wer"][k] for r in runs])) for k in kinds}
    # the gap's 95% interval: clips resampled, stream and offline paired, shifts averaged
    refs = [c["ref"] for c in runs[0]["clips"]]
    draws = {k: [[c[k] for c in r["clips"]] for r in runs] for k in ("stream", "offline")}
    ci = wer_gap_ci(refs, draws["stream"], draws["offline"], normalized=True)
    return {
        "shifts_ms": shifts,
        "mean_wer": mean,
        "gap": mean["stream"] - mean["offline"],
        "gap_ci95": None if ci is None else [ci[1], ci[2]],
        "compute_ratio": float(np.mean([r["compute_ratio"] for r in runs])),
        # commit latency (computation-aware, as fast as possible) over all shifts' words
        "commit_ms": p50_p90_p99([x for r in runs for x in r.get("commit_ms", [])]),
        "runs": runs,
    }


def compare(
    engine: Any,
    spec: RunSpec,
    clips: list,
    shift_ms: float,
    offline_ts: bool = True,
    aligner: Any = None,
) -> dict:
    """The three transcriptions of every clip, each clip led by `shift_ms` of silence
    (offline_ts left out when `offline_ts` is False); with the reference `aligner`
    (stream.align.reference_aligner), also every matched word's commit latency (ms, against
    the aligned reference, as measure_stream)."""
    lead = np.zeros(round(shift_ms * SAMPLE_RATE / 1000), dtype=np.float32)
    audios = [np.concatenate([lead, c.audio]) for c in clips]
    audio = JoinedAudio(audios, spec.stream.gap_s, spec.stream.duration_s)
    placed = audio.placements()
    plain = [offline_text(engine, a) for a in audios]
    stamped = [
        transcribe_sequential(engine, ArrayAudio(a), lambda key, rec: nullcontext()).text
        if offline_ts
        else ""
        for a in audios
    ]
    trace = replay(make_session(engine, spec), audio, realtime=False)
    words = [w for w, _, _ in trace.committed]
    ends = [t for t, _ in placed[1:]] + [float("inf")]
    rows = []
    for (start, i), end in zip(placed, ends):
        mine = [w.text for w in words if start - EDGE_S <= (w.start + w.end) / 2 < end - EDGE_S]
        rows.append(
            {
                "id": clips[i].id,
                "ref": normalize(clips[i].text),
                "stream": normalize(" ".join(mine)),
                "offline": normalize(plain[i]),
                "offline_ts": normalize(stamped[i]),
            }
        )
    refs = [r["ref"] for r in rows]
    kinds = KINDS if offline_ts else KINDS[:2]
    wers = {k: corpus_wer(refs, [r[k] for r in rows], normalized=True).wer for k in kinds}
    ratio = trace.compute_s / trace.audio_s
    out = {"shift_ms": shift_ms, "wer": wers, "compute_ratio": ratio, "clips": rows}
    # words committed before n hypotheses agreed: on two (relax_s), on none (max_wait_s)
    out["committed"] = {
        "all": len(words),
        "relaxed": trace.relaxed_words,
        "unagreed": trace.unagreed_words,
    }
    if aligner is not None:
        spans = [Span(start, audios[i], clips[i].text) for start, i in placed]
        ref_words, utterances = reference_words(aligner, spans)
        pairs = match_by_utterance(words, ref_words, utterances)
        out["commit_ms"] = [(trace.committed[h][1] - ref_words[r].end) * 1e3 for h, r in pairs]
    return out


if __name__ == "__main__":
    main()
