"""Named layer groups of a Whisper model: the unit of hybrid precision and sensitivity analysis.

A group is what one can sensibly keep at full precision or probe alone: the convolutional front
end ("conv"), one encoder layer ("enc.3"), one decoder layer ("dec.0"), or the output projection
("proj", tied to the decoder's token embedding). A layer's group holds every Linear found under
it, whatever its shape or nesting, so the same names serve a pruned model (smaller Linears), a
shallower decoder, and a low-rank one (a Linear replaced by a Sequential of two). Quantized
replacements still count as Linears (they keep `in_features`/`out_features`), so groups can be
read off a model before or after quantization alike.
"""

from __future__ import annotations

import re

from torch import nn

ENCODER = "model.encoder"
DECODER = "model.decoder"
PROJ = "proj_out"
EMBED = f"{DECODER}.embed_tokens"
CONV = (f"{ENCODER}.conv1", f"{ENCODER}.conv2")

_LAYER = re.compile(r"(?:^|\.)(encoder|decoder)\.layers\.(\d+)(?:\.|$)")


def is_linear(module: nn.Module) -> bool:
    """An nn.Linear or a quantized stand-in for one (torch.ao's, torchao's, ours).

    Duck-typed on `in_features`/`out_features`, since torch.ao's dynamic Linear is no
    nn.Linear subclass; a container of Linears (lowrank.py's LowRankLinear answers both
    widths too) is not one itself, its Linears are."""
    if isinstance(module, nn.Linear):
        return True
    if not (hasattr(module, "in_features") and hasattr(module, "out_features")):
        return False
    return not any(is_linear(c) for c in module.children())


def _linears(root: nn.Module, prefix: str) -> list[str]:
    return [f"{prefix}.{n}" for n, m in root.named_modules() if n and is_linear(m)]


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Group name -> qualified module names, for a WhisperForConditionalGeneration.

    Order: "conv", "enc.0".."enc.{n-1}", "dec.0".."dec.{m-1}", "proj"; every Linear of the
    encoder and decoder layers appears in exactly one group."""
    enc, dec = model.model.encoder, model.model.decoder
    groups = {"conv": list(CONV)}
    for i, layer in enumerate(enc.layers):
        groups[f"enc.{i}"] = _linears(layer, f"{ENCODER}.layers.{i}")
    for i, layer in enumerate(dec.layers):
        groups[f"dec.{i}"] = _linears(layer, f"{DECODER}.layers.{i}")
    groups["proj"] = [PROJ]
    return groups


def group_of(module_name: str) -> str:
    """The group a qualified module name belongs to ("model.encoder.layers.3.fc1.0" -> "enc.3").

    The token embedding belongs to "proj", since it is the same matrix. Modules outside every
    group (positional embeddings, the final layer norms) raise ValueError."""
    m = _LAYER.search(module_name)
    if m:
        return f"{'enc' if m.group(1) == 'encoder' else 'dec'}.{m.group(2)}"
    if any(module_name == c or module_name.startswith(c + ".") for c in CONV):
        return "conv"
    if module_name in (PROJ, EMBED) or module_name.startswith((PROJ + ".", EMBED + ".")):
        return "proj"
    raise ValueError(f"{module_name}: in no layer group")
