"""A stream spec measured like any other: its data set's clips joined into one live stream
(`gap_s` of silence after each, repeated up to `duration_s`), replayed through a session, its
figures summarised into one Result per repeat. Callers pick this for a stream spec
(`voxmeter stream`, and stream/isolate.py in a child process); run never imports stream.

Besides the replay, one untimed offline pass transcribes each clip as `bench` would (greedy,
no timestamps), for the streaming-vs-offline WER; and the reference text of each clip is
aligned to its audio by the one reference aligner (stream/align.py), before the model under
test loads, for the word times latency is measured from. Recordings over 30 s are left out
of a stream data set (their reference cannot be aligned as one span): each is listed as
skipped. A single file streams through `stream_file` instead.
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
from voxmeter.stream.align import REFERENCE_ALIGNER, Aligner, Span, reference_aligner
from voxmeter.stream.measures import stream_metrics
from voxmeter.stream.policy import Word
from voxmeter.stream.replay import JoinedAudio, Trace, replay
from voxmeter.stream.session import SAMPLE_RATE, StreamSession

REFERENCE_NOTE = (
    "reference word times: forced alignment of each clip's reference text by the reference "
    "aligner (see reference_aligner); a word ends where the next begins"
)
NO_REFERENCE_NOTE = (
    "no reference text on these clips (cost-only): no word latency is measured, and WER only "
    "against the offline transcription"
)
OFFLINE_NOTE = (
    "no reference text: latency is measured against the offline transcription's words "
    "(aligned the same way) and WER only against it"
)
ALIGNER_NOTE = f"{REFERENCE_ALIGNER}; the same for every model streamed"
MIB = 2**20


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


@dataclass
class ReferenceWords:
    """What latency is measured against: every span's aligned words, each span's [first,
    last) range of them, and the reference text (None: the offline transcription's)."""

    words: list[Word]
    utterances: list[tuple[int, int]]
    text: str | None


def measure_stream(
    engine: Any,
    spec: RunSpec,
    audio: Any,
    ref: ReferenceWords,
    offline: str | None,
    progress: Callable[[float, float], None] | None = None,
    on_step: Callable[[Any], None] | None = None,
) -> StreamRun:
    """Replay `audio` through a fresh session; figures against the reference's words."""
    session = make_session(engine, spec)
    trace = replay(
        session, audio, realtime=spec.stream.realtime, progress=progress, on_step=on_step
    )
    metrics, utts = stream_metrics(trace, ref.words, ref.utterances, ref.text, offline)
    metrics["stream_reference"] = (
        REFERENCE_NOTE if ref.text else OFFLINE_NOTE if ref.words else NO_REFERENCE_NOTE
    )
    metrics["reference_aligner"] = ALIGNER_NOTE
    return StreamRun(trace, metrics, utts)


def reference_words(
    aligner: Aligner, spans: list[Span]
) -> tuple[list[Word], list[tuple[int, int]]]:
    """Every span's reference words, aligned to its audio (stream/align.py), and each span's
    [first, last) range of them: what latency is measured against."""
    ref_words: list[Word] = []
    utterances: list[tuple[int, int]] = []
    for span in spans:
        words = aligner.words(span)
        utterances.append((len(ref_words), len(ref_words) + len(words)))
        ref_words += words
    return ref_words, utterances


def aligned_reference(cache: Path, spans: list[Span], text: str | None) -> ReferenceWords:
    """reference_words by the reference aligner, which is let go (and the heap trimmed)
    before the caller loads the model under test: its memory is no part of the model's."""
    from voxmeter.stream import release_heap

    words, utterances = reference_words(reference_aligner(cache), spans)
    release_heap()
    return ReferenceWords(words, utterances, text)


class ProcessPeaks:
    """The kernel's high-water mark over a stream run (measure/memory.HighWaterMark): each
    replay's own peak, and the process's peak from the model's load on (loading, the
    offline pass, warm-up and every replay). Opened after the reference alignment."""

    def __init__(self) -> None:
        from voxmeter.measure.memory import HighWaterMark

        self.hwm, _ = HighWaterMark.open()
        self.process = 0  # bytes: the highest mark read since opening

    def begin_replay(self) -> None:
        """Keep the mark so far (load, offline pass, warm-up) and start the replay's own."""
        if self.hwm is not None:
            self.process = max(self.process, self.hwm.read()[0])
            self.hwm.reset()

    def end_replay(self) -> tuple[float, float] | None:
        """(the replay's peak, the process's peak so far) in MiB; None without the mark."""
        if self.hwm is None:
            return None
        peak, _ = self.hwm.read()
        self.process = max(self.process, peak)
        return peak / MIB, self.process / MIB

    def close(self) -> None:
        if self.hwm is not None:
            self.hwm.close()


@dataclass
class StreamPlan:
    """A stream spec's data as one stream: the clips, the joined audio, its reference."""

    clips: list[Any]  # run.harness.PreparedClip, each at most 30 s
    skipped: list[dict[str, str]]
    audio: JoinedAudio
    placed: list[tuple[float, int]]  # (start in the stream, clip index)
    source: Any  # the spec's model, resolved and checked (run/model.py)
    ident: Any


def plan_stream(spec: RunSpec, cache: Path, data: Any) -> StreamPlan:
    """The stream a data set makes (module doc), and the result's identity."""
    from voxmeter.identity import FileDigests
    from voxmeter.run.harness import prepare_data
    from voxmeter.run.identify import identity_of
    from voxmeter.run.model import resolve_checked

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
    source = resolve_checked(spec, cache)
    ident = identity_of(spec, cache, source, data.dataset, FileDigests(cache))
    audio = JoinedAudio([c.audio for c in clips], spec.stream.gap_s, spec.stream.duration_s)
    return StreamPlan(clips, skipped, audio, audio.placements(), source, ident)


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
    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.run.model import open_model
    from voxmeter.stream import allocator_note

    spec.validate()
    if not spec.stream.enabled:
        raise ValueError(f"spec {spec.spec_hash} ({spec.label()}) is not a stream")
    if not repeats:
        return
    cache = default_cache_dir(cache_dir)
    plan = plan_stream(spec, cache, data)
    clips, placed = plan.clips, plan.placed
    # Clips without a reference (text "": only a cost-only run gets here, references.py) give
    # no words and no reference text.
    spans = [Span(t, clips[i].audio, clips[i].text) for t, i in placed]
    joined = " ".join(clips[i].text for _, i in placed)
    ref_text = joined if joined.strip() else None
    ref = aligned_reference(cache, spans, ref_text)
    allocator = allocator_note()
    peaks = ProcessPeaks()  # from here on: the model under test's memory
    try:
        opened = open_model(spec, cache, source=plan.source)
    except BaseException:
        peaks.close()
        raise
    engine = opened.engine
    try:
        t0 = time.perf_counter()
        offline_by_clip = [offline_text(engine, c.audio) for c in clips]
        common = {
            "n_clips": len(clips),
            "load_s": opened.load_s,
            "offline_pass_s": time.perf_counter() - t0,
            "allocator": allocator,
        }
        offline = " ".join(offline_by_clip[i] for _, i in placed)
        warm_up(engine, spec, clips[0].audio)
        for r in repeats:
            run = _replay_repeat(engine, spec, plan, ref, offline, peaks, mode, progress)
            metrics = {**run.metrics, "audio_s": run.trace.audio_s, **common}
            common["load_s"] = None  # loaded once per run: the first repeat carries it
            yield _stream_result(spec, r, plan, run, metrics, mode)
    finally:
        engine.close()
        peaks.close()


def _replay_repeat(
    engine: Any,
    spec: RunSpec,
    plan: StreamPlan,
    ref: ReferenceWords,
    offline: str,
    peaks: ProcessPeaks,
    mode: str,
    progress: Callable[[str, int, int], None] | None,
) -> StreamRun:
    """One replay of the plan's stream, with its memory peaks among its metrics."""
    report = None
    if progress is not None:

        def report(done: float, total: float) -> None:
            progress(spec.label(), int(done), int(total))

    peaks.begin_replay()
    run = measure_stream(engine, spec, plan.audio, ref, offline, report)
    read = peaks.end_replay()
    if read is not None:
        run.metrics["peak_rss_mb"] = read[0]  # over the replay: the session's own
        if mode == "isolated":  # a child's process peak is its own (harness docs)
            run.metrics["process_peak_rss_mb"] = read[1]
    return run


def _stream_result(
    spec: RunSpec, r: int, plan: StreamPlan, run: StreamRun, metrics: dict, mode: str
) -> Result:
    from voxmeter.measure.envinfo import collect_env

    return Result(
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
        skipped=plan.skipped,
    ).with_identity(plan.ident)


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
    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.audio.io import AudioStream, info
    from voxmeter.engines.longform import transcribe_sequential
    from voxmeter.stream import allocator_note, open_engine

    head = info(path)
    allocator = allocator_note()
    engine, _, _ = open_engine(spec, cache_dir)
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
        ref = aligned_reference(default_cache_dir(cache_dir), spans, reference)
        with AudioStream(path) as audio:
            run = measure_stream(engine, spec, audio, ref, offline.text, on_step=on_step)
        run.metrics["allocator"] = allocator
        return run
    finally:
        engine.close()


def _read_span(audio: Any, start_s: float, end_s: float) -> np.ndarray:
    a = round(start_s * SAMPLE_RATE)
    return audio.read(a, round(end_s * SAMPLE_RATE) - a)
