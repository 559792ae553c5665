#!/usr/bin/env python
"""Build voxmeter's bundled sets: src/voxmeter/data/sample/{default,noisy,longform,calib}.jsonl.

default: real English speech with reference transcripts from Debian's `pocketsphinx-testdata`
    (five LibriVox clips of "Sense and Sensibility", five card-game commands, "go forward ten
    meters"), plus sentences synthesized offline with espeak-ng in several voices, speeds and
    pitches, so that the set holds more than five minutes of speech.
noisy: a subset of those clips with noise mixed in at 20, 10 and 5 dB SNR.
longform: the real clips joined with pauses into recordings of over a minute each
    (scripts/make_longform_set.py).
calib: a calibration / training set for the compression work (importance scores, sensitivity,
    distillation, LoRA recovery), never scored as a test set: other sentences, synthesized the
    same way in a wider spread of voices, speeds and pitches. No calib clip shares audio or a
    sentence with default, noisy or longform (tests/test_calib_data.py checks it).

Everything is deterministic: fixed voices, rates and pitches, and noise from numpy generators
seeded per clip, so a rebuild with the same espeak-ng version gives the same samples. All
output is 16 kHz mono 16-bit FLAC. Needs the Debian packages pocketsphinx-testdata and
espeak-ng; run from the repository root:

    python scripts/make_default_set.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

# Run as a script, this folder is on sys.path: the long-form set is built by its neighbour.
from bundle_real_speech import bundle, default_real_test
from make_longform_set import longform_md, longform_recordings

from voxmeter.data.manifest import Clip, Dataset, write_manifest

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "src" / "voxmeter" / "data" / "sample"
PS_DATA = Path("/usr/share/pocketsphinx/test/data")
RATE = 16000
SEED = 20240601
SNRS_DB = (20, 10, 5)
TARGET_RMS = 10 ** (-24 / 20)  # about the level of the LibriVox clips, so both sit alike
MAX_PEAK = 0.9
# espeak-ng's gap between words, in 10 ms units: 30 ms cut tiny.en's WER on these clips from
# about 20% to 14% in a probe, mostly by separating words it otherwise ran together.
WORD_GAP = 3
FLAC_LEVEL = 1.0  # soundfile's highest FLAC compression: smaller files, same samples

LIBRIVOX_SOURCE = (
    "LibriVox recording of Jane Austen, Sense and Sensibility, ch. 1, via Debian "
    "pocketsphinx-testdata (test/data/librivox)"
)
LIBRIVOX_LICENCE = "public domain (LibriVox recording of a public-domain text)"
CMU_LICENCE = "BSD-2-Clause (CMU Sphinx test data, per Debian pocketsphinx-testdata copyright)"
TTS_LICENCE = "MIT (voxmeter); synthesized with espeak-ng"


@dataclass(frozen=True)
class Utterance:
    """A sentence to synthesize, and how."""

    id: str
    voice: str
    speed: int  # words per minute
    pitch: int  # espeak-ng 0..99, 50 is the voice's default
    text: str
    origin: str  # where the words come from


P_AND_P = "Jane Austen, Pride and Prejudice (public domain)"
S_AND_S = "Jane Austen, Sense and Sensibility (public domain)"
OURS = "written for voxmeter"

# Austen lines are quoted from the public-domain novels; an edition may differ in a comma.
# The reference transcript is always exactly the text given to the synthesizer.
# fmt: off
UTTERANCES = [
    Utterance("tts-01", "en-us", 160, 50, "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.", P_AND_P),
    Utterance("tts-02", "en-gb", 150, 45, "However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered the rightful property of some one or other of their daughters.", P_AND_P),
    Utterance("tts-03", "en-us+f3", 165, 60, "My dear Mr. Bennet, have you heard that Netherfield Park is let at last?", P_AND_P),
    Utterance("tts-04", "en-gb-x-rp", 155, 40, "She was a woman of mean understanding, little information, and uncertain temper.", P_AND_P),
    Utterance("tts-05", "en-gb+m3", 160, 50, "Mr. Bennet was so odd a mixture of quick parts, sarcastic humour, reserve, and caprice, that the experience of three and twenty years had been insufficient to make his wife understand his character.", P_AND_P),
    Utterance("tts-06", "en-us", 150, 35, "The family of Dashwood had long been settled in Sussex.", S_AND_S),
    Utterance("tts-07", "en-gb-x-rp+f2", 150, 65, "Their estate was large, and their residence was at Norland Park, in the centre of their property, where, for many generations, they had lived in so respectable a manner as to engage the general good opinion of their surrounding acquaintance.", S_AND_S),
    Utterance("tts-08", "en-us+m3", 170, 45, "Elinor, this eldest daughter, whose advice was so effectual, possessed a strength of understanding, and coolness of judgment, which qualified her, though only nineteen, to be the counsellor of her mother.", S_AND_S),
    Utterance("tts-09", "en-gb+f3", 155, 55, "She was sensible and clever; but eager in everything: her sorrows, her joys, could have no moderation.", S_AND_S),
    Utterance("tts-10", "en-us", 175, 50, "Please turn off the lights in the kitchen before you go to bed.", OURS),
    Utterance("tts-11", "en-gb", 165, 50, "The train to the coast leaves from platform four every morning, and it is usually on time.", OURS),
    Utterance("tts-12", "en-us+f2", 160, 60, "She opened the window, listened to the rain for a while, and then went back to her book.", OURS),
    Utterance("tts-13", "en-gb-x-rp", 170, 45, "If the battery runs low, the device saves your work and shuts down on its own.", OURS),
    Utterance("tts-14", "en-us+m2", 150, 40, "Our new office is on the second floor, just past the library and the small coffee shop.", OURS),
    Utterance("tts-15", "en-gb-scotland", 150, 50, "He asked whether anyone had seen his keys, but nobody in the room could remember.", OURS),
    Utterance("tts-16", "en-us+f4", 165, 55, "The weather will stay cold and windy until the weekend, with some snow in the hills.", OURS),
    Utterance("tts-17", "en-gb+m4", 160, 45, "Measure the flour carefully, mix it with the butter, and bake the bread for forty minutes.", OURS),
    Utterance("tts-18", "en-us", 180, 50, "A good map, a warm coat and a little patience will get you through most journeys.", OURS),
    Utterance("tts-19", "en-gb-x-rp+f3", 155, 60, "The meeting was moved to Thursday afternoon because half of the team was travelling.", OURS),
    Utterance("tts-20", "en-us-nyc", 155, 50, "Children played by the river while their parents packed the baskets for the long walk home.", OURS),
    Utterance("tts-21", "en-us+m3", 160, 45, "Speech recognition works best when the speaker is close to the microphone and the room is quiet.", OURS),
    Utterance("tts-22", "en-gb", 150, 50, "The museum will be closed on Monday for repairs to the roof and the main staircase.", OURS),
    Utterance("tts-23", "en-us+f3", 170, 65, "I would like a cup of tea, two slices of toast, and a glass of orange juice, please.", OURS),
    Utterance("tts-24", "en-gb-x-rp", 145, 40, "After the storm, the fishermen mended their nets and waited for the sea to calm down.", OURS),
    Utterance("tts-25", "en-us", 165, 55, "Remember to water the plants on the balcony while we are away for the summer.", OURS),
    Utterance("tts-26", "en-gb+f2", 160, 55, "The old bridge across the valley was built of stone more than three hundred years ago.", OURS),
    Utterance("tts-27", "en-us+m4", 150, 40, "Every evening the lighthouse keeper climbed the narrow stairs to light the great lamp, and every morning he put it out again.", OURS),
    Utterance("tts-28", "en-gb-x-rp+m3", 165, 50, "Could you send me the report by the end of the day, so that I can read it tonight?", OURS),
    Utterance("tts-29", "en-us+f4", 155, 60, "The garden was full of roses, and the air smelled of summer and cut grass.", OURS),
    Utterance("tts-30", "en-gb", 170, 45, "When the music stopped, everyone turned to look at the door, where a stranger stood waiting in the rain.", OURS),
    Utterance("tts-31", "en-us", 160, 50, "The doctor told him to rest for a week, drink plenty of water, and avoid heavy lifting.", OURS),
    Utterance("tts-32", "en-gb-x-rp+f2", 160, 60, "Scientists measured the temperature of the lake every hour for seven days in a row.", OURS),
    Utterance("tts-33", "en-us+m2", 175, 45, "Good morning. This is a short test of the recording system.", OURS),
    Utterance("tts-34", "en-gb-x-rp", 165, 50, "Mr. Darcy soon drew the attention of the room by his fine, tall person, handsome features, noble mien, and the report which was in general circulation within five minutes after his entrance, of his having ten thousand a year.", P_AND_P),
    Utterance("tts-35", "en-us+f2", 160, 55, "The library opens at nine in the morning and closes at six in the evening, except on Sundays, when it opens at noon and closes early, so plan your visit with care.", OURS),
    Utterance("tts-36", "en-us+f4", 165, 55, "Thank you for waiting; your call is important to us, and someone will be with you shortly.", OURS),
    Utterance("tts-37", "en-us", 155, 50, "The committee listened to every proposal, asked a great many questions, and finally agreed to build the new school on the field beside the church, where the children could walk to class safely.", OURS),
    Utterance("tts-38", "en-gb-scotland", 155, 50, "On the first day of the journey they crossed the mountains, on the second they followed the river to the sea, and on the third they rested in a small town by the harbour.", OURS),
    Utterance("tts-39", "en-us+m4", 165, 40, "Sound travels faster through water than through air, which is why whales can hear one another across great distances in the open ocean.", OURS),
]
# fmt: on

EMMA = "Jane Austen, Emma (public domain)"
PERSUASION = "Jane Austen, Persuasion (public domain)"
GREAT_EXP = "Charles Dickens, Great Expectations (public domain)"
CAROL = "Charles Dickens, A Christmas Carol (public domain)"
TWO_CITIES = "Charles Dickens, A Tale of Two Cities (public domain)"

# The calibration / training set: speech the compression work may learn from, so none of it is
# a test sentence. Wider than the test set on purpose: voices it never uses (en-029,
# en-gb-x-gbclan, en-gb-x-gbcwmd; variants f1, f5, m1, m5..m7), speeds 140-185 wpm, pitches
# 35-75. Texts: Austen's Emma and Persuasion, Dickens, and sentences written for voxmeter of
# the test set's kinds (everyday prose, commands, card calls, numbers, dates, names), mostly
# short, so that 60 clips make about four minutes. Hard voices appear rarely: in a probe
# (tiny.en, four sentences each) en-us with the f1, f2 or f5 variant, en-029, en-gb-x-gbclan and
# en-gb-x-gbcwmd lost a fifth to a third of the words, en-gb with the same variants under a
# tenth, like the test set's tts clips.
# fmt: off
CALIB_UTTERANCES = [
    Utterance("calib-01", "en-gb+m1", 150, 50, "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition.", EMMA),
    Utterance("calib-02", "en-gb+f1", 160, 65, "The real evils, indeed, of Emma's situation were the power of having rather too much her own way.", EMMA),
    Utterance("calib-03", "en-us+m6", 150, 45, "Sorrow came, a gentle sorrow, but not at all in the shape of any disagreeable consciousness.", EMMA),
    Utterance("calib-04", "en-gb+f5", 165, 70, "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement, never took up any book but the Baronetage.", PERSUASION),
    Utterance("calib-05", "en-us+m1", 150, 45, "Vanity was the beginning and the end of Sir Walter Elliot's character.", PERSUASION),
    Utterance("calib-06", "en-gb+m7", 160, 45, "She had been forced into prudence in her youth, she learned romance as she grew older.", PERSUASION),
    Utterance("calib-07", "en-gb-x-rp", 150, 50, "So, I called myself Pip, and came to be called Pip.", GREAT_EXP),
    Utterance("calib-08", "en-us+m1", 150, 40, "Marley was dead: to begin with. There is no doubt whatever about that.", CAROL),
    Utterance("calib-09", "en-gb-x-rp", 165, 50, "It was the best of times, it was the worst of times.", TWO_CITIES),
    Utterance("calib-10", "en-us+m1", 150, 45, "Ours was the marsh country, down by the river.", GREAT_EXP),
    Utterance("calib-11", "en-us+m5", 170, 50, "The bakery on the corner sells fresh rolls.", OURS),
    Utterance("calib-12", "en-gb+f5", 150, 75, "Please leave your umbrella by the door.", OURS),
    Utterance("calib-13", "en-gb-x-rp+m1", 165, 40, "The bus was late again, so we walked.", OURS),
    Utterance("calib-14", "en-gb-scotland+m5", 160, 50, "My sister teaches chemistry at the high school.", OURS),
    Utterance("calib-15", "en-us+m1", 155, 45, "We planted tomatoes, beans and sunflowers.", OURS),
    Utterance("calib-16", "en-gb-x-rp+m6", 185, 50, "The printer on the third floor has run out of paper.", OURS),
    Utterance("calib-17", "en-us-nyc", 160, 50, "Could you tell me where the nearest post office is?", OURS),
    Utterance("calib-18", "en-us+m6", 150, 45, "He fixed the broken chain with a bit of oil.", OURS),
    Utterance("calib-19", "en-us+f4", 165, 50, "The children built a snowman in the garden.", OURS),
    Utterance("calib-20", "en-gb", 140, 40, "Our flight was cancelled.", OURS),
    Utterance("calib-21", "en-us+m5", 175, 45, "The soup needs more salt and a handful of fresh parsley.", OURS),
    Utterance("calib-22", "en-gb-x-rp", 160, 60, "Nobody expected the quiet student to win the chess tournament.", OURS),
    Utterance("calib-23", "en-029", 145, 50, "The river flooded the lower fields twice this spring.", OURS),
    Utterance("calib-24", "en-gb+f1", 170, 60, "She keeps her grandmother's letters in a wooden box.", OURS),
    Utterance("calib-25", "en-us+m6", 155, 40, "The lecture on volcanoes was very popular.", OURS),
    Utterance("calib-26", "en-gb+m7", 160, 55, "Turn the oven down; the pie is browning too quickly.", OURS),
    Utterance("calib-27", "en-gb-x-gbclan", 145, 45, "A fox crossed the lane just as the sun came up.", OURS),
    Utterance("calib-28", "en-gb+m7", 165, 50, "The shop assistant wrapped the present in newspaper.", OURS),
    Utterance("calib-29", "en-us", 150, 45, "Turn left at the next junction.", OURS),
    Utterance("calib-30", "en-gb-x-rp+m5", 175, 55, "Set an alarm for half past six tomorrow morning.", OURS),
    Utterance("calib-31", "en-us+f4", 185, 55, "Stop the music and read me my messages.", OURS),
    Utterance("calib-32", "en-gb+m1", 150, 40, "Go back five meters and turn right.", OURS),
    Utterance("calib-33", "en-us+m1", 160, 35, "Open the garage door.", OURS),
    Utterance("calib-34", "en-gb+f5", 165, 65, "Call Doctor Patel and tell her I will be ten minutes late.", OURS),
    Utterance("calib-35", "en-us+m6", 155, 45, "Move the red block onto the blue one.", OURS),
    Utterance("calib-36", "en-us+m5", 150, 50, "Dim the lights in the living room to forty percent.", OURS),
    Utterance("calib-37", "en-gb-scotland+m5", 175, 45, "Play the next song, and make it a little louder.", OURS),
    Utterance("calib-38", "en-gb", 150, 50, "Queen of diamonds, jack of spades, three of hearts.", OURS),
    Utterance("calib-39", "en-gb-x-rp+m1", 150, 50, "Two of spades and the king of clubs.", OURS),
    Utterance("calib-40", "en-us-nyc", 160, 50, "Cancel my two o'clock appointment.", OURS),
    Utterance("calib-41", "en-gb-x-gbcwmd+m1", 155, 45, "Close the curtains and switch on the fan.", OURS),
    Utterance("calib-42", "en-us-nyc+m5", 160, 60, "The meeting is on Tuesday the fourteenth of March.", OURS),
    Utterance("calib-43", "en-gb+m7", 170, 50, "The train to Edinburgh leaves at seven forty-five.", OURS),
    Utterance("calib-44", "en-gb-x-rp+m1", 155, 55, "In nineteen sixty-nine, two astronauts walked on the moon.", OURS),
    Utterance("calib-45", "en-gb+f1", 165, 60, "The total comes to thirty-two pounds and fifty pence.", OURS),
    Utterance("calib-46", "en-us+m6", 145, 45, "Room four hundred and twelve is at the end of the corridor.", OURS),
    Utterance("calib-47", "en-gb-x-rp+m1", 160, 50, "Margaret, Oliver and Priya will present the results in June.", OURS),
    Utterance("calib-48", "en-gb-x-gbcwmd+m5", 150, 40, "The temperature dropped to minus eight degrees overnight.", OURS),
    Utterance("calib-49", "en-gb-x-rp", 160, 50, "Add three cups of water and two teaspoons of sugar.", OURS),
    Utterance("calib-50", "en-gb", 155, 60, "The library holds twelve thousand books and forty computers.", OURS),
    Utterance("calib-51", "en-us-nyc", 165, 40, "Professor Tanaka moved to Toronto in two thousand and eleven.", OURS),
    Utterance("calib-52", "en-gb+m1", 150, 55, "Please reply before Friday the twenty-first of November.", OURS),
    Utterance("calib-53", "en-us+m5", 160, 45, "The marathon starts at eight in the morning.", OURS),
    Utterance("calib-54", "en-gb-x-rp+f4", 155, 55, "Flight two seventy-one is now boarding at gate fourteen.", OURS),
    Utterance("calib-55", "en-us+m5", 155, 45, "The bill for March was eighty-four dollars and ten cents.", OURS),
    Utterance("calib-56", "en-us+m6", 150, 40, "The hotel is at twenty-seven Baker Street, near the park.", OURS),
    Utterance("calib-57", "en-gb+f5", 150, 55, "Thomas Hardy was born in Dorset in eighteen forty.", OURS),
    Utterance("calib-58", "en-gb-x-gbclan+m1", 175, 40, "Wake me at seven unless it is raining.", OURS),
    Utterance("calib-59", "en-gb+m5", 160, 50, "Charles Babbage and Ada Lovelace both lived in London.", OURS),
    Utterance("calib-60", "en-us+m7", 165, 45, "Pause the video for a moment.", OURS),
]
# fmt: on
# Clips of the calibration set may be as short as a spoken command.
CALIB_MIN_S = 1.0

# Noise variants: the LibriVox and card clips, plus synthesized clips in six
# different voices, the shortest ones, as noisy audio costs the most bytes per second.
NOISY_TTS = ("tts-03", "tts-10", "tts-13", "tts-26", "tts-28", "tts-33")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default: %(default)s)")
    args = ap.parse_args()
    if not PS_DATA.is_dir():
        sys.exit(f"{PS_DATA}: not found; install it with: apt-get install pocketsphinx-testdata")
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("espeak-ng: not found; install it with: apt-get install espeak-ng")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.flac"):
        old.unlink()  # a clip dropped from the lists must not linger in the package
    real = real_clips(out)
    clean = real + tts_clips(out, espeak, UTTERANCES)
    noisy = noise_variants(out, clean)
    longform = longform_recordings(out, real)
    calib = tts_clips(out, espeak, CALIB_UTTERANCES, min_s=CALIB_MIN_S)
    write_manifest(Dataset("default", clean, out), out / "default.jsonl")
    write_manifest(Dataset("noisy", noisy, out), out / "noisy.jsonl")
    write_manifest(Dataset("longform", longform, out), out / "longform.jsonl")
    write_manifest(Dataset("calib", calib, out), out / "calib.jsonl")
    version = espeak_version(espeak)
    sources = sources_md(clean, noisy, version, longform_md(longform, real), calib_md(calib))
    (out / "SOURCES.md").write_text(sources)
    # recorded Drascula lines in place of some espeak-ng clips (needs the real-test set built)
    print(bundle(out, default_real_test()))
    total = sum(c.duration_s or 0.0 for c in clean)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    long_size = sum(f.stat().st_size for f in out.glob("longform-*.flac"))
    long_s = sum(c.duration_s or 0.0 for c in longform)
    print(f"default: {len(clean)} clips, {total:.1f} s; noisy: {len(noisy)} clips")
    print(f"longform: {len(longform)} recordings, {long_s:.1f} s, {long_size / 1e6:.2f} MB")
    calib_s = sum(c.duration_s or 0.0 for c in calib)
    calib_size = sum(f.stat().st_size for f in out.glob("calib-*.flac"))
    print(f"calib: {len(calib)} clips, {calib_s:.1f} s, {calib_size / 1e6:.2f} MB")
    print(f"{out}: {size / 1e6:.2f} MB")
    return 0


def real_clips(out: Path) -> list[Clip]:
    clips = []
    for line in (PS_DATA / "librivox" / "transcription").read_text().splitlines():
        text, name = parse_sphinx_transcription(line)
        clips.append(
            copy_real(
                out,
                f"librivox-{name.rsplit('-', 1)[1]}",
                PS_DATA / "librivox" / f"{name}.wav",
                text,
                LIBRIVOX_SOURCE,
                LIBRIVOX_LICENCE,
            )
        )
    for line in (PS_DATA / "cards" / "cards.transcription").read_text().splitlines():
        text, name = parse_sphinx_transcription(line)
        clips.append(
            copy_real(
                out,
                f"cards-{name}",
                PS_DATA / "cards" / f"{name}.wav",
                text,
                "CMU Sphinx test data, card-game commands, via Debian "
                "pocketsphinx-testdata (test/data/cards)",
                CMU_LICENCE,
            )
        )
    raw = np.fromfile(PS_DATA / "goforward.raw", dtype="<i2")  # headerless 16 kHz mono PCM
    clips.append(
        write_clip(
            out,
            "goforward",
            raw,
            "go forward ten meters",
            "CMU Sphinx test data, via Debian pocketsphinx-testdata (test/data/goforward.raw)",
            CMU_LICENCE,
        )
    )
    return clips


def parse_sphinx_transcription(line: str) -> tuple[str, str]:
    """`<s> words </s> (file-id)` -> ("words", "file-id")."""
    body, _, rest = line.rpartition("(")
    words = body.replace("<s>", " ").replace("</s>", " ").split()
    return " ".join(words), rest.rstrip().rstrip(")")


def copy_real(out: Path, clip_id: str, wav: Path, text: str, source: str, lic: str) -> Clip:
    x, rate = sf.read(wav, dtype="int16")
    if rate != RATE or x.ndim != 1:
        raise SystemExit(f"{wav}: expected 16 kHz mono, found {rate} Hz, shape {x.shape}")
    return write_clip(out, clip_id, x, text, source, lic)


def write_clip(
    out: Path,
    clip_id: str,
    pcm: np.ndarray,
    text: str,
    source: str,
    lic: str,
    extra: dict | None = None,
) -> Clip:
    path = out / f"{clip_id}.flac"
    sf.write(path, pcm, RATE, subtype="PCM_16", format="FLAC", compression_level=FLAC_LEVEL)
    return Clip(
        id=clip_id,
        audio=path,
        text=text,
        source=source,
        licence=lic,
        duration_s=round(len(pcm) / RATE, 3),
        extra=extra or {},
    )


def tts_clips(
    out: Path, espeak: str, utterances: list[Utterance], min_s: float = 3.0, max_s: float = 20.0
) -> list[Clip]:
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for u in utterances:
            wav = Path(tmp) / f"{u.id}.wav"
            argv = [espeak, "-v", u.voice, "-s", str(u.speed), "-p", str(u.pitch)]
            subprocess.run([*argv, "-g", str(WORD_GAP), "-w", str(wav), u.text], check=True)
            x, rate = sf.read(wav, dtype="float64")
            y = soxr.resample(x, rate, RATE, quality="HQ")
            pcm = to_pcm16(level(y))
            dur = len(pcm) / RATE
            if not (min_s <= dur <= max_s):
                raise SystemExit(
                    f"{u.id}: {dur:.1f} s is outside {min_s:g}-{max_s:g} s; edit the text"
                )
            source = (
                f"espeak-ng {u.voice}, {u.speed} wpm, pitch {u.pitch}, word gap "
                f"{WORD_GAP * 10} ms; text: {u.origin}"
            )
            clips.append(
                write_clip(
                    out,
                    u.id,
                    pcm,
                    u.text,
                    source,
                    TTS_LICENCE,
                    {
                        "voice": u.voice,
                        "speed_wpm": u.speed,
                        "pitch": u.pitch,
                        "word_gap_ms": WORD_GAP * 10,
                    },
                )
            )
    return clips


def level(y: np.ndarray) -> np.ndarray:
    """Scale to TARGET_RMS, unless that would push the peak past MAX_PEAK."""
    rms = float(np.sqrt(np.mean(y**2)))
    gain = min(TARGET_RMS / rms, MAX_PEAK / float(np.max(np.abs(y))))
    return y * gain


def to_pcm16(y: np.ndarray) -> np.ndarray:
    return np.clip(np.round(y * 32767.0), -32768, 32767).astype(np.int16)


def noise_variants(out: Path, clean: list[Clip]) -> list[Clip]:
    chosen = [c for c in clean if c.id.startswith(("librivox-", "cards-")) or c.id in NOISY_TTS]
    clips = []
    for k, c in enumerate(chosen):
        x = sf.read(c.audio, dtype="int16")[0].astype(np.float64) / 32768.0
        kind = "white" if k % 2 == 0 else "pink"
        for snr in SNRS_DB:
            seed = [SEED, zlib.crc32(c.id.encode()), snr]
            noisy, gain = mix_at_snr(x, make_noise(kind, len(x), seed), snr)
            clip_id = f"{c.id}-snr{snr:02d}"
            extra = {
                "clean_id": c.id,
                "snr_db": snr,
                "noise": kind,
                "noise_seed": seed,
                "gain": round(gain, 6),
            }
            clips.append(
                write_clip(
                    out,
                    clip_id,
                    to_pcm16(noisy),
                    c.text,
                    f"{c.source}; plus {kind} noise at {snr} dB SNR",
                    c.licence,
                    extra,
                )
            )
    return clips


def make_noise(kind: str, n: int, seed: list[int]) -> np.ndarray:
    """Unit-power white noise, or pink-ish noise (power falling as 1/f above 50 Hz)."""
    w = np.random.default_rng(seed).standard_normal(n)
    if kind == "pink":
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n, 1.0 / RATE)
        spec /= np.sqrt(np.maximum(f, 50.0))  # 1/f power; the floor keeps DC from blowing up
        spec[0] = 0.0
        w = np.fft.irfft(spec, n)
    return w / np.sqrt(np.mean(w**2))


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, float]:
    """x + noise scaled so 10 log10(P_x / P_noise) = snr_db, P over the whole clip.

    If the sum would clip, the whole mix is scaled down by `gain` (recorded in the manifest),
    which leaves the SNR unchanged.
    """
    p_x = float(np.mean(x**2))
    y = x + noise * np.sqrt(p_x / 10 ** (snr_db / 10))
    gain = min(1.0, 0.98 / float(np.max(np.abs(y))))
    return y * gain, gain


def espeak_version(espeak: str) -> str:
    """e.g. "espeak-ng 1.51 (Debian package 1.51+dfsg-10+deb12u2)": output depends on it."""
    out = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True)
    version = out.stdout.split("Data at")[0].split(":")[-1].strip()
    # Without dpkg the version number alone still identifies the synthesizer.
    package = ""
    dpkg = shutil.which("dpkg-query")
    if dpkg:
        q = [dpkg, "-W", "-f", "${Version}", "espeak-ng"]
        deb = subprocess.run(q, capture_output=True, text=True, check=False)
        package = f" (Debian package {deb.stdout})" if deb.stdout else ""
    return f"espeak-ng {version}{package}"


def calib_md(calib: list[Clip]) -> str:
    total = sum(c.duration_s or 0.0 for c in calib)
    size = sum(c.audio.stat().st_size for c in calib)
    voices = sorted({c.extra["voice"] for c in calib})
    speeds = [c.extra["speed_wpm"] for c in calib]
    pitches = [c.extra["pitch"] for c in calib]
    rows = "\n".join(f"| {c.id} | {c.duration_s:.2f} | {c.source} | {c.licence} |" for c in calib)
    return f"""
## Calibration / training set

**Not a test set: never score it or report a result on it.** `calib.jsonl` is the speech the
compression work may learn from (importance scores for pruning, sensitivity probes,
distillation, LoRA recovery), so that no test clip is ever trained on. A transcription run
over it is only a check that the synthesized speech is intelligible.

- `calib.jsonl`: {len(calib)} clips, {total:.1f} s ({total / 60:.2f} min), {size / 1e6:.2f} MB,
  all synthesized offline with espeak-ng exactly as the `tts-*` clips above (same resampling,
  level and word gap), in {len(voices)} voice/variant combinations
  ({", ".join(voices)}), {min(speeds)}-{max(speeds)} wpm, pitch {min(pitches)}-{max(pitches)}.
  Each line records `voice`, `speed_wpm`, `pitch` and `word_gap_ms`.
- Texts: lines from Jane Austen's *Emma* and *Persuasion* and Charles Dickens's *Great
  Expectations*, *A Christmas Carol* and *A Tale of Two Cities* (public domain;
  quoted from the novels, an edition may differ in punctuation; several lines are the
  opening words of a longer sentence), and sentences written for voxmeter: everyday prose,
  commands, card calls, numbers, dates and names. The reference is exactly the text given to
  espeak-ng.
- Disjoint from the test sets: no calib clip is a copy of a `default`, `noisy` or `longform`
  file, and no calib text shares a sentence, or any run of six words (after Whisper's English
  normalizer), with any of their references (`tests/test_calib_data.py`).
- The audio is voxmeter's own output, under the project's MIT licence.

| id | seconds | source | licence |
|---|---|---|---|
{rows}
"""


def sources_md(
    clean: list[Clip], noisy: list[Clip], espeak_ver: str, longform: str, calib: str
) -> str:
    total = sum(c.duration_s or 0.0 for c in clean)
    rows = "\n".join(f"| {c.id} | {c.duration_s:.2f} | {c.source} | {c.licence} |" for c in clean)
    noisy_ids = sorted({c.extra["clean_id"] for c in noisy})
    return f"""# Bundled evaluation and calibration sets

Made by `scripts/make_default_set.py` (do not edit by hand). All audio is 16 kHz mono 16-bit
FLAC.

- `default.jsonl`: {len(clean)} clean clips, {total:.1f} s ({total / 60:.2f} min) of English
  speech with reference transcripts.
- `noisy.jsonl`: {len(noisy)} clips: {len(noisy_ids)} of the clean clips with noise mixed in at
  {", ".join(str(s) for s in SNRS_DB)} dB SNR. SNR is computed on the power of the whole clean
  clip; the noise is white or pink-ish (power falling as 1/f above 50 Hz), alternating by clip,
  drawn from a numpy generator seeded with `[{SEED}, crc32(clean_id), snr_db]`. Each line records `clean_id`, `snr_db`, `noise`,
  `noise_seed` and `gain` (a whole-mix scale applied only if the mix would clip; 1.0 otherwise).

## Sources and licences

- **LibriVox clips** (`librivox-*`): five utterances of a LibriVox reading of Jane Austen's
  *Sense and Sensibility*, chapter 1, shipped in Debian's `pocketsphinx-testdata`
  (`/usr/share/pocketsphinx/test/data/librivox`). LibriVox recordings are in the public domain,
  and so is the novel. The package's copyright file (`/usr/share/doc/pocketsphinx-testdata/
  copyright`) puts all files under CMU's BSD-2-Clause licence. References are the package's
  `transcription` file without `<s>`, `</s>` and the id; they are lower case and follow what
  the reader said (e.g. "a more a amiable woman"), not the printed book.
- **Card commands and "go forward"** (`cards-*`, `goforward`): CMU Sphinx test recordings from
  the same package (`cards/*.wav` with `cards.transcription`; `goforward.raw`, headerless 16-bit
  16 kHz PCM), BSD-2-Clause per that copyright file.
- **Synthesized clips** (`tts-*`): made offline with {espeak_ver}, voices, speeds and pitches
  as listed below; resampled from 22.05 kHz to 16 kHz with soxr (HQ) and scaled to about
  -24 dBFS RMS. The texts are lines from Jane Austen's *Pride and Prejudice* and *Sense and
  Sensibility* (public domain; quoted from the novels, an edition may differ in punctuation)
  or sentences written for voxmeter. The reference is exactly the text given to espeak-ng.
  The audio is voxmeter's own output, under the project's MIT licence.

| id | seconds | source | licence |
|---|---|---|---|
{rows}
{longform}{calib}
## Rebuild

    apt-get install pocketsphinx-testdata espeak-ng
    python scripts/make_default_set.py   # in the voxmeter venv (numpy, soundfile, soxr)

The script is deterministic: with the same espeak-ng version it writes the same samples.
A different espeak-ng version may pronounce or time words differently; the references stay
valid because they are the input text.
"""


if __name__ == "__main__":
    raise SystemExit(main())
