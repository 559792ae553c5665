"""How many seconds of audio a machine streams per second when several sessions share one
CTranslate2 model: one replica of `threads` threads (serve's default) against `replicas`
copies of the model of `threads / replicas` threads each (`voxmeter serve --replicas`).

Each configuration runs in its own process: N sessions (tiny.en int8, fit, the grid's stream
settings), each replaying the bundled default set's first clips as fast as it can (the
replay's simulated clock), in N threads over one engine. Reported per configuration: audio
seconds streamed per wall second over all sessions, and each session's compute per audio
second (which counts the time a step waited for a free replica).

    python benchmarks/diag_stream_replicas.py [--streams 4] [--clips 10] [--config 500:2:vad]
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from common import write


def measure(config: str, threads: int, replicas: int, streams: int, n_clips: int) -> dict:
    from bench_stream import stream_spec

    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.run.harness import prepare_data
    from voxmeter.stream import open_engine
    from voxmeter.stream.replay import JoinedAudio, replay
    from voxmeter.stream.run import make_session, warm_up

    spec = stream_spec(config, "default", 0).with_(threads=threads)
    clips = [c for c in prepare_data(spec).clips if not c.is_long][:n_clips]
    engine, _, _ = open_engine(spec, default_cache_dir(None), replicas=replicas)
    warm_up(engine, spec, clips[0].audio)
    out: dict[int, tuple[float, float]] = {}

    def one(k: int) -> None:  # each session starts at another clip
        audio = JoinedAudio([c.audio for c in clips[k:] + clips[:k]], spec.stream.gap_s)
        trace = replay(make_session(engine, spec), audio)
        out[k] = (trace.audio_s, trace.compute_s)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=one, args=(k,)) for k in range(streams)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    engine.close()
    audio = sum(a for a, _ in out.values())
    return {
        "threads": threads,
        "replicas": replicas,
        "streams": streams,
        "audio_s": audio,
        "wall_s": wall,
        "audio_per_wall_s": audio / wall,
        "compute_per_audio": [c / a for a, c in out.values()],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="500:2:vad")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for threads, replicas in [(args.cores, 1), (1, args.cores)]:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            job = pool.submit(measure, args.config, threads, replicas, args.streams, args.clips)
            row = job.result()
        print(
            f"{replicas} replica(s) x {threads} thread(s), {args.streams} sessions: "
            f"{row['audio_per_wall_s']:.2f} s of audio per s"
        )
        rows.append(row)
    write("diag_stream_replicas", {"config": args.config, "rows": rows})


if __name__ == "__main__":
    main()
