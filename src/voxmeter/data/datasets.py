"""Name or path -> Dataset, and the loop that turns a Dataset into checked audio.

`load_dataset` accepts the bundled sets by name ("default": clean speech, "noisy": the same
speech with noise at fixed SNRs, "longform": recordings of just over a minute of real clips
joined with pauses; "calib": synthesized speech for calibration and training, not a test set),
a `.jsonl` manifest, or a LibriSpeech-style directory.
`iter_audio` loads clips one by one and hands back a bad clip's error instead of raising, so
one corrupt file is reported and skipped while the run completes. A clip longer than Whisper's
30 s window is not loaded: it comes back as a `LongAudio` (header facts and `stream()`), so a
recording of hours is read window by window by whoever transcribes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from voxmeter.audio.io import LoadedAudio, LongAudio, info, load_audio
from voxmeter.data.librispeech import find_transcripts, load_librispeech
from voxmeter.data.manifest import Clip, Dataset, load_manifest
from voxmeter.errors import AudioError, DataError
from voxmeter.paths import shorten

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
# "calib" is speech for calibration and training (pruning scores, distillation, LoRA recovery),
# disjoint from the three test sets in audio and sentences: never score it as a test set.
BUNDLED = {
    "default": "default.jsonl",
    "noisy": "noisy.jsonl",
    "longform": "longform.jsonl",
    "calib": "calib.jsonl",
}
# Recorded game speech, built into the cache by `voxmeter data build real` (data/games/):
# real-test is real-test-unscreened screened by the base model (run/screen.py), real-longform
# the kept lines joined into recordings of a few minutes (data/games/longform.py).
REAL_SETS = ("real-train", "real-test", "real-test-unscreened", "real-longform")
# Whisper sees 30 s at a time: a longer clip is long-form audio, streamed rather than loaded.
MAX_CLIP_S = 30.0


def bundled_manifest(name: str) -> Path:
    """Path of a bundled set's manifest (it lives in the package, beside its FLACs)."""
    return SAMPLE_DIR / BUNDLED[name]


def load_dataset(name_or_path: str | Path) -> Dataset:
    """A bundled set by name, a .jsonl manifest, or a directory holding *.trans.txt files."""
    key = str(name_or_path)
    if key in REAL_SETS:
        return _load_real(key)
    if key in BUNDLED:
        path = bundled_manifest(key)
        if not path.is_file():
            raise DataError(f"bundled set {key!r}: {path} is missing from this install")
        ds = load_manifest(path)
        ds.name = key
        return ds
    p = Path(key).expanduser()
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as e:  # e.g. a name too long for the file system
        raise DataError(f"data {shorten(key)!r}: not a usable path ({e.strerror})") from None
    if p.suffix == ".jsonl":
        return load_manifest(p)
    if is_dir:
        if find_transcripts(p):
            return load_librispeech(p)
        raise DataError(f"data {key!r}: directory holds no LibriSpeech *.trans.txt files")
    if not exists:
        raise DataError(
            f"data {key!r}: not a bundled set ({', '.join(BUNDLED)}), and no such file or directory"
        )
    raise DataError(f"data {key!r}: expected a .jsonl manifest or a LibriSpeech directory")


def _load_real(key: str) -> Dataset:
    """A set built by `voxmeter data build real` from the cache, or how to build it."""
    from voxmeter.data.games.build import manifest_path

    path = manifest_path(key)
    if not path.is_file():
        raise DataError(
            f"set {key!r} is not built ({path} missing): run `voxmeter data build real --set {key}`"
        )
    ds = load_manifest(path)
    ds.name = key
    return ds


def iter_audio(
    dataset: Dataset,
) -> Iterator[tuple[Clip, LoadedAudio | LongAudio | AudioError]]:
    """Each clip with its audio, or with the AudioError that explains why it cannot run.

    Clips up to MAX_CLIP_S come back loaded (`LoadedAudio`); longer ones as `LongAudio`,
    which holds no samples: its header was read, and `stream()` decodes it when it runs, so
    damage inside a long recording surfaces as an AudioError from its stream.
    """
    for clip in dataset.clips:
        try:
            head = info(clip.audio)
            audio: LoadedAudio | LongAudio = (
                LongAudio.from_info(head)
                if head.duration_s > MAX_CLIP_S
                else load_audio(clip.audio)
            )
        except AudioError as e:
            yield clip, e
            continue
        yield clip, audio
