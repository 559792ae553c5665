"""Reader for CTranslate2's model.bin (binary versions 3-6), in numpy.

Layout, as written by ctranslate2's Python converter and read by its C++ loader
(`models/model.cc`), all little-endian:

    u32 binary_version
    str spec_name, u32 spec_revision                  (version >= 2)
    u32 n_variables, then per variable:
        str name, u8 rank, u32 dims[rank],
        u8 dtype, u32 n_bytes, bytes data             (version >= 4)
    u32 n_aliases, then per alias: str alias, str target   (version >= 3)

where `str` is a u16 length followed by that many bytes, NUL-terminated. We write this by hand
because ctranslate2 exposes no Python API that returns a model's tensors.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from voxmeter.errors import ModelError

# ctranslate2::DataType enum order.
_DTYPES: dict[int, str] = {
    0: "float32",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "float16",
    5: "bfloat16",
}


@dataclass
class Ct2Model:
    path: Path
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    source_dtypes: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        name = self.aliases.get(name, name)
        try:
            return self.variables[name]
        except KeyError:
            raise ModelError(f"{self.path}: variable {name!r} not found in model.bin") from None

    def shaped(self, name: str, rank: int) -> np.ndarray:
        """A variable that must have `rank` dimensions (a corrupt file may say otherwise)."""
        v = self.get(name)
        if v.ndim != rank:
            raise ModelError(f"{self.path}: {name} has shape {list(v.shape)}, expected rank {rank}")
        return v

    def scalar(self, name: str) -> int:
        v = self.get(name)
        if v.size != 1:
            raise ModelError(f"{self.path}: {name} holds {v.size} values, expected one")
        return int(v.reshape(-1)[0])


class _Reader:
    def __init__(self, f: BinaryIO, path: Path, size: int) -> None:
        self.f = f
        self.path = path
        self.size = size

    def take(self, n: int) -> bytes:
        left = self.size - self.f.tell()
        if n > left:  # checked first: a corrupt count must not allocate gigabytes to find out
            raise ModelError(
                f"{self.path}: truncated or corrupt model.bin (wanted {n} more bytes, {left} left)"
            )
        b = self.f.read(n)
        if len(b) != n:
            raise ModelError(f"{self.path}: truncated model.bin (wanted {n} more bytes)")
        return b

    def u(self, fmt: str) -> int:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def string(self) -> str:
        n = self.u("H")
        raw = self.take(n)
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{self.path}: corrupt model.bin (undecodable name)") from None


def _to_array(raw: bytes, dtype: str, shape: list[int], path: Path, name: str) -> np.ndarray:
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    expected = math.prod(shape)  # Python ints: a corrupt shape cannot overflow
    if len(raw) != expected * itemsize:
        raise ModelError(
            f"{path}: corrupt model.bin ({name}: {len(raw)} bytes for shape {shape} of {dtype})"
        )
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        arr = bits.view(np.float32)
    else:
        arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    return arr.reshape(shape) if shape else arr.reshape(())


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Read every variable of a CTranslate2 model.bin (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        with open(path, "rb") as f:
            return _read(f, path)
    except OSError as e:
        raise ModelError(f"{path}: cannot be read ({e.strerror or e})") from None


def _read(f: BinaryIO, path: Path) -> Ct2Model:
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise ModelError(f"{path}: model file is empty")
    r = _Reader(f, path, size)
    version = r.u("I")
    if not 1 <= version <= 6:
        raise ModelError(f"{path}: not a CTranslate2 model.bin (binary version {version})")
    spec, revision = "", 1
    if version >= 2:
        spec = r.string()
        revision = r.u("I")
    if version < 4:
        raise ModelError(f"{path}: CTranslate2 binary version {version} is too old (need 4-6)")
    n_vars = r.u("I")
    if n_vars > 100_000:
        raise ModelError(f"{path}: corrupt model.bin ({n_vars} variables)")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(n_vars):
        name = r.string()
        rank = r.u("B")
        shape = [r.u("I") for _ in range(rank)]
        type_id = r.u("B")
        n_bytes = r.u("I")
        dtype = _DTYPES.get(type_id)
        if dtype is None:
            raise ModelError(f"{path}: unsupported dtype id {type_id} for {name}")
        variables[name] = _to_array(r.take(n_bytes), dtype, shape, path, name)
        dtypes[name] = dtype
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(r.u("I")):
            alias = r.string()
            aliases[alias] = r.string()
    return Ct2Model(path, version, spec, revision, variables, aliases, dtypes)


def dequantize(model: Ct2Model, name: str) -> np.ndarray:
    """A weight as float32, undoing CTranslate2's int8/int16 quantization when present.

    CTranslate2 stores quantized weights as round(w * scale) with one scale per output row
    (`<name>_scale`), so w = q / scale.
    """
    w = model.get(name)
    scale_name = name + "_scale"
    if w.dtype in (np.int8, np.int16) and scale_name in model.variables:
        scale = model.variables[scale_name].astype(np.float32)
        scale = scale.reshape((-1,) + (1,) * (w.ndim - 1)) if scale.ndim else scale
        return w.astype(np.float32) / scale
    return w.astype(np.float32)
