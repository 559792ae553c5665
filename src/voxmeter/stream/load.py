"""`voxmeter load`: many live clients against a running `voxmeter serve`, and the latency of
what they are sent back (MLPerf LoadGen's Server scenario, for a streaming recogniser).

The load generator only speaks the WebSocket protocol (protocol.py), apart from the system
under test as LoadGen is. Clients send real speech at real-time pace; a word's commit latency
is when its commit arrived minus when the frame holding the end of its audio was sent, the end
taken from the reference aligner (stream/align.py), not the server's estimates.
`find_capacity` raises the number of streams until the SLO is missed. Only loopback servers
are driven. Arrivals, the capacity search and the measurements behind them:
docs/streaming-notes.md, "stream/load.py".
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from voxmeter.errors import SpecError, VoxmeterError
from voxmeter.stream.measures import match_by_utterance, p50_p90_p99
from voxmeter.stream.policy import Word
from voxmeter.stream.protocol import Start, Stop, encode_pcm, event_words, parse_event

SAMPLE_RATE = 16000
ARRIVALS = ("fixed", "poisson")
LATENCY_REFERENCE = "end of each word's audio by forced alignment of the reference (tiny.en)"


def check_loopback(url: str) -> str:
    """`url` if it is ws:// or wss:// to a loopback host (127.0.0.0/8, ::1, localhost)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise SpecError(f"--url: expected ws://HOST:PORT, got {url!r}")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SpecError(
            f"--url: {host} is not a loopback address; load drives only a server on this "
            "machine (127.0.0.0/8, ::1, localhost)"
        )
    return url


@dataclass(frozen=True)
class LoadConfig:
    """One load run (docs/streaming-notes.md)."""

    url: str
    streams: int = 1
    duration_s: float = 30.0
    arrival: str = "fixed"
    rate: float = 0.5  # poisson: sessions per second
    session_s: float = 20.0  # poisson: audio per session
    slo_ms: float = 2000.0
    frame_ms: int = 100
    gap_s: float = 1.0
    grace_s: float = 30.0  # after its audio, how long a stream waits for its final
    seed: int = 0

    def validate(self) -> LoadConfig:
        check_loopback(self.url)
        checks = [
            ("streams", isinstance(self.streams, int) and 1 <= self.streams <= 256, "in [1, 256]"),
            ("duration", 0 < self.duration_s <= 3600, "in (0, 3600] s"),
            ("arrival", self.arrival in ARRIVALS, f"one of {ARRIVALS}"),
            ("rate", 0 < self.rate <= 100, "in (0, 100] sessions/s"),
            ("session", 0 < self.session_s <= 3600, "in (0, 3600] s"),
            ("slo-ms", 0 < self.slo_ms < math.inf, "a positive number of ms"),
            ("frame-ms", 10 <= self.frame_ms <= 1000, "in [10, 1000] ms"),
            ("gap", 0 <= self.gap_s <= 60, "in [0, 60] s"),
            ("grace", 0 < self.grace_s <= 600, "in (0, 600] s"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise SpecError(f"--{name}: must be {what}")
        return self

    @property
    def frame_s(self) -> float:
        return self.frame_ms / 1000


@dataclass
class StreamResult:
    """What one simulated client saw."""

    index: int
    start_s: float  # when it started, from the run's start
    audio_s: float = 0.0  # audio it sent
    latencies_ms: list[float] = field(default_factory=list)  # one per matched committed word
    commits: list[tuple[Word, float]] = field(default_factory=list)  # word, when it arrived
    text: str = ""
    final: bool = False
    server_compute_s: float | None = None  # the server's model time (from `final`)
    elapsed_s: float = 0.0  # connect to final
    error: str | None = None

    @property
    def words(self) -> int:
        """Committed words; those matched to a reference word have a latency (latencies_ms)."""
        return len(self.commits)

    @property
    def rtf(self) -> float | None:
        """Server compute seconds per audio second for this stream."""
        if self.server_compute_s is None or not self.audio_s:
            return None
        return self.server_compute_s / self.audio_s


@dataclass
class LoadReport:
    config: LoadConfig
    streams: list[StreamResult]
    wall_s: float

    @property
    def latencies_ms(self) -> list[float]:
        return [x for s in self.streams for x in s.latencies_ms]

    @property
    def latency(self) -> dict[str, float | None]:
        return p50_p90_p99(self.latencies_ms)

    @property
    def errors(self) -> list[str]:
        return [f"stream {s.index}: {s.error}" for s in self.streams if s.error]

    @property
    def matched_share(self) -> float | None:
        """Committed words matched to a reference word (those with a latency), in %."""
        words = sum(s.words for s in self.streams)
        return 100 * len(self.latencies_ms) / words if words else None

    @property
    def held(self) -> bool:
        """The SLO held: p99 within it, no errors, every stream ended with its final."""
        p99 = self.latency["p99"]
        ok = p99 is not None and p99 <= self.config.slo_ms
        return ok and not self.errors and all(s.final for s in self.streams)

    def to_dict(self) -> dict[str, Any]:
        streams = [{**asdict(s), "words": s.words, "rtf": s.rtf} for s in self.streams]
        for s in streams:
            s["latency_ms"] = p50_p90_p99(s.pop("latencies_ms"))
            s.pop("commits")
        return {
            "config": asdict(self.config),
            "streams": streams,
            "words": sum(s.words for s in self.streams),
            "words_timed": len(self.latencies_ms),
            "matched_share": self.matched_share,
            "latency_reference": LATENCY_REFERENCE,
            "latency_ms": self.latency,
            "held": self.held,
            "errors": self.errors,
            "wall_s": self.wall_s,
        }


@dataclass
class CapacityReport:
    levels: list[LoadReport]

    @property
    def capacity(self) -> int:
        """The most fixed streams that held the SLO before the first level that did not."""
        held = 0
        for r in self.levels:
            if not r.held:
                break
            held = r.config.streams
        return held

    def to_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "levels": [r.to_dict() for r in self.levels]}


def default_clips() -> list[np.ndarray]:
    """The bundled default set's clips, 16 kHz (read once per process)."""
    return _default_reference()[0]


def speech(
    duration_s: float, gap_s: float, first_clip: int = 0, clips: list[np.ndarray] | None = None
) -> np.ndarray:
    """`duration_s` of speech (16 kHz): `clips` (default: the bundled default set) joined with
    gap_s of silence, starting at clip `first_clip` and repeating the set if it is shorter."""
    return speech_plan(duration_s, gap_s, first_clip, clips)[0]


def speech_plan(
    duration_s: float, gap_s: float, first_clip: int = 0, clips: list[np.ndarray] | None = None
) -> tuple[np.ndarray, list[tuple[float, int]]]:
    """`speech`, with (start second, clip index) of every clip it holds, cut or whole."""
    clips = clips if clips is not None else default_clips()
    gap = np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.float32)
    need = round(duration_s * SAMPLE_RATE)
    parts, placed, n, i = [], [], 0, first_clip
    while n < need:
        x = clips[i % len(clips)]
        placed.append((n / SAMPLE_RATE, i % len(clips)))
        parts += [x, gap]
        n += len(x) + len(gap)
        i += 1
    return np.concatenate(parts)[:need], placed


class Reference:
    """Reference words of the bundled default set's clips, by the reference aligner
    (stream/align.py), which aligns each clip once and shifts it to each place it is
    streamed (docs/streaming-notes.md)."""

    def __init__(self, clips: list[np.ndarray], texts: list[str]) -> None:
        self.clips, self.texts = clips, texts
        self._aligner: Any = None

    def words(
        self, placed: list[tuple[float, int]], duration_s: float
    ) -> tuple[list[Word], list[tuple[int, int]]]:
        """(reference words in stream time, [first, last) range per clip) of a plan. The
        first call for a clip aligns it: call before the clients start (it takes the CPU)."""
        from voxmeter.assets.bundled import default_cache_dir
        from voxmeter.stream.align import Span, reference_aligner

        if self._aligner is None:
            self._aligner = reference_aligner(default_cache_dir(None))
        words: list[Word] = []
        spans: list[tuple[int, int]] = []
        for start, i in placed:
            span = Span(start, self.clips[i], self.texts[i])
            mine = [w for w in self._aligner.words(span) if w.end <= duration_s]
            spans.append((len(words), len(words) + len(mine)))
            words += mine
        return words, spans


def reference_latencies(
    commits: list[tuple[Word, float]],
    ref_words: list[Word],
    spans: list[tuple[int, int]],
    sent_at: list[float],
    frame_s: float,
) -> list[float]:
    """Commit latency (ms) of each committed word matched to a reference word: when it
    arrived minus when the frame holding the reference word's end was sent."""
    pairs = match_by_utterance([w for w, _ in commits], ref_words, spans)
    out = []
    for h, r in pairs:
        k = frame_of(ref_words[r].end, frame_s)
        if 0 <= k < len(sent_at):
            out.append((commits[h][1] - sent_at[k]) * 1000)
    return out


def set_seconds(gap_s: float) -> float:
    """Seconds of the bundled default set streamed once, each clip followed by gap_s."""
    clips, _ = _default_reference()
    return sum(len(c) for c in clips) / SAMPLE_RATE + gap_s * len(clips)


@functools.cache
def _default_reference() -> tuple[list[np.ndarray], Reference]:
    """The bundled default set's clips and their Reference, one per process (a capacity
    search's levels share its alignments)."""
    from voxmeter.audio.io import load_audio
    from voxmeter.data.datasets import load_dataset

    data = load_dataset("default").clips
    clips = [load_audio(c.audio).samples for c in data]
    return clips, Reference(clips, [c.text for c in data])


def arrival_times(cfg: LoadConfig) -> list[float]:
    """When each session starts, in seconds from the run's start."""
    if cfg.arrival == "fixed":
        return [i / cfg.streams for i in range(cfg.streams)]
    rng = np.random.default_rng(cfg.seed)
    out, t = [], float(rng.exponential(1 / cfg.rate))
    while t < cfg.duration_s:
        out.append(t)
        t += float(rng.exponential(1 / cfg.rate))
    return out


def frame_of(end_s: float, frame_s: float) -> int:
    """Index of the frame whose audio ends a word at `end_s` (frame k holds k * frame_s to
    (k + 1) * frame_s; an end on a boundary belongs to the frame before it)."""
    return math.ceil(round(end_s / frame_s, 6)) - 1


def _latencies(words: list[Any], sent_at: list[float], now: float, frame_s: float) -> list[float]:
    """Commit latency of each word: now minus when the frame holding its end was sent."""
    out = []
    for w in words:
        k = min(max(frame_of(w.end, frame_s), 0), len(sent_at) - 1)
        out.append((now - sent_at[k]) * 1000)
    return out


async def _collect(
    ws: Any, result: StreamResult, sent_at: list[float], frame_s: float, server_times: bool
) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for msg in ws:
            now = time.monotonic()
            if isinstance(msg, bytes):
                raise VoxmeterError("load: the server sent a binary frame")
            ev = parse_event(msg)
            if ev["type"] == "commit" and sent_at:
                words = event_words(ev)
                result.commits += [(w, now) for w in words]
                if server_times:  # no reference: the server's word times (streaming-notes)
                    result.latencies_ms += _latencies(words, sent_at, now, frame_s)
                result.text = ev.get("text", result.text)
            elif ev["type"] == "final":
                result.final, result.text = True, ev["text"]
                result.server_compute_s = float(ev["compute_s"])
            elif ev["type"] == "error" and result.error is None:
                result.error = f"{ev['code']}: {ev['message']}"
    except ConnectionClosed as e:
        if result.error is None and not result.final:
            result.error = f"connection closed ({e})"


async def run_stream(
    url: str,
    audio: np.ndarray,
    frame_ms: int,
    result: StreamResult,
    stop: asyncio.Event | None = None,
    reference: tuple[list[Word], list[tuple[int, int]]] | None = None,
) -> None:
    """One client: start, audio at real-time pace, stop, then every event up to the close.
    `stop`, once set, ends the audio early (the client then stops as at the audio's end).
    Latencies are against `reference` (words in stream time, [first, last) per clip: see
    Reference.words), or without one against the server's own word times
    (docs/streaming-notes.md)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    frame_s, n = frame_ms / 1000, SAMPLE_RATE * frame_ms // 1000
    t_open = time.monotonic()
    async with connect(url, proxy=None, compression=None, open_timeout=10) as ws:
        sent_at: list[float] = []
        collector = asyncio.create_task(
            _collect(ws, result, sent_at, frame_s, server_times=reference is None)
        )
        try:
            await ws.send(Start(sample_rate=SAMPLE_RATE).message())
            t0 = time.monotonic()
            for k, i in enumerate(range(0, len(audio), n)):
                await asyncio.sleep(max(0.0, t0 + (k + 1) * frame_s - time.monotonic()))
                if collector.done():  # the server refused or closed: stop sending
                    break
                if stop is not None and stop.is_set():
                    await ws.send(Stop().message())
                    break
                await ws.send(encode_pcm(audio[i : i + n]))
                sent_at.append(time.monotonic())
                result.audio_s = min(i + n, len(audio)) / SAMPLE_RATE
            else:
                await ws.send(Stop().message())
        except ConnectionClosed:
            pass  # the collector records why
        await collector
    result.elapsed_s = time.monotonic() - t_open
    if reference is not None:
        result.latencies_ms = reference_latencies(result.commits, *reference, sent_at, frame_s)


async def _one(
    cfg: LoadConfig,
    index: int,
    at: float,
    audio: np.ndarray,
    t_run: float,
    reference: tuple[list[Word], list[tuple[int, int]]] | None = None,
) -> StreamResult:
    from websockets.exceptions import WebSocketException

    result = StreamResult(index, at)
    await asyncio.sleep(max(0.0, t_run + at - time.monotonic()))
    budget = len(audio) / SAMPLE_RATE + cfg.grace_s
    try:
        await asyncio.wait_for(
            run_stream(cfg.url, audio, cfg.frame_ms, result, reference=reference), budget
        )
    except asyncio.TimeoutError:
        result.error = result.error or f"timeout: no final within {budget:.0f} s"
    except (OSError, WebSocketException) as e:  # refused, or not a WebSocket server
        result.error = result.error or f"connect: {e}"
    return result


async def _check_reachable(url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), 5)
    except (OSError, asyncio.TimeoutError) as e:
        raise VoxmeterError(f"--url: no server at {url} ({e or 'timeout'})") from None
    writer.close()
    await writer.wait_closed()


async def run_load(cfg: LoadConfig) -> LoadReport:
    """Run the clients of `cfg` against its server; every stream ends by a hard deadline."""
    cfg.validate()
    await _check_reachable(cfg.url)
    starts = arrival_times(cfg)
    seconds = cfg.duration_s if cfg.arrival == "fixed" else cfg.session_s
    clips, ref = _default_reference()
    n = len(starts)
    plans = [speech_plan(seconds, cfg.gap_s, i * len(clips) // n, clips) for i in range(n)]
    refs = await asyncio.to_thread(lambda: [ref.words(placed, seconds) for _, placed in plans])
    t_run = time.monotonic()
    tasks = [
        _one(cfg, i, at, audio, t_run, words)
        for i, (at, (audio, _), words) in enumerate(zip(starts, plans, refs, strict=True))
    ]
    results = await asyncio.gather(*tasks)
    return LoadReport(cfg, list(results), time.monotonic() - t_run)


def capacity_levels(max_streams: int) -> list[int]:
    """1, 2, 4, 6, 8, ... up to max_streams."""
    return [n for n in [1, 2, *range(4, max_streams + 1, 2)] if n <= max_streams]


async def find_capacity(
    cfg: LoadConfig,
    max_streams: int = 32,
    on_level: Any = None,
    min_level_audio_s: float | None = None,
) -> CapacityReport:
    """Fixed-arrival levels of growing size until one misses the SLO, each streaming at least
    `min_level_audio_s` in all (None: the whole set once; docs/streaming-notes.md)."""
    if min_level_audio_s is None:
        min_level_audio_s = set_seconds(cfg.gap_s)
    out = CapacityReport([])
    for n in capacity_levels(max_streams):
        seconds = max(cfg.duration_s, min_level_audio_s / n)
        report = await run_load(replace(cfg, streams=n, arrival="fixed", duration_s=seconds))
        out.levels.append(report)
        if on_level is not None:
            on_level(report)
        if not report.held:
            break
    return out
