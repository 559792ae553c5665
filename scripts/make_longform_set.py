"""The bundled long-form set: the real clips joined into recordings of over a minute each.

Called by `make_default_set.py` once it has written the real clips (the LibriVox, card-command
and "go forward" recordings of Debian's pocketsphinx-testdata, copied sample for sample). Each
long-form recording plays every one of those clips once, in an order drawn from a seeded
generator, with `PAUSE_S` of digital silence between consecutive clips; nothing else is
changed (no level, no resampling: the sources are 16 kHz mono and are checked to be). Its
reference is the clips' references joined with spaces, in order, and its manifest line lists
every part with its start and end in seconds, so a test or an analysis can find each clip.

Only about 37 s of real speech with exact transcripts ships in that package, so the set
reaches three minutes by playing the same clips in several recordings. Within a recording no
clip repeats: a transcript that says a sentence twice would look like a decoding loop (its
compression ratio passes Whisper's 2.4), and Whisper's previous-text prompt would hold the
answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from voxmeter.data.manifest import Clip

RATE = 16000
SEED = 20240602
N_RECORDINGS = 5  # each plays every real clip once: 5 x 37 s of real speech
PAUSE_S = 2.5  # digital silence between consecutive clips; brings a recording over a minute
FLAC_LEVEL = 1.0


def longform_recordings(out: Path, real: list[Clip]) -> list[Clip]:
    """Write longform-NN.flac into `out` from the real clips already written there."""
    pcm = {c.id: read_pcm16(c.audio) for c in real}
    return [
        join_recording(out, f"longform-{k:02d}", playing_order(real, k), pcm)
        for k in range(1, N_RECORDINGS + 1)
    ]


def read_pcm16(path: Path) -> np.ndarray:
    x, rate = sf.read(path, dtype="int16")
    if rate != RATE or x.ndim != 1:
        raise SystemExit(f"{path}: expected 16 kHz mono, found {rate} Hz, shape {x.shape}")
    return x


def playing_order(real: list[Clip], k: int) -> list[Clip]:
    """Every clip of `real` once, in the order of a permutation seeded with [SEED, k]."""
    return [real[i] for i in np.random.default_rng([SEED, k]).permutation(len(real))]


def join_recording(out: Path, rec_id: str, order: list[Clip], pcm: dict[str, np.ndarray]) -> Clip:
    pause = np.zeros(round(PAUSE_S * RATE), dtype=np.int16)
    pieces: list[np.ndarray] = []
    parts: list[dict] = []
    pos = 0
    for c in order:
        if pieces:
            pieces.append(pause)
            pos += len(pause)
        x = pcm[c.id]
        parts.append({"id": c.id, "start_s": pos / RATE, "end_s": (pos + len(x)) / RATE})
        pieces.append(x)
        pos += len(x)
    audio = np.concatenate(pieces)
    path = out / f"{rec_id}.flac"
    sf.write(path, audio, RATE, subtype="PCM_16", format="FLAC", compression_level=FLAC_LEVEL)
    licences = sorted({c.licence for c in order})
    return Clip(
        id=rec_id,
        audio=path,
        text=" ".join(c.text for c in order),
        source=(
            f"{len(order)} real recordings from Debian pocketsphinx-testdata (LibriVox and CMU "
            f"Sphinx test clips, as in the default set) joined with {PAUSE_S:g} s of silence; "
            "see 'parts'"
        ),
        licence="; ".join(licences),
        duration_s=round(len(audio) / RATE, 3),
        extra={
            "pause_s": PAUSE_S,
            "speech_s": round(sum(len(pcm[c.id]) for c in order) / RATE, 3),
            "parts": parts,
        },
    )


def longform_md(recordings: list[Clip], real: list[Clip]) -> str:
    """The SOURCES.md section that says how the long-form recordings were made."""
    total = sum(r.duration_s or 0.0 for r in recordings)
    speech = sum(r.extra["speech_s"] for r in recordings)
    unique = sum(c.duration_s or 0.0 for c in real)
    rows = "\n".join(
        f"| {r.id} | {r.duration_s:.2f} | {r.extra['speech_s']:.2f} | "
        f"{len(r.extra['parts'])} | {r.licence} |"
        for r in recordings
    )
    orders = "\n".join(
        f"- `{r.id}`: {', '.join(p['id'] for p in r.extra['parts'])}" for r in recordings
    )
    return f"""
## Long-form set

- `longform.jsonl`: {len(recordings)} recordings, {total:.1f} s ({total / 60:.2f} min) in all,
  of which {speech:.1f} s ({speech / 60:.2f} min) are real recorded clips and the rest the
  pauses between them. Made by `scripts/make_longform_set.py` (called by
  `make_default_set.py`) from the {len(real)} real clips above (`librivox-*`, `cards-*`,
  `goforward`; {unique:.1f} s in all), copied sample for sample: each recording plays every
  one of them once, in an order drawn from a numpy generator seeded with
  `[{SEED}, recording number]`, with {PAUSE_S:g} s of digital silence (zeros) between
  consecutive clips. A clip keeps its own leading and trailing room sound; nothing is
  levelled or resampled (the sources are 16 kHz mono). The same clips make every recording:
  this is long audio of real speech, not {speech / 60:.1f} min of different speech. No clip
  repeats within a recording, so a correct transcript does not look like a decoding loop.
- The reference is the clips' references joined with single spaces, in order. Each manifest
  line also lists `parts` (clip id, `start_s`, `end_s` in the recording), `pause_s` and
  `speech_s` (the summed length of the clips).
- Sources and licences are those of the parts (see above): the LibriVox clips are public
  domain, the CMU Sphinx clips BSD-2-Clause, and the Debian copyright file puts all of
  pocketsphinx-testdata under BSD-2-Clause.

| id | seconds | clips' seconds | clips | licence |
|---|---|---|---|---|
{rows}

Order of the clips:

{orders}
"""
