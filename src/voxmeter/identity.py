"""What decides a result's numbers besides its spec: the code, the weights and the data.

A result's identity is its spec hash together with three digests:
- `code_fp`: voxmeter's version and a hash of the source of every module that can change a
  measured number. The modules that only read, print or plan (cli/, report/, analysis/,
  sweep/, display.py, store.py) are left out, so a new report layout does not throw away a
  store's measurements, while any change to an engine, instrument or the harness does. The
  git commit, where there is one, is recorded in each result's environment beside it.
- `weights_digest`: sha256 over the weight, config and tokenizer files of the model as
  resolved (for a bundled model, the assembled CTranslate2 files; the conversion to
  transformers is code and is covered by `code_fp`). Cost-only models have no files: their
  random weights follow from the seed (in the spec) and the code.
- `data_digest`: sha256 over the data set's clip list (id, reference text) and the bytes of
  every audio file it names.

File hashes are cached in the cache directory by (path, size, mtime), so a digest costs a few
`stat` calls after the first time. `bench` and `sweep` skip a spec only when all four match.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import voxmeter

# package-relative paths (prefixes) whose code cannot change a measured number
_NOT_MEASUREMENT = ("cli/", "report/", "analysis/", "sweep/", "display.py", "store.py")
_WEIGHT_FILES = (".bin", ".safetensors", ".json", ".txt", ".model")
# files a user or voxmeter may put beside a model that do not change what it computes
_NOT_WEIGHTS = ("sensitivity.json",)
_CACHE_FILE = "digests.json"


@dataclass(frozen=True)
class Identity:
    code_fp: str
    weights_digest: str
    data_digest: str

    def short(self) -> str:
        w, d = self.weights_digest[:8], self.data_digest[:8]
        return f"code {self.code_fp}, weights {w}, data {d}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def code_fingerprint(root: Path | None = None, version: str | None = None) -> str:
    """voxmeter's version plus a hash of its measurement code (see the module docstring);
    `root` is the package folder (this install's by default)."""
    root = root or Path(voxmeter.__file__).parent
    version = version or voxmeter.__version__
    h = hashlib.sha256(version.encode())
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(_NOT_MEASUREMENT):
            continue
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return f"{version}+{h.hexdigest()[:12]}"


class FileDigests:
    """sha256 of files, cached by (absolute path, size, mtime_ns) in `cache_dir/digests.json`."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.path = cache_dir / _CACHE_FILE if cache_dir is not None else None
        self._cache: dict[str, list[Any]] = {}
        self._dirty = False
        self.hashed_s = 0.0  # seconds spent hashing files not found in the cache
        if self.path is not None and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
                self._cache = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._cache = {}  # a damaged cache is rebuilt, never trusted

    def digest(self, path: Path) -> str:
        try:
            st = path.stat()
        except (OSError, ValueError):  # ValueError: a NUL in the name
            return "missing"
        key = str(path.resolve())
        hit = self._cache.get(key)
        if isinstance(hit, list) and hit[:2] == [st.st_size, st.st_mtime_ns]:
            return str(hit[2])
        t0 = time.perf_counter()
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while block := f.read(8 << 20):
                    h.update(block)
        except OSError:
            return "unreadable"
        self.hashed_s += time.perf_counter() - t0
        self._cache[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
        self._dirty = True
        return h.hexdigest()

    def save(self) -> None:
        if not self._dirty or self.path is None:
            return
        tmp = self.path.with_name(f".{_CACHE_FILE}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self._cache))
            os.replace(tmp, self.path)  # atomic: concurrent writers never leave half a file
        except OSError:
            pass  # only a cache: the next run hashes again
        self._dirty = False


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
        h.update(json.dumps([clip.id, clip.text]).encode() + b"\0")
        h.update(files.digest(Path(clip.audio)).encode() + b"\0")
    return h.hexdigest()[:16]


def identity_of(
    spec: Any,
    cache_dir: Path,
    source: Any = None,
    dataset: Any = None,
    files: FileDigests | None = None,
) -> Identity:
    """The identity a run of `spec` would have here and now (resolves model and data)."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.data.datasets import load_dataset

    files = files or FileDigests(cache_dir)
    source = source or resolve_model(spec.model, cache_dir)
    dataset = dataset or load_dataset(spec.data)
    ident = Identity(code_fingerprint(), weights_digest(source, files), data_digest(dataset, files))
    files.save()
    return ident
