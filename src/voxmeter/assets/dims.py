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
