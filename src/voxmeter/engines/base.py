"""The Engine protocol: audio -> features -> encoder states -> tokens, in three timed stages,
each over a batch of clips.

The harness calls the stages itself, so latency, memory and FLOPs are measured the same way for
every engine. New model families are new engines, not branches inside old ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from voxmeter.assets.dims import ModelDims
from voxmeter.spec import RunSpec


@dataclass(frozen=True)
class Stage:
    """One timed stage: `key` prefixes its figures (enc_ms...), `method` is the engine's."""

    key: str
    method: str
    label: str


# The ASR stages, in order. Other tasks declare their own (classification: classify for decode).
ASR_STAGES = (
    Stage("feat", "features", "features"),
    Stage("enc", "encode", "encoder"),
    Stage("dec", "decode", "decoder"),
)


@dataclass
class DecodeOutput:
    # forced tokens then generated ones (timestamps included); prompt and end-of-text excluded
    tokens: list[int]
    text: str  # the text tokens detokenised (timestamp and other special tokens left out)
    hit_max_length: bool = False  # stopped by the length limit rather than end-of-text
    extra: dict[str, Any] = field(default_factory=dict)
    # time from the decoder's start through the first generated token's logits (the prompt
    # and the cross-attention K/V projection) of the whole batch, measured inside decode; None
    # where the engine cannot time it from inside (then its `prefill_ms(enc)` measures it in a
    # separate call)
    prefill_ms: float | None = None


@dataclass
class Encoded:
    """Encoder output of a batch as the decoder will see it, plus what the FLOPs formulas need
    (positions are the same for every item of the batch)."""

    states: Any  # (B, positions, D), engine-specific (torch tensor, ctranslate2 StorageView)
    computed_positions: int  # encoder positions actually computed (frames / 2)
    decoder_positions: int  # positions the decoder cross-attends to (after pad and xV)
    # positions whose cross-attention K/V the decoder must project; the rest (pure silence
    # padding) come from a per-model cache. Equals decoder_positions when nothing is cached.
    kv_projected: int | None = None

    def __post_init__(self) -> None:
        if self.kv_projected is None:
            self.kv_projected = self.decoder_positions


def joined(parts: Sequence[Encoded], states: Any) -> Encoded:
    """The Encoded of consecutive parts of a batch, joined into `states` (each engine
    concatenates its own tensors): same decoder positions, K/V projected for the most
    positions any part computed."""
    if len({p.decoder_positions for p in parts}) != 1:
        raise ValueError("joined parts must give the decoder the same positions")
    return Encoded(
        states,
        max(p.computed_positions for p in parts),
        parts[0].decoder_positions,
        max(int(p.kv_projected or 0) for p in parts),
    )


@runtime_checkable
class Engine(Protocol):
    """Every stage takes a batch of B clips and keeps them together as one tensor.

    Items of a batch share the input length T and so the encoder and decoder positions; each
    keeps its own decoding (its own end-of-text, its own output). Greedy results of a batch
    equal those of its items run alone up to floating-point summation order (a matmul over B
    rows may take another kernel than over one row); int8 engines that quantize activations
    per tensor (hf) let the batch share one activation scale.
    """

    spec: RunSpec
    dims: ModelDims
    stages: tuple[Stage, ...]  # what the harness times, in order

    def n_frames(self, n_samples: int) -> int:
        """The frames a clip of n_samples runs at alone (the spec's, or with "fit" its own)."""

    def features(self, audios: Sequence[np.ndarray], n_frames: int | None = None) -> Any:
        """B clips of 16 kHz mono float32 audio -> (B, n_mels, T) log-mel input.

        T is `n_frames` if given, else the spec's frames: an int, or with "fit" the longest
        clip's fitted length. Each clip is brought to T frames by the spec's front end
        (workload.frontend: "audio" pads the audio, "features" pads the normalised log-mel).
        """

    def encode(self, feats: Any) -> Encoded:
        """Run the encoder on the (possibly shortened) batch; apply pad and xV to every item."""

    def join(self, parts: Sequence[Encoded]) -> Encoded:
        """The encoder outputs of consecutive parts of a batch as one batch, in order. Parts
        must give the decoder the same positions (they may differ in computed positions when
        silence pads them: the joined batch projects K/V for the most any part computed)."""

    def decode(
        self,
        enc: Encoded,
        n_steps: int | Sequence[int] | None = None,
        *,
        timestamps: bool = False,
        prefixes: Sequence[Sequence[int] | None] | None = None,
        max_new: int | None = None,
        forced: Sequence[Sequence[int] | None] | None = None,
    ) -> list[DecodeOutput]:
        """Greedy decoding, one output per item, each to its own end-of-text or length limit.

        n_steps (cost-only models): run exactly that many steps (per item, or one int for all).
        timestamps: the prompt omits <|notimestamps|> and Whisper's timestamp rules apply;
        tokens then hold timestamp tokens (id >= timestamp_begin) and text leaves them out.
        prefixes: per item, previous-text tokens (condition_on_previous_text); the prompt is
        <|startofprev|> + the last n_text_ctx // 2 - 1 of them + the sot sequence.
        max_new: a lower limit on generated tokens than the engine's own (n_text_ctx // 2).
        forced: per item, tokens the transcription starts with (after the sot sequence; with
        timestamps they may hold timestamp tokens, and the timestamp rules treat them as
        already sampled). They are fed in one pass, not generated, and begin the output's
        tokens; max_new and hit_max_length count the generated tokens only.
        prefill_ms, where the engine times it, is the batch's and is the same in each output.
        """

    def param_count(self) -> int: ...

    def weight_bytes(self) -> int: ...

    def close(self) -> None: ...
