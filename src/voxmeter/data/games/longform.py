"""`real-longform`: the kept Drascula lines joined into recordings of a few minutes each.

Each speaker's lines play in story order (the number in the file name), with a seeded pause of
digital silence between consecutive lines. A speaker with less than `MIN_S` of speech joins the
other small speakers in one mixed stream (speaker, then number). Each stream is cut into
`round(length / TARGET_S)` recordings of about equal length, at line boundaries. The reference
is the lines' subtitles joined with spaces; `parts` lists each line's place in the recording.
Every line is in exactly one recording, so the set's speech is all unique.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from voxmeter.data.games.drascula import NAME

RATE = 16000
NAME_OUT = "real-longform"
SEED = 20261207
TARGET_S = 180.0  # about three minutes a recording
MIN_S = 120.0  # a speaker with less speech than this joins the mixed stream
PAUSE_S = (0.5, 1.5)  # silence between lines, uniform in this range, seeded per recording
MIXED = "drascula-mixed"


@dataclass
class Plan:
    """One recording to write: its id, the speaker (or MIXED) and its lines in order."""

    id: str
    speaker: str
    lines: list[dict[str, Any]]


def story_key(rec: dict[str, Any]) -> tuple[str, int]:
    """(speaker, line number) from the entry's file name, e.g. D12.ALS -> number 12."""
    m = NAME.match(str(rec["entry"]))
    return str(rec["speaker"]), int(m.group(2)) if m else 0


def _streams(records: list[dict[str, Any]], min_s: float) -> list[tuple[str, list[dict[str, Any]]]]:
    by_speaker: dict[str, list[dict[str, Any]]] = {}
    for rec in sorted(records, key=story_key):
        by_speaker.setdefault(str(rec["speaker"]), []).append(rec)
    big = [(s, r) for s, r in by_speaker.items() if _speech(r) >= min_s]
    small = [rec for r in by_speaker.values() if _speech(r) < min_s for rec in r]
    return big + ([(MIXED, small)] if small else [])


def _speech(recs: list[dict[str, Any]]) -> float:
    return sum(float(r["duration_s"]) for r in recs)


def _split(recs: list[dict[str, Any]], target_s: float) -> list[list[dict[str, Any]]]:
    """Contiguous runs of about equal length, about target_s each (a pause adds ~1 s a line)."""
    mean_pause = sum(PAUSE_S) / 2
    lengths = [float(r["duration_s"]) + mean_pause for r in recs]
    total = sum(lengths)
    n = max(1, round(total / target_s))
    chunks: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    done = 0.0
    for rec, length in zip(recs, lengths, strict=True):
        k = min(n - 1, int((done + length / 2) / total * n))  # by the line's midpoint
        chunks[k].append(rec)
        done += length
    return [c for c in chunks if c]


def plan(
    records: list[dict[str, Any]], target_s: float = TARGET_S, min_s: float = MIN_S
) -> list[Plan]:
    """The recordings the kept lines make, numbered in stream order."""
    plans: list[Plan] = []
    for speaker, recs in _streams(records, min_s):
        for chunk in _split(recs, target_s):
            plans.append(Plan(f"{NAME_OUT}-{len(plans) + 1:02d}", speaker, chunk))
    return plans


def pauses(index: int, n: int) -> np.ndarray:
    """The n - 1 pauses (seconds) of recording `index`, from a generator seeded [SEED, index]."""
    return np.random.default_rng([SEED, index]).uniform(*PAUSE_S, size=max(0, n - 1))


def join(out: Path, index: int, p: Plan) -> dict[str, Any]:
    """Write one recording's FLAC; its manifest record."""
    gaps = pauses(index, len(p.lines))
    pieces, parts, pos = [], [], 0
    for i, rec in enumerate(p.lines):
        if i:
            silence = np.zeros(round(gaps[i - 1] * RATE), dtype=np.int16)
            pieces.append(silence)
            pos += len(silence)
        x, rate = sf.read(out / rec["audio"], dtype="int16")
        if rate != RATE or x.ndim != 1:
            raise ValueError(f"{rec['audio']}: expected 16 kHz mono, found {rate} Hz {x.shape}")
        parts.append(
            {
                "id": rec["id"],
                "speaker": rec["speaker"],
                "start_s": round(pos / RATE, 7),
                "end_s": round((pos + len(x)) / RATE, 7),
            }
        )
        pieces.append(x)
        pos += len(x)
    rel = Path("clips") / "longform" / f"{p.id}.flac"
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, np.concatenate(pieces), RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
    first = p.lines[0]
    return {
        "id": p.id,
        "audio": rel.as_posix(),
        "text": " ".join(r["text"] for r in p.lines),
        "has_text": True,
        "source": first["source"],
        "licence": first["licence"],
        "duration_s": round(pos / RATE, 3),
        "speaker": p.speaker,
        "game": first["game"],
        "language": first["language"],
        "speech_s": round(_speech(p.lines), 3),
        "pause_range_s": [PAUSE_S[0], PAUSE_S[1]],  # each pause drawn uniformly in it
        "seed": [SEED, index],
        "parts": parts,
        "sha256": _sha256(path),
    }


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reusable(out: Path, old: dict[str, Any] | None, p: Plan) -> bool:
    """The recording was written before from the same lines and its file is intact."""
    if old is None or [q["id"] for q in old.get("parts", [])] != [r["id"] for r in p.lines]:
        return False
    path = out / str(old.get("audio", ""))
    return path.is_file() and _sha256(path) == old.get("sha256")


def build_longform(
    out: Path,
    records: list[dict[str, Any]],
    advance: Callable[[int], None] | None = None,
    target_s: float = TARGET_S,
    min_s: float = MIN_S,
) -> list[dict[str, Any]]:
    """Write `<out>/real-longform.jsonl` and its FLACs from the kept lines (resuming)."""
    manifest = out / f"{NAME_OUT}.jsonl"
    old: dict[str, dict[str, Any]] = {}
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            old[rec["id"]] = rec
    written = []
    for index, p in enumerate(plan(records, target_s, min_s), start=1):
        prev = old.get(p.id)
        written.append(prev if _reusable(out, prev, p) else join(out, index, p))
        if advance is not None:
            advance(1)
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in written), "utf-8")
    os.replace(tmp, manifest)
    for rec_id in old.keys() - {r["id"] for r in written}:  # recordings a new plan dropped
        if old[rec_id].get("audio"):
            (out / str(old[rec_id]["audio"])).unlink(missing_ok=True)
    return written
