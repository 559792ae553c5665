"""Where the streaming-vs-offline WER gap of issue 10 comes from, clip by clip.

Streams the default set as `voxmeter stream --data default` does (one joined stream, the
spec's chunking, policy and VAD), and sets three transcriptions of every clip side by side:
- stream: the words the session committed, assigned to the clip whose span holds their middle;
- offline: the clip decoded alone as `bench` does (greedy, no timestamps): the figure the
  stream's `offline_wer` is;
- offline-ts: the clip decoded alone with timestamp tokens by the sequential long-form
  algorithm (voxmeter's, as openai-whisper's), the decoding mode the stream itself uses.

If offline-ts is far from offline, part of the gap is the decoding mode, not the streaming.
Prints the clips whose texts differ and the three corpus WERs; writes
benchmarks/results/diag_stream_gap.json.

    python benchmarks/diag_stream_gap.py [--agreement 3] [--chunk-ms 500] [--holdback-s 0]
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

from common import write
import os, sys
sys.path.insert(0, "/tmp/exp")
if os.environ.get("NOTS"): import nots
if os.environ.get("NOCOMMIT"):
    import voxmeter.stream.policy as P
    _ins = P.LocalAgreement.insert
    def ins(self, words, buffer_start=None, until=None):
        self._recent = [self._tail(words, buffer_start)]
        return []
    P.LocalAgreement.insert = ins


from voxmeter.assets.bundled import default_cache_dir
from voxmeter.engines.longform import ArrayAudio, transcribe_sequential
from voxmeter.metrics import corpus_wer, normalize
from voxmeter.run.harness import prepare_data
from voxmeter.spec import RunSpec
from voxmeter.stream import open_engine
from voxmeter.stream.replay import JoinedAudio, replay
from voxmeter.stream.run import make_session, offline_text, warm_up

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
    ap.add_argument("--vad-silence-ms", type=int, default=500)
    args = ap.parse_args()
    spec = RunSpec(engine=args.engine, data=args.data, repeats=1).with_(
        precision=args.precision,
        frames="fit",
        stream_chunk_ms=args.chunk_ms,
        stream_agreement=args.agreement,
        stream_vad=not args.no_vad,
        stream_holdback_s=args.holdback_s,
        stream_prompt=not args.no_prompt,
        stream_vad_silence_ms=args.vad_silence_ms,
    )
    clips = [c for c in prepare_data(spec).clips if not c.is_long]
    engine, _, _ = open_engine(spec, default_cache_dir(None))
    try:
        audio = JoinedAudio([c.audio for c in clips], spec.stream.gap_s, spec.stream.duration_s)
        placed = audio.placements()
        plain = [offline_text(engine, c.audio) for c in clips]
        stamped = [
            transcribe_sequential(engine, ArrayAudio(c.audio), lambda key, rec: nullcontext()).text
            for c in clips
        ]
        warm_up(engine, spec, clips[0].audio)
        trace = replay(make_session(engine, spec), audio, realtime=False)
    finally:
        engine.close()
    words = [w for w, _, _ in trace.committed]
    ends = [t for t, _ in placed[1:]] + [float("inf")]
    rows = []
    for (start, i), end in zip(placed, ends):
        mine = [w.text for w in words if start - EDGE_S <= (w.start + w.end) / 2 < end - EDGE_S]
        row = {
            "id": clips[i].id,
            "ref": normalize(clips[i].text),
            "stream": normalize(" ".join(mine)),
            "offline": normalize(plain[i]),
            "offline_ts": normalize(stamped[i]),
        }
        rows.append(row)
        if len({row["stream"], row["offline"], row["offline_ts"]}) > 1:
            print(row["id"])
            for k in ("ref", "stream", "offline", "offline_ts"):
                print(f"  {k:10s} {row[k]}")
    refs = [r["ref"] for r in rows]
    wers = {
        k: corpus_wer(refs, [r[k] for r in rows], normalized=True).wer
        for k in ("stream", "offline", "offline_ts")
    }
    print({k: round(v, 2) for k, v in wers.items()})
    write(os.environ.get("OUTNAME","diag_x"), {"spec": spec.to_dict(), "wer": wers, "clips": rows})


if __name__ == "__main__":
    main()
