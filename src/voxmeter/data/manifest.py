"""Clips, data sets and the JSONL manifest that lists them.

A manifest has one JSON object per line:

    {"id": "clip-1", "audio": "clips/clip-1.flac", "text": "Hello there.", "source": "...",
     "licence": "...", "duration_s": 2.4, "snr_db": 10}

`audio` and `text` are required; `id` defaults to the audio file's stem. A clip without a
reference says so with `"has_text": false` (or `"text": null`): no WER is scored on it (see
run/references.py). Relative audio paths resolve against the manifest's own folder (made
absolute at load, so every message names the file it tried), so a manifest travels with its
clips. A manifest none of whose files exists (typically one copied out of its folder) is a
DataError that says where its paths were looked for. Keys other than the known ones are kept
in `Clip.extra` and written back unchanged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxmeter.errors import DataError

REQUIRED_KEYS = ("audio", "text")
KNOWN_KEYS = ("id", "audio", "text", "source", "licence", "duration_s", "has_text")


@dataclass
class Clip:
    """One utterance and its reference transcript."""

    id: str
    audio: Path
    text: str
    source: str = ""
    licence: str = ""
    duration_s: float | None = None  # as listed; the loaded audio is the authority
    extra: dict[str, Any] = field(default_factory=dict)
    has_text: bool = True  # False: no reference (e.g. a training clip the teacher labels)


@dataclass
class Dataset:
    """A named list of clips; `root` is where relative paths were resolved from."""

    name: str
    clips: list[Clip]
    root: Path

    @property
    def listed_duration_s(self) -> float | None:
        """Sum of the listed durations, or None when any clip lacks one."""
        if any(c.duration_s is None for c in self.clips):
            return None
        return float(sum(c.duration_s for c in self.clips))  # type: ignore[misc]


def load_manifest(path: str | Path) -> Dataset:
    """Read a JSONL manifest; every problem is a DataError naming the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"manifest {p}: no such file")
    lines = read_text_lines(p, f"manifest {p}")
    clips: list[Clip] = []
    first_line: dict[str, int] = {}
    written: list[str] = []  # each clip's audio as the manifest writes it
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        clip, audio = _parse_line(p, n, line)
        if clip.id in first_line:
            raise DataError(
                f"manifest {p} line {n}: duplicate id {clip.id!r} (first on line "
                f"{first_line[clip.id]})"
            )
        first_line[clip.id] = n
        clips.append(clip)
        written.append(audio)
    if not clips:
        raise DataError(f"manifest {p}: no clips (the file is empty)")
    # A missing audio file is a bad clip like a corrupt one: iter_audio reports it and the run
    # skips it; only a set with no usable clip left is an error (the harness says so). When
    # not one file exists, the paths themselves are wrong: say where they were looked for.
    if not any(os.path.exists(c.audio) for c in clips):
        raise DataError(_none_found(p, clips[0], written[0], first_line[clips[0].id], len(clips)))
    return Dataset(name=p.stem, clips=clips, root=p.parent)


def _none_found(p: Path, clip: Clip, audio: str, line: int, n: int) -> str:
    """The message for a manifest none of whose audio files exists, naming the first path
    tried and what it was resolved against."""
    head = f"manifest {p}: none of its {n} audio file(s) exists"
    tried = str(clip.audio).replace("\n", "\\n").replace("\r", "\\r")  # one line
    if Path(os.path.expanduser(audio)).is_absolute():
        return f"{head} (line {line}: {tried}: no such audio file)"
    return (
        f"{head}; relative paths resolve against the manifest's folder {_folder(p)} "
        f"(line {line}: {audio!r} -> {tried}: no such audio file); keep the manifest "
        "beside its clips or write absolute paths"
    )


def _folder(p: Path) -> Path:
    """The manifest's folder as an absolute path (symbolic links kept as the user named them)."""
    return Path(os.path.abspath(p.parent))


def read_text_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file, split on newlines only; DataError naming `what` if not.

    str.splitlines would also split on U+2028 and other separators a JSON string may hold.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.object[e.start : e.start + 1].hex()
        raise DataError(f"{what}: not UTF-8 text (byte 0x{bad} at offset {e.start})") from None
    except OSError as e:
        raise DataError(f"{what}: cannot be read ({e.strerror or type(e).__name__})") from None
    return [line.removesuffix("\r") for line in text.split("\n")]


def write_manifest(dataset: Dataset, path: str | Path) -> None:
    """Write `dataset` as JSONL; audio under the manifest's folder is written relative to it."""
    p = Path(path)
    base = p.parent.resolve()
    with p.open("w", encoding="utf-8") as f:
        for c in dataset.clips:
            f.write(json.dumps(clip_record(c, base), ensure_ascii=False) + "\n")


def clip_record(clip: Clip, base: Path) -> dict[str, Any]:
    """The manifest line for `clip`, with its audio path made relative to `base` if inside it."""
    audio = clip.audio.resolve()
    try:
        shown = audio.relative_to(base).as_posix()
    except ValueError:
        shown = str(audio)
    rec: dict[str, Any] = {"id": clip.id, "audio": shown, "text": clip.text}
    if clip.source:
        rec["source"] = clip.source
    if clip.licence:
        rec["licence"] = clip.licence
    if clip.duration_s is not None:
        rec["duration_s"] = round(float(clip.duration_s), 3)
    if not clip.has_text:
        rec["has_text"] = False
    for k, v in clip.extra.items():
        if k in KNOWN_KEYS:
            raise DataError(f"clip {clip.id}: extra key {k!r} shadows a manifest field")
        rec[k] = v
    return rec


def _parse_line(p: Path, n: int, line: str) -> tuple[Clip, str]:
    """One manifest line as a Clip, and its audio path as written."""
    where = f"manifest {p} line {n}"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:  # an integer too long for int() (CPython's digit limit)
        raise DataError(f"{where}: not usable JSON ({e})") from None
    except RecursionError:
        raise DataError(f"{where}: not usable JSON (nested too deeply)") from None
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key in REQUIRED_KEYS:
        if key not in rec:
            raise DataError(f"{where}: missing required key {key!r}")
    audio, text = rec["audio"], rec["text"]
    has_text = rec.get("has_text", text is not None)
    if not isinstance(has_text, bool):
        raise DataError(f"{where}: 'has_text' must be true or false, got {has_text!r:.40}")
    if text is None:  # no reference: the reader's clips always carry a string
        if has_text:
            raise DataError(f"{where}: 'text' is null but 'has_text' is true")
        text = ""
    if not isinstance(audio, str) or not audio:
        raise DataError(f"{where}: 'audio' must be a non-empty string")
    if "\0" in audio:  # no file system takes it; os.stat raises ValueError, not OSError
        raise DataError(f"{where}: 'audio' holds a NUL character, so it names no file")
    if not isinstance(text, str):
        raise DataError(f"{where}: 'text' must be a string")
    audio_path = Path(os.path.expanduser(audio))
    if not audio_path.is_absolute():
        audio_path = _folder(p) / audio_path
    duration = rec.get("duration_s")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, (int, float))
        or not 0 <= duration < math.inf
    ):
        raise DataError(f"{where}: 'duration_s' must be a finite number >= 0, got {duration!r}")
    cid = rec.get("id")
    if cid is not None and (isinstance(cid, bool) or not isinstance(cid, (str, int))):
        raise DataError(f"{where}: 'id' must be a string or an integer, got {cid!r:.40}")
    clip = Clip(
        id=str(audio_path.stem if cid is None or cid == "" else cid),
        audio=audio_path,
        text=text,
        source=str(rec.get("source", "")),
        licence=str(rec.get("licence", "")),
        duration_s=float(duration) if duration is not None else None,
        has_text=has_text,
        extra={k: v for k, v in rec.items() if k not in KNOWN_KEYS},
    )
    return clip, audio
