"""`voxmeter flops`: the three FLOPs columns per stage for one shape, without audio.

Counted runs the hf engine once on zeros of the requested length (weights are irrelevant to the
count, so cost-only sizes count the same way), with a forced number of decoder steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from voxmeter.spec import AxisSettings, RunSpec


def flops_table(
    model: str,
    frames: int,
    stride: int,
    pad: str,
    pool: str,
    tokens: int,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    from voxmeter.engines import load_engine
    from voxmeter.measure.flops import (
        analytic_decoder_flops,
        analytic_encoder_flops,
        count_flops,
        paper_flops,
        paper_label,
    )

    axes = AxisSettings(frames=frames, stride=stride, pad=pad, pool=pool)
    spec = RunSpec(model=model, axes=axes, cost_only=True)  # FLOPs follow from shapes alone
    spec.validate()
    engine = load_engine(spec, cache_dir)
    engine.count_mode = True
    audio = np.zeros(frames * 160, dtype=np.float32)
    feats = engine.features([audio])
    enc_c = count_flops(engine.encode, feats)
    enc = enc_c.result
    dec_c = count_flops(engine.decode, enc, tokens)
    prompt = len(engine.prompt)
    shape = getattr(engine, "shape", None)  # the layers it really has (compressed models)
    a_enc = analytic_encoder_flops(engine.dims, frames, shape).total
    a_dec = analytic_decoder_flops(
        engine.dims,
        enc.decoder_positions,
        prompt,
        tokens,
        kv_positions=enc.kv_projected,
        shape=shape,
    ).total
    p = paper_flops(engine.dims, stride_k=stride, n_tokens=tokens)
    return {
        "label": f"{model} T={frames} k={stride} pad={pad} tokens={tokens}",
        "model": model,
        "frames": frames,
        "stride": stride,
        "pad": pad,
        "pool": pool,
        "tokens": tokens,
        "prompt_len": prompt,
        "decoder_positions": enc.decoder_positions,
        "counted": {
            "encoder": enc_c.total,
            "decoder": dec_c.total,
            "total": enc_c.total + dec_c.total,
        },
        "analytic": {"encoder": a_enc, "decoder": a_dec, "total": a_enc + a_dec},
        "paper": {"encoder": p.encoder, "decoder": p.decoder, "total": p.total},
        "paper_label": paper_label(),
        "notes": [
            "counted: torch FlopCounterMode over the hf engine (eager attention), one pass on zeros",
            (
                f"analytic: closed form from the shapes run ({prompt} prompt tokens, {tokens} "
                f"steps, {enc.decoder_positions} cross-attention positions, K/V projected for "
                f"{enc.kv_projected}; the rest are cached silence)"
            ),
            (
                f"{paper_label()}: the formula of 'Scaling Audio Models Efficiently' is "
                "not published, ours is voxmeter.measure.flops.paper_flops (3000-frame encoder, "
                "stride k on its output, whatever frames and tokens were run)"
            ),
        ],
    }
