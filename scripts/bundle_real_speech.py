#!/usr/bin/env python
"""Put a few minutes of recorded Drascula speech into the bundled default set.

Takes `REPLACED` espeak-ng clips out of src/voxmeter/data/sample/default.jsonl and puts, in their
places (so every other clip keeps its index), as many lines of the screened `real-test` set
(`voxmeter data build real --set real-test`): lines of `MIN_S` to `MAX_S` seconds, taken round-
robin over the speakers (sorted) in an order drawn from a numpy generator seeded with `SEED`.
The FLACs are copied byte for byte from the cache (16 kHz mono 16-bit, as the builder wrote
them), the manifest lines carry the clip's source, attribution and screen fields, and
LICENCES.md beside them holds the Drascula licence text. The espeak-ng clips that the noisy set
or the tests name stay. Rerunning it gives the same files: lines of an earlier run are taken out
first, and the same lines are picked again from the same real-test manifest.
`make_default_set.py` calls it last, so a rebuild of the bundled sets keeps the real speech.

    python scripts/bundle_real_speech.py [--real-test PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "src" / "voxmeter" / "data" / "sample"
SEED = 20261207
MIN_S, MAX_S = 6.0, 12.0
# espeak-ng clips that give way; tts-03/10/13/26/28/33 feed the noisy set, tts-08/09/15 and
# tts-1x are named by tests, so they stay
REPLACED = tuple(
    f"tts-{n:02d}" for n in (1, 2, 4, 5, 6, 7, 20, 21, 22, 23, 24, 25, 27, 29, 30, 31, 32)
) + tuple(f"tts-{n:02d}" for n in range(34, 40))
PREFIX = "drascula-"
FIELDS = ("id", "audio", "text", "source", "licence", "duration_s", "speaker", "screen_cer")
LICENCE = (
    "Drascula: The Vampire Strikes Back, (C) 1996-2008 Alcachofa Soft S.L.; Drascula licence "
    "(free redistribution with attribution and notices intact; modified by voxmeter: speech "
    "extracted and resampled to 16 kHz FLAC); subtitles from drascula.dat (scummvm-data, The "
    "ScummVM Team); see LICENCES.md"
)


def pick(kept: list[dict], n: int) -> list[dict]:
    """n lines of MIN_S..MAX_S seconds, round-robin over sorted speakers, seeded order."""
    rng = np.random.default_rng(SEED)
    pools: dict[str, list[dict]] = {}
    for rec in sorted(kept, key=lambda r: r["id"]):
        if MIN_S <= float(rec["duration_s"]) <= MAX_S:
            pools.setdefault(rec["speaker"], []).append(rec)
    queues = {s: [p[i] for i in rng.permutation(len(p))] for s, p in sorted(pools.items())}
    picked: list[dict] = []
    while len(picked) < n and any(queues.values()):
        for queue in queues.values():
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    if len(picked) < n:
        raise SystemExit(f"only {len(picked)} lines of {MIN_S}-{MAX_S} s in real-test; need {n}")
    return picked


def licences_md(picked: list[dict]) -> str:
    copyright_file = Path("/usr/share/doc/drascula/copyright")
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    seconds = sum(float(r["duration_s"]) for r in picked)
    return f"""# Licences of the bundled Drascula clips

The `drascula-en-*.flac` clips of this folder ({len(picked)} clips, {seconds:.1f} s) are
speech of **Drascula: The Vampire Strikes Back**, (C) 1996-2008 Alcachofa Soft S.L., from
Debian's `drascula` package. Their reference texts are the game's subtitles, read from
`drascula.dat` in Debian's `scummvm-data` package (The ScummVM Team).

**This is a modified version**: voxmeter extracted single speech lines from the game's `.ALS`
files (raw unsigned 8-bit, 11025 Hz) and resampled them to 16 kHz 16-bit FLAC with soxr. Made
by `scripts/bundle_real_speech.py`. The game's licence, as Debian's copyright file states it,
follows in full.

```
{text}```
"""


SOURCES_MARK = "\n## Recorded speech from Drascula\n"


def sources_section(picked: list[dict], summary: str) -> str:
    rows = "\n".join(
        f"| {r['id']} | {r['speaker']} | {float(r['duration_s']):.2f} | {r['screen_cer']} |"
        for r in picked
    )
    return f"""{SOURCES_MARK}
- {summary}.
- Made by `scripts/bundle_real_speech.py` from the screened `real-test` set (docs/real-speech.md):
  lines of {MIN_S:g} to {MAX_S:g} s, round-robin over the speakers in a seeded order, copied
  byte for byte. The reference is the game's subtitle (upper case; the normaliser folds it).
- Licence and attribution: LICENCES.md in this folder (Drascula licence, marked modified).

| id | speaker | seconds | screen CER |
|---|---|---|---|
{rows}
"""


def bundle(out: Path, real_test: Path) -> str:
    """Replace the REPLACED clips of `out`/default.jsonl by Drascula lines; a summary line."""
    if not real_test.is_file():
        raise SystemExit(f"{real_test} missing: voxmeter data build real --set real-test")
    kept = [json.loads(x) for x in real_test.read_text(encoding="utf-8").splitlines() if x]
    default = out / "default.jsonl"
    rows = [json.loads(x) for x in default.read_text(encoding="utf-8").splitlines() if x]
    slots = [i for i, r in enumerate(rows) if r["id"] in REPLACED or r["id"].startswith(PREFIX)]
    for old in out.glob(f"{PREFIX}*.flac"):
        old.unlink()
    picked = pick(kept, len(REPLACED))
    if len(slots) != len(picked):
        raise SystemExit(f"{default}: {len(slots)} places for {len(picked)} lines")
    for i, rec in zip(slots, picked, strict=True):
        name = f"{rec['id']}.flac"
        shutil.copyfile(real_test.parent / rec["audio"], out / name)
        row = {k: rec[k] for k in FIELDS} | {"audio": name, "licence": LICENCE}
        rows[i] = row | {"source": "Debian package drascula (English speech), line " + rec["entry"]}
    for tts in REPLACED:
        (out / f"{tts}.flac").unlink(missing_ok=True)
    default.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    (out / "LICENCES.md").write_text(licences_md(picked), encoding="utf-8")
    seconds = sum(float(r["duration_s"]) for r in picked)
    total = sum(float(r["duration_s"]) for r in rows)
    real = sum(float(r["duration_s"]) for r in rows if not r["id"].startswith("tts-"))
    n_real = sum(not r["id"].startswith("tts-") for r in rows)
    summary = (
        f"default: {len(picked)} Drascula lines ({seconds:.1f} s, "
        f"{len({r['speaker'] for r in picked})} speakers) in place of {len(REPLACED)} espeak-ng "
        f"clips; recorded speech is now {n_real} of {len(rows)} clips, {real:.1f} of "
        f"{total:.1f} s ({100 * real / total:.0f}%)"
    )
    sources = out / "SOURCES.md"
    text = sources.read_text(encoding="utf-8") if sources.is_file() else ""
    text = text.split(SOURCES_MARK)[0].rstrip("\n") + "\n"
    sources.write_text(text + sources_section(picked, summary), encoding="utf-8")
    return summary


def default_real_test() -> Path:
    from voxmeter.data.games.build import manifest_path

    return manifest_path("real-test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-test", type=Path, default=None, help="<cache>/real/real-test.jsonl")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    print(bundle(args.out, args.real_test or default_real_test()))


if __name__ == "__main__":
    main()
