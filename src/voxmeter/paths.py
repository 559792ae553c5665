"""Where voxmeter writes: the user cache dir, and files the user names with -o.

One resolution of the cache dir for every module (conversions, joined weights, the matmul
peak, digests): `--cache-dir` over `VOXMETER_CACHE` over `$XDG_CACHE_HOME/voxmeter` over
`~/.cache/voxmeter`. A folder that cannot be created or written is a one-line SpecError that
names the folder and where its path came from, raised before any work instead of a traceback
from deep inside a conversion or after a whole measurement.

Writability is checked with os.access and by creating the folder: tests and containers often
run as root, for whom os.access says yes to almost everything, but creating a folder under a
regular file or on a read-only file system still fails.
"""

from __future__ import annotations

import os
from pathlib import Path

from voxmeter.errors import SpecError

__all__ = ["cache_dir_source", "default_cache_dir", "shorten", "writable_output"]


def cache_dir_source(override: str | Path | None = None) -> tuple[Path, str]:
    """The cache dir and what chose it ("--cache-dir", "VOXMETER_CACHE"...); no side effects."""
    if override:
        return Path(override).expanduser(), "--cache-dir"
    env = os.environ.get("VOXMETER_CACHE")
    if env:
        return Path(env).expanduser(), "VOXMETER_CACHE"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "voxmeter", "XDG_CACHE_HOME"
    return Path.home() / ".cache" / "voxmeter", "the default"


def default_cache_dir(override: str | Path | None = None) -> Path:
    """The cache dir, created if needed; a SpecError naming it if it cannot be written."""
    path, source = cache_dir_source(override)
    what = f"cache dir {path} (from {source})"
    hint = "set --cache-dir or VOXMETER_CACHE to a writable folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SpecError(f"{what}: exists and is not a folder; {hint}") from None
    except NotADirectoryError:
        blocker = _file_ancestor(path)
        raise SpecError(f"{what}: cannot be created, {blocker} is a file; {hint}") from None
    except OSError as e:
        raise SpecError(f"{what}: cannot be created ({_reason(e)}); {hint}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SpecError(f"{what}: is not writable; {hint}")
    return path


def writable_output(path: Path, what: str) -> Path:
    """`path` (user-expanded) if a file can be written there; else a SpecError naming it.

    `what` names the output in the message, e.g. "report" or "--output". Refused: an existing
    folder, a missing or non-folder parent, a parent or existing file that cannot be written.
    """
    p = Path(path).expanduser()
    where = f"{what} {p}"
    if p.is_dir():
        raise SpecError(f"{where}: is a folder; name a file to write")
    parent = p.parent
    if not parent.exists():
        raise SpecError(f"{where}: folder {parent} does not exist")
    if not parent.is_dir():
        raise SpecError(f"{where}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(f"{where}: folder {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise SpecError(f"{where}: the file exists and is not writable")
    return p


def shorten(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters with "..." so a pathological input keeps a line short."""
    return text if len(text) <= limit else text[:limit] + "..."


def _file_ancestor(path: Path) -> Path:
    """The nearest ancestor of `path` that exists and is not a folder (else `path` itself)."""
    for a in path.parents:
        if a.exists():
            return a if not a.is_dir() else path
    return path


def _reason(e: OSError) -> str:
    """An OSError's reason without the path the message already names."""
    return e.strerror or type(e).__name__
