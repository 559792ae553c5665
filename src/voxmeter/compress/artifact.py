"""A compressed model as a directory of its own: save it, load it back, tell where it came from.

Layout (a transformers Whisper directory plus one file of ours, so `--model DIR` resolves it
as a local transformers model and any tool that reads safetensors can open the weights):

- `model.safetensors`: the fp32 weights after the structural methods (fewer decoder layers,
  pruned heads and neurons, low-rank factors) and any recovery training. Quantized weights
  are not saved: `voxmeter.json` carries the quantization settings, applied at every load.
- `config.json`: the WhisperConfig (decoder_layers already reduced).
- `generation_config.json`: the base model's suppressed tokens, so decoding is unchanged.
- `tokenizer.json`: the base model's.
- `voxmeter.json`: what made it: the base model's name and weights digest, the compression
  settings, the quantization it carries ({} when none), the calibration clips used and
  skipped, a report per method, the voxmeter version.

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

from voxmeter.engines.hf_weights import (
    FORMAT,
    HEAD_DIM,
    META,
    is_artifact,
    load_model,
    read_meta,
    reshape_to,
)

__all__ = ["FORMAT", "HEAD_DIM", "META", "is_artifact", "load_model", "read_meta", "reshape_to"]
__all__ += ["save_model"]


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
