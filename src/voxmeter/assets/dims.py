"""ModelDimensions for the Whisper family: the shapes every formula and loader works from."""

from __future__ import annotations

from dataclasses import dataclass

from voxmeter.errors import ModelError


@dataclass(frozen=True)
class ModelDims:
    n_mels: int
    n_audio_ctx: int  # encoder positions for a full 30 s window (1500)
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @property
    def d_ff_audio(self) -> int:
        return 4 * self.n_audio_state

    @property
    def d_ff_text(self) -> int:
        return 4 * self.n_text_state

    @property
    def english_only(self) -> bool:
        return self.n_vocab == 51864


def _dims(n_mels: int, d: int, heads: int, layers: int, vocab: int) -> ModelDims:
    return ModelDims(n_mels, 1500, d, heads, layers, vocab, 448, d, heads, layers)


# The published Whisper architectures (openai/whisper model card shapes).
ARCHITECTURES: dict[str, ModelDims] = {
    "tiny.en": _dims(80, 384, 6, 4, 51864),
    "tiny": _dims(80, 384, 6, 4, 51865),
    "base.en": _dims(80, 512, 8, 6, 51864),
    "base": _dims(80, 512, 8, 6, 51865),
    "small.en": _dims(80, 768, 12, 12, 51864),
    "small": _dims(80, 768, 12, 12, 51865),
    "medium.en": _dims(80, 1024, 16, 24, 51864),
    "medium": _dims(80, 1024, 16, 24, 51865),
    "large-v3": _dims(128, 1280, 20, 32, 51866),
}


def dims_for(name: str) -> ModelDims:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise ModelError(f"unknown model architecture {name!r} (known: {known})") from None


def param_count(d: ModelDims) -> int:
    """Parameters of a Whisper model with these shapes (output projection tied to embeddings).

    Encoder: two convolutions, per layer q/k/v/o (k without bias) + FFN + two layer norms, a
    final layer norm; positions are sinusoidal buffers in openai/whisper but stored weights in
    transformers, so they are counted. Decoder: token and position embeddings, per layer
    self-attention, cross-attention, FFN and three layer norms, a final layer norm.
    """

    def attn(n: int) -> int:
        return 4 * n * n + 3 * n  # q, v, o biases; k has none

    def ffn(n: int, f: int) -> int:
        return 2 * n * f + f + n

    a, t = d.n_audio_state, d.n_text_state
    enc = d.n_mels * a * 3 + a + a * a * 3 + a + d.n_audio_ctx * a
    enc += d.n_audio_layer * (attn(a) + ffn(a, d.d_ff_audio) + 4 * a) + 2 * a
    dec = d.n_vocab * t + d.n_text_ctx * t
    dec += d.n_text_layer * (2 * attn(t) + ffn(t, d.d_ff_text) + 6 * t) + 2 * t
    return enc + dec
