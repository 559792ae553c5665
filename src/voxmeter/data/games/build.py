"""`voxmeter data build real`: the games' speech as 16 kHz FLAC and JSONL manifests.

Each clip is decoded by its game's reader, resampled with soxr, written as 16-bit FLAC under
<cache>/real/clips/<game>/, and recorded with its SHA-256. The record is appended to
<set>.partial.jsonl as soon as the file is written, so a killed build resumes: a clip whose file
is there with the recorded digest is not decoded again. The manifest <set>.jsonl is written,
atomically, at the end. A clip with no reference text has `"text": ""` and `"has_text": false`
(the manifest reader requires a string).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from voxmeter.data.games import Entry
from voxmeter.data.games.sources import GAMES, NEEDS_TEXT, SETS, licence_texts
from voxmeter.paths import cache_dir_source

RATE = 16000
SUBDIR = "real"


def real_dir(cache_override: str | Path | None = None) -> Path:
    """<cache>/real, without creating anything."""
    return cache_dir_source(cache_override)[0] / SUBDIR


def manifest_path(name: str, cache_override: str | Path | None = None) -> Path:
    return real_dir(cache_override) / f"{name}.jsonl"


@dataclass
class SetSummary:
    """What a build of one set did, for the summary line and docs."""

    name: str
    clips: int = 0
    reused: int = 0
    seconds: float = 0.0
    speakers: set[str] = field(default_factory=set)
    skipped_no_text: int = 0
    by_game: dict[str, list[float]] = field(default_factory=dict)  # game -> [clips, seconds]


def set_entries(name: str, root: Path, limit: int = 0) -> tuple[list[Entry], int]:
    """The set's entries in build order (at most `limit` per game when > 0), and how many
    were left out for lacking text."""
    entries: list[Entry] = []
    dropped = 0
    for game in SETS[name]:
        found = GAMES[game].entries(root)
        if name in NEEDS_TEXT:  # a test set needs references
            kept = [e for e in found if e.text]
            dropped, found = dropped + len(found) - len(kept), kept
        entries += found[:limit] if limit > 0 else found
    return entries, dropped


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (soxr, high quality), clipped to [-1, 1]."""
    out = audio if rate == RATE else soxr.resample(audio, rate, RATE, quality="HQ")
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _load_done(out: Path, name: str) -> dict[str, dict[str, Any]]:
    """Records of clips already written: the last manifest, then the partial log."""
    done: dict[str, dict[str, Any]] = {}
    for path in (out / f"{name}.jsonl", out / f"{name}.partial.jsonl"):
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if isinstance(rec, dict) and "id" in rec and "sha256" in rec:
                done[str(rec["id"])] = rec
    return done


def _still_good(out: Path, rec: dict[str, Any] | None) -> bool:
    if rec is None:
        return False
    path = out / str(rec.get("audio", ""))
    return path.is_file() and sha256_file(path) == rec["sha256"]


def write_clip(out: Path, entry: Entry) -> dict[str, Any]:
    """Decode, resample and write one clip; its manifest record."""
    game = GAMES[entry.game]
    clip = game.reader.read_entry(entry)
    audio = to_16k(clip.audio, clip.rate)
    rel = Path("clips") / entry.game / f"{entry.id}.flac"
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flac")
    sf.write(tmp, audio, RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
    return {
        "id": entry.id,
        "audio": rel.as_posix(),
        "text": clip.text or "",
        "has_text": clip.text is not None,
        "source": entry.source,
        "licence": game.licence,
        "duration_s": round(len(audio) / RATE, 3),
        "speaker": entry.speaker,
        "game": entry.game,
        "entry": entry.entry,
        "language": entry.language,
        "native_rate": clip.rate,
        "sha256": sha256_file(path),
    }


def build_set(
    name: str,
    root: Path,
    out: Path,
    limit: int = 0,
    advance: Callable[[int], None] | None = None,
) -> SetSummary:
    """Build one set into `out` (resuming); `advance(n)` is told about each finished clip."""
    entries, dropped = set_entries(name, root, limit)
    out.mkdir(parents=True, exist_ok=True)
    (out / "LICENCES.md").write_text(licence_texts(list(SETS[name])), encoding="utf-8")
    done = _load_done(out, name)
    summary = SetSummary(name, skipped_no_text=dropped)
    records = []
    with (out / f"{name}.partial.jsonl").open("a", encoding="utf-8") as log:
        for entry in entries:
            rec = done.get(entry.id)
            if _still_good(out, rec):
                summary.reused += 1
            else:
                rec = write_clip(out, entry)
                log.write(json.dumps(rec, ensure_ascii=False) + "\n")
                log.flush()
            records.append(rec)
            _count(summary, rec)
            if advance is not None:
                advance(1)
    _write_manifest(out / f"{name}.jsonl", records)
    (out / f"{name}.partial.jsonl").unlink(missing_ok=True)
    return summary


def _count(summary: SetSummary, rec: dict[str, Any]) -> None:
    summary.clips += 1
    summary.seconds += float(rec["duration_s"])
    summary.speakers.add(str(rec["speaker"]))
    game = summary.by_game.setdefault(str(rec["game"]), [0, 0.0])
    game[0] += 1
    game[1] += float(rec["duration_s"])


def _write_manifest(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
