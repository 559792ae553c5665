"""Emotion corpora as labelled data sets, and speaker-independent splits of them.

CREMA-D, RAVDESS and EmoDB carry the emotion and the speaker in each file's name:

- CREMA-D `1001_DFA_ANG_XX.wav`: actor, sentence, emotion (ANG DIS FEA HAP NEU SAD), level.
- RAVDESS `03-01-05-01-02-01-12.wav`: modality (03 audio), channel (01 speech, 02 song),
  emotion (01 neutral ... 08 surprised), intensity, statement, repetition, actor.
- EmoDB `03a01Wa.wav`: speaker (2 digits), text (3), emotion letter (German initials: W anger,
  L boredom, E disgust, A fear, F happiness, T sadness, N neutral), version.

Labels are mapped to one English vocabulary, so results of two corpora name classes alike. A
clip carries `label`, `speaker` and `corpus` in its manifest line (Clip.extra) and no
transcript. A file whose name does not follow the corpus's pattern is reported, counted and
skipped; a folder with none that does is a DataError. Splits are by speaker, never by clip, so
no voice is in both train and test (EmoBox's CREMA-D fold is not: it is stratified by clip).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voxmeter.data.manifest import Clip, Dataset
from voxmeter.errors import DataError

log = logging.getLogger("voxmeter")

CREMA = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
RAVDESS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
EMODB = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}


@dataclass(frozen=True)
class Corpus:
    """How one corpus names its files: a pattern and what it yields (label, speaker)."""

    name: str
    source: str
    licence: str
    parse: Callable[[str], tuple[str, str] | None]


def _crema(stem: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})", stem)
    return (CREMA[m[3]], m[1]) if m and m[3] in CREMA else None


def _ravdess(stem: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"03-01-(\d\d)-0[12]-0[12]-0[12]-(\d\d)", stem)  # audio-only speech
    return (RAVDESS[m[1]], m[2]) if m and m[1] in RAVDESS else None


def _emodb(stem: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"(\d\d)([a-z]\d\d)([A-Z])([a-z])", stem)
    return (EMODB[m[3]], m[1]) if m and m[3] in EMODB else None


CORPORA = {
    "crema-d": Corpus("crema-d", "CREMA-D (Cao et al., 2014)", "ODbL 1.0", _crema),
    "ravdess": Corpus(
        "ravdess", "RAVDESS (Livingstone & Russo, 2018)", "CC BY-NC-SA 4.0", _ravdess
    ),
    "emodb": Corpus("emodb", "EmoDB (Burkhardt et al., 2005)", "see the corpus", _emodb),
}


def load_emotion(root: str | Path, corpus: str) -> Dataset:
    """Every .wav under `root` whose name follows `corpus`'s pattern, as labelled clips."""
    if corpus not in CORPORA:
        raise DataError(f"emotion corpus {corpus!r}: expected one of {', '.join(CORPORA)}")
    r, c = Path(root), CORPORA[corpus]
    if not r.is_dir():
        raise DataError(f"{c.name} {r}: no such directory")
    clips, odd = [], []
    for wav in sorted(r.rglob("*.wav")):
        got = c.parse(wav.stem)
        if got is None:
            odd.append(wav)
            continue
        label, speaker = got
        extra = {"label": label, "speaker": f"{c.name}:{speaker}", "corpus": c.name}
        clips.append(Clip(wav.stem, wav, "", c.source, c.licence, extra=extra, has_text=False))
    if odd:
        log.warning(
            "%s %s: %d file(s) skipped, their names do not follow the corpus's pattern (first: %s)",
            c.name,
            r,
            len(odd),
            odd[0].name,
        )
    if not clips:
        raise DataError(f"{c.name} {r}: no .wav file named as {c.name} names its files")
    return Dataset(name=c.name, clips=clips, root=r)


def labels_of(ds: Dataset) -> list[str]:
    """Each clip's `label`; a clip without one is a DataError naming it."""
    out = []
    for clip in ds.clips:
        label = clip.extra.get("label")
        if not isinstance(label, str) or not label:
            raise DataError(f"data {ds.name}: clip {clip.id} has no 'label'")
        out.append(label)
    return out


def _speaker(ds: Dataset, clip: Clip) -> str:
    s = clip.extra.get("speaker")
    if not isinstance(s, str) or not s:
        raise DataError(f"data {ds.name}: clip {clip.id} has no 'speaker' to split by")
    return s


def speaker_folds(ds: Dataset, k: int, seed: int = 0) -> list[tuple[Dataset, Dataset]]:
    """k (train, test) pairs: the speakers shuffled by `seed` and dealt into k groups, each
    group the test set of one fold, so every speaker is tested exactly once."""
    speakers = _shuffled_speakers(ds, seed)
    if not 2 <= k <= len(speakers):
        raise DataError(f"data {ds.name}: {k} folds need 2 to {len(speakers)} (its speakers)")
    return [_hold_out(ds, set(speakers[i::k]), f"{ds.name}-fold{i}") for i in range(k)]


def speaker_split(ds: Dataset, test_share: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) with about `test_share` of the speakers (at least one) held out whole."""
    if not 0.0 < test_share < 1.0:
        raise DataError(f"test_share: expected a share in (0, 1), got {test_share!r}")
    speakers = _shuffled_speakers(ds, seed)
    if len(speakers) < 2:
        raise DataError(f"data {ds.name}: a speaker split needs 2 speakers, it has 1")
    n = min(len(speakers) - 1, max(1, round(test_share * len(speakers))))
    return _hold_out(ds, set(speakers[:n]), ds.name)


def _shuffled_speakers(ds: Dataset, seed: int) -> list[str]:
    speakers = sorted({_speaker(ds, c) for c in ds.clips})
    random.Random(seed).shuffle(speakers)
    return speakers


def _hold_out(ds: Dataset, test: set[str], name: str) -> tuple[Dataset, Dataset]:
    """(<name>-train: the clips of speakers not in `test`, <name>-test: the others)."""
    tr = [c for c in ds.clips if _speaker(ds, c) not in test]
    te = [c for c in ds.clips if _speaker(ds, c) in test]
    return Dataset(f"{name}-train", tr, ds.root), Dataset(f"{name}-test", te, ds.root)
