"""A compressed model as a directory of its own: save it, load it back, tell where it came from.

Layout (a transformers Whisper directory plus one file of ours, so `--model DIR` resolves it
as a local transformers model and any tool that reads safetensors can open the weights):

- `model.safetensors`: the fp32 weights after the structural methods (fewer decoder layers,
  pruned heads and neurons, low-rank factors) and any recovery training. Quantization is not
  saved: it is applied at load time from the spec, like the precision axis.
- `config.json`: the WhisperConfig (decoder_layers already reduced).
- `generation_config.json`: the base model's suppressed tokens, so decoding is unchanged.
- `tokenizer.json`: the base model's.
- `voxmeter.json`: what made it: the base model's name and weights digest, the compression
  settings, the calibration data digest, a report per method, the voxmeter version and commit.

Shapes that transformers' config cannot express (a different head count or FFN width per
layer, a Linear replaced by two thin ones) are rebuilt from the saved tensors' shapes before
the weights are loaded strictly, so a file that does not match its own shapes fails loudly.
A directory is written under a temporary name and renamed into place: a run killed midway
never leaves a half-written model directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from voxmeter.errors import ModelError

META = "voxmeter.json"
FORMAT = 1
HEAD_DIM = 64  # Whisper's head width at every size; pruning removes whole heads


def is_artifact(path: Path) -> bool:
    return (Path(path) / META).is_file()


def read_meta(path: Path) -> dict[str, Any]:
    from voxmeter.assets.bundled import read_json_object

    meta = read_json_object(Path(path) / META)
    if meta.get("format") != FORMAT:
        raise ModelError(f"{Path(path) / META}: format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def save_model(
    model: Any,
    out: Path,
    meta: dict[str, Any],
    *,
    tokenizer: Path | None,
    suppress: tuple[list[int], list[int]],
) -> Path:
    """Write `model` (a WhisperForConditionalGeneration, fp32) as a compressed model directory.

    Written to a temporary sibling and renamed into place; an existing `out` is replaced only
    once the new one is complete.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        state.pop("proj_out.weight", None)  # tied to the token embedding; rebuilt on load
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.to_json_file(str(tmp / "config.json"))
        every, begin = suppress
        gen = {"suppress_tokens": list(every), "begin_suppress_tokens": list(begin)}
        (tmp / "generation_config.json").write_text(json.dumps(gen))
        if tokenizer is not None and Path(tokenizer).is_file():
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")
        (tmp / META).write_text(json.dumps({"format": FORMAT, **meta}, indent=1, default=str))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_model(path: Path) -> Any:
    """The WhisperForConditionalGeneration saved in `path`, its shapes rebuilt, weights strict."""
    import torch
    from safetensors.torch import load_file
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    path = Path(path)
    try:
        config = WhisperConfig.from_json_file(str(path / "config.json"))
        state = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read the compressed model ({e})") from None
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    reshape_to(model, state)
    try:
        model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not fit their own shapes ({e})") from None
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelError(
            f"{path}: model.safetensors lacks {len(missing)} tensors ({missing[0]}, ...)"
        )
    for name, buf in model.named_buffers():
        if buf.is_meta:  # non-persistent buffers: recompute as a fresh model would
            raise ModelError(f"{path}: buffer {name} was not restored")
    return model.eval()


def reshape_to(model: Any, state: dict[str, Any]) -> None:
    """Give `model` the module shapes its saved `state` has: resized Linears, Linears split in
    two (low-rank `name.0` / `name.1`, rebuilt as the LowRankLinear that made them), and each
    attention's head count from its q_proj."""
    from torch import nn

    from voxmeter.compress.lowrank import LowRankLinear

    modules = dict(model.named_modules())
    for name, mod in list(modules.items()):
        if not isinstance(mod, nn.Linear) or name == "proj_out":
            continue
        w = state.get(f"{name}.weight")
        first, second = state.get(f"{name}.0.weight"), state.get(f"{name}.1.weight")
        if w is not None and tuple(w.shape) != tuple(mod.weight.shape):
            new: nn.Module = _linear(w.shape[1], w.shape[0], f"{name}.bias" in state)
        elif w is None and first is not None and second is not None:
            new = LowRankLinear(
                _linear(first.shape[1], first.shape[0], f"{name}.0.bias" in state),
                _linear(second.shape[1], second.shape[0], f"{name}.1.bias" in state),
            )
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent], attr, new)
    for name, mod in model.named_modules():
        if hasattr(mod, "q_proj") and hasattr(mod, "num_heads"):
            mod.num_heads = mod.q_proj.out_features // HEAD_DIM  # what prune.py sets


def _linear(n_in: int, n_out: int, bias: bool) -> Any:
    import torch
    from torch import nn

    with torch.device("meta"):
        return nn.Linear(int(n_in), int(n_out), bias=bias)
