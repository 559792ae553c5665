"""Which game feeds which set, which Debian packages hold it, its licence, and the check that
they are installed (with the apt-get line that installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from voxmeter.data.games import DEFAULT_GAMES_DIR, Entry, GameClip, drascula, queen, sky
from voxmeter.errors import DataError

GAMES_ENV = "VOXMETER_GAMES_DIR"
ALL_PACKAGES = (
    "drascula",
    "drascula-italian",
    "drascula-spanish",
    "beneath-a-steel-sky",
    "flight-of-the-amazon-queen",
    "scummvm-data",
)


@dataclass(frozen=True)
class Game:
    """One game's reader, the packages it needs, and the attribution its clips carry."""

    name: str
    reader: ModuleType
    packages: tuple[str, ...]
    licence: str

    def files(self, root: Path) -> list[Path]:
        return self.reader.files(root)

    def entries(self, root: Path) -> list[Entry]:
        return self.reader.list_entries(root)


MODIFIED = "modified by voxmeter: speech extracted and resampled to 16 kHz FLAC"
GAMES = {
    "drascula": Game(
        "drascula",
        drascula,
        ("drascula", "scummvm-data"),
        "Drascula: The Vampire Strikes Back, (C) 1996-2008 Alcachofa Soft S.L.; Drascula "
        f"licence (free redistribution with attribution and notices intact; {MODIFIED}); "
        "subtitles from drascula.dat (scummvm-data, The ScummVM Team); see LICENCES.md",
    ),
    "sky": Game(
        "sky",
        sky,
        ("beneath-a-steel-sky",),
        "Beneath a Steel Sky, (C) Revolution Software Ltd; Beneath-a-Steel-Sky licence (free "
        f"redistribution with attribution and notices intact; {MODIFIED}); see LICENCES.md",
    ),
    "queen": Game(
        "queen",
        queen,
        ("flight-of-the-amazon-queen",),
        "Flight of the Amazon Queen, (C) 1995 John Passfield and Steven Stamatiadis; "
        "Flight-of-the-Amazon-Queen licence (free redistribution with attribution and notices "
        f"intact; {MODIFIED}); see LICENCES.md",
    ),
}
# The sets the games are extracted into. real-train and the Drascula sets come from different
# games, so no voice is in both. real-test-unscreened holds every subtitled Drascula line;
# real-test (screened) and real-longform are made from it (run/screen.py, games/longform.py).
SETS = {"real-train": ("sky", "queen"), "real-test-unscreened": ("drascula",)}
NEEDS_TEXT = ("real-test-unscreened",)  # test sets: lines without a subtitle are left out


def iter_clips(game: str, root: Path | None = None) -> Iterator[GameClip]:
    """Every speech clip of `game` ("drascula", "sky", "queen"), decoded one at a time."""
    reader = GAMES[game].reader
    for entry in reader.list_entries(root or games_root()):
        yield reader.read_entry(entry)


def games_root() -> Path:
    """Where the games' data lives: $VOXMETER_GAMES_DIR, else Debian's /usr/share/scummvm."""
    env = os.environ.get(GAMES_ENV)
    return Path(env).expanduser() if env else DEFAULT_GAMES_DIR


def missing_packages(games: list[str], root: Path) -> list[str]:
    """The packages whose files some of `games` need and that are not there."""
    missing: list[str] = []
    for name in games:
        game = GAMES[name]
        for path, package in _files_by_package(game, root):
            if not path.exists() and package not in missing:
                missing.append(package)
    return missing


def _files_by_package(game: Game, root: Path) -> list[tuple[Path, str]]:
    paths = game.files(root)
    if game.name == "drascula":  # the speech folder, then scummvm-data's drascula.dat
        return [(paths[0], "drascula"), (paths[1], "scummvm-data")]
    return [(p, game.packages[0]) for p in paths]


def install_command(packages: list[str]) -> str:
    return "sudo apt-get install -y " + " ".join(packages)


def can_install() -> bool:
    """Root, with apt-get on PATH: the builder may install the packages itself."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def require(games: list[str], root: Path, install: bool) -> None:
    """Return when the games' files are there; else install them (--install) or say how."""
    missing = missing_packages(games, root)
    if not missing:
        return
    if install and can_install():
        done = subprocess.run(["apt-get", "install", "-y", *missing], check=False)
        if done.returncode == 0 and not missing_packages(games, root):
            return
        raise DataError(f"apt-get install -y {' '.join(missing)} failed (exit {done.returncode})")
    hint = " (or rerun with --install)" if can_install() else ""
    raise DataError(
        f"game data not installed: {', '.join(missing)} (looked in {root}); "
        f"install with: {install_command(missing)}{hint}"
    )


def licence_texts(games: list[str]) -> str:
    """The Debian copyright files of the games' packages, to keep beside the clips."""
    parts = ["# Licences of the real-speech clips\n"]
    for name in games:
        for package in GAMES[name].packages:
            path = Path("/usr/share/doc") / package / "copyright"
            text = path.read_text(errors="replace") if path.is_file() else "(not found)\n"
            parts.append(f"\n## {package}\n\n```\n{text}```\n")
    return "".join(parts)
