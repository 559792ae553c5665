"""What decides a result's numbers besides its spec: the code, the weights and the data.

A result's identity is its spec hash together with three digests:
- `code_fp`: voxmeter's version, the versions of the libraries that compute a figure
  (`FIGURE_LIBRARIES`, a missing one as "absent") and a hash of the source of every module
  that can change a measured number. A torch or jiwer upgrade is new code as much as an edit. The modules that only read, print or plan (cli/, report/, analysis/,
  sweep/, display.py, store.py) are left out, so a new report layout does not throw away a
  store's measurements, while any change to an engine, instrument or the harness does. The
  git commit, where there is one, is recorded in each result's environment beside it.
- `weights_digest`: sha256 over the weight, config and tokenizer files of the model as
  resolved (for a bundled model, the assembled CTranslate2 files, checked against pinned
  digests when they load (assets/bundled.py); the conversion to
  transformers is code and is covered by `code_fp`). Cost-only models have no files: their
  random weights follow from the seed (in the spec) and the code. A spec whose compression
  trains (pruning, recovery) joins to it the key of its training data as resolved here (set,
  digest of the selected clips, labeller, train_clips): `train_data=""` means real-train where
  it is built and calib where not, and those models are different weights.
- `data_digest`: sha256 over the data set's clip list (id, reference text) and the bytes of
  every audio file it names.

File hashes are cached in the cache directory by (path, size, mtime), so a digest costs a few
`stat` calls after the first time. `bench` and `sweep` skip a spec only when all four match.
The library versions and which verified weights ran also travel with each result's `env`
("libraries", "weights"), so a reader sees them beside the digests.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import voxmeter
from voxmeter.assets.digests import FileDigests

__all__ = [
    "FIGURE_LIBRARIES",
    "FileDigests",
    "Identity",
    "code_fingerprint",
    "data_digest",
    "library_versions",
    "weights_digest",
]

# package-relative paths (prefixes) whose code cannot change a measured number
_NOT_MEASUREMENT = (
    "cli/", "report/", "analysis/", "sweep/", "display.py", "store.py", "store/",
)  # fmt: skip
_WEIGHT_FILES = (".bin", ".safetensors", ".json", ".txt", ".model")
# files a user or voxmeter may put beside a model that do not change what it computes
_NOT_WEIGHTS = ("sensitivity.json",)
# distributions whose version can change a figure: kernels and numerics (torch, ctranslate2,
# onnxruntime, numpy), model code (transformers, faster-whisper), resampling (soxr), scoring
# (jiwer, whisper-normalizer)
FIGURE_LIBRARIES = (
    "torch", "transformers", "ctranslate2", "onnxruntime", "faster-whisper", "numpy", "soxr",
    "jiwer", "whisper-normalizer",
)  # fmt: skip
ABSENT = "absent"


@dataclass(frozen=True)
class Identity:
    """The three digests decide equality (and the store's key); `libraries` and `weights` say
    in words what went into `code_fp` and `weights_digest` (empty for rows read back)."""

    code_fp: str
    weights_digest: str
    data_digest: str
    libraries: dict[str, str] = field(default_factory=dict, compare=False)
    weights: str = field(default="", compare=False)

    def short(self) -> str:
        w, d = self.weights_digest[:8], self.data_digest[:8]
        return f"code {self.code_fp}, weights {w}, data {d}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code_fp": self.code_fp,
            "weights_digest": self.weights_digest,
            "data_digest": self.data_digest,
        }
        if self.libraries:
            out["libraries"] = dict(self.libraries)
        if self.weights:
            out["weights"] = self.weights
        return out


def library_versions() -> dict[str, str]:
    """The installed version of each of FIGURE_LIBRARIES, "absent" where it is not installed
    (read anew each time, about 25 ms: an upgrade in a long session is seen)."""
    out = {}
    for name in FIGURE_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = ABSENT
    return out


def code_fingerprint(
    root: Path | None = None, version: str | None = None, libraries: dict[str, str] | None = None
) -> str:
    """voxmeter's version plus a hash of the library versions and of its measurement code (see
    the module docstring); `root` is the package folder (this install's by default),
    `libraries` the versions (this environment's by default)."""
    root = root or Path(voxmeter.__file__).parent
    version = version or voxmeter.__version__
    libraries = library_versions() if libraries is None else libraries
    h = hashlib.sha256(version.encode())
    h.update(json.dumps(sorted(libraries.items())).encode() + b"\0")
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(_NOT_MEASUREMENT):
            continue
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return f"{version}+{h.hexdigest()[:12]}"


def weights_digest(source: Any, files: FileDigests) -> str:
    """Digest of the model files as resolved (`source` is an assets.bundled.ModelSource)."""
    if not source.has_weights:
        return "cost-only"
    h = hashlib.sha256()
    for d in (source.ct2_dir, source.hf_dir):
        if d is None:
            continue
        for p in sorted(Path(d).iterdir()):
            if p.is_file() and p.suffix in _WEIGHT_FILES and p.name not in _NOT_WEIGHTS:
                h.update(p.name.encode() + b"\0" + files.digest(p).encode() + b"\0")
    if source.tokenizer is not None:
        h.update(b"tokenizer\0" + files.digest(Path(source.tokenizer)).encode())
    return h.hexdigest()[:16]


def data_digest(dataset: Any, files: FileDigests) -> str:
    """Digest of a data set: every clip's id, reference text and audio bytes, in order."""
    h = hashlib.sha256()
    for clip in dataset.clips:
        # has_text joins only when false, so every referenced set keeps its earlier digest.
        key = [clip.id, clip.text] if clip.has_text else [clip.id, clip.text, "no-reference"]
        h.update(json.dumps(key).encode() + b"\0")
        h.update(files.digest(Path(clip.audio)).encode() + b"\0")
    return h.hexdigest()[:16]
