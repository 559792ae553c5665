"""A shallower decoder: keep k of the teacher's decoder layers, as distil-whisper does.

Whisper spends most of a transcription in the decoder, which runs once per token, while the
encoder runs once per window; so removing decoder layers buys the most time per parameter.
Distil-Whisper (Gandhi, von Platen and Rush, "Distil-Whisper: Robust Knowledge Distillation
via Large-Scale Pseudo Labelling", 2023) initialises its student by copying the whole encoder
and a few *maximally spaced* decoder layers of the teacher, the first and the last among them,
and then distils; its students keep two decoder layers. We apply the same initialisation in
place; recovery training, when asked for, is a later step (compress/recover.py).

The rule (distil-whisper's `create_student_model.py`): of n layers keep
`floor(linspace(0, n - 1, k))`, with the last one forced to n - 1. So k=2 of 4 keeps 0 and 3,
k=3 of 4 keeps 0, 1 and 3, k=1 keeps the last layer only (the one that feeds the output
projection), k=n keeps everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voxmeter.errors import SpecError

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration


def spaced_layers(n: int, k: int) -> list[int]:
    """The k of n layer indices distil-whisper keeps (see the module doc); exact integers,
    where numpy's float linspace could round i * (n - 1) / (k - 1) down one step too far."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise SpecError(f"decoder_layers: must be an integer in [1, {n}], got {k!r}")
    if k == 1:
        return [n - 1]
    return [i * (n - 1) // (k - 1) for i in range(k)]


def keep_decoder_layers(model: WhisperForConditionalGeneration, k: int) -> list[int]:
    """Keep k of the model's decoder layers (maximally spaced), in place; returns the kept
    teacher indices. The config's `decoder_layers` and each kept layer's `layer_idx` (by which
    transformers' KV cache finds a layer's entries) are renumbered 0..k-1, so transformers'
    own forward and generate still run on the shallower model."""
    decoder = model.model.decoder
    kept = spaced_layers(len(decoder.layers), k)
    layers = [decoder.layers[i] for i in kept]
    for new_idx, layer in enumerate(layers):
        for attn in (layer.self_attn, layer.encoder_attn):
            attn.layer_idx = new_idx
    decoder.layers = type(decoder.layers)(layers)
    # the decoder shares the model's config object; set both in case a copy was made
    for config in {id(c): c for c in (model.config, decoder.config)}.values():
        config.decoder_layers = k
    return kept
