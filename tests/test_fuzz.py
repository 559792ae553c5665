"""Property tests: whatever a user hands voxmeter, the answer is a result or a VoxmeterError.

Random JSONL manifests (random keys and values, missing files, random bytes as audio), random
sweep files (random text, and the right sections and keys with values of random types) and
random audio bytes go through the same functions the CLI calls, in-process: load_dataset +
iter_audio, load_sweep + expand, load_audio. A bad clip must come back as an AudioError from
iter_audio (reported and skipped), never raised; anything but a VoxmeterError is a bug.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxmeter.audio.io import LoadedAudio, LongAudio, load_audio
from voxmeter.data.datasets import iter_audio, load_dataset
from voxmeter.errors import AudioError, VoxmeterError
from voxmeter.sweep.grid import expand, load_sweep

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- audio bytes ------------------------------------------------------------------------------
SUFFIXES = (".wav", ".flac", ".ogg", ".raw", ".pcm", ".mp3", ".txt", "")


@st.composite
def wav_bytes(draw: st.DrawFn) -> bytes:
    """A RIFF/WAVE file whose header fields are random: rates, channels, widths, lengths."""
    fmt_tag = draw(st.sampled_from([1, 3, 0, 2, 0xFFFE, draw(st.integers(0, 0xFFFF))]))
    channels = draw(st.sampled_from([1, 2, 0, 3, 255, draw(st.integers(0, 0xFFFF))]))
    rate = draw(
        st.sampled_from([16000, 44100, 8000, 1, 0, 4_000_000, draw(st.integers(0, 2**32 - 1))])
    )
    bits = draw(st.sampled_from([8, 16, 24, 32, 64, 0, 7, draw(st.integers(0, 0xFFFF))]))
    align = max(1, channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    payload = draw(st.binary(max_size=1200))
    declared = draw(st.sampled_from([len(payload), 0, 0xFFFFFFFF, draw(st.integers(0, 2**32 - 1))]))
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", declared) + payload
    riff_len = draw(st.sampled_from([len(body), 0, draw(st.integers(0, 2**32 - 1))]))
    return b"RIFF" + struct.pack("<I", riff_len) + body


@st.composite
def real_audio(draw: st.DrawFn) -> bytes:
    """A genuine file written by libsndfile (any rate, channels, format), possibly cut short."""
    fmt, subtype = draw(
        st.sampled_from(
            [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("WAV", "PCM_U8"), ("FLAC", "PCM_16")]
            + [("OGG", "VORBIS"), ("AIFF", "PCM_24")]
        )
    )
    rate = draw(st.sampled_from([8000, 16000, 22050, 44100, 48000, 96000, 1000, 100, 1]))
    channels = draw(st.integers(1, 3))
    n = draw(st.integers(0, 600) | st.integers(100, 600))
    # libsndfile writes NaN and inf only as floats (its integer encoders assert on them)
    odd = [math.nan, math.inf] if subtype == "FLOAT" else []
    fill = draw(st.sampled_from([0.0, 0.5, 1.5, *odd]))
    x = np.full((n, channels), fill, dtype=np.float32)
    x[::7] = -0.25
    buf = io.BytesIO()
    try:
        sf.write(buf, x, rate, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, ValueError, RuntimeError):
        return b""  # a combination libsndfile will not write: an empty file then
    data = buf.getvalue()
    cut = draw(st.sampled_from([len(data), len(data), len(data) // 2, 44, 12]))
    return data[:cut]


def audio_bytes() -> st.SearchStrategy[bytes]:
    magic = st.sampled_from([b"", b"fLaC", b"OggS", b"RIFF", b"ID3", b"\xff\xfb", b"FORM"])
    tail = st.binary(max_size=1500)
    return st.one_of(real_audio(), wav_bytes(), st.builds(lambda m, t: m + t, magic, tail))


@FUZZ
@given(data=audio_bytes(), suffix=st.sampled_from(SUFFIXES))
def test_random_audio_bytes_load_or_raise_audio_error(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"clip{suffix}"
        path.write_bytes(data)
        try:
            loaded = load_audio(path)
        except AudioError as e:
            assert str(path) in str(e) and "\n" not in str(e)
            return
        x = loaded.samples
        assert x.ndim == 1 and x.size > 0 and x.dtype.name == "float32"
        assert loaded.sample_rate == 16000 and bool(abs(x).max() < math.inf)


# -- manifests --------------------------------------------------------------------------------
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = st.sampled_from(["id", "audio", "text", "source", "licence", "duration_s", "snr_db"])
FILE_NAMES = st.sampled_from(
    ["a.wav", "b.flac", "c.raw"] * 3 + ["missing.wav", "sub", "", "x" * 300, "a\x00.wav", "/"]
)


@st.composite
def manifest_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["record"] * 6 + ["json", "text"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES))
    rec: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        rec["audio"] = draw(FILE_NAMES)
    if draw(st.integers(0, 9)):
        rec["text"] = draw(st.text(max_size=20))
    if draw(st.booleans()):
        rec["id"] = draw(st.text(max_size=6) | st.integers(0, 9))
    for k in draw(st.lists(KEYS | st.text(max_size=5), max_size=3)):
        rec[k] = draw(FILE_NAMES) if k == "audio" and draw(st.booleans()) else draw(JSON_VALUES)
    return json.dumps(rec, ensure_ascii=draw(st.booleans()))


@st.composite
def clean_manifest(draw: st.DrawFn) -> list[str]:
    """Well-formed records only, so the set loads and every clip reaches the audio loader."""
    lines = []
    for i in range(draw(st.integers(1, 4))):
        audio = draw(st.sampled_from(["a.wav", "b.flac", "c.raw"] * 3 + ["x" * 300, "a\x00"]))
        rec = {"id": f"c{i}", "audio": audio, "text": draw(st.text(max_size=10))}
        if draw(st.booleans()):
            rec[draw(st.sampled_from(["source", "licence", "snr_db"]))] = draw(JSON_VALUES)
        lines.append(json.dumps(rec))
    return lines


@FUZZ
@given(
    lines=clean_manifest() | st.lists(manifest_line(), max_size=5),
    files=st.fixed_dictionaries(
        {"a.wav": audio_bytes(), "b.flac": real_audio(), "c.raw": st.binary(max_size=400)}
    ),
    tail=st.sampled_from(["\n"] * 4 + ["\r\n", "", "\n\x00", "\u2028"]),
    raw_prefix=st.sampled_from([b""] * 8 + [b"\xff\xfe", b"\xef\xbb\xbf", b"\x80"]),
)
def test_random_manifests_give_data_or_voxmeter_errors(
    lines: list[str], files: dict[str, bytes], tail: str, raw_prefix: bytes
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for name, data in files.items():
            (root / name).write_bytes(data)
        (root / "sub").mkdir()  # a folder where a clip's file is expected
        m = root / "set.jsonl"
        m.write_bytes(raw_prefix + tail.join(lines).encode("utf-8", "surrogatepass"))
        try:
            ds = load_dataset(str(m))
        except VoxmeterError as e:
            assert "\n" not in str(e)
            return
        for clip, loaded in iter_audio(ds):
            assert isinstance(loaded, LoadedAudio | LongAudio | AudioError), (clip, loaded)
            if isinstance(loaded, AudioError):
                assert "\n" not in str(loaded)


# -- sweep files ------------------------------------------------------------------------------
def toml_value(v: Any) -> str:
    """`v` as a TOML value (inline tables and arrays for nested data)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items())
        return "{" + ", ".join(items) + "}"
    return str(v)  # dates and times: TOML's own literals


def some(*options: Any) -> st.SearchStrategy[Any]:
    """One of `options`, or a short list of them (every axis and list key takes either)."""
    one = st.sampled_from(options)
    return one | st.lists(one, min_size=0, max_size=2)


INTS = st.sampled_from([0, 1, 2, 3, -1, 2**32, 2**63 - 1])
NUMBERS = st.sampled_from([0.0, 0.5, 1, 10, 20.0, -1.0, math.inf, math.nan])
# per section, each known key with values of roughly the right type (often right, sometimes not)
SECTION_KEYS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "sweep": {
        "name": st.text(max_size=8),
        "models": some("tiny.en", "base", "small", "large-v3", "huge", "/", "~", "m" * 300),
        "engines": some("hf", "ct2", "onnx"),
        "data": st.sampled_from(["default", "noisy", "x.jsonl"]),
        "device": some("cpu", "cuda", "cuda:0", "tpu"),
        "repeats": INTS,
        "warmup": INTS,
        "threads": INTS,
        "batch_size": INTS,
        "seed": INTS,
        "max_clips": INTS,
    },
    "axes": {
        "frames": some(3000, "fit", 1000, 1001, 0, 3002, 2, 1.5),
        "pad": some("silence", "none", "zeros"),
        "stride": some(1, 2, 3, 0, 2.0),
        "pool": some("stride", "avg", "max"),
        "precision": some("fp32", "int8", "fp16", "bf16", "int4"),
        "fit_step_s": some(0.5, 1, 0, -1.0, math.inf, math.nan),
    },
    "constraints": {
        "max_wer": NUMBERS,
        "max_rtf": NUMBERS,
        "max_memory_mb": NUMBERS,
        "max_gflops": NUMBERS,
        "minimise": st.sampled_from(["latency", "energy", "memory", "flops", "cost"]),
    },
    "budget": {
        "gflops": NUMBERS,
        "tol": NUMBERS,
        "strides": some(1, 2, 4, 0, -1),
        "frames": some(3000, 1000, 1001, 0),
    },
}
TOML_SCALARS = (
    st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.text(max_size=8)
    | st.dates()
    | st.datetimes()
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=5,
)
KEY_CHARS = "abcdefghijklmnopqrstuvwxyz_"


@st.composite
def sweep_doc(draw: st.DrawFn) -> str:
    """[sweep] (usually) and other sections, known keys with mostly plausible values."""
    names = st.sampled_from([*SECTION_KEYS] * 4 + ["extras"])
    sections = draw(st.lists(names, max_size=3, unique=True))
    if draw(st.integers(0, 9)) and "sweep" not in sections:
        sections.insert(0, "sweep")
    out = []
    for s in sections:
        out.append(f"[{s}]")
        known = SECTION_KEYS.get(s, {})
        for k in draw(st.lists(st.sampled_from([*known] * 4 + ["x"]), max_size=5, unique=True)):
            if k == "x" and draw(st.booleans()):
                k = draw(st.text(KEY_CHARS, min_size=1, max_size=6))
            right = known.get(k, TOML_VALUES)
            value = draw(right) if draw(st.integers(0, 9)) else draw(TOML_VALUES)
            out.append(f"{k} = {toml_value(value)}")
    return "\n".join(out) + "\n"


@FUZZ
@given(text=st.one_of(sweep_doc(), sweep_doc(), st.text(max_size=200)))
def test_random_sweep_files_give_specs_or_spec_errors(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.toml"
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            sweep = load_sweep(p)
            expansion = expand(sweep)
        except VoxmeterError as e:
            assert "\n" not in str(e)
            return
        assert expansion.specs and all(s.validate() is s for s in expansion.specs)
