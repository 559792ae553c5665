"""Writing a card or a map to a user's path: checked first (one-line errors), then written
under a temporary name and renamed, so a reader never sees half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from voxmeter.errors import SpecError


def writable(out: Path, what: str = "-o") -> Path:
    """`out` if a file can be written there (paths.writable_output's checks; a link or a
    device such as /dev/stdout is written through); else a one-line SpecError naming it."""
    from voxmeter.paths import writable_output

    out = Path(out).expanduser()
    if _through(out):
        if not os.access(out, os.W_OK):
            raise SpecError(f"{what} {out}: is not writable")
        return out
    return writable_output(out, what)


def _through(out: Path) -> bool:
    """A link or a device: written through, never replaced by a rename."""
    return out.is_symlink() or (out.exists() and not out.is_file() and not out.is_dir())


def write_atomic(text: str, out: Path, what: str = "-o") -> Path:
    """Write `text` to `out` under a temporary name, then rename: never half a card. A link
    or a device (`-o /dev/stdout`) is written through instead, never replaced. A path that
    cannot be written is a SpecError (one line), checked before anything is written."""
    out = writable(out, what)
    try:
        if _through(out):
            with out.open("w") as f:
                f.write(text)
            return out
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.tmp-")
    except OSError as e:
        raise SpecError(f"{what} {out}: cannot be written ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, _mode(out))  # mkstemp's 0600 would hide a card meant to be shared
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _mode(out: Path) -> int:
    """The replaced file's permissions, or what a plain open() would give a new one."""
    if out.is_file():
        return out.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
