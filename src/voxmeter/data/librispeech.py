"""A LibriSpeech split as a Dataset.

The layout is `<root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`, each line
`<utterance-id> <TRANSCRIPT IN CAPITALS>`, with `<utterance-id>.flac` beside it. Any folder
that holds such transcript files at any depth loads, so `root` may be a split
(`test-clean`), the `LibriSpeech` folder above it, or a single speaker.
"""

from __future__ import annotations

from pathlib import Path

from voxmeter.data.manifest import Clip, Dataset, read_text_lines
from voxmeter.errors import DataError

SOURCE = "LibriSpeech (OpenSLR 12)"
LICENCE = "CC BY 4.0"


def find_transcripts(root: Path) -> list[Path]:
    """Every *.trans.txt under `root`, in a stable order."""
    return sorted(root.rglob("*.trans.txt"))


def load_librispeech(root: str | Path) -> Dataset:
    """Read every transcript under `root`; a malformed or non-UTF-8 line is a DataError."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"LibriSpeech {r}: no such directory")
    transcripts = find_transcripts(r)
    if not transcripts:
        raise DataError(f"LibriSpeech {r}: no *.trans.txt transcript files found")
    clips: list[Clip] = []
    for t in transcripts:
        clips.extend(_read_transcript(t))
    if not clips:
        raise DataError(f"LibriSpeech {r}: the transcript files list no utterances")
    # a missing flac is a bad clip, reported and skipped by iter_audio (as in a manifest)
    return Dataset(name=r.name, clips=clips, root=r)


def _read_transcript(t: Path) -> list[Clip]:
    clips = []
    for n, line in enumerate(read_text_lines(t, f"LibriSpeech {t}"), start=1):
        if not line.strip():
            continue
        utt, _, text = line.strip().partition(" ")
        if not text.strip() or "\0" in utt:
            raise DataError(f"LibriSpeech {t} line {n}: expected '<utterance-id> <transcript>'")
        clips.append(
            Clip(
                id=utt,
                audio=t.parent / f"{utt}.flac",
                text=text.strip(),
                source=SOURCE,
                licence=LICENCE,
            )
        )
    return clips
