"""The live transcription protocol over WebSocket, version 1 (`voxmeter serve`, `voxmeter load`).

Its messages, errors and limits are specified in docs/stream-protocol.md (for people writing a
client in another language). Everything here is a pure function or a dataclass, so the schema
is tested without a socket; server.py and load.py only move these messages.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from voxmeter.errors import VoxmeterError
from voxmeter.stream.policy import Word

VERSION = 1
FORMAT = "pcm_s16le"
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
EVENTS = ("ready", "partial", "commit", "final", "error")

# code -> (fatal by default, WebSocket close code when fatal, when it is sent)
ERRORS: dict[str, tuple[bool, int, str]] = {
    "bad_message": (False, 1003, "a text frame that is not a known JSON message"),
    "bad_frame": (True, 1003, "binary audio before start, or an odd byte count"),
    "too_large": (True, 1009, "a frame over max_frame_bytes"),
    "overrun": (True, 1008, "audio more than max_ahead_s ahead of real time"),
    "server_full": (True, 1013, "the server holds its maximum number of sessions"),
    "bad_sample_rate": (True, 1003, "a start with a rate outside [8000, 48000]"),
    "protocol_version": (True, 1002, "a start with a version this server does not speak"),
    "internal": (True, 1011, "the server failed on this session (it logs why)"),
}
FATAL_BEFORE_START = {"bad_message"}  # nothing can go on without a valid start


class ProtocolError(VoxmeterError):
    """A message broke the protocol; `code` is one of ERRORS."""

    def __init__(self, code: str, message: str, fatal: bool | None = None) -> None:
        if code not in ERRORS:
            raise ValueError(f"ProtocolError: unknown code {code!r}")
        super().__init__(message)
        self.code = code
        self.fatal = ERRORS[code][0] if fatal is None else fatal

    @property
    def close_code(self) -> int:
        return ERRORS[self.code][1]


@dataclass(frozen=True)
class Start:
    """The client's first message: how its audio is encoded."""

    sample_rate: int
    version: int = VERSION
    format: str = FORMAT
    channels: int = 1

    def message(self) -> str:
        return encode({"type": "start", **asdict(self)})


@dataclass(frozen=True)
class Stop:
    """End of the client's audio."""

    def message(self) -> str:
        return encode({"type": "stop"})


@dataclass(frozen=True)
class Limits:
    """What the server accepts from one connection (sent in `ready`)."""

    max_frame_bytes: int = 96_000  # 1 s at 48 kHz, 3 s at 16 kHz
    max_buffer_s: float = 30.0
    max_ahead_s: float = 2.0  # audio allowed ahead of real time (a burst); 0 = no guard
    min_sample_rate: int = MIN_SAMPLE_RATE
    max_sample_rate: int = MAX_SAMPLE_RATE


def encode(event: dict[str, Any]) -> str:
    """One JSON text frame; floats rounded to milliseconds, which is all the times mean."""
    return json.dumps(_rounded(event), separators=(",", ":"))


def _rounded(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_rounded(x) for x in v]
    return v


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except ValueError:
        raise ProtocolError("bad_message", f"{what}: not JSON: {text[:40]!r}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_message", f'{what}: expected a JSON object with a "type"')
    return msg


def _int_field(msg: dict[str, Any], key: str, default: int | None = None) -> int:
    v = msg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError("bad_message", f"start: {key} must be an integer, got {v!r}")
    return v


def parse_client(text: str) -> Start | Stop:
    """A client's text frame as Start or Stop; anything else is a ProtocolError."""
    msg = _json_object(text, "message")
    kind = msg["type"]
    if kind == "stop":
        return Stop()
    if kind != "start":
        raise ProtocolError("bad_message", f"unknown message type {kind!r} (start or stop)")
    version = _int_field(msg, "version")
    if version != VERSION:
        raise ProtocolError("protocol_version", f"version {version} (this server speaks {VERSION})")
    rate = _int_field(msg, "sample_rate")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            "bad_sample_rate",
            f"sample_rate {rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]",
        )
    fmt = msg.get("format", FORMAT)
    if fmt != FORMAT:
        raise ProtocolError("bad_message", f"format {fmt!r} is not supported (only {FORMAT})")
    channels = _int_field(msg, "channels", 1)
    if channels != 1:
        raise ProtocolError("bad_message", f"channels {channels}: only mono (1) is supported")
    return Start(sample_rate=rate)


def check_restart(current: Start, again: Start) -> ProtocolError:
    """What a second start in the same stream is: the first rate stays the one in use."""
    if again.sample_rate != current.sample_rate:
        return ProtocolError(
            "bad_sample_rate",
            f"start again with sample_rate {again.sample_rate} Hz; this stream stays at "
            f"{current.sample_rate} Hz",
            fatal=False,
        )
    return ProtocolError("bad_message", "start again: the stream has already started")


def decode_pcm(data: bytes, max_frame_bytes: int) -> np.ndarray:
    """A binary frame as float32 samples in [-1, 1); ProtocolError if it is not valid PCM16."""
    if len(data) > max_frame_bytes:
        raise ProtocolError(
            "too_large", f"frame of {len(data)} bytes; the limit is {max_frame_bytes}"
        )
    if len(data) % 2:
        raise ProtocolError(
            "bad_frame", f"frame of {len(data)} bytes: PCM16 needs an even byte count"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def encode_pcm(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as PCM16 little-endian (what a client sends)."""
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 32767 / 32768)
    return (x * 32768.0).round().astype("<i2").tobytes()


# -- server -> client ----------------------------------------------------------------------


def words_json(words: list[Word]) -> list[dict[str, Any]]:
    return [{"start": w.start, "end": w.end, "text": w.text} for w in words]


def ready_event(session: str, chunk_ms: int, limits: Limits) -> dict[str, Any]:
    return {
        "type": "ready",
        "session": session,
        "version": VERSION,
        "chunk_ms": chunk_ms,
        "limits": asdict(limits),
    }


def partial_event(words: list[Word], audio_s: float, compute_s: float) -> dict[str, Any]:
    text = " ".join(w.text for w in words)
    return {
        "type": "partial",
        "text": text,
        "words": words_json(words),
        "audio_s": audio_s,
        "compute_s": compute_s,
    }


def commit_event(words: list[Word], text: str, audio_s: float, compute_s: float) -> dict[str, Any]:
    return {
        "type": "commit",
        "words": words_json(words),
        "text": text,
        "audio_s": audio_s,
        "compute_s": compute_s,
    }


def final_event(
    text: str, audio_s: float, compute_s: float, steps: int, forced_trims: int
) -> dict[str, Any]:
    return {
        "type": "final",
        "text": text,
        "audio_s": audio_s,
        "compute_s": compute_s,
        "steps": steps,
        "forced_trims": forced_trims,
    }


def error_event(err: ProtocolError) -> dict[str, Any]:
    return {"type": "error", "code": err.code, "message": str(err), "fatal": err.fatal}


def parse_event(text: str) -> dict[str, Any]:
    """A server's text frame as a dict with a known "type" (what a client reads)."""
    msg = _json_object(text, "event")
    if msg["type"] not in EVENTS:
        raise ProtocolError("bad_message", f"unknown event type {msg['type']!r}")
    return msg


def event_words(event: dict[str, Any]) -> list[Word]:
    """The words of a partial or commit event."""
    return [Word(float(w["start"]), float(w["end"]), str(w["text"])) for w in event["words"]]
