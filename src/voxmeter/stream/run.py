"""A stream spec measured like any other: its data set's clips joined into one live stream
(`gap_s` of silence after each, repeated up to `duration_s`), replayed through a session, its
figures summarised into one Result per repeat. `harness.run_spec` hands stream specs here, so
`bench`, `sweep`, isolation and the store treat them as every other spec.

Besides the replay, one untimed offline pass transcribes each clip as `bench` would (greedy,
no timestamps), for the streaming-vs-offline WER; and the reference text of each clip is
aligned to its audio (stream/align.py) for the word times latency is measured from.
Recordings over 30 s are left out of a stream data set (their reference cannot be aligned as
one span): each is listed as skipped. A single file streams through `stream_file` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxmeter.errors import DataError
from voxmeter.result import Result
from voxmeter.spec import RunSpec
from voxmeter.stream.align import Aligner, Span
from voxmeter.stream.measures import stream_metrics
from voxmeter.stream.policy import Word
from voxmeter.stream.replay import JoinedAudio, Trace, replay
from voxmeter.stream.session import SAMPLE_RATE, StreamSession

REFERENCE_NOTE = (
    "reference word times: forced alignment of each clip's reference text (CTranslate2 "
    "Whisper.align, DTW over the model's alignment heads); a word ends where the next begins"
)
OFFLINE_NOTE = (
    "no reference text: latency is measured against the offline transcription's words "
    "(aligned the same way) and WER only against it"
)


def make_session(engine: Any, spec: RunSpec) -> StreamSession:
    vad = None
    if spec.stream.vad:
        from voxmeter.audio.vad import SileroVad

        vad = SileroVad()
    return StreamSession(engine, spec.stream, vad)


def offline_text(engine: Any, audio: np.ndarray) -> str:
    """The clip transcribed as `bench` does (greedy, no timestamps)."""
    (out,) = engine.decode(engine.encode(engine.features([audio])))
    return out.text


def warm_up(engine: Any, spec: RunSpec, audio: np.ndarray) -> None:
    """A few untimed steps, so the first measured step does not pay for first calls."""
    session = make_session(engine, spec)
    chunk = round(spec.stream.chunk_s * SAMPLE_RATE)
    for i in range(0, min(len(audio), 3 * chunk), chunk):
        session.insert_audio(audio[i : i + chunk])
        session.process()


@dataclass
class StreamRun:
    trace: Trace
    metrics: dict[str, Any]
    utterances: list[dict[str, Any]]


def measure_stream(
    engine: Any,
    source: Any,
    spec: RunSpec,
    audio: Any,
    spans: list[Span],
    ref_text: str | None,
    offline: str | None,
    progress: Callable[[float, float], None] | None = None,
    on_step: Callable[[Any], None] | None = None,
) -> StreamRun:
    """Replay `audio` through a fresh session; figures against the spans' aligned words."""
    session = make_session(engine, spec)
    trace = replay(
        session, audio, realtime=spec.stream.realtime, progress=progress, on_step=on_step
    )
    ref_words, utterances = reference_words(source, spans)
    metrics, utts = stream_metrics(trace, ref_words, utterances, ref_text, offline)
    metrics["stream_reference"] = REFERENCE_NOTE if ref_text else OFFLINE_NOTE
    return StreamRun(trace, metrics, utts)


def reference_words(source: Any, spans: list[Span]) -> tuple[list[Word], list[tuple[int, int]]]:
    """Every span's reference words, aligned to its audio (stream/align.py), and each span's
    [first, last) range of them: what latency is measured against."""
    aligner = Aligner(source)
    ref_words: list[Word] = []
    utterances: list[tuple[int, int]] = []
    for span in spans:
        words = aligner.words(span)
        utterances.append((len(ref_words), len(ref_words) + len(words)))
        ref_words += words
    return ref_words, utterances


def run_stream_spec(
    spec: RunSpec,
    repeats: list[int],
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    data: Any = None,
    mode: str = "inprocess",
) -> Iterator[Result]:
    """One Result per repeat of a stream spec over its data set (see module doc)."""
    from voxmeter.assets.bundled import default_cache_dir, resolve_model
    from voxmeter.identity import FileDigests, identity_of
    from voxmeter.measure.envinfo import collect_env
    from voxmeter.run.harness import prepare_data
    from voxmeter.stream import open_engine

    data = data or prepare_data(spec)
    clips = [c for c in data.clips if not c.is_long]
    skipped = [{"id": cid, "reason": why} for cid, why in data.skipped]
    skipped += [
        {"id": c.id, "reason": "over 30 s: a stream data set takes clips of one window"}
        for c in data.clips
        if c.is_long
    ]
    if not clips:
        raise DataError(f"data {spec.data!r}: no clip of at most 30 s to stream")
    cache = default_cache_dir(cache_dir)
    files = FileDigests(cache)
    ident = identity_of(spec, cache, resolve_model(spec.model, cache), data.dataset, files)
    from voxmeter.measure.memory import HighWaterMark
    from voxmeter.stream import allocator_note

    allocator = allocator_note()
    hwm, _ = HighWaterMark.open()
    engine, source, load_s = open_engine(spec, cache)
    try:
        audio = JoinedAudio([c.audio for c in clips], spec.stream.gap_s, spec.stream.duration_s)
        placed = audio.placements()
        spans = [Span(t, clips[i].audio, clips[i].text) for t, i in placed]
        ref_text = " ".join(clips[i].text for _, i in placed)
        t0 = time.perf_counter()
        offline_by_clip = [offline_text(engine, c.audio) for c in clips]
        offline_s = time.perf_counter() - t0
        offline = " ".join(offline_by_clip[i] for _, i in placed)
        warm_up(engine, spec, clips[0].audio)
        for r in repeats:
            if hwm is not None:
                hwm.reset()
            report = None
            if progress is not None:

                def report(done: float, total: float) -> None:
                    progress(spec.label(), int(done), int(total))

            run = measure_stream(engine, source, spec, audio, spans, ref_text, offline, report)
            metrics = dict(run.metrics, n_clips=len(clips), audio_s=run.trace.audio_s)
            metrics.update(load_s=load_s, offline_pass_s=offline_s, allocator=allocator)
            load_s = None
            if hwm is not None:
                peak, _ = hwm.read()
                metrics["peak_rss_mb"] = peak / 2**20  # over the replay: the session's own
                if mode == "isolated":  # a child's lifetime peak is its own (harness docs)
                    metrics["process_peak_rss_mb"] = max(hwm.initial_peak, peak) / 2**20
            yield Result(
                spec_hash=spec.spec_hash,
                spec=spec.to_dict(),
                repeat=r,
                metrics={k: v for k, v in metrics.items() if v is not None},
                clips=[
                    *({"kind": "utterance", **u} for u in run.utterances),
                    {
                        "kind": "rss_series",
                        "t_s": [t for t, _ in run.trace.rss],
                        "rss_mb": [v for _, v in run.trace.rss],
                        "own_mb": [v for _, v in run.trace.own],  # the trace's share
                    },
                ],
                env=collect_env(spec.threads, spec.seed, spec.device),
                warnings=[],
                mode=mode,
                skipped=skipped,
            ).with_identity(ident)
    finally:
        engine.close()
        if hwm is not None:
            hwm.close()


def stream_file(
    spec: RunSpec,
    path: Path,
    reference: str | None,
    *,
    cache_dir: str | Path | None = None,
    on_step: Callable[[Any], None] | None = None,
) -> StreamRun:
    """Stream one file (any length; read from disk as it goes). With a reference of a file of
    at most 30 s, latency is measured against the reference; otherwise against the offline
    long-form transcription's segments (see OFFLINE_NOTE)."""
    from voxmeter.audio.io import AudioStream, info
    from voxmeter.engines.longform import transcribe_sequential
    from voxmeter.stream import allocator_note, open_engine

    head = info(path)
    allocator = allocator_note()
    engine, source, _ = open_engine(spec, cache_dir)
    try:
        with AudioStream(path) as audio:
            warm_up(engine, spec, audio.read(0, min(audio.n_samples, 3 * SAMPLE_RATE)))
        with AudioStream(path) as audio:
            offline = transcribe_sequential(engine, audio, lambda key, rec: nullcontext())
        with AudioStream(path) as audio:
            if reference and head.duration_s <= 30.0:
                spans = [Span(0.0, audio.read(0, audio.n_samples), reference)]
            else:
                reference = None
                spans = [
                    Span(s.start_s, _read_span(audio, s.start_s, s.end_s), s.text)
                    for s in offline.segments
                    if s.text and s.end_s > s.start_s
                ]
        with AudioStream(path) as audio:
            run = measure_stream(
                engine, source, spec, audio, spans, reference, offline.text, on_step=on_step
            )
        run.metrics["allocator"] = allocator
        return run
    finally:
        engine.close()


def _read_span(audio: Any, start_s: float, end_s: float) -> np.ndarray:
    a = round(start_s * SAMPLE_RATE)
    return audio.read(a, round(end_s * SAMPLE_RATE) - a)
