"""Recorded speech from the voiced freeware games that Debian ships (Drascula, Beneath a Steel
Sky, Flight of the Amazon Queen): one reader per game, and the builder that turns them into
16 kHz FLAC sets with JSONL manifests (`voxmeter data build real`).

Each reader lists a game's speech entries cheaply (`list_entries`) and decodes one on demand
(`read_entry`), so a resumed build skips what it already wrote without decoding it again. The
formats are described in docs/real-speech.md; the readers were written from that description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxmeter.errors import DataError

# Where Debian's game packages and scummvm-data put their files; VOXMETER_GAMES_DIR overrides.
DEFAULT_GAMES_DIR = Path("/usr/share/scummvm")


@dataclass(frozen=True)
class Entry:
    """One speech line as the game indexes it, before its audio is read."""

    id: str  # stable across builds: game, language and entry name
    game: str  # "drascula", "sky", "queen"
    entry: str  # the name inside the game's data (file name, file number, table name)
    speaker: str
    text: str | None
    source: str  # Debian package that holds the audio
    language: str = "en"
    locator: tuple = field(default=(), compare=False)  # reader-private: where the bytes are


@dataclass
class GameClip:
    """A decoded speech line: float32 mono samples at the game's native rate."""

    id: str
    audio: np.ndarray
    rate: int
    speaker: str
    text: str | None
    source: str
    entry: str


def clip_from(entry: Entry, audio: np.ndarray, rate: int) -> GameClip:
    return GameClip(
        id=entry.id,
        audio=np.ascontiguousarray(audio, dtype=np.float32),
        rate=rate,
        speaker=entry.speaker,
        text=entry.text,
        source=entry.source,
        entry=entry.entry,
    )


def unsigned8_to_float(raw: bytes) -> np.ndarray:
    """Unsigned 8-bit PCM (128 = silence) as float32 in [-1, 1)."""
    return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0


def read_span(path: Path, offset: int, size: int, entry: str) -> bytes:
    """`size` bytes at `offset` of `path`; a DataError naming file and entry if it is short."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as e:
        raise DataError(f"{path} entry {entry}: cannot be read ({e.strerror})") from None
    if len(data) != size:
        raise DataError(
            f"{path} entry {entry}: truncated ({len(data)} of {size} bytes at offset {offset})"
        )
    return data


def read_whole(path: Path, what: str) -> bytes:
    """A whole file's bytes; a DataError naming it when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{what} {path}: cannot be read ({e.strerror})") from None
