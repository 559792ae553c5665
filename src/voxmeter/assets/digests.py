"""sha256 of files, cached by (path, size, mtime) so a digest costs a `stat` after the first time.

It lives in assets because the bundled weights are checked against pinned digests on every
load (assets/bundled.py); `voxmeter.identity` uses the same cache for a result's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

_CACHE_FILE = "digests.json"


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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._cache))
            os.replace(tmp, self.path)  # atomic: concurrent writers never leave half a file
        except OSError:
            pass  # only a cache: the next run hashes again
        self._dirty = False
