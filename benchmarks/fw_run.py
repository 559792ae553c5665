"""faster-whisper itself on a voxmeter data set, in this (fresh) process; prints one JSON line.

    python benchmarks/fw_run.py --data longform --compute-type int8 [--batched 8]

Load time is excluded from RTFx, as voxmeter's is; peak RSS is the process's whole life
(ru_maxrss), comparable with voxmeter's process_peak_rss_mb. Greedy (beam 1), temperature 0
only, with timestamps, condition_on_previous_text off: the settings voxmeter's long-form uses.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="longform")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batched", type=int, default=0, help="BatchedInferencePipeline batch size")
    args = ap.parse_args()

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
    ds = load_dataset(args.data)
    refs, hyps, audio_s, proc_s = [], [], 0.0, 0.0
    for clip in ds.clips:
        audio = decode_audio(str(clip.audio), sampling_rate=16000)
        opts = dict(
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            language="en" if not src.dims.english_only else None,
        )
        t0 = time.perf_counter()
        if pipe is not None:
            segs, _ = pipe.transcribe(audio, batch_size=args.batched, **opts)
        else:
            segs, _ = model.transcribe(audio, without_timestamps=False, **opts)
        text = " ".join(s.text.strip() for s in segs)  # the generator runs here
        proc_s += time.perf_counter() - t0
        audio_s += len(audio) / 16000
        refs.append(clip.text)
        hyps.append(text)
    w = corpus_wer(refs, hyps)
    print(
        json.dumps(
            {
                "wer": w.wer,
                "rtfx": audio_s / proc_s,
                "audio_s": audio_s,
                "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "n_recordings": len(refs),
                "hyps": hyps,
            }
        )
    )


if __name__ == "__main__":
    main()
