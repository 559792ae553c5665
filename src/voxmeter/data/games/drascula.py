"""Drascula: The Vampire Strikes Back (Debian packages `drascula`, `drascula-italian`,
`drascula-spanish`): one `.ALS` file per speech line, subtitles from scummvm-data's drascula.dat.

A speech file is raw unsigned 8-bit mono at 11025 Hz, named `<prefix><n>.ALS`. The prefix names
the speaker and the subtitle array that holds line n in drascula.dat (no prefix: the protagonist,
John Hacker). `S<n>` files are sound effects, not speech, and are skipped.

drascula.dat (version 6): "DRASCULA", a version byte, then thirteen fixed tables, each a u16 BE
count followed by records of a known size; then a u16 BE language count and fifteen text arrays.
Each array is a u16 BE string count, then per language a u16 BE block length and the block: two
bytes of padding, then per string a u16 BE step (the bytes from that step field to the next
string's step field) and the NUL-terminated string, padded to a 4-byte boundary. Languages are in
the order English, Spanish, German, French, Italian. A line whose array or number has no text,
or whose text is empty, keeps `text=None`.
"""

from __future__ import annotations

import re
from pathlib import Path

from voxmeter.data.games import Entry, GameClip, clip_from, read_whole, unsigned8_to_float
from voxmeter.errors import DataError

RATE = 11025
LANG_PACKAGES = {"en": "drascula", "it": "drascula-italian", "es": "drascula-spanish"}
LANG_INDEX = {"en": 0, "es": 1, "de": 2, "fr": 3, "it": 4}
DAT_PACKAGE = "scummvm-data"
DAT_VERSION = 6
# record sizes of the fixed tables before the texts, in file order
TABLE_RECORDS = (4, 4, 4, 2, 4, 2, 4, 2, 2, 20, 20, 10, 8)
TEXT_ARRAYS = (
    "",
    "D",
    "B",
    "BJ",
    "E",
    "I",
    "L",
    "P",
    "T",
    "VB",
    "sys",
    "his",
    "verbs",
    "misc",
    "d1",
)
SPEAKERS = {
    "": "hacker",  # John Hacker, the protagonist
    "D": "drascula",
    "B": "drunk",
    "BJ": "bj",
    "E": "mus",
    "I": "igor",
    "L": "wolf",
    "P": "pianist",
    "T": "bartender",
    "VB": "vonbraun",
}
NAME = re.compile(r"^([A-Z]*)(\d+)\.ALS$", re.IGNORECASE)


def files(root: Path, language: str = "en") -> list[Path]:
    return [root / "drascula" / language, root / "drascula.dat"]


def _u16(data: bytes, at: int, what: str) -> int:
    if at + 2 > len(data):
        raise DataError(f"{what}: truncated at offset {at}")
    return int.from_bytes(data[at : at + 2], "big")


def _text_block(block: bytes, count: int, what: str) -> list[str]:
    texts, at = [], 2
    for i in range(count):
        step = _u16(block, at, what)
        end = block.find(b"\0", at + 2)
        if step < 3 or end < 0 or at + step > len(block) + 2:
            raise DataError(f"{what}: string {i} is malformed (step {step} at offset {at})")
        texts.append(block[at + 2 : end].decode("cp850"))  # DOS code page
        at += step
    return texts


def read_texts(dat: Path, language: str) -> dict[str, list[str]]:
    """Subtitle arrays by file prefix ("" for the protagonist) for one language."""
    data = read_whole(dat, "subtitle file")
    if data[:8] != b"DRASCULA":
        raise DataError(f"subtitle file {dat}: not a drascula.dat (bad signature)")
    if len(data) < 9 or data[8] != DAT_VERSION:
        raise DataError(f"subtitle file {dat}: version {data[8:9].hex()} is not {DAT_VERSION}")
    at = 9
    for size in TABLE_RECORDS:
        at += 2 + size * _u16(data, at, f"subtitle file {dat}")
    n_langs = _u16(data, at, f"subtitle file {dat}")
    at += 2
    want = LANG_INDEX[language]
    if want >= n_langs:
        raise DataError(f"subtitle file {dat}: has {n_langs} languages, no {language!r}")
    arrays: dict[str, list[str]] = {}
    for name in TEXT_ARRAYS:
        what = f"subtitle file {dat} array {name or 'main'!r}"
        count = _u16(data, at, what)
        at += 2
        for lang in range(n_langs):
            length = _u16(data, at, what)
            block = data[at + 2 : at + 2 + length]
            if len(block) != length:
                raise DataError(f"{what}: truncated (block of {length} bytes)")
            if lang == want:
                arrays[name] = _text_block(block, count, what)
            at += 2 + length
    return arrays


def _speech_files(folder: Path) -> list[tuple[str, int, Path]]:
    if not folder.is_dir():
        raise DataError(f"speech folder {folder}: not found")
    found = []
    for p in folder.iterdir():
        m = NAME.match(p.name)
        if m and m.group(1).upper() != "S":  # S<n>: sound effects
            found.append((m.group(1).upper(), int(m.group(2)), p))
    return sorted(found, key=lambda t: (t[0], t[1]))


def subtitle(arrays: dict[str, list[str]], prefix: str, number: int) -> str | None:
    texts = arrays.get(prefix)
    if texts is None or number >= len(texts):
        return None
    text = texts[number].strip()
    return text or None


def list_entries(root: Path, language: str = "en") -> list[Entry]:
    folder, dat = files(root, language)
    arrays = read_texts(dat, language) if dat.is_file() else {}
    return [
        Entry(
            id=f"drascula-{language}-{p.stem.upper()}",
            game="drascula",
            entry=p.name,
            speaker=f"drascula-{SPEAKERS.get(prefix, prefix.lower())}",
            text=subtitle(arrays, prefix, number) if prefix in SPEAKERS else None,
            source=LANG_PACKAGES[language],
            language=language,
            locator=(str(p),),
        )
        for prefix, number, p in _speech_files(folder)
    ]


def read_entry(entry: Entry) -> GameClip:
    path = Path(entry.locator[0])
    raw = read_whole(path, "speech file")
    if not raw:
        raise DataError(f"speech file {path} entry {entry.entry}: empty")
    return clip_from(entry, unsigned8_to_float(raw), RATE)
