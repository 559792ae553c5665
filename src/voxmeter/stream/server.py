"""`voxmeter serve`: live transcription over WebSocket (protocol.py; docs/stream-protocol.md).

One engine is loaded once and shared; each connection gets its own StreamSession. Model work
runs in worker threads (`asyncio.to_thread`), so the event loop keeps reading every client's
audio while a step computes: CTranslate2 models take concurrent calls, the torch (hf) engine
is serialised by a lock. With `replicas` > 1 (ct2 only) CTranslate2 holds that many copies of
the model and runs that many sessions' steps in parallel, each on the spec's threads: on two
cores, two replicas of one thread each streamed 23-30% more audio per second than one replica
of two threads, four sessions at once (tiny.en int8, 500 ms chunks, LA-2, VAD; 7.00 against
5.39 seconds of audio per second, benchmarks/diag_stream_replicas.py).

Per connection, two tasks: the receiver reads frames, checks them, resamples them to 16 kHz
(soxr's streaming resampler: no clicks at frame edges) and queues the audio; the worker runs
a step whenever at least chunk_ms is queued, taking all of it at once when it has fallen
behind, so a late server catches up instead of falling further back.

Whatever a client can make the server hold is bounded: a frame (`max_frame_bytes`), the
queue (past `max_pending_s` the receiver leaves the socket unread, so a slow server pushes
back through TCP), the pace (`max_ahead_s` of audio ahead of the wall clock since the first
frame, else `overrun`; 0 turns the guard off for replays), the session's buffer (trimmed to
max_buffer_s by StreamSession) and the sessions (`max_sessions`, else `server_full`). A
connection's state is one dict entry, removed however the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from voxmeter.errors import SpecError
from voxmeter.spec import RunSpec
from voxmeter.stream import protocol as proto
from voxmeter.stream.protocol import Limits, ProtocolError, Start, Stop
from voxmeter.stream.session import SAMPLE_RATE, Step, StreamSession

log = logging.getLogger(__name__)
BYTES_PER_SAMPLE = 4  # float32, as the server holds audio


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens and what one connection may make it hold (module doc)."""

    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port (tests)
    max_sessions: int = 4
    replicas: int = 1  # model copies stepping sessions in parallel (module doc; ct2 only)
    limits: Limits = field(default_factory=Limits)
    max_pending_s: float = 5.0
    start_timeout_s: float = 10.0

    def validate(self) -> ServerConfig:
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise SpecError(f"port: must be an integer in [0, 65535], got {self.port!r}")
        if not (isinstance(self.max_sessions, int) and self.max_sessions >= 1):
            raise SpecError(f"max_sessions: must be an integer >= 1, got {self.max_sessions!r}")
        if not (isinstance(self.replicas, int) and 1 <= self.replicas <= 64):
            raise SpecError(f"replicas: must be an integer in [1, 64], got {self.replicas!r}")
        lim = self.limits
        if lim.max_frame_bytes < 2:
            raise SpecError(f"max_frame_bytes: must be >= 2, got {lim.max_frame_bytes}")
        if not (lim.max_ahead_s >= 0 and math.isfinite(lim.max_ahead_s)):
            raise SpecError(f"max_ahead_s: must be >= 0 (0 = no guard), got {lim.max_ahead_s}")
        if not 0 < self.max_pending_s <= 60:
            raise SpecError(f"max_pending_s: must be in (0, 60] s, got {self.max_pending_s}")
        return self

    def pending_limit_s(self, chunk_s: float) -> float:
        """The queue limit, never below a chunk (the worker waits for a whole chunk)."""
        return max(self.max_pending_s, chunk_s)

    def held_bytes_bound(self, chunk_s: float) -> int:
        """Most audio bytes one connection can hold: the session buffer, plus one coalesced
        queue inside a running step and one more queued beside it (each at most
        max_pending_s and a frame, the frame at the lowest rate resampled to 16 kHz)."""
        frame_s = self.limits.max_frame_bytes / 2 / proto.MIN_SAMPLE_RATE
        seconds = self.limits.max_buffer_s + 2 * (self.pending_limit_s(chunk_s) + frame_s)
        return int(seconds * SAMPLE_RATE * BYTES_PER_SAMPLE)


@dataclass(frozen=True)
class SessionStats:
    """One live connection, as `StreamServer.stats` sees it."""

    session: str
    sample_rate: int  # 0 until the client's start
    audio_s: float  # audio received (client's stream time)
    pending_s: float  # received, not yet given to the model (16 kHz)
    held_bytes: int  # audio bytes held: session buffers and the queue
    compute_s: float
    steps: int


@dataclass(frozen=True)
class ServerStats:
    sessions: list[SessionStats]
    max_sessions: int

    @property
    def held_bytes(self) -> int:
        return sum(s.held_bytes for s in self.sessions)


class Connection:
    """One client's state: what it announced, its queue, its session, its pace."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.start: Start | None = None
        self.session: StreamSession | None = None
        self._resampler: Any = None
        self._pending: list[np.ndarray] = []
        self.pending_samples = 0  # at 16 kHz
        self.received_samples = 0  # at the client's rate
        self.first_audio_at: float | None = None
        self.compute_s = 0.0
        self.stopped = False
        self.aborted = False
        self.wake = asyncio.Event()  # the worker has something to do
        self.progress = asyncio.Event()  # the worker took the queue

    def open(self, start: Start, session: StreamSession) -> None:
        import soxr

        self.start, self.session = start, session
        if start.sample_rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(
                start.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )

    @property
    def audio_s(self) -> float:
        return self.received_samples / self.start.sample_rate if self.start else 0.0

    def add_audio(self, samples: np.ndarray, now: float, max_ahead_s: float) -> None:
        """Queue a frame (client rate); `overrun` if the client is too far ahead of the clock."""
        if self.first_audio_at is None:
            self.first_audio_at = now
        self.received_samples += len(samples)
        ahead = self.audio_s - (now - self.first_audio_at)
        if max_ahead_s and ahead > max_ahead_s:
            raise ProtocolError(
                "overrun",
                f"audio {ahead:.1f} s ahead of real time (the limit is {max_ahead_s:g} s)",
            )
        self._queue(self._resampler.resample_chunk(samples) if self._resampler else samples)

    def _queue(self, x: np.ndarray) -> None:
        if len(x):
            self._pending.append(x)
            self.pending_samples += len(x)

    def take(self, last: bool = False) -> np.ndarray:
        """Everything queued (16 kHz); `last` also flushes the resampler's tail."""
        if last and self._resampler is not None:
            self._queue(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        out = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        self._pending, self.pending_samples = [], 0
        self.progress.set()
        return out

    def abort(self) -> None:
        self.aborted = True
        self.wake.set()
        self.progress.set()

    def stats(self) -> SessionStats:
        s = self.session
        held = self.pending_samples * BYTES_PER_SAMPLE + (s.state_bytes() if s else 0)
        return SessionStats(
            session=self.id,
            sample_rate=self.start.sample_rate if self.start else 0,
            audio_s=self.audio_s,
            pending_s=self.pending_samples / SAMPLE_RATE,
            held_bytes=held,
            compute_s=self.compute_s,
            steps=s.n_steps if s else 0,
        )


class StreamServer:
    """The connection handler: one shared engine, one session per connection."""

    def __init__(self, engine: Any, spec: RunSpec, config: ServerConfig, vad: Any = None):
        self.engine = engine
        self.spec = spec
        self.config = config.validate()
        self.vad = vad
        # torch modules are not safe to call from two threads at once; CTranslate2 queues calls
        self._model_lock: Any = (
            threading.Lock() if spec.engine == "hf" else contextlib.nullcontext()
        )
        self.connections: dict[str, Connection] = {}

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def stats(self) -> ServerStats:
        return ServerStats(
            [c.stats() for c in list(self.connections.values())], self.config.max_sessions
        )

    def warm_up(self) -> None:
        """One step on a second of silence per model replica, all at once (so each replica
        takes one): the first model call pays one-off allocations, and a client's first
        latency should not."""
        from concurrent.futures import ThreadPoolExecutor

        def one(_: int) -> None:
            session = StreamSession(self.engine, self.spec.stream, vad=None)
            session.insert_audio(np.zeros(SAMPLE_RATE, dtype=np.float32))
            with self._model_lock:
                session.process()

        n = max(1, getattr(self.engine, "replicas", 1))
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(one, range(n)))

    async def handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        if len(self.connections) >= self.config.max_sessions:
            n = self.config.max_sessions
            await _refuse(ws, ProtocolError("server_full", f"all {n} sessions are in use"))
            return
        conn = Connection(uuid.uuid4().hex[:12])
        self.connections[conn.id] = conn
        log.info("session %s: connected (%d live)", conn.id, len(self.connections))
        try:
            await self._converse(ws, conn)
        except ProtocolError as e:
            log.info("session %s: %s: %s", conn.id, e.code, e)
            await _refuse(ws, e)
        except ConnectionClosed:
            log.info("session %s: client went away", conn.id)
        except Exception:
            log.exception("session %s: failed", conn.id)
            await _refuse(ws, ProtocolError("internal", "the server failed on this session"))
        finally:
            del self.connections[conn.id]
            log.info("session %s: closed (%d live)", conn.id, len(self.connections))

    async def _converse(self, ws: Any, conn: Connection) -> None:
        start = await self._await_start(ws)
        conn.open(start, StreamSession(self.engine, self.spec.stream, vad=self.vad))
        ready = proto.ready_event(conn.id, self.spec.stream.chunk_ms, self.limits)
        await ws.send(proto.encode(ready))
        tasks = [
            asyncio.create_task(self._receive(ws, conn)),
            asyncio.create_task(self._work(ws, conn)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in tasks:
                if t in done and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            conn.abort()
            tasks[0].cancel()  # the receiver may wait on the socket; the worker ends its step
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _await_start(self, ws: Any) -> Start:
        try:
            msg = await asyncio.wait_for(ws.recv(), self.config.start_timeout_s)
        except asyncio.TimeoutError:
            raise ProtocolError(
                "bad_message", f"no start message within {self.config.start_timeout_s:g} s"
            ) from None
        if isinstance(msg, bytes):
            raise ProtocolError("bad_frame", "binary audio before the start message")
        try:
            first = proto.parse_client(msg)
        except ProtocolError as e:
            raise ProtocolError(e.code, str(e), fatal=True) from None
        if not isinstance(first, Start):
            raise ProtocolError("bad_message", "stop before the start message", fatal=True)
        return first

    async def _receive(self, ws: Any, conn: Connection) -> None:
        """Read frames until `stop` (returns) or a fatal error (raises)."""
        chunk = self.spec.stream.chunk_ms * SAMPLE_RATE // 1000
        max_pending = self.config.pending_limit_s(self.spec.stream.chunk_s) * SAMPLE_RATE
        while True:
            while conn.pending_samples > max_pending and not conn.aborted:
                conn.progress.clear()  # backpressure: leave the socket unread
                await conn.progress.wait()
            msg = await ws.recv()
            if isinstance(msg, bytes):
                samples = proto.decode_pcm(msg, self.limits.max_frame_bytes)
                conn.add_audio(samples, time.monotonic(), self.limits.max_ahead_s)
                if conn.pending_samples >= chunk:
                    conn.wake.set()
                continue
            try:
                parsed = proto.parse_client(msg)
            except ProtocolError as e:
                if e.fatal:
                    raise
                await ws.send(proto.encode(proto.error_event(e)))
                continue
            if isinstance(parsed, Stop):
                conn.stopped = True
                conn.wake.set()
                return
            err = proto.check_restart(conn.start, parsed)  # type: ignore[arg-type]
            await ws.send(proto.encode(proto.error_event(err)))

    async def _work(self, ws: Any, conn: Connection) -> None:
        """Run a step per chunk of queued audio; after `stop`, the final one and the close."""
        chunk = self.spec.stream.chunk_ms * SAMPLE_RATE // 1000
        while True:
            while not (conn.aborted or conn.stopped or conn.pending_samples >= chunk):
                conn.wake.clear()
                await conn.wake.wait()
            if conn.aborted:
                return
            last = conn.stopped
            audio_s = conn.audio_s
            steps = await asyncio.to_thread(self._step, conn, conn.take(last), last)
            if conn.aborted:
                return
            for event in self._events(conn, steps, audio_s, last):
                await ws.send(proto.encode(event))
            if last:
                await ws.close(1000, "final")
                return

    def _step(self, conn: Connection, audio: np.ndarray, last: bool) -> list[Step]:
        """In a worker thread: feed the audio, then one step (or the end of the stream)."""
        session = conn.session
        assert session is not None
        steps = []
        with self._model_lock:
            t0 = time.perf_counter()
            ended = session.insert_audio(audio)  # the VAD's work, if any, counts as compute
            conn.compute_s += time.perf_counter() - t0
            if ended:  # the VAD saw an utterance end
                steps.append(session.finish_utterance())
            steps.append(session.finish_utterance() if last else session.process())
        conn.compute_s += sum(s.compute_s for s in steps)
        return steps

    def _events(
        self, conn: Connection, steps: list[Step], audio_s: float, last: bool
    ) -> list[dict]:
        session = conn.session
        assert session is not None
        text = " ".join(w.text for w in session.policy.committed)
        out: list[dict] = []
        for s in steps:
            if s.committed:
                out.append(proto.commit_event(s.committed, text, audio_s, s.compute_s))
        if last:
            out.append(
                proto.final_event(
                    text, conn.audio_s, conn.compute_s, session.n_steps, session.forced_trims
                )
            )
        else:
            out.append(proto.partial_event(steps[-1].partial, audio_s, steps[-1].compute_s))
        return out


async def _refuse(ws: Any, err: ProtocolError) -> None:
    """Tell the client why, then close with the error's code (if it is still there). Frames
    it sent meanwhile are read and dropped: left unread, they would hold its close frame
    behind a paused socket until the close timed out."""
    from websockets.exceptions import ConnectionClosed

    async def discard() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()

    drain = asyncio.create_task(discard())
    try:
        with contextlib.suppress(ConnectionClosed):  # it left first: nobody to tell
            await ws.send(proto.encode(proto.error_event(err)))
            await ws.close(err.close_code, err.code)
    finally:
        drain.cancel()


@dataclass(frozen=True)
class RunningServer:
    """A server listening in this process (what `running_server` yields)."""

    host: str
    port: int
    server: StreamServer

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    def stats(self) -> ServerStats:
        return self.server.stats()


@contextlib.asynccontextmanager
async def running_server(
    spec: RunSpec,
    config: ServerConfig | None = None,
    cache_dir: Any = None,
    engine: Any = None,
) -> AsyncIterator[RunningServer]:
    """Serve `spec` until the block ends; `engine` reuses a loaded one (tests, benchmarks)."""
    from websockets.asyncio.server import serve as ws_serve

    from voxmeter.engines import check_replicas
    from voxmeter.stream import allocator_note, open_engine

    config = (config or ServerConfig()).validate()
    spec = spec.validate()
    if not spec.stream.enabled:
        raise SpecError("serve: the spec is not a stream (stream chunk_ms is 0)")
    check_replicas(spec.engine, config.replicas)  # before loading anything
    if engine is None:
        log.info(allocator_note())  # memory over hours depends on it: see allocator_note
        engine, _, load_s = await asyncio.to_thread(open_engine, spec, cache_dir, config.replicas)
        log.info("loaded %s in %.1f s", spec.label(), load_s)
    vad = None
    if spec.stream.vad:
        from voxmeter.audio.vad import SileroVad

        vad = SileroVad()  # one model for every session: each session keeps its own state
    limits = replace(config.limits, max_buffer_s=spec.stream.max_buffer_s)
    config = replace(config, limits=limits)
    server = StreamServer(engine, spec, config, vad)
    await asyncio.to_thread(server.warm_up)
    async with ws_serve(
        server.handler,
        config.host,
        config.port,
        max_size=2 * limits.max_frame_bytes,
        max_queue=4,
        compression=None,  # PCM barely compresses, and inflating is a memory risk
    ) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        yield RunningServer(config.host, port, server)


async def serve(
    spec: RunSpec,
    host: str = "127.0.0.1",
    port: int = 8765,
    max_sessions: int = 4,
    cache_dir: Any = None,
    config: ServerConfig | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM, then close every connection (1001) and return;
    `config`, if given, overrides host, port and max_sessions."""
    import signal

    config = config or ServerConfig(host=host, port=port, max_sessions=max_sessions)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with running_server(spec, config, cache_dir) as running:
        log.info(
            "serving %s on %s (at most %d sessions, %d model replica(s))",
            spec.label(),
            running.url,
            config.max_sessions,
            config.replicas,
        )
        await stop.wait()
    log.info("stopped")
