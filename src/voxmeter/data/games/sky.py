"""Beneath a Steel Sky (Debian package `beneath-a-steel-sky`): speech inside sky.dsk.

sky.dnr is the index: a u32 LE entry count, then 8 bytes per entry: file number (u16 LE),
a 24-bit LE offset whose top bit says "multiply by 16" (the CD release), and 24 bits of size
and flags (size in the low 22 bits; bit 22: the packed data includes the 22-byte header; bit 23:
stored unpacked). A stored file begins with a 22-byte header of eleven u16 LE words; when the
entry is not flagged unpacked and bit 7 of the first word is set, the rest is RNC-packed.
Speech lines are files 50000 + n, n below 5380 (the last section ends there; higher numbers
are other data): raw unsigned 8-bit mono at 11025 Hz after the header. The game's script text is compressed separately and not read.

Speaker: the files carry no speaker id. n falls in one of the game's eight text sections
(cumulative line bases 0, 600, 1100, 2430, 3380, 4530, 5080, 5230), so each clip's speaker is
the id of its section, "sky-section<k>": an id of a stretch of the story, not of one voice.
"""

from __future__ import annotations

import bisect
import struct
from pathlib import Path

from voxmeter.data.games import (
    Entry,
    GameClip,
    clip_from,
    read_span,
    read_whole,
    unsigned8_to_float,
)
from voxmeter.data.games.rnc import MAGIC, unpack
from voxmeter.errors import DataError

PACKAGE = "beneath-a-steel-sky"
SUBDIR = "beneath-a-steel-sky"
RATE = 11025
HEADER = 22
SPEECH_FIRST, SPEECH_END = 50000, 55380  # 5230 + 150: the end of the last section
SECTION_BASES = (0, 600, 1100, 2430, 3380, 4530, 5080, 5230)


def files(root: Path) -> list[Path]:
    return [root / SUBDIR / "sky.dnr", root / SUBDIR / "sky.dsk"]


def read_index(dnr: Path) -> list[tuple[int, int, int, int]]:
    """(file number, byte offset, stored size, flags) for each entry of sky.dnr."""
    data = read_whole(dnr, "index")
    if len(data) < 4:
        raise DataError(f"index {dnr}: truncated (no entry count)")
    (count,) = struct.unpack_from("<I", data)
    if len(data) < 4 + 8 * count:
        raise DataError(f"index {dnr}: truncated ({(len(data) - 4) // 8} of {count} entries)")
    rows = []
    for i in range(count):
        rec = data[4 + 8 * i : 12 + 8 * i]
        number = int.from_bytes(rec[0:2], "little")
        where = int.from_bytes(rec[2:5], "little")
        flags = int.from_bytes(rec[5:8], "little")
        offset = where & 0x7FFFFF
        if where & 0x800000:
            offset <<= 4
        rows.append((number, offset, flags & 0x3FFFFF, flags))
    return rows


def section_of(line: int) -> int:
    return bisect.bisect_right(SECTION_BASES, line) - 1


def list_entries(root: Path) -> list[Entry]:
    dnr, dsk = files(root)
    out = []
    for number, offset, size, flags in read_index(dnr):
        if not SPEECH_FIRST <= number < SPEECH_END:
            continue
        line = number - SPEECH_FIRST
        out.append(
            Entry(
                id=f"sky-{number}",
                game="sky",
                entry=f"file {number}",
                speaker=f"sky-section{section_of(line)}",
                text=None,
                source=PACKAGE,
                locator=(str(dsk), offset, size, flags),
            )
        )
    return out


def unpack_file(stored: bytes, flags: int, what: str) -> bytes:
    """A sky.dsk file as the game sees it: header + body, unpacked when RNC-packed."""
    if len(stored) < HEADER:
        raise DataError(f"{what}: shorter than its {HEADER}-byte header")
    stored_plain = bool(flags & 0x800000)
    (first_word,) = struct.unpack_from("<H", stored)
    if stored_plain or not first_word & 0x80:
        return stored
    if flags & 0x400000:  # the header itself was packed along with the body
        return unpack(stored[HEADER:], what) if stored[HEADER:][:4] == MAGIC else stored
    body = stored[HEADER:]
    if body[:4] != MAGIC:
        return stored
    return stored[:HEADER] + unpack(body, what)


def read_entry(entry: Entry) -> GameClip:
    dsk, offset, size, flags = entry.locator
    path = Path(dsk)
    what = f"{path} entry {entry.entry}"
    data = unpack_file(read_span(path, offset, size, entry.entry), flags, what)
    samples = data[HEADER:]
    if not samples:
        raise DataError(f"{what}: holds no samples")
    return clip_from(entry, unsigned8_to_float(samples), RATE)
