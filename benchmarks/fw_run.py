"""faster-whisper itself on a voxmeter data set, in this (fresh) process; prints one JSON line.

    python benchmarks/fw_run.py --data longform --compute-type int8 [--batched 8]
        [--warmup 1] [--max-clips N] [--no-model]

Measured as voxmeter's isolated runs are (fresh.py): the peak RSS is this process's kernel
high-water mark, read by voxmeter's own RssSampler, and the same warm-up runs first. Load time
and audio decoding are excluded from RTFx, as voxmeter's are. Greedy (beam 1), temperature 0
only, with timestamps, condition_on_previous_text off: the settings voxmeter's long-form uses.
`--no-model` measures the process without faster-whisper (what the tests check).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from fresh import PEAK_RSS_DEFINITION, WARMUP_DEFINITION, WARMUP_S, ProcessPeak

RATE = 16000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="longform")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batched", type=int, default=0, help="BatchedInferencePipeline batch size")
    ap.add_argument("--warmup", type=int, default=1, help="as RunSpec.warmup (0: none)")
    ap.add_argument("--max-clips", type=int, default=0, help="0: every clip")
    ap.add_argument("--no-model", action="store_true", help="measure the bare process only")
    return ap.parse_args(argv)


def warmup_audio(clips: list, n: int, decode: Callable[[str], Any]) -> list:
    """The audio voxmeter's harness warms up on (run/harness.warm_up): the first `n` short
    clips, or with none, the first 30 s of the first recording; nothing for n < 1."""
    from voxmeter.audio.io import info
    from voxmeter.data.datasets import MAX_CLIP_S

    if n < 1 or not clips:
        return []
    short = [c for c in clips if info(c.audio).duration_s <= MAX_CLIP_S]
    if short:
        return [decode(str(c.audio)) for c in short[:n]]
    return [decode(str(clips[0].audio))[: int(WARMUP_S * RATE)]]


def transcribe_all(args: argparse.Namespace) -> dict[str, Any]:
    """Load, warm up, then time faster-whisper over the data set; WER and RTFx."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from faster_whisper.audio import decode_audio

    from voxmeter.assets.bundled import resolve_model
    from voxmeter.data.datasets import load_dataset
    from voxmeter.metrics import corpus_wer

    src = resolve_model(args.model)
    model = WhisperModel(
        str(src.ct2_dir), device="cpu", compute_type=args.compute_type, cpu_threads=args.threads
    )
    pipe = BatchedInferencePipeline(model) if args.batched else None
    opts = dict(
        beam_size=1,
        temperature=0.0,
        condition_on_previous_text=False,
        language="en" if not src.dims.english_only else None,
    )

    def sequential(audio) -> str:
        segs, _ = model.transcribe(audio, without_timestamps=False, **opts)
        return " ".join(s.text.strip() for s in segs)  # the generator runs here

    def measured(audio) -> str:
        if pipe is None:
            return sequential(audio)
        segs, _ = pipe.transcribe(audio, batch_size=args.batched, **opts)
        return " ".join(s.text.strip() for s in segs)

    def decode(path: str):
        return decode_audio(path, sampling_rate=RATE)

    clips = load_dataset(args.data).clips[: args.max_clips or None]
    warm = warmup_audio(clips, args.warmup, decode)
    for audio in warm:
        sequential(audio)
    refs, hyps, audio_s, proc_s = [], [], 0.0, 0.0
    for clip in clips:
        audio = decode(str(clip.audio))
        t0 = time.perf_counter()
        hyps.append(measured(audio))
        proc_s += time.perf_counter() - t0
        audio_s += len(audio) / RATE
        refs.append(clip.text)
    return {
        "wer": corpus_wer(refs, hyps).wer,
        "rtfx": audio_s / proc_s,
        "audio_s": audio_s,
        "n_recordings": len(refs),
        "warmup_audio_s": sum(len(a) for a in warm) / RATE,
        "hyps": hyps,
    }


def main(argv: list[str] | None = None) -> None:
    peak = ProcessPeak()  # first: a sampling-thread fallback must see everything
    args = parse_args(argv)
    row = {} if args.no_model else transcribe_all(args)
    row.update(peak.fields(), warmup=args.warmup)
    row.update(peak_rss_definition=PEAK_RSS_DEFINITION, warmup_definition=WARMUP_DEFINITION)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
