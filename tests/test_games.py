"""The game speech readers and the real-speech builder, on tiny synthetic game files.

Each test writes the few bytes a format needs (an .ALS file and a drascula.dat, a sky.dnr /
sky.dsk pair with a plain and an RNC-packed entry, a queen.1c holding one MP3) into tmp_path, so
nothing here needs the Debian packages; the last test reads real clips only where they are
installed.
"""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxmeter.data.games import DEFAULT_GAMES_DIR, drascula, queen, rnc, sky, unsigned8_to_float
from voxmeter.data.games.build import build_set, manifest_path
from voxmeter.data.games.sources import GAMES, missing_packages
from voxmeter.data.manifest import load_manifest
from voxmeter.errors import DataError

# -- synthetic game files ---------------------------------------------------------------------


def _dat_strings(strings: list[str]) -> bytes:
    block = bytearray(2)  # two bytes of padding open every block
    for s in strings:
        raw = s.encode("cp850") + b"\0"
        pad = 4 - (len(raw) + 2) % 4
        block += struct.pack(">H", len(raw) + pad + 2) + raw + b"\0" * pad
    return bytes(block)


def make_dat(path: Path, arrays: dict[str, list[str]]) -> None:
    """A drascula.dat (version 6) with empty fixed tables and the given English arrays."""
    out = bytearray(b"DRASCULA\x06")
    out += b"\0\0" * len(drascula.TABLE_RECORDS)  # thirteen empty tables
    out += struct.pack(">H", 5)  # languages
    for name in drascula.TEXT_ARRAYS:
        strings = arrays.get(name, [""])
        out += struct.pack(">H", len(strings))
        for lang in range(5):
            block = _dat_strings(strings if lang == 0 else ["" for _ in strings])
            out += struct.pack(">H", len(block)) + block
    path.write_bytes(bytes(out))


def make_drascula(root: Path) -> None:
    folder = root / "drascula" / "en"
    folder.mkdir(parents=True)
    (folder / "1.ALS").write_bytes(bytes([128, 255, 0, 128] * 2756))  # 1 s at 11025 Hz
    (folder / "2.ALS").write_bytes(bytes([128] * 5512))  # its text is empty: no subtitle
    (folder / "D1.ALS").write_bytes(bytes([140] * 2205))
    (folder / "S1.ALS").write_bytes(bytes([128] * 100))  # a sound effect, not speech
    make_dat(root / "drascula.dat", {"": ["", "HELLO THERE", ""], "D": ["", "GOOD EVENING"]})


class BitWriter:
    """Bits LSB first into 16-bit LE words, literal bytes placed after the last word begun."""

    def __init__(self) -> None:
        self.out, self.word_at, self.used = bytearray(), 0, 16

    def bits(self, value: int, n: int) -> None:
        for i in range(n):
            if self.used == 16:
                self.word_at, self.used = len(self.out), 0
                self.out += b"\0\0"
            if (value >> i) & 1:
                self.out[self.word_at + self.used // 8] |= 1 << (self.used % 8)
            self.used += 1

    def table(self, lengths: list[int]) -> None:
        self.bits(len(lengths), 5)
        for n in lengths:
            self.bits(n, 4)


def rnc_block(body: bytes, unpacked: bytes) -> bytes:
    head = b"RNC\x01" + struct.pack(">II", len(unpacked), len(body))
    head += struct.pack(">HH", rnc.crc16(unpacked), rnc.crc16(body)) + b"\x00\x01"
    return head + body


def rnc_abcd() -> tuple[bytes, bytes]:
    """An RNC block: a literal run "abcd", a back-reference (distance 4, length 8), then an
    empty run; it unpacks to "abcd" * 3."""
    w = BitWriter()
    w.bits(0, 2)  # lock and key flags
    w.table([1, 0, 0, 1])  # runs: symbol 0 (code 0) and symbol 3 (code 1)
    w.table([0, 0, 1])  # distances: symbol 2 only
    w.table([0, 0, 0, 1])  # lengths: symbol 3 only
    w.bits(2, 16)  # two steps
    w.bits(1, 1)  # run symbol 3: 1 << 2 | 2 extra bits
    w.bits(0, 2)  # run of 4
    w.out += b"abcd"
    w.bits(0, 1)  # distance symbol 2: 1 << 1 | 1 extra bit
    w.bits(1, 1)  # distance value 3 -> 4 back
    w.bits(0, 1)  # length symbol 3: 1 << 2 | 2 extra bits
    w.bits(2, 2)  # length value 6 -> 8 bytes
    w.bits(0, 1)  # last step: run symbol 0, no literal
    unpacked = b"abcd" * 3
    return rnc_block(bytes(w.out), unpacked), unpacked


def make_sky(root: Path) -> tuple[bytes, bytes]:
    """sky.dnr + sky.dsk: a plain speech file, an RNC-packed one, and a non-speech file."""
    folder = root / "beneath-a-steel-sky"
    folder.mkdir(parents=True)
    plain = bytes(22) + bytes([128, 200, 56] * 1000)
    block, unpacked = rnc_abcd()
    packed = struct.pack("<H", 0x81) + bytes(20) + block
    other = b"\x00" * 30
    rows, dsk = [], b""
    for number, data, flags in ((50001, plain, 0x800000), (50700, packed, 0), (60300, other, 0)):
        rows.append(struct.pack("<H", number) + len(dsk).to_bytes(3, "little"))
        rows[-1] += (len(data) | flags).to_bytes(3, "little")
        dsk += data
    (folder / "sky.dnr").write_bytes(struct.pack("<I", len(rows)) + b"".join(rows))
    (folder / "sky.dsk").write_bytes(dsk)
    return plain[22:], unpacked


def mp3_bytes() -> bytes | None:
    """Half a second of tone as MP3 at 11025 Hz, or None where libsndfile cannot write MP3."""
    x = (0.3 * np.sin(np.arange(5512) * 0.2)).astype(np.float32)
    buf = io.BytesIO()
    try:
        sf.write(buf, x, 11025, format="MP3", subtype="MPEG_LAYER_III")
    except (sf.LibsndfileError, ValueError, TypeError):
        return None
    return buf.getvalue()


def make_queen(root: Path, mp3: bytes) -> None:
    names = [("020006J1.SB", mp3), ("020006P1.SB", mp3), ("03SSSSSS.SB", mp3), ("QUEEN.JAS", b"x")]
    head = b"QTBL" + b"CEM10\0" + b"\0\0" + b"\x01" + struct.pack(">H", len(names))
    offset = len(head) + 21 * len(names)
    rows, data = b"", b""
    for name, payload in names:
        rows += name.encode().ljust(12, b"\0") + b"\x01"
        rows += struct.pack(">II", offset + len(data), len(payload))
        data += payload
    folder = root / "flight-of-the-amazon-queen"
    folder.mkdir(parents=True)
    (folder / "queen.1c").write_bytes(head + rows + data)


needs_mp3 = pytest.mark.skipif(mp3_bytes() is None, reason="this libsndfile cannot write MP3")


@pytest.fixture
def games_root(tmp_path, monkeypatch) -> Path:
    """All three synthetic games under one root, which VOXMETER_GAMES_DIR points at."""
    root = tmp_path / "games"
    make_drascula(root)
    make_sky(root)
    mp3 = mp3_bytes()
    if mp3 is not None:
        make_queen(root, mp3)
    monkeypatch.setenv("VOXMETER_GAMES_DIR", str(root))
    return root


# -- readers ----------------------------------------------------------------------------------


def test_drascula_speaker_from_prefix_and_subtitle_from_dat(games_root):
    entries = {e.entry: e for e in drascula.list_entries(games_root)}
    assert sorted(entries) == ["1.ALS", "2.ALS", "D1.ALS"]  # S1: a sound effect
    assert (entries["1.ALS"].speaker, entries["1.ALS"].text) == ("drascula-hacker", "HELLO THERE")
    assert (entries["D1.ALS"].speaker, entries["D1.ALS"].text) == (
        "drascula-drascula",
        "GOOD EVENING",
    )
    assert entries["2.ALS"].text is None  # empty in drascula.dat
    clip = drascula.read_entry(entries["1.ALS"])
    assert clip.rate == 11025 and clip.audio.dtype == np.float32
    assert clip.audio[:4].tolist() == [0.0, 127 / 128, -1.0, 0.0]  # unsigned 8-bit, 128 = 0


def test_iter_clips_yields_decoded_clips_with_their_labels(games_root):
    from voxmeter.data.games.sources import iter_clips

    clips = list(iter_clips("drascula"))  # the root comes from VOXMETER_GAMES_DIR
    first = clips[0]
    assert (first.id, first.speaker, first.text, first.source, first.entry) == (
        "drascula-en-1",
        "drascula-hacker",
        "HELLO THERE",
        "drascula",
        "1.ALS",
    )
    assert [len(c.audio) for c in clips] == [11024, 5512, 2205]


def test_drascula_truncated_dat_names_file_and_array(games_root):
    dat = games_root / "drascula.dat"
    dat.write_bytes(dat.read_bytes()[:-20])
    with pytest.raises(DataError, match=rf"{dat}.*array"):
        drascula.list_entries(games_root)


def test_rnc_unpacks_literals_and_overlapping_match():
    block, unpacked = rnc_abcd()
    assert rnc.unpack(block, "x") == unpacked
    assert rnc.crc16(b"123456789") == 0xBB3D  # the CRC-16/ARC check value


def test_rnc_corrupt_block_is_a_data_error():
    block, _ = rnc_abcd()
    bad = block[:20] + bytes([block[20] ^ 0xFF]) + block[21:]
    with pytest.raises(DataError, match="myfile entry 7: RNC packed data fails its CRC"):
        rnc.unpack(bad, "myfile entry 7")


def test_sky_reads_plain_and_packed_speech_only(tmp_path):
    plain, unpacked = make_sky(tmp_path)
    entries = sky.list_entries(tmp_path)
    assert [e.entry for e in entries] == ["file 50001", "file 50700"]  # 60300 is not speech
    assert [e.speaker for e in entries] == ["sky-section0", "sky-section1"]  # 700 >= 600
    plain_clip, packed_clip = (sky.read_entry(e) for e in entries)
    assert plain_clip.rate == packed_clip.rate == 11025
    assert np.array_equal(plain_clip.audio, unsigned8_to_float(plain))  # after the header
    assert np.array_equal(packed_clip.audio, unsigned8_to_float(unpacked))  # RNC unpacked


def test_sky_truncated_data_file_names_file_and_entry(games_root):
    dsk = games_root / "beneath-a-steel-sky" / "sky.dsk"
    dsk.write_bytes(dsk.read_bytes()[:1000])
    entry = sky.list_entries(games_root)[0]
    with pytest.raises(DataError, match=rf"{dsk} entry file 50001: truncated"):
        sky.read_entry(entry)


@needs_mp3
def test_queen_reads_mp3_speech_and_skips_effects(games_root):
    entries = queen.list_entries(games_root)
    assert [(e.entry, e.speaker) for e in entries] == [
        ("020006J1.SB", "queen-joe"),
        ("020006P1.SB", "queen-room02-person1"),
    ]
    clip = queen.read_entry(entries[0])
    assert clip.rate == 11025 and abs(len(clip.audio) - 5512) < 1200  # MP3 adds codec padding
    assert 0.1 < float(np.abs(clip.audio).max()) < 0.5


@needs_mp3
def test_queen_truncated_resource_names_file_and_entry(games_root):
    path = games_root / "flight-of-the-amazon-queen" / "queen.1c"
    entries = queen.list_entries(games_root)
    path.write_bytes(path.read_bytes()[: entries[1].locator[1] + 10])
    with pytest.raises(DataError, match=rf"{path} entry 020006P1.SB: truncated"):
        queen.read_entry(entries[1])


# -- builder, manifests, loading ----------------------------------------------------------------


def test_build_resamples_to_16k_and_manifests_round_trip(games_root, tmp_path):
    out = tmp_path / "cache" / "real"
    test = build_set("real-test-unscreened", games_root, out)
    assert (test.clips, test.skipped_no_text) == (2, 1)  # 2.ALS has no subtitle
    ds = load_manifest(out / "real-test-unscreened.jsonl")
    clip = next(c for c in ds.clips if c.id == "drascula-en-1")
    assert clip.text == "HELLO THERE" and clip.extra["speaker"] == "drascula-hacker"
    assert clip.source == "drascula" and "Alcachofa Soft" in clip.licence
    audio, rate = sf.read(clip.audio, dtype="float32")
    assert rate == 16000 and abs(len(audio) - round(11024 * 16000 / 11025)) <= 1
    assert clip.duration_s == pytest.approx(len(audio) / 16000, abs=1e-3)
    assert clip.extra["sha256"] == __import__("hashlib").sha256(clip.audio.read_bytes()).hexdigest()
    train = build_set("real-train", games_root, out)
    rows = [json.loads(line) for line in (out / "real-train.jsonl").read_text().splitlines()]
    assert all(r["text"] == "" and r["has_text"] is False for r in rows)  # no references
    assert {r["game"] for r in rows} >= {"sky"} and train.clips == len(rows)
    test_speakers = {c.extra["speaker"] for c in ds.clips}
    assert not test_speakers & {r["speaker"] for r in rows}  # speaker-disjoint by construction
    assert not {c.extra["sha256"] for c in ds.clips} & {r["sha256"] for r in rows}


def test_build_resumes_and_redoes_a_damaged_clip(games_root, tmp_path):
    out = tmp_path / "real"
    build_set("real-test-unscreened", games_root, out)
    again = build_set("real-test-unscreened", games_root, out)
    assert (again.clips, again.reused) == (2, 2)  # nothing decoded again
    flac = out / "clips" / "drascula" / "drascula-en-1.flac"
    flac.write_bytes(flac.read_bytes()[:-10])  # digest no longer matches
    # as if killed before the manifest was written: only the partial log of records is left
    (out / "real-test-unscreened.jsonl").rename(out / "real-test-unscreened.partial.jsonl")
    third = build_set("real-test-unscreened", games_root, out)
    assert (third.clips, third.reused) == (2, 1)
    assert load_manifest(out / "real-test-unscreened.jsonl").clips[0].audio.stat().st_size > 0


def test_build_limit_is_per_game(games_root, tmp_path):
    summary = build_set("real-train", games_root, tmp_path / "real", limit=1)
    assert all(n == 1 for n, _ in summary.by_game.values())


def test_load_dataset_finds_the_built_sets(games_root, tmp_path, monkeypatch):
    from voxmeter.data.datasets import load_dataset

    monkeypatch.setenv("VOXMETER_CACHE", str(tmp_path / "vx"))
    for name in ("real-test", "real-test-unscreened"):
        with pytest.raises(DataError, match=f"'{name}' is not built.*data build real --set {name}"):
            load_dataset(name)
    build_set("real-test-unscreened", games_root, manifest_path("real-test").parent)
    ds = load_dataset("real-test-unscreened")
    assert ds.name == "real-test-unscreened" and len(ds.clips) == 2


def _cli_error(argv: list[str], capsys) -> str:
    from voxmeter.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_missing_game_packages_is_one_line_with_the_apt_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOXMETER_GAMES_DIR", str(tmp_path / "none"))
    err = _cli_error(["data", "build", "real", "--cache-dir", str(tmp_path / "c")], capsys)
    assert err.count("\n") == 1 and "Traceback" not in err
    packages = "beneath-a-steel-sky flight-of-the-amazon-queen drascula scummvm-data"
    assert "game data not installed: " + packages.replace(" ", ", ") in err
    assert "apt-get install -y " + packages in err
    assert not (tmp_path / "c" / "real").exists()  # nothing written


def test_missing_packages_lists_only_what_is_absent(games_root):
    (games_root / "drascula.dat").unlink()
    assert missing_packages(["drascula", "sky"], games_root) == ["scummvm-data"]


def test_corrupt_game_file_is_one_line_naming_file_and_entry(games_root, tmp_path, capsys):
    dsk = games_root / "beneath-a-steel-sky" / "sky.dsk"
    dsk.write_bytes(dsk.read_bytes()[:100])
    argv = ["data", "build", "real", "--set", "real-train", "--cache-dir", str(tmp_path / "c")]
    err = _cli_error([*argv, "--no-progress"], capsys)
    assert f"{dsk} entry file 50001: truncated" in err and err.count("\n") == 1


REAL = all((DEFAULT_GAMES_DIR / p).exists() for p in ("drascula/en", "drascula.dat"))
REAL_SKY = (DEFAULT_GAMES_DIR / "beneath-a-steel-sky" / "sky.dsk").exists()
REAL_QUEEN = (DEFAULT_GAMES_DIR / "flight-of-the-amazon-queen" / "queen.1c").exists()


@pytest.mark.parametrize(
    "game,installed",
    [("drascula", REAL), ("sky", REAL_SKY), ("queen", REAL_QUEEN)],
)
def test_three_real_clips_per_installed_game(game, installed):
    if not installed:
        pytest.skip(f"{game}: Debian package not installed")
    entries = GAMES[game].entries(DEFAULT_GAMES_DIR)
    assert len(entries) > 100
    for entry in entries[:: len(entries) // 3][:3]:
        clip = GAMES[game].reader.read_entry(entry)  # RNC-packed sky clips pass both CRCs
        assert clip.rate == 11025 and 0.2 < len(clip.audio) / clip.rate < 60
        assert np.isfinite(clip.audio).all() and float(np.abs(clip.audio).max()) > 0.05
    if game == "drascula":
        assert sum(e.text is not None for e in entries) > 0.9 * len(entries)


def test_games_env_overrides_root(monkeypatch, tmp_path):
    from voxmeter.data.games.sources import games_root as root

    monkeypatch.setenv("VOXMETER_GAMES_DIR", str(tmp_path))
    assert root() == tmp_path
    monkeypatch.delenv("VOXMETER_GAMES_DIR")
    assert root() == DEFAULT_GAMES_DIR and os.sep in str(root())


def test_install_runs_apt_get_for_the_missing_packages_only(games_root, monkeypatch):
    from voxmeter.data.games import sources

    (games_root / "drascula.dat").unlink()
    calls = []

    def fake_run(cmd, check):
        calls.append(cmd)
        make_dat(games_root / "drascula.dat", {"": ["", "HI"]})  # as if apt installed it
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(sources, "can_install", lambda: True)
    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    sources.require(["drascula"], games_root, install=True)
    assert calls == [["apt-get", "install", "-y", "scummvm-data"]]
    monkeypatch.setattr(sources, "can_install", lambda: False)
    (games_root / "drascula.dat").unlink()
    with pytest.raises(DataError, match=r"install with: sudo apt-get install -y scummvm-data$"):
        sources.require(["drascula"], games_root, install=True)


def test_unknown_set_is_one_line_naming_the_choices(tmp_path, capsys):
    err = _cli_error(["data", "build", "real", "--set", "real-tset"], capsys)
    assert err.count("\n") == 1 and "'real-tset'" in err and "real-longform" in err


def test_cli_builds_the_unscreened_set_without_a_model(games_root, tmp_path, capsys):
    from voxmeter.cli import main

    argv = ["data", "build", "real", "--set", "real-test-unscreened", "--no-progress"]
    with pytest.raises(SystemExit) as done:
        main([*argv, "--cache-dir", str(tmp_path / "c")])
    assert done.value.code == 0
    out = tmp_path / "c" / "real"
    assert len(load_manifest(out / "real-test-unscreened.jsonl").clips) == 2
    assert not (out / "real-test.jsonl").exists() and not (out / "screen").exists()
    assert "real-test-unscreened: 2 clips" in capsys.readouterr().err
