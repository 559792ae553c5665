"""`voxmeter load`: many live clients against a running `voxmeter serve`, and the latency of
what they are sent back (MLPerf LoadGen's Server scenario, for a streaming recogniser).

The load generator is apart from the system under test, as LoadGen is: it only speaks the
WebSocket protocol (protocol.py), so it measures any server that does, over a real socket.

Each simulated client streams the bundled default set's speech (clips joined with `gap_s` of
silence, each client starting at another clip) at real-time pace, a `frame_ms` frame at a
time, sending frame k when its audio would have been spoken: t0 + (k + 1) * frame_ms, as a
microphone delivers it. The figure of merit is the **commit latency** of every committed word:
the wall time its commit event arrived minus the wall time the frame holding the word's end
(word.end, stream seconds) was sent. It counts network, queueing, compute and the policy's
wait for agreement alike; a word's end time is the server's estimate, so a single word's
figure is approximate, the distribution is not. Percentiles are pooled over every word of
every stream (p50/p90/p99, numpy's linear interpolation).

Arrivals: "fixed" starts `streams` clients together (spread over the first second, so their
steps do not run in lockstep), each streaming `duration_s`; "poisson" starts sessions with
exponential inter-arrival times at `rate` per second for `duration_s`, each `session_s` long.
`find_capacity` runs 1, 2, 4, 6, 8, ... fixed streams and stops at the first level that misses
the SLO (p99 over it, an error, or a stream without its final): the capacity is the level
before. Each level streams at least `min_level_audio_s` of audio in all (120 s: each stream
runs max(duration_s, 120 s / streams)), because a p99 needs words to stand on: one stream of
30 s commits about 80 words, whose p99 is nearly the largest single word's latency, and on two
cores one such stream missed a 3 s SLO (3.09 s) that four streams of 30 s each then held
(2.79 s over about 320 words). Every run ends by a hard deadline, and only loopback servers are driven: this is a
benchmark, not a load tool to point at someone else's machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from voxmeter.errors import SpecError, VoxmeterError
from voxmeter.stream.measures import p50_p90_p99
from voxmeter.stream.protocol import Start, Stop, encode_pcm, event_words, parse_event

SAMPLE_RATE = 16000
ARRIVALS = ("fixed", "poisson")
MIN_LEVEL_AUDIO_S = 120.0  # find_capacity: audio per level in all streams (module doc)


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
    """One load run (module doc)."""

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
    latencies_ms: list[float] = field(default_factory=list)  # one per committed word
    text: str = ""
    final: bool = False
    server_compute_s: float | None = None  # the server's model time (from `final`)
    elapsed_s: float = 0.0  # connect to final
    error: str | None = None

    @property
    def words(self) -> int:
        return len(self.latencies_ms)

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
    def held(self) -> bool:
        """The SLO held: p99 within it, no errors, every stream ended with its final."""
        p99 = self.latency["p99"]
        ok = p99 is not None and p99 <= self.config.slo_ms
        return ok and not self.errors and all(s.final for s in self.streams)

    def to_dict(self) -> dict[str, Any]:
        streams = [{**asdict(s), "words": s.words, "rtf": s.rtf} for s in self.streams]
        for s in streams:
            s["latency_ms"] = p50_p90_p99(s.pop("latencies_ms"))
        return {
            "config": asdict(self.config),
            "streams": streams,
            "words": len(self.latencies_ms),
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
    """The bundled default set's clips, 16 kHz."""
    from voxmeter.audio.io import load_audio
    from voxmeter.data.datasets import load_dataset

    return [load_audio(c.audio).samples for c in load_dataset("default").clips]


def speech(
    duration_s: float, gap_s: float, first_clip: int = 0, clips: list[np.ndarray] | None = None
) -> np.ndarray:
    """`duration_s` of speech (16 kHz): `clips` (default: the bundled default set) joined with
    gap_s of silence, starting at clip `first_clip` and repeating the set if it is shorter."""
    clips = clips if clips is not None else default_clips()
    gap = np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.float32)
    need = round(duration_s * SAMPLE_RATE)
    parts, n, i = [], 0, first_clip
    while n < need:
        x = clips[i % len(clips)]
        parts += [x, gap]
        n += len(x) + len(gap)
        i += 1
    return np.concatenate(parts)[:need]


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


def _latencies(words: list[Any], sent_at: list[float], now: float, frame_s: float) -> list[float]:
    """Commit latency of each word: now minus when the frame holding its end was sent."""
    out = []
    for w in words:
        k = math.ceil(round(w.end / frame_s, 6)) - 1
        k = min(max(k, 0), len(sent_at) - 1)
        out.append((now - sent_at[k]) * 1000)
    return out


async def _collect(ws: Any, result: StreamResult, sent_at: list[float], frame_s: float) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for msg in ws:
            now = time.monotonic()
            if isinstance(msg, bytes):
                raise VoxmeterError("load: the server sent a binary frame")
            ev = parse_event(msg)
            if ev["type"] == "commit" and sent_at:
                result.latencies_ms += _latencies(event_words(ev), sent_at, now, frame_s)
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
) -> None:
    """One client: start, audio at real-time pace, stop, then every event up to the close.
    `stop`, once set, ends the audio early (the client then stops as at the audio's end)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    frame_s, n = frame_ms / 1000, SAMPLE_RATE * frame_ms // 1000
    t_open = time.monotonic()
    async with connect(url, proxy=None, compression=None, open_timeout=10) as ws:
        sent_at: list[float] = []
        collector = asyncio.create_task(_collect(ws, result, sent_at, frame_s))
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


async def _one(
    cfg: LoadConfig, index: int, at: float, audio: np.ndarray, t_run: float
) -> StreamResult:
    from websockets.exceptions import WebSocketException

    result = StreamResult(index, at)
    await asyncio.sleep(max(0.0, t_run + at - time.monotonic()))
    budget = len(audio) / SAMPLE_RATE + cfg.grace_s
    try:
        await asyncio.wait_for(run_stream(cfg.url, audio, cfg.frame_ms, result), budget)
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
    clips = default_clips()
    t_run = time.monotonic()
    tasks = [
        _one(cfg, i, at, speech(seconds, cfg.gap_s, i, clips), t_run) for i, at in enumerate(starts)
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
    min_level_audio_s: float = MIN_LEVEL_AUDIO_S,
) -> CapacityReport:
    """Fixed-arrival levels of growing size until one misses the SLO, each streaming at least
    `min_level_audio_s` in all (module doc)."""
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
