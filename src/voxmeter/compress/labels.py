"""Pseudo-labels: training clips without a reference get the labeller's greedy transcript.

Sequence-level distillation (Kim & Rush 2016; distil-whisper's pseudo-labels): the labeller
decodes each unlabelled clip greedily (the hf engine, 3000 frames, English transcription),
and its text becomes the clip's reference, tokenised later by the student's own tokenizer.
A clip that has a reference keeps it (ours are exact texts, better than any model's guess).
Labels are cached on disk, one JSON file per (labeller weights digest, LABEL_VERSION), keyed
by the clip's audio sha256, so a rerun decodes nothing it decoded before. A label that is no
usable target is skipped with its reason (`reject`): empty after Whisper's normalizer, cut at
the length limit, a repetition loop, or more words than the audio can hold.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from voxmeter.progress import advance_or_bar

log = logging.getLogger("voxmeter")
LABEL_VERSION = 1  # bump when decoding or the rejection rules change
BATCH = 8
SAVE_EVERY = 4  # batches between writes of the cache (a killed run keeps what it decoded)
MAX_WORDS_PER_S = 6.0  # fast read speech is ~3; more is a hallucination
MIN_WORDS_FOR_RATE = 4
LOOP_REPEATS = 4  # one to four words repeated this many times in a row: a decoding loop


@dataclass
class Labelled:
    """The data set with every usable clip labelled, and the clips dropped with why."""

    dataset: Any
    skipped: list[dict[str, str]] = field(default_factory=list)
    n_pseudo: int = 0  # clips whose text is a pseudo-label
    n_decoded: int = 0  # of those, decoded in this run (the rest came from the cache)


def needs_label(clip: Any) -> bool:
    """A clip without a reference: `has_text` false or an empty text."""
    return clip.extra.get("has_text") is False or not clip.text.strip()


def reject(text: str, hit_max_length: bool, duration_s: float | None) -> str | None:
    """Why a label is no usable target, or None when it is."""
    from voxmeter.metrics import normalize

    # the normalizer leaves a lone "." of "..." behind: a word needs a letter or a digit
    words = [w for w in normalize(text).split() if any(ch.isalnum() for ch in w)]
    if not words:
        return "empty label (no word left after Whisper's normalizer)"
    if hit_max_length:
        return "no end-of-text (decoding stopped at the length limit)"
    if _loops(words):
        return f"repetition loop (a phrase of 1-4 words repeated {LOOP_REPEATS}+ times)"
    if (
        duration_s
        and len(words) >= MIN_WORDS_FOR_RATE
        and len(words) / duration_s > MAX_WORDS_PER_S
    ):
        return f"{len(words)} words in {duration_s:.1f} s (over {MAX_WORDS_PER_S:g} words/s)"
    return None


def _loops(words: list[str]) -> bool:
    for n in range(1, 5):
        for i in range(len(words) - n * LOOP_REPEATS + 1):
            unit = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == unit for k in range(1, LOOP_REPEATS)):
                return True
    return False


def label(
    dataset: Any, engine_of: Any, labeller_digest: str, cache: Path | None, progress: Any = None
) -> Labelled:
    """`dataset` with pseudo-labels for its clips without reference (module doc).
    `engine_of()` loads the labeller's engine, called only when some clip is not cached;
    `cache` None keeps labels in memory only."""
    from voxmeter.assets.digests import FileDigests

    todo = [c for c in dataset.clips if needs_label(c)]
    if not todo:
        return Labelled(dataset)
    files = FileDigests(cache)
    sha = {c.id: str(c.extra.get("sha256") or files.digest(Path(c.audio))) for c in todo}
    store = _Store(cache, labeller_digest)
    missing = [c for c in todo if sha[c.id] not in store.labels or sha[c.id] == "missing"]
    if missing:
        _decode(missing, sha, engine_of(), store, progress)
    files.save()
    out, skipped = [], []
    for c in dataset.clips:
        if not needs_label(c):
            out.append(c)
            continue
        got = store.labels.get(sha[c.id]) if c.id not in store.unloadable else None
        got = got or {"text": "", "skip": store.unloadable.get(c.id, "audio did not load")}
        if got["skip"]:
            skipped.append({"id": c.id, "reason": f"pseudo-label: {got['skip']}"})
        else:
            out.append(replace(c, text=got["text"]))
    if skipped:
        log.warning("pseudo-labels: %d of %d clip(s) skipped as unusable", len(skipped), len(todo))
    return Labelled(replace(dataset, clips=out), skipped, len(todo) - len(skipped), len(missing))


def labelled_for(engine: Any, train: Any, cache: Path | None, progress: Any = None) -> Any:
    """A sensitivity map's clips (traindata.TrainData) with references; those without are
    labelled by the labeller ("teacher": the fp32 engine measured, so the map's baseline WER
    is its agreement with itself and a group's WER change is how far quantizing it moves the
    transcript). Unusable clips are logged and left out."""
    from voxmeter.compress import _labeller
    from voxmeter.identity import FileDigests, weights_digest

    digest = weights_digest(engine.source, FileDigests(cache))
    if train.labeller == "teacher":
        engine_of, who = (lambda: engine), digest
    else:
        engine_of, who = _labeller(train.labeller, engine.source, digest, cache)
    got = label(train.dataset, engine_of, who, cache, progress)
    for s in got.skipped:
        log.warning("sensitivity: skipped clip %s: %s", s["id"], s["reason"])
    got.dataset.name = train.name
    return got.dataset


def _decode(clips: list, sha: dict[str, str], engine: Any, store: _Store, progress: Any) -> None:
    """Greedy transcripts of `clips`, BATCH at a time, into `store` (saved as it goes)."""
    from voxmeter.audio.io import LoadedAudio
    from voxmeter.data.datasets import Dataset, iter_audio

    with advance_or_bar(progress, "pseudo-labels", len(clips)) as advance:
        try:
            for b in range(0, len(clips), BATCH):
                part = Dataset("labels", clips[b : b + BATCH], Path("."))
                loaded = []
                for c, a in iter_audio(part):
                    if isinstance(a, LoadedAudio):
                        loaded.append((c, a))
                    else:  # not the audio's fault alone (a missing file): never cached
                        why = str(a) if isinstance(a, Exception) else "longer than one 30 s window"
                        store.unloadable[c.id] = why
                if loaded:
                    feats = engine.features([a.samples for _, a in loaded])
                    outs = engine.decode(engine.encode(feats))
                    for (c, a), o in zip(loaded, outs, strict=True):
                        why = reject(o.text, o.hit_max_length, a.duration_s)
                        store.labels[sha[c.id]] = {"text": o.text.strip(), "skip": why}
                advance(b + len(part.clips))
                if (b // BATCH) % SAVE_EVERY == SAVE_EVERY - 1:
                    store.save()
        finally:  # a killed run keeps what it decoded
            store.save()


class _Store:
    """The label cache of one labeller: {audio sha256: {"text", "skip"}} in a JSON file."""

    def __init__(self, cache: Path | None, digest: str) -> None:
        self.path = None if cache is None else Path(cache) / "labels" / f"{digest}-v{LABEL_VERSION}.json"  # fmt: skip
        self.labels: dict[str, dict[str, Any]] = {}
        self.unloadable: dict[str, str] = {}  # clip id -> why its audio did not load
        if self.path is not None and self.path.is_file():
            try:
                self.labels = json.loads(self.path.read_text())
            except (OSError, ValueError) as e:  # a damaged cache is decoded anew
                log.warning("pseudo-labels: cache %s unreadable (%s); decoding again", self.path, e)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as a plain open() would leave it (mkstemp: 0600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.labels, f)
        os.replace(tmp, self.path)
