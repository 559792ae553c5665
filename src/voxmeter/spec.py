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

from voxmeter.errors import ModelError, SpecError

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


QUANT_SCHEMES = (
    "none",
    "int8-dynamic",  # torch.ao dynamic int8, per-channel weights (what precision=int8 runs)
    "int8-dynamic-tensor",  # the same with one weight scale per tensor
    "int8-weight",  # int8 weights dequantized at the matmul, fp32 activations
    "torchao-int8-dynamic",  # torchao Int8DynamicActivationInt8WeightConfig
    "torchao-int4-weight",  # torchao int4 weight-only, where a CPU kernel exists
)
RECOVERY = ("none", "distill", "lora")
TRAIN_SETS = ("calib", "real-train")  # named training sets (else a .jsonl manifest)
LABELLERS = ("teacher", "base")
MAX_TRAIN_CLIPS = 1024  # the teacher's cached states and logits: ~4.6 MB per clip (tiny)
_TRAINING_DEFAULTS = {"train_data": "", "labeller": "teacher", "train_clips": 256}
# the hash of an uncompressed spec is the one it had before these fields existed
_LEGACY_NONE = {
    "quant": "none",
    "prune_heads": 0.0,
    "prune_ffn": 0.0,
    "lowrank_rank": 0,
    "lora": "",
}


def check_training(train_data: Any, labeller: Any, train_clips: Any) -> None:
    """The training-data settings (CompressionSettings; the sensitivity command's options)."""
    t = train_data
    if not isinstance(t, str) or (t and t not in TRAIN_SETS and not t.endswith(".jsonl")):
        raise SpecError(
            f"train_data: expected {', '.join(TRAIN_SETS)}, a .jsonl manifest or empty "
            f"(auto), got {t!r}"
        )
    if labeller not in LABELLERS:
        raise SpecError(f"labeller: expected one of {LABELLERS}, got {labeller!r}")
    n = train_clips
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_TRAIN_CLIPS:
        raise SpecError(
            f"train_clips: expected an integer from 0 (all) to {MAX_TRAIN_CLIPS}, got {n!r}"
        )


def check_quant_device(comp: CompressionSettings, device: str) -> None:
    """Every quantization scheme runs CPU kernels and leaves its modules on the CPU, so a
    quantized model cannot run on a GPU: refused here rather than crashing mid-run."""
    if (comp.quant != "none" or comp.quant_embed) and device != "cpu":
        scheme = comp.quant if comp.quant != "none" else "quant_embed"
        raise SpecError(
            f"quant: {scheme} runs CPU kernels only; use --device cpu, or drop the "
            f"quantization to run on {device}"
        )


@dataclass(frozen=True)
class CompressionSettings:
    """Compression applied between loading the weights and running the engine (compress/).

    quant: a scheme of QUANT_SCHEMES for the Linear layers; the rest stays at the precision
        axis, which must then be fp32 (precision=int8 alone means "int8-dynamic").
    quant_embed: also quantize the token embedding and the output projection (weight-only
        int8, as CTranslate2 does), so the fp32 embedding is not kept beside an int8 copy.
    keep: hybrid precision: comma-separated layer groups left unquantized ("conv", "enc.3",
        "dec.0", "proj"; see compress/groups.py), typically the most sensitive ones.
    prune_heads / prune_ffn: fraction in [0, 1) of attention heads / FFN neurons removed from
        every layer, ranked by importance on calibration audio.
    decoder_layers: keep this many decoder layers, copied from the teacher (0 = all).
    lowrank_energy: factorise each Linear by truncated SVD, keeping the smallest rank whose
        singular values hold this share of the squared energy (0 = off; in (0, 1]).
    recover: "none", "distill" (from the uncompressed teacher) or "lora" (peft, merged back);
        `recover_steps` optimizer steps on the training speech (never a test clip).
    train_data: the speech pruning importance and recovery train on: "" (auto: `real-train`
        when it is built, else the bundled synthetic `calib`, with a warning), "calib",
        "real-train" or a .jsonl manifest. Checked disjoint from every test set before use.
    labeller: who labels clips without a reference: "teacher" (the uncompressed source
        model's greedy transcript) or "base" (the bundled multilingual base model's greedy
        English transcript, re-tokenised for the student; sequence-level distillation).
    train_clips: a seeded subset of this many training clips spread over games and speakers
        (0 = all, at most MAX_TRAIN_CLIPS: the teacher's outputs are cached in memory).
    """

    quant: str = "none"
    quant_embed: bool = False
    keep: str = ""
    prune_heads: float = 0.0
    prune_ffn: float = 0.0
    decoder_layers: int = 0
    lowrank_energy: float = 0.0
    recover: str = "none"
    recover_steps: int = 200
    train_data: str = ""
    labeller: str = "teacher"
    train_clips: int = 256

    def validate(self) -> None:
        if self.quant not in QUANT_SCHEMES:
            raise SpecError(f"quant: expected one of {QUANT_SCHEMES}, got {self.quant!r}")
        if not isinstance(self.quant_embed, bool):
            raise SpecError(f"quant_embed: expected true or false, got {self.quant_embed!r}")
        if self.keep and self.quant == "none":
            raise SpecError("keep: names layers left unquantized, but quant is 'none'")
        for name in ("prune_heads", "prune_ffn"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
                raise SpecError(f"{name}: a pruning ratio must be in (0, 1) (0 = off), got {v!r}")
        if isinstance(self.decoder_layers, bool) or not isinstance(self.decoder_layers, int):
            raise SpecError(f"decoder_layers: expected an integer, got {self.decoder_layers!r}")
        if self.decoder_layers < 0:
            raise SpecError(f"decoder_layers: must be >= 0 (0 = all), got {self.decoder_layers}")
        e = self.lowrank_energy
        if isinstance(e, bool) or not isinstance(e, int | float) or not 0.0 <= e <= 1.0:
            raise SpecError(f"lowrank_energy: must be in (0, 1] (0 = off), got {e!r}")
        if self.recover not in RECOVERY:
            raise SpecError(f"recover: expected one of {RECOVERY}, got {self.recover!r}")
        if self.recover != "none" and not self.changes_weights:
            raise SpecError(
                f"recover: {self.recover} retrains a pruned, shallower or low-rank model; "
                "this spec removes nothing"
            )
        if isinstance(self.recover_steps, bool) or not isinstance(self.recover_steps, int):
            raise SpecError(f"recover_steps: expected an integer, got {self.recover_steps!r}")
        if self.recover_steps < 1:
            raise SpecError(f"recover_steps: must be >= 1, got {self.recover_steps}")
        self._validate_training()

    def _validate_training(self) -> None:
        """train_data, labeller, train_clips: typed, in range, and only where data is used."""
        check_training(self.train_data, self.labeller, self.train_clips)
        if self.training_fields and not self.uses_train_data:
            raise SpecError(
                f"{', '.join(self.training_fields)}: only pruning (prune_heads, prune_ffn) "
                "and recovery train on speech; this spec uses none"
            )

    @property
    def uses_train_data(self) -> bool:
        """Whether a method here reads training speech (pruning importance, recovery)."""
        return bool(self.prune_heads or self.prune_ffn or self.recover != "none")

    @property
    def training_fields(self) -> dict[str, Any]:
        """train_data, labeller, train_clips where not at their defaults."""
        return {k: getattr(self, k) for k, v in _TRAINING_DEFAULTS.items() if getattr(self, k) != v}

    def check_model(self, n_decoder_layers: int) -> None:
        """Checks that need the model's shape (before any work starts)."""
        if self.decoder_layers > n_decoder_layers:
            raise SpecError(
                f"decoder_layers: {self.decoder_layers} is more than the model's "
                f"{n_decoder_layers} decoder layers"
            )

    @property
    def changes_weights(self) -> bool:
        """Whether the model's structure or weights change (an artifact to build and cache)."""
        return bool(
            self.prune_heads or self.prune_ffn or self.decoder_layers or self.lowrank_energy
        )

    @property
    def is_none(self) -> bool:
        return self == CompressionSettings()

    def tag(self) -> str:
        """A short label: what is not at its default, e.g. `q=int8-weight+emb dec=2`."""
        parts = []
        if self.quant != "none":
            parts.append(f"q={self.quant}" + ("+emb" if self.quant_embed else ""))
        elif self.quant_embed:
            parts.append("q=emb")
        if self.keep:
            parts.append(f"keep={self.keep}")
        if self.prune_heads:
            parts.append(f"heads-{self.prune_heads:g}")
        if self.prune_ffn:
            parts.append(f"ffn-{self.prune_ffn:g}")
        if self.decoder_layers:
            parts.append(f"dec={self.decoder_layers}")
        if self.lowrank_energy:
            parts.append(f"svd={self.lowrank_energy:g}")
        if self.recover != "none":
            parts.append(f"+{self.recover}{self.recover_steps}")
        for k, v in self.training_fields.items():
            parts.append(f"{k}={v}")
        return " ".join(parts)


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
    pool_recordings: "batched" only; the VAD chunks of consecutive recordings share batches
        (as the transformers pipeline batches a list of inputs) instead of each recording's
        chunks being batched alone (faster-whisper's pipeline). Throughput for a set of
        recordings; a recording's own latency is then not measured.
    encoder_batch: the encoder runs a batch in parts of this many items (0: the whole batch
        as one tensor); the decoder always runs the whole batch. On a CPU the encoder gains
        little from batching while its attention scores grow with the batch (CTranslate2
        holds B x heads x 1500 x 1500 floats per layer), so a part of 1 keeps peak memory
        that of one item. Results are the same up to rounding (int8 dynamic activation
        scales are per part).
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
    pool_recordings: bool = False
    encoder_batch: int = 0

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
        if not isinstance(self.pool_recordings, bool):
            raise SpecError(
                f"pool_recordings: expected true or false, got {self.pool_recordings!r}"
            )
        if self.pool_recordings and self.longform != "batched":
            raise SpecError(
                f"pool_recordings: only batched long-form pools recordings, got longform="
                f"{self.longform!r}"
            )
        eb = self.encoder_batch
        if isinstance(eb, bool) or not isinstance(eb, int) or eb < 0:
            raise SpecError(f"encoder_batch: expected an integer >= 0 (0: whole batch), got {eb!r}")

    @classmethod
    def check_field(cls, name: str, value: Any) -> None:
        """One field's value alone, where it applies (pool_recordings: batched long-form);
        a sweep checks each option so, before crossing them."""
        base = {"longform": "batched"} if name == "pool_recordings" else {}
        cls(**{**base, name: value}).validate()

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


FINAL_PASSES = ("plain", "timestamps")
STEP_PASSES = ("timestamps", "plain")
# StreamSettings fields added after stream specs were stored, with the value those specs
# measured: a stored stream spec without the field reads as that value and keeps its hash
_LATER_STREAM_VALUES = {
    "final_pass": "timestamps",
    "force_committed": False,
    "step_pass": "timestamps",
    "pause_cut_ms": 0,
    "max_wait_s": 0.0,
    "relax_s": 0.0,
}

# StreamSettings.prompt's default before it became False (hash_dict)
_OLD_PROMPT = True

# WorkloadSettings fields added after specs with a workload were stored
_LATER_WORKLOAD_DEFAULTS = {"pool_recordings": False, "encoder_batch": 0}


def _number(v: Any) -> bool:
    """A finite int or float, not a bool (True would pass as 1)."""
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int)


@dataclass(frozen=True)
class StreamSettings:
    """A live stream (stream/): chunk_ms 0 means the spec is not a stream.

    chunk_ms: audio per processing step. agreement: LocalAgreement-n. holdback_s: no word
    ending this close to the buffer's end is committed (the last word is often cut). trim_s:
    the buffer is cut at a committed segment end once longer; max_buffer_s: a forced cut past
    this. prompt: the committed text before the buffer prompts the decoder (off by default:
    the README's stream figures and benchmarks/bench_stream.py ran without it). vad: Silero VAD
    keeps silence out and ends utterances after vad_silence_ms. realtime: the audio arrives at
    real-time pace (wall clock) rather than as fast as possible (a simulated clock that still
    counts compute).
    gap_s / duration_s: a data set streams as its clips joined with gap_s of silence, repeated
    up to duration_s (0: once).
    final_pass: how the last pass over an utterance (VAD end, or the stream's end) decodes:
    "plain" (no timestamp tokens, as `bench` decodes a clip) or "timestamps" (as every other
    step; what streams did before the field existed). See stream/session.py.
    force_committed: the words already committed from the buffer are fed to the decoder as
    forced tokens (with their timestamps) rather than decoded again at every step. Off by
    default: with LocalAgreement-2 it pins early mistakes (see stream/session.py).
    step_pass: how every other step decodes: "timestamps" (segment times, where the buffer
    may be cut) or "plain" (no timestamp tokens: fewer tokens per step; needs vad, since the
    buffer then has no segment end to be cut at and is emptied at each utterance's end).
    pause_cut_ms: with vad, the buffer is also cut in a pause inside an utterance (speech
    off for at least this long, but shorter than vad_silence_ms) once the committed words
    reach past it, so a step decodes the words since the last pause rather than the whole
    utterance so far; 0 = off (see stream/session.py).
    max_wait_s: a word still not agreed on this long after its (estimated) end is committed
    from the newest hypothesis, bounding commit latency at the cost of words committed without
    agreement; 0 = off (see stream/policy.py).
    relax_s: a word still not agreed on by `agreement` hypotheses this long after its end is
    committed once the last two agree on it (agreement >= 3 only; shorter than max_wait_s when
    both are set); 0 = off (see stream/policy.py).
    """

    chunk_ms: int = 0
    agreement: int = 2
    holdback_s: float = 0.0
    trim_s: float = 15.0
    max_buffer_s: float = 30.0
    prompt: bool = False
    vad: bool = False
    vad_threshold: float = 0.5
    vad_silence_ms: int = 500
    realtime: bool = False
    gap_s: float = 2.0
    duration_s: float = 0.0
    final_pass: str = "plain"
    force_committed: bool = False
    step_pass: str = "timestamps"
    pause_cut_ms: int = 0
    max_wait_s: float = 0.0
    relax_s: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.chunk_ms != 0

    def validate(self) -> StreamSettings:
        """Self, or a SpecError naming the first field out of range, of an unknown value,
        or at odds with another field."""
        self._check_ranges()
        self._check_choices()
        self._check_combinations()
        return self

    def _check_ranges(self) -> None:
        """Each number within its range (the table names field, test and range)."""
        checks = [
            (
                "chunk_ms",
                _integer(self.chunk_ms) and (self.chunk_ms == 0 or 20 <= self.chunk_ms <= 10_000),
                "an integer in [20, 10000] (0 = not a stream)",
            ),
            (
                "agreement",
                _integer(self.agreement) and 1 <= self.agreement <= 5,
                "an integer in [1, 5]",
            ),
            (
                "holdback_s",
                _number(self.holdback_s) and 0.0 <= self.holdback_s <= 5.0,
                "in [0, 5] s",
            ),
            (
                "max_buffer_s",
                _number(self.max_buffer_s) and 1.0 <= self.max_buffer_s <= 30.0,
                "in [1, 30] s",
            ),
            (
                "trim_s",
                _number(self.trim_s) and 0.5 <= self.trim_s < self.max_buffer_s,
                "in [0.5, max_buffer_s) s",
            ),
            (
                "vad_threshold",
                _number(self.vad_threshold) and 0.0 < self.vad_threshold < 1.0,
                "in (0, 1)",
            ),
            (
                "vad_silence_ms",
                _integer(self.vad_silence_ms) and 32 <= self.vad_silence_ms <= 10_000,
                "an integer in [32, 10000] ms",
            ),
            ("gap_s", _number(self.gap_s) and 0.0 <= self.gap_s <= 600.0, "in [0, 600] s"),
            (
                "duration_s",
                _number(self.duration_s) and 0.0 <= self.duration_s <= 86_400.0,
                "in [0, 86400] s (0 = the data set once)",
            ),
            (
                "max_wait_s",
                _number(self.max_wait_s) and (self.max_wait_s == 0 or 0.1 <= self.max_wait_s <= 30),
                "0 (off) or in [0.1, 30] s",
            ),
            (
                "relax_s",
                _number(self.relax_s) and (self.relax_s == 0 or 0.1 <= self.relax_s <= 30),
                "0 (off) or in [0.1, 30] s",
            ),
        ]
        for name, ok, what in checks:
            if not ok:
                raise SpecError(f"{name}: must be {what}, got {getattr(self, name)!r}")

    def _check_choices(self) -> None:
        """The named passes and the on/off switches."""
        if self.final_pass not in FINAL_PASSES:
            raise SpecError(f"final_pass: expected one of {FINAL_PASSES}, got {self.final_pass!r}")
        if self.step_pass not in STEP_PASSES:
            raise SpecError(f"step_pass: expected one of {STEP_PASSES}, got {self.step_pass!r}")
        for name in ("prompt", "vad", "realtime", "force_committed"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{name}: expected true or false, got {getattr(self, name)!r}")

    def _check_combinations(self) -> None:
        """Fields that need or bound one another (vad, pause cuts, the wait bounds, trim)."""
        if self.step_pass == "plain" and self.enabled and not self.vad:
            raise SpecError(
                "step_pass: 'plain' needs vad (without timestamps the buffer has no segment "
                "end to be cut at; the VAD empties it at each utterance's end)"
            )
        if not (
            _integer(self.pause_cut_ms)
            and (self.pause_cut_ms == 0 or 32 <= self.pause_cut_ms < self.vad_silence_ms)
        ):
            raise SpecError(
                "pause_cut_ms: must be 0 (off) or an integer in [32, vad_silence_ms) ms, "
                f"got {self.pause_cut_ms!r}"
            )
        if self.pause_cut_ms and self.enabled and not self.vad:
            raise SpecError("pause_cut_ms: needs vad (the pauses are the VAD's)")
        if self.relax_s and self.agreement < 3:
            raise SpecError(
                f"relax_s: needs agreement >= 3 (it relaxes LocalAgreement-n to "
                f"LocalAgreement-2), got agreement {self.agreement}"
            )
        if self.relax_s and self.max_wait_s and self.relax_s >= self.max_wait_s:
            raise SpecError(
                f"relax_s: must be shorter than max_wait_s ({self.max_wait_s:g} s), "
                f"got {self.relax_s:g} s"
            )
        if self.chunk_ms / 1000 > self.trim_s:
            raise SpecError(f"chunk_ms: {self.chunk_ms} ms is longer than trim_s {self.trim_s} s")

    @property
    def chunk_s(self) -> float:
        return self.chunk_ms / 1000

    @property
    def policy(self) -> str:
        return f"local-agreement-{self.agreement}"

    def label(self) -> str:
        s = f"stream {self.chunk_ms}ms LA-{self.agreement}"
        if self.holdback_s:
            s += f" hold={self.holdback_s:g}s"
        if self.vad:
            s += " +vad"
        if self.realtime:
            s += " realtime"
        if self.prompt:
            s += " +prompt"
        if self.final_pass != "plain":
            s += f" final={self.final_pass}"
        if self.force_committed:
            s += " +forced"
        if self.step_pass != "timestamps":
            s += f" step={self.step_pass}"
        if self.pause_cut_ms:
            s += f" cut@{self.pause_cut_ms}ms"
        if self.max_wait_s:
            s += f" wait<={self.max_wait_s:g}s"
        if self.relax_s:
            s += f" LA-2@{self.relax_s:g}s"
        return s


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
    stream: StreamSettings = field(default_factory=StreamSettings)
    repeats: int = 3  # not part of the hash (see module docstring)
    warmup: int = 1  # not part of the hash
    # consent to seeded random weights for a size whose weights are not here (small, tiny...):
    # it changes no figure of a spec that runs without it, so it is not part of the hash
    cost_only: bool = False

    def _check_run_fields(self) -> None:
        """The run's own fields: engine, device, counts and seed."""
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

    def validate(self) -> RunSpec:
        """Self, or a SpecError naming the first bad field or combination of fields."""
        self._check_run_fields()
        self._check_weights()
        self.axes.validate()
        self.compression.validate()
        self.workload.validate()
        self.stream.validate()
        if self.axes.precision == "fp16" and self.device == "cpu":
            raise SpecError("precision: fp16 needs --device cuda (CPU fp16 matmuls are emulated)")
        c = self.compression
        if not c.is_none and self.engine != "hf":
            raise SpecError(
                f"compression: {c.tag()} changes a torch model; use --engine hf "
                "(CTranslate2 runs its own converted weights)"
            )
        check_quant_device(c, self.device)
        if (c.quant != "none" or c.quant_embed) and self.axes.precision != "fp32":
            raise SpecError(
                f"quant: {c.quant} sets the Linear layers' precision itself; the precision "
                f"axis must be fp32 for what it leaves, got {self.axes.precision}"
            )
        return self

    def _check_weights(self) -> None:
        """A size without weights here runs on random weights only when asked (cost_only)."""
        from voxmeter.assets.bundled import BUNDLED, needs_cost_only

        if not isinstance(self.cost_only, bool):
            raise SpecError(f"cost_only: expected true or false, got {self.cost_only!r}")
        if not self.cost_only and needs_cost_only(self.model):
            raise ModelError(
                f"model {self.model!r}: its weights are not available here (weights: "
                f"{', '.join(BUNDLED)}); to measure its cost only (FLOPs, latency, memory on "
                "seeded random weights, no accuracy) add --cost-only (sweep file: cost_only = true)"
            )

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
        strm = d.pop("stream", {}) or {}
        try:
            a = axes if isinstance(axes, AxisSettings) else AxisSettings(**axes)
            c = comp if isinstance(comp, CompressionSettings) else CompressionSettings(**comp)
            w = work if isinstance(work, WorkloadSettings) else WorkloadSettings(**work)
            if isinstance(strm, dict) and strm.get("chunk_ms"):  # a stream stored earlier
                strm = {**_LATER_STREAM_VALUES, **strm}
            elif isinstance(strm, dict):  # not a stream: its prompt means nothing (hash_dict)
                strm = {k: v for k, v in strm.items() if k != "prompt"}
            st = strm if isinstance(strm, StreamSettings) else StreamSettings(**strm)
        except TypeError as e:
            raise SpecError(f"spec: {e}") from None
        return cls(axes=a, compression=c, workload=w, stream=st, **d)

    def hash_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        d.pop("repeats")
        d.pop("warmup")
        d.pop("cost_only")  # a consent, not a setting: the same model runs the same way
        if self.workload.is_default:
            # specs that leave the workload at its defaults keep the hash they had before
            # the field existed
            d.pop("workload")
        else:  # fields added later leave the hash alone at their defaults
            for k, v in _LATER_WORKLOAD_DEFAULTS.items():
                if d["workload"][k] == v:
                    d["workload"].pop(k)
        if replace(self.stream, prompt=_OLD_PROMPT) == replace(
            StreamSettings(), prompt=_OLD_PROMPT
        ):
            # likewise: a spec that is not a stream keeps its hash (whatever its prompt, whose
            # default changed: a stream's hash holds its prompt value, never the default)
            d.pop("stream")
        else:
            for k, v in _LATER_STREAM_VALUES.items():
                if d["stream"][k] == v:
                    d["stream"].pop(k)
        if self.compression.is_none:
            d["compression"] = dict(_LEGACY_NONE)  # likewise for the compression fields
        else:  # the training fields came later: at their defaults they leave the hash alone
            for k, v in _TRAINING_DEFAULTS.items():
                if d["compression"][k] == v:
                    d["compression"].pop(k)
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
        stream_names = {"stream_" + f.name for f in fields(StreamSettings)}
        ax = {k: changes.pop(k) for k in list(changes) if k in axis_names}
        co = {k: changes.pop(k) for k in list(changes) if k in comp_names}
        wo = {k: changes.pop(k) for k in list(changes) if k in work_names}
        st = {k[7:]: changes.pop(k) for k in list(changes) if k in stream_names}
        out = replace(self, **changes)
        if ax:
            out = replace(out, axes=replace(out.axes, **ax))
        if co:
            out = replace(out, compression=replace(out.compression, **co))
        if wo:
            out = replace(out, workload=replace(out.workload, **wo))
        if st:
            out = replace(out, stream=replace(out.stream, **st))
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
        if w.pool_recordings:
            s += " pooled"
        if w.encoder_batch:
            s += f" enc-b={w.encoder_batch}"
        if not self.compression.is_none:
            s += " " + self.compression.tag()
        if self.stream.enabled:
            s += " " + self.stream.label()
        return s
