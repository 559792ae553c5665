"""The Engine protocol: audio -> features -> encoder states -> tokens, in three timed stages.

The harness calls the stages itself, so latency, memory and FLOPs are measured the same way for
every engine. New model families are new engines, not branches inside old ones.
"""

from __future__ import annotations

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
    tokens: list[int]  # generated tokens, prompt and end-of-text excluded
    text: str
    hit_max_length: bool = False  # stopped by the length limit rather than end-of-text
    extra: dict[str, Any] = field(default_factory=dict)
    # time from the decoder's start through the first generated token's logits (the prompt
    # and the cross-attention K/V projection), measured inside decode; None where the engine
    # cannot time it from inside (then its `prefill_ms(enc)` measures it in a separate call)
    prefill_ms: float | None = None


@dataclass
class Encoded:
    """Encoder output as the decoder will see it, plus what the FLOPs formulas need."""

    states: Any  # engine-specific (torch tensor, ctranslate2 StorageView...)
    computed_positions: int  # encoder positions actually computed (frames / 2)
    decoder_positions: int  # positions the decoder cross-attends to (after pad and xV)
    # positions whose cross-attention K/V the decoder must project; the rest (pure silence
    # padding) come from a per-model cache. Equals decoder_positions when nothing is cached.
    kv_projected: int | None = None

    def __post_init__(self) -> None:
        if self.kv_projected is None:
            self.kv_projected = self.decoder_positions


@runtime_checkable
class Engine(Protocol):
    spec: RunSpec
    dims: ModelDims
    stages: tuple[Stage, ...]  # what the harness times, in order

    def features(self, audio: np.ndarray) -> Any:
        """16 kHz mono float32 audio -> the engine's log-mel input for the spec's frames."""

    def encode(self, feats: Any) -> Encoded:
        """Run the encoder on the (possibly shortened) input; apply pad and xV."""

    def decode(self, enc: Encoded) -> DecodeOutput:
        """Greedy decoding to end-of-text or the length limit."""

    def param_count(self) -> int: ...

    def weight_bytes(self) -> int: ...

    def close(self) -> None: ...
