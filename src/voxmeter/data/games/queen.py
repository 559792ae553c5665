"""Flight of the Amazon Queen (Debian package `flight-of-the-amazon-queen`): MP3 speech inside
queen.1c.

Debian ships the "rebuilt" CD release: queen.1c starts with "QTBL", a 6-byte version string
("CEM10": CD, English), two spare bytes, a compression byte (1: MP3, 2: Ogg Vorbis, 3: FLAC)
and its own resource table: a u16 BE count, then per entry a 12-byte NUL-padded name, a bundle
byte and the u32 BE offset and size of the entry in queen.1c. (scummvm-data's queen.tbl holds the
same table for the original, unrebuilt releases, which Debian does not ship.) Speech and sound
effects are the `.SB` entries, each a complete compressed stream (MP3 at 11025 Hz here).

Which `.SB` entries are speech, and by whom, is read from the 8-character name:
`JO......`, and `......J<k>`: Joe, the protagonist; `RRLLLLP<k>`: person k of the dialogue
file of room RR; names holding "SSSS" without a J are sound effects and are skipped, and so is
BLANK000; every other name is a cutaway or scene line whose speaker is the scene's id
(`queen-scene-<first five characters>`), not a person.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import soundfile as sf

from voxmeter.data.games import Entry, GameClip, clip_from, read_span
from voxmeter.errors import DataError

PACKAGE = "flight-of-the-amazon-queen"
SUBDIR = "flight-of-the-amazon-queen"
CODECS = {1: "MP3", 2: "OGG", 3: "FLAC"}
ROW = 21  # name 12, bundle 1, offset 4, size 4
PERSON = re.compile(r"^(\w\w)\w{4}P(\d)$")
JOE = re.compile(r"^(JO\w{6}|\w{6}J\d)$")


def files(root: Path) -> list[Path]:
    return [root / SUBDIR / "queen.1c"]


def read_table(path: Path) -> tuple[int, list[tuple[str, int, int]]]:
    """(compression byte, [(name, offset, size)]) from a rebuilt queen.1c's own table."""
    try:
        with path.open("rb") as f:
            head = f.read(15)
            if head[:4] != b"QTBL":
                raise DataError(f"resource file {path}: not a rebuilt queen.1c (no QTBL table)")
            if len(head) < 15:
                raise DataError(f"resource file {path}: truncated header")
            count = int.from_bytes(head[13:15], "big")
            table = f.read(ROW * count)
    except OSError as e:
        raise DataError(f"resource file {path}: cannot be read ({e.strerror})") from None
    if len(table) != ROW * count:
        raise DataError(f"resource file {path}: table truncated ({len(table) // ROW} of {count})")
    rows = []
    for i in range(count):
        rec = table[ROW * i : ROW * (i + 1)]
        name = rec[:12].split(b"\0")[0].decode("ascii", "replace")
        rows.append((name, int.from_bytes(rec[13:17], "big"), int.from_bytes(rec[17:21], "big")))
    return head[12], rows


def speaker_of(stem: str) -> str | None:
    """The speaker id of a `.SB` entry's stem, or None for a sound effect."""
    if stem == "BLANK000" or ("SSSS" in stem and not JOE.match(stem)):
        return None
    if JOE.match(stem):
        return "queen-joe"
    m = PERSON.match(stem)
    if m:
        return f"queen-room{m.group(1)}-person{m.group(2)}"
    return f"queen-scene-{stem[:5]}"


def list_entries(root: Path) -> list[Entry]:
    (path,) = files(root)
    codec, rows = read_table(path)
    if codec not in CODECS:
        raise DataError(f"resource file {path}: unknown compression byte {codec}")
    out = []
    for name, offset, size in rows:
        if not name.upper().endswith(".SB"):
            continue
        stem = name[:-3].upper()
        speaker = speaker_of(stem)
        if speaker is None:
            continue
        out.append(
            Entry(
                id=f"queen-{stem}",
                game="queen",
                entry=name,
                speaker=speaker,
                text=None,
                source=PACKAGE,
                locator=(str(path), offset, size),
            )
        )
    return out


def read_entry(entry: Entry) -> GameClip:
    path, offset, size = Path(entry.locator[0]), entry.locator[1], entry.locator[2]
    data = read_span(path, offset, size, entry.entry)
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DataError(f"{path} entry {entry.entry}: not decodable audio ({e})") from None
    if audio.shape[0] == 0:
        raise DataError(f"{path} entry {entry.entry}: decodes to no samples")
    return clip_from(entry, audio.mean(axis=1), int(rate))
