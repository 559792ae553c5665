"""RunSpec: the frozen description of one configuration, and its stable hash.

A spec's hash keys its results in the store, so a finished spec is skipped on re-run and a
killed sweep resumes. The hash covers every field that changes what is measured (model, engine,
data, axes, compression, device, threads, batch size, seed) but not how often it is measured
(`repeats`): adding repeats to a finished spec measures the missing ones only.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from voxmeter.errors import SpecError

FULL_FRAMES = 3000  # Whisper's 30 s window in 10 ms mel frames
ENGINES = ("hf", "ct2")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PADS = ("silence", "none")
POOLS = ("stride", "avg")
MAX_SEED = 2**32 - 1  # numpy seeds (SeedSequence, RandomState) must be in [0, 2**32 - 1]


def is_cuda(device: str) -> bool:
    """Whether a torch device string names a CUDA device ("cuda" or "cuda:N")."""
    return device == "cuda" or device.startswith("cuda:")


def check_device(device: str, what: str = "device") -> str:
    """`device` if it is cpu, cuda or cuda:N (N a non-negative integer); else a SpecError."""
    if device in ("cpu", "cuda"):
        return device
    index = device.removeprefix("cuda:") if is_cuda(device) else ""
    if not (index.isdigit() and index.isascii()):
        raise SpecError(f"{what}: expected cpu, cuda or cuda:N, got {device!r}")
    return device


@dataclass(frozen=True)
class AxisSettings:
    """The paper's compute axes (xT, xV) plus precision; xN is `RunSpec.model`.

    frames: mel frames the encoder runs on: an even int in [2, 3000], or "fit" (each clip's
        length rounded up to `fit_step_s`).
    pad: what the decoder cross-attends to past the computed positions when frames < 3000:
        "silence" (cached encoder states of silence fill the remaining positions) or "none"
        (only the computed positions, like whisper.cpp's audio_ctx).
    stride: xV factor k; encoder states are subsampled by k before cross-attention.
    pool: how xV subsamples: "stride" (keep every k-th state) or "avg" (average pool of k).
    precision: fp32, bf16, fp16 (GPU), int8.
    """

    frames: int | str = FULL_FRAMES
    fit_step_s: float = 1.0
    pad: str = "silence"
    stride: int = 1
    pool: str = "stride"
    precision: str = "fp32"

    def validate(self) -> None:
        if isinstance(self.frames, str):
            if self.frames != "fit":
                raise SpecError(f"frames: expected an even integer or 'fit', got {self.frames!r}")
        elif not isinstance(self.frames, int) or isinstance(self.frames, bool):
            raise SpecError(f"frames: expected an even integer or 'fit', got {self.frames!r}")
        elif not (2 <= self.frames <= FULL_FRAMES) or self.frames % 2:
            raise SpecError(f"frames: must be even and in [2, {FULL_FRAMES}], got {self.frames}")
        step = self.fit_step_s
        if isinstance(step, bool) or not isinstance(step, int | float) or not 0 < step < math.inf:
            raise SpecError(f"fit_step_s: must be a positive finite number, got {step!r}")
        if self.pad not in PADS:
            raise SpecError(f"pad: expected one of {PADS}, got {self.pad!r}")
        if not isinstance(self.stride, int) or isinstance(self.stride, bool) or self.stride < 1:
            raise SpecError(f"stride: must be an integer >= 1, got {self.stride!r}")
        if self.pool not in POOLS:
            raise SpecError(f"pool: expected one of {POOLS}, got {self.pool!r}")
        if self.precision not in PRECISIONS:
            raise SpecError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")

    @property
    def is_full(self) -> bool:
        return self.frames == FULL_FRAMES and self.stride == 1


@dataclass(frozen=True)
class CompressionSettings:
    """Compression applied after loading (filled in by the compression issue).

    quant: "none" or a scheme name ("dynamic-int8" is what precision=int8 uses on CPU).
    prune_heads / prune_ffn: fraction of attention heads / FFN neurons removed by importance.
    lowrank_rank: rank of factorised linear layers (0 = off).
    lora: name of a LoRA adapter directory ("" = none).
    """

    quant: str = "none"
    prune_heads: float = 0.0
    prune_ffn: float = 0.0
    lowrank_rank: int = 0
    lora: str = ""

    def validate(self) -> None:
        for name in ("prune_heads", "prune_ffn"):
            v = getattr(self, name)
            if not (0.0 <= v < 1.0):
                raise SpecError(f"{name}: must be in [0, 1), got {v}")
        if self.lowrank_rank < 0:
            raise SpecError(f"lowrank_rank: must be >= 0, got {self.lowrank_rank}")

    @property
    def is_none(self) -> bool:
        return self == CompressionSettings()


FRONTENDS = ("audio", "features")
LONGFORMS = ("sequential", "batched")


@dataclass(frozen=True)
class WorkloadSettings:
    """How audio reaches the model: the front end, and the long-form strategy.

    frontend: "audio" pads the audio with zeros before the log-mel (openai-whisper; padded
        frames are the log-mel of silence); "features" pads the normalised log-mel of the clip
        alone with zeros (faster-whisper 1.x). One early end-of-text can move a set's WER by
        points, so this is a measured choice.
    longform: how recordings over 30 s are transcribed. "sequential": Whisper's own algorithm
        (30 s windows, timestamp tokens, seek to the last complete segment); "batched": voice
        activity segments of at most `max_segment_s`, decoded `batch_size` at a time (as
        faster-whisper's BatchedInferencePipeline and the transformers pipeline do).
    condition_on_previous_text: sequential long-form only; prompt each window with the text
        decoded so far (openai-whisper's default; off here, as repetition loops feed on it).
    vad_*: Silero VAD settings for "batched" (faster-whisper's batched defaults).
    Temperature fallback is not implemented: decoding is greedy at temperature 0, and each
    result says so.
    """

    frontend: str = "audio"
    longform: str = "sequential"
    condition_on_previous_text: bool = False
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 160
    vad_speech_pad_ms: int = 400
    max_segment_s: float = 30.0

    def validate(self) -> None:
        if self.frontend not in FRONTENDS:
            raise SpecError(f"frontend: expected one of {FRONTENDS}, got {self.frontend!r}")
        if self.longform not in LONGFORMS:
            raise SpecError(f"longform: expected one of {LONGFORMS}, got {self.longform!r}")
        if not isinstance(self.condition_on_previous_text, bool):
            raise SpecError(
                "condition_on_previous_text: expected true or false, "
                f"got {self.condition_on_previous_text!r}"
            )
        self.vad_settings()  # the VAD's own ranges, checked in one place (audio.vad)

    def vad_settings(self) -> Any:
        """These settings as audio.vad.VadSettings; a bad one is a SpecError naming the
        spec's field (vad_threshold, ...)."""
        from voxmeter.audio.vad import VadSettings

        names = {
            "threshold": "vad_threshold",
            "min_silence_ms": "vad_min_silence_ms",
            "speech_pad_ms": "vad_speech_pad_ms",
            "max_segment_s": "max_segment_s",
        }
        try:
            return VadSettings(
                threshold=self.vad_threshold,
                min_silence_ms=self.vad_min_silence_ms,
                speech_pad_ms=self.vad_speech_pad_ms,
                max_segment_s=self.max_segment_s,
            )
        except SpecError as e:
            field_name, _, rest = str(e).partition(":")
            raise SpecError(f"{names.get(field_name, field_name)}:{rest}") from None

    @property
    def is_default(self) -> bool:
        return self == WorkloadSettings()


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one measured configuration."""

    model: str = "tiny.en"
    engine: str = "hf"
    data: str = "default"
    device: str = "cpu"
    threads: int = 2
    batch_size: int = 1
    seed: int = 0
    max_clips: int = 0  # 0 = every clip of the data set
    axes: AxisSettings = field(default_factory=AxisSettings)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)
    repeats: int = 3  # not part of the hash (see module docstring)
    warmup: int = 1  # not part of the hash

    def validate(self) -> RunSpec:
        if self.engine not in ENGINES:
            raise SpecError(f"engine: expected one of {ENGINES}, got {self.engine!r}")
        if self.device not in DEVICES:
            raise SpecError(f"device: expected one of {DEVICES}, got {self.device!r}")
        if self.threads < 1:
            raise SpecError(f"threads: must be >= 1, got {self.threads}")
        if self.batch_size < 1:
            raise SpecError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.repeats < 1:
            raise SpecError(f"repeats: must be >= 1, got {self.repeats}")
        if self.warmup < 0:
            raise SpecError(f"warmup: must be >= 0, got {self.warmup}")
        if self.max_clips < 0:
            raise SpecError(f"max_clips: must be >= 0, got {self.max_clips}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SpecError(f"seed: expected an integer, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise SpecError(f"seed: must be in [0, {MAX_SEED}] (numpy's range), got {self.seed}")
        self.axes.validate()
        self.compression.validate()
        self.workload.validate()
        if self.axes.precision == "fp16" and self.device == "cpu":
            raise SpecError("precision: fp16 needs --device cuda (CPU fp16 matmuls are emulated)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"unknown spec key(s): {', '.join(sorted(unknown))}")
        axes = d.pop("axes", {}) or {}
        comp = d.pop("compression", {}) or {}
        work = d.pop("workload", {}) or {}
        try:
            a = axes if isinstance(axes, AxisSettings) else AxisSettings(**axes)
            c = comp if isinstance(comp, CompressionSettings) else CompressionSettings(**comp)
            w = work if isinstance(work, WorkloadSettings) else WorkloadSettings(**work)
        except TypeError as e:
            raise SpecError(f"spec: {e}") from None
        return cls(axes=a, compression=c, workload=w, **d)

    def hash_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        d.pop("repeats")
        d.pop("warmup")
        if self.workload.is_default:
            # specs that leave the workload at its defaults keep the hash they had before
            # the field existed
            d.pop("workload")
        return d

    @property
    def spec_hash(self) -> str:
        blob = json.dumps(self.hash_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_(self, **changes: Any) -> RunSpec:
        """A copy with top-level or axis/compression fields changed (axis names go to axes)."""
        axis_names = {f.name for f in fields(AxisSettings)}
        comp_names = {f.name for f in fields(CompressionSettings)}
        work_names = {f.name for f in fields(WorkloadSettings)}
        ax = {k: changes.pop(k) for k in list(changes) if k in axis_names}
        co = {k: changes.pop(k) for k in list(changes) if k in comp_names}
        wo = {k: changes.pop(k) for k in list(changes) if k in work_names}
        out = replace(self, **changes)
        if ax:
            out = replace(out, axes=replace(out.axes, **ax))
        if co:
            out = replace(out, compression=replace(out.compression, **co))
        if wo:
            out = replace(out, workload=replace(out.workload, **wo))
        return out

    def label(self) -> str:
        """A short human label, e.g. `tiny.en hf fp32 T=3000 k=1`."""
        a = self.axes
        t = f"T={a.frames}" + (f"/{a.pad}" if a.frames != FULL_FRAMES else "")
        k = f"k={a.stride}" + (f"/{a.pool}" if a.stride > 1 else "")
        s = f"{self.model} {self.engine} {a.precision} {t} {k}"
        if self.device != "cpu":
            s += f" {self.device}"
        if self.batch_size != 1:
            s += f" b={self.batch_size}"
        w = self.workload
        if w.frontend != "audio":
            s += f" fe={w.frontend}"
        if w.longform != "sequential":
            s += f" long={w.longform}"
        if w.condition_on_previous_text:
            s += " +prev"
        if not self.compression.is_none:
            s += " +compressed"
        return s
