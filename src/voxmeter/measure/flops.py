"""FLOPs of Whisper inference, in three columns that are never mixed.

- analytic: closed form from the shapes actually run (frames, cross-attention positions, prompt
  and steps of our decoding loop). Pure functions, tested against hand counts.
- counted: torch.utils.flop_counter.FlopCounterMode over the real forward pass.
- paper: the formula of "Scaling Audio Models Efficiently" (xN/xT/xV study), reconstructed;
  it charges a whole 30 s window and 20 output tokens, whatever was actually run. The paper
  does not publish it, so wherever it is shown it carries `paper_label()`: "our
  reconstruction" and its misfit to the paper's published figures (`paper_misfit()`).

Convention (the one FlopCounterMode uses): only matrix multiplies and convolutions count, at 2
FLOPs per multiply-add. Biases, layer norms, GELU, softmax, masking, embedding lookups and
pooling are not counted; they are well under 1% of the total for Whisper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from voxmeter.assets.dims import ARCHITECTURES, ModelDims, param_count
from voxmeter.measure.windows import MeasureError

FLOPS_PER_MAC = 2
CONV_KERNEL = 3


@dataclass(frozen=True)
class StageFlops:
    """FLOPs of one stage by kind; `parts` breaks them down further (all in FLOPs)."""

    conv: int
    linear: int
    attention: int
    parts: dict[str, int] = field(default_factory=dict)
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", self.conv + self.linear + self.attention)

    @property
    def gflops(self) -> float:
        return self.total / 1e9


@dataclass(frozen=True)
class LayerMacs:
    """Multiply-adds of one layer's Linears, per position, and its attention widths.

    attn_proj: self-attention q, k, v and out; ffn: fc1 and fc2; cross_proj (decoder): the
    cross-attention's q and out per fed token; cross_kv (decoder): its k and v per encoder
    position. width / cross_width: heads x head size of the two attentions (what the score
    and value matmuls run over). A full layer of width d has attn_proj 4 d^2, ffn 2 d d_ff;
    a pruned one fewer heads and neurons, a low-rank Linear in x r + r x out.
    """

    attn_proj: int
    ffn: int
    width: int
    cross_proj: int = 0
    cross_kv: int = 0
    cross_width: int = 0


@dataclass(frozen=True)
class ModelShape:
    """The per-layer shapes a model really has (after pruning, depth or low-rank changes)."""

    encoder: tuple[LayerMacs, ...]
    decoder: tuple[LayerMacs, ...]

    @classmethod
    def of_dims(cls, dims: ModelDims) -> ModelShape:
        """The shapes of an unchanged model of these dimensions."""
        d, t = dims.n_audio_state, dims.n_text_state
        enc = LayerMacs(4 * d * d, 2 * d * dims.d_ff_audio, d)
        dec = LayerMacs(4 * t * t, 2 * t * dims.d_ff_text, t, 2 * t * t, 2 * t * t, t)
        return cls((enc,) * dims.n_audio_layer, (dec,) * dims.n_text_layer)

    @classmethod
    def of_model(cls, model: Any) -> ModelShape:
        """Read from a transformers Whisper model's modules (Linear or Sequential of Linears,
        quantized or not: only in/out features are read)."""
        m = model.model
        enc = tuple(
            LayerMacs(
                sum(_macs(getattr(layer.self_attn, p)) for p in _ATTN),
                _macs(layer.fc1) + _macs(layer.fc2),
                _out(layer.self_attn.q_proj),
            )
            for layer in m.encoder.layers
        )
        dec = tuple(
            LayerMacs(
                sum(_macs(getattr(layer.self_attn, p)) for p in _ATTN),
                _macs(layer.fc1) + _macs(layer.fc2),
                _out(layer.self_attn.q_proj),
                _macs(layer.encoder_attn.q_proj) + _macs(layer.encoder_attn.out_proj),
                _macs(layer.encoder_attn.k_proj) + _macs(layer.encoder_attn.v_proj),
                _out(layer.encoder_attn.q_proj),
            )
            for layer in m.decoder.layers
        )
        return cls(enc, dec)


_ATTN = ("q_proj", "k_proj", "v_proj", "out_proj")


def _linears(mod: Any) -> list[Any]:
    """The Linear-like leaves of a module: the parts of a low-rank pair (which itself answers
    in/out_features as the dense layer it replaced, so its children are asked first), or
    itself."""
    parts = [c for c in mod.children() if hasattr(c, "in_features")]
    return parts or [mod]


def _macs(mod: Any) -> int:
    return sum(int(x.in_features) * int(x.out_features) for x in _linears(mod))


def _out(mod: Any) -> int:
    return int(mod.out_features)


def encoder_positions(n_frames: int) -> int:
    """Encoder positions for n_frames mel frames: conv2 has stride 2, padding 1, kernel 3."""
    return (n_frames + 1) // 2


def analytic_encoder_flops(
    dims: ModelDims, n_frames: int, shape: ModelShape | None = None
) -> StageFlops:
    """Encoder FLOPs for an input of n_frames mel frames (the encoder runs on exactly these).

    With d = n_audio_state, T = n_frames / 2, L = n_audio_layer, in multiply-adds:
      conv1  n_mels -> d, kernel 3, stride 1:  n_mels * d * 3 * n_frames
      conv2  d -> d, kernel 3, stride 2:       d * d * 3 * T
      linear per layer per position:           4 d^2 (q, k, v, out) + 2 d d_ff (FFN, d_ff = 4d)
      attention per layer:                     2 T^2 d (Q K^T and A V)
    tiny.en at 3000 frames: 1.88 conv + 21.23 linear + 13.82 attention = 36.94 GFLOPs.
    With `shape` (a pruned, shallower or low-rank model), each layer's own Linear
    multiply-adds and attention width replace 4 d^2, 2 d d_ff and d.
    """
    if n_frames < 1:
        raise MeasureError(f"analytic_encoder_flops: n_frames must be >= 1, got {n_frames}")
    d = dims.n_audio_state
    layers = (shape or ModelShape.of_dims(dims)).encoder
    t = encoder_positions(n_frames)
    conv1 = dims.n_mels * d * CONV_KERNEL * n_frames
    conv2 = d * d * CONV_KERNEL * t
    proj = sum(x.attn_proj for x in layers) * t
    ffn = sum(x.ffn for x in layers) * t
    attn = sum(2 * t * t * x.width for x in layers)
    f = FLOPS_PER_MAC
    return StageFlops(
        conv=f * (conv1 + conv2),
        linear=f * (proj + ffn),
        attention=f * attn,
        parts={
            "conv1": f * conv1,
            "conv2": f * conv2,
            "attn_proj": f * proj,
            "ffn": f * ffn,
            "self_attn": f * attn,
        },
    )


def analytic_decoder_flops(
    dims: ModelDims,
    n_positions: int,
    prompt_len: int,
    n_generated: int,
    kv_positions: int | None = None,
    shape: ModelShape | None = None,
) -> StageFlops:
    """Decoder FLOPs of our greedy loop with a KV cache, for n_generated forward steps.

    The loop: step 0 feeds the prompt_len prompt tokens at once, every later step feeds the
    previous token; n_generated counts every step, the one that produced end-of-text included
    (that token is not fed back), so prompt_len + n_generated - 1 tokens are fed. The decoder
    cross-attends to n_positions encoder states (1500 for a full window; fewer with pad=none
    or xV). With d = n_text_state, L = n_text_layer, in multiply-adds:
      cross-attention K and V, once per clip:     2 d^2 per position per layer
      per fed token per layer:                    4 d^2 self-attn q,k,v,out + 2 d^2 cross q,out
                                                  + 2 d d_ff FFN (d_ff = 4d)
      self-attention scores and values:           2 L_ctx d per query, L_ctx = tokens in cache
                                                  after this step's tokens are written
      cross-attention scores and values:          2 n_positions d per fed token per layer
      logits (last position of each step only):   d n_vocab per step
    kv_positions (default n_positions) is how many of those positions get their K/V projected
    per clip: with pad=silence the hf engine reuses cached K/V for the pure-silence positions
    (exact, since projection is affine), so only the first ceil(computed/k) are projected.
    The prompt step runs its prompt_len queries against all prompt_len keys as one dense
    matmul (the causal mask hides entries, it does not skip them), so it is charged
    prompt_len^2 rather than a triangle: that is what executes and what FlopCounterMode sees;
    the difference is prompt_len (prompt_len - 1) d per layer, a few MFLOPs.
    With `shape`, each layer's own Linear multiply-adds and attention widths replace the
    d^2 terms and d (pruned heads and neurons, fewer layers, low-rank Linears).
    """
    if n_positions < 1 or prompt_len < 1 or n_generated < 1:
        raise MeasureError(
            "analytic_decoder_flops: n_positions, prompt_len and n_generated must be >= 1, got "
            f"{n_positions}, {prompt_len}, {n_generated}"
        )
    d, f = dims.n_text_state, FLOPS_PER_MAC
    layers = (shape or ModelShape.of_dims(dims)).decoder
    fed = prompt_len + n_generated - 1
    if kv_positions is None:
        kv_positions = n_positions
    if not 0 <= kv_positions <= n_positions:
        raise MeasureError(
            "analytic_decoder_flops: kv_positions must be in "
            f"[0, {n_positions}], got {kv_positions}"
        )
    cross_kv = sum(x.cross_kv for x in layers) * kv_positions
    self_proj = sum(x.attn_proj for x in layers) * fed
    cross_proj = sum(x.cross_proj for x in layers) * fed
    ffn = sum(x.ffn for x in layers) * fed
    # sum over queries of the keys each one is multiplied with
    keys = prompt_len * prompt_len + sum(prompt_len + i for i in range(1, n_generated))
    self_attn = sum(2 * x.width for x in layers) * keys
    cross_attn = sum(2 * x.cross_width for x in layers) * n_positions * fed
    logits = d * dims.n_vocab * n_generated
    return StageFlops(
        conv=0,
        linear=f * (cross_kv + self_proj + cross_proj + ffn + logits),
        attention=f * (self_attn + cross_attn),
        parts={
            "cross_kv": f * cross_kv,
            "self_attn_proj": f * self_proj,
            "cross_attn_proj": f * cross_proj,
            "ffn": f * ffn,
            "logits": f * logits,
            "self_attn": f * self_attn,
            "cross_attn": f * cross_attn,
        },
    )


def decoder_positions_for(
    n_frames: int, n_audio_ctx: int, stride_k: int = 1, pad: str = "silence", pool: str = "stride"
) -> int:
    """Positions the decoder cross-attends to after padding and xV subsampling by k.

    pad="silence" fills up to n_audio_ctx with cached states of silence; pad="none" keeps the
    computed positions only. pool="stride" keeps states 0, k, 2k, ... (ceil(n / k) of them);
    pool="avg" averages complete groups of k (floor(n / k), at least 1).
    """
    if stride_k < 1:
        raise MeasureError(f"stride_k must be >= 1, got {stride_k}")
    if pad not in ("silence", "none"):
        raise MeasureError(f"pad: expected 'silence' or 'none', got {pad!r}")
    if pool not in ("stride", "avg"):
        raise MeasureError(f"pool: expected 'stride' or 'avg', got {pool!r}")
    n = n_audio_ctx if pad == "silence" else encoder_positions(n_frames)
    return pooled_positions(n, stride_k, pool)


def pooled_positions(n: int, k: int, pool: str) -> int:
    """Positions left of n after xV by factor k: stride keeps 0, k, 2k, ... (ceil(n / k));
    avg averages complete groups of k (floor(n / k), at least 1). Engines use it too."""
    if k == 1:
        return n
    return -(-n // k) if pool == "stride" else max(1, n // k)


def kv_positions_for(
    n_frames: int, n_audio_ctx: int, stride_k: int = 1, pad: str = "silence", pool: str = "stride"
) -> int:
    """Cross-attention positions whose K/V a clip must project (the rest come from a cache).

    With pad="silence" and a short input, pooled position g depends on real audio iff
    g * k < computed, so ceil(computed / k) positions are projected (at most all of them);
    the pure-silence remainder reuses K/V projected once per model. Otherwise all are.
    """
    n_pos = decoder_positions_for(n_frames, n_audio_ctx, stride_k, pad, pool)
    computed = encoder_positions(n_frames)
    if pad != "silence" or computed >= n_audio_ctx:
        return n_pos
    return min(n_pos, -(-computed // stride_k))


def analytic_flops(
    dims: ModelDims,
    n_frames: int,
    stride_k: int = 1,
    pad: str = "silence",
    prompt_len: int = 2,
    n_generated: int = 20,
    pool: str = "stride",
) -> dict[str, Any]:
    """Encoder + decoder analytic FLOPs of one clip, with the positions the decoder saw.

    With pad="silence" the silence states and their cross-attention K/V come from caches
    computed once per model, so they are not charged to the clip (see kv_positions_for).
    """
    enc = analytic_encoder_flops(dims, n_frames)
    n_pos = decoder_positions_for(n_frames, dims.n_audio_ctx, stride_k, pad, pool)
    kv = kv_positions_for(n_frames, dims.n_audio_ctx, stride_k, pad, pool)
    dec = analytic_decoder_flops(dims, n_pos, prompt_len, n_generated, kv_positions=kv)
    return {
        "encoder": enc,
        "decoder": dec,
        "total": enc.total + dec.total,
        "computed_positions": encoder_positions(n_frames),
        "decoder_positions": n_pos,
        "kv_positions": kv,
    }


# -- the paper's column --------------------------------------------------------------------
PAPER_FRAMES = 3000
PAPER_TOKENS = 20
# Published in the paper's abstract for Large-v3 (1540M parameters): GFLOPs by encoder tokens.
PAPER_PUBLISHED_GFLOPS = {("large-v3", 1500): 5228.0, ("large-v3", 750): 2572.0}


@dataclass(frozen=True)
class PaperFlops:
    """The paper-formula FLOPs, split by the tokens each term is charged to."""

    encoder: int  # terms charged to the T encoder tokens
    decoder: int  # terms charged to the n output tokens
    n_params: int
    encoder_tokens: int
    n_tokens: int
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", self.encoder + self.decoder)


def paper_flops(dims: ModelDims, stride_k: int = 1, n_tokens: int = PAPER_TOKENS) -> PaperFlops:
    """FLOPs by the formula of "Scaling Audio Models Efficiently", as we reconstruct it.

    The paper's formula is not published; its figures are: Large-v3 (1540M parameters) 5228
    GFLOPs with 1500 encoder tokens and 2572 GFLOPs with 750 (xV stride 2). Those halve with
    the token count, so the formula must charge the whole model per encoder token after
    subsampling, although the paper's code runs the encoder on all 3000 frames and only
    subsamples its output. The closest principled formula we found is Kaplan et al.'s
    2 N FLOPs per token, applied to every token the model handles, plus the attention matmuls:

      T = ceil(n_audio_ctx / k)   encoder tokens (1500 for a 3000-frame input) after xV
      n = n_tokens                output tokens (20)
      FLOPs = 2 N (T + n)                                   every parameter, once per token
            + 4 L_enc d T^2                                 encoder self-attention, QK^T + AV
            + 4 L_dec d T n                                 decoder cross-attention over T
            + 4 L_dec d n(n+1)/2                            decoder self-attention (causal)

    N = param_count(dims) (1543.5M for large-v3, embeddings included, the count transformers
    reports). It lands under both published figures: 5065.8 vs 5228 GFLOPs (-3.1%) and 2471.6
    vs 2572 (-3.9%); tests/test_flops.py prints the misfit. An exact two-constant fit needs
    2 N T + 5.0 L_enc d T^2 + 147 GFLOPs (N = 1540M), which has no principled reading; the
    constant-free variants we tried that land within 1% of both count some matmuls twice
    (e.g. cross-attention K/V projections on top of 2 N per token), so we do not use them.
    Unlike the analytic column, this charges the embedding matrix as if it were a matmul per
    token, charges the encoder at T/k tokens, and ignores frames and tokens actually run.
    """
    if stride_k < 1:
        raise MeasureError(f"paper_flops: stride_k must be >= 1, got {stride_k}")
    if n_tokens < 0:
        raise MeasureError(f"paper_flops: n_tokens must be >= 0, got {n_tokens}")
    n_params = param_count(dims)
    t = -(-dims.n_audio_ctx // stride_k)
    n = n_tokens
    enc = 2 * n_params * t + 4 * dims.n_audio_layer * dims.n_audio_state * t * t
    dec = 2 * n_params * n + 4 * dims.n_text_layer * dims.n_text_state * (t * n + n * (n + 1) // 2)
    return PaperFlops(enc, dec, n_params, t, n)


class PaperMisfit(NamedTuple):
    """Our paper formula against one figure the paper published."""

    setting: str  # e.g. "large-v3, 1500 encoder tokens"
    ours_gflops: float
    published_gflops: float
    rel_error: float  # ours / published - 1 (negative: ours is lower)


def paper_misfit() -> list[PaperMisfit]:
    """paper_flops on each published setting (model dims, encoder tokens after xV) against
    the published GFLOPs, in PAPER_PUBLISHED_GFLOPS order."""
    out = []
    for (model, tokens), published in PAPER_PUBLISHED_GFLOPS.items():
        dims = ARCHITECTURES[model]
        k = dims.n_audio_ctx // tokens
        if -(-dims.n_audio_ctx // k) != tokens:
            raise MeasureError(f"paper figure {model} at {tokens} tokens: no stride k gives it")
        ours = paper_flops(dims, stride_k=k).total / 1e9
        out.append(
            PaperMisfit(f"{model}, {tokens} encoder tokens", ours, published, ours / published - 1)
        )
    return out


def paper_label() -> str:
    """How to name the paper column: our reconstruction, with its misfit to the published
    figures, e.g. "paper formula, our reconstruction (large-v3 at 1500 / 750 encoder tokens:
    -3.1% / -3.9% vs published)". Computed from paper_misfit(), so it follows the formula."""
    by_model: dict[str, list[tuple[int, float]]] = {}
    for (model, tokens), m in zip(PAPER_PUBLISHED_GFLOPS, paper_misfit()):
        by_model.setdefault(model, []).append((tokens, m.rel_error))
    parts = [
        f"{model} at {' / '.join(str(t) for t, _ in fits)} encoder tokens: "
        + " / ".join(f"{100 * e:+.1f}%" for _, e in fits)
        for model, fits in by_model.items()
    ]
    return f"paper formula, our reconstruction ({'; '.join(parts)} vs published)"


# -- counted -------------------------------------------------------------------------------
@dataclass
class CountedFlops:
    total: int
    by_op: dict[str, int]  # aten op name -> FLOPs
    result: Any  # what fn returned
    method: str


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _linear_dynamic_flop(x_shape, packed_weight, *args: Any, out_shape=None, **kwargs: Any) -> int:
    # x (..., in) @ W^T -> (..., out); the packed int8 weight is opaque, so shapes come from
    # the input and output
    rows = 1
    for s in x_shape[:-1]:
        rows *= s
    return FLOPS_PER_MAC * rows * x_shape[-1] * out_shape[-1]


def extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas FlopCounterMode lacks in torch 2.x, passed per counter (no global registry
    change): CPU SDPA (aten._scaled_dot_product_flash_attention_for_cpu; without it SDPA on
    CPU counts as zero) and dynamic-int8 Linear (quantized::linear_dynamic)."""
    import torch

    formulas: dict[Any, Callable[..., int]] = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        formulas[cpu_sdpa] = _sdpa_cpu_flop
    try:
        formulas[torch.ops.quantized.linear_dynamic] = _linear_dynamic_flop
    except (AttributeError, RuntimeError):
        pass  # a torch built without quantized kernels: int8 Linear cannot run either
    return formulas


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CountedFlops:
    """Run fn(*args, **kwargs) under FlopCounterMode and return its FLOPs by op.

    CPU scaled-dot-product attention and dynamic-int8 Linear are counted through formulas
    added here (see extra_flop_formulas), so models need not switch to eager attention; other
    fused kernels FlopCounterMode does not know still count as zero.
    """
    from torch.utils.flop_counter import FlopCounterMode

    extra = extra_flop_formulas()
    with FlopCounterMode(display=False, custom_mapping=extra) as mode:
        result = fn(*args, **kwargs)
    by_op = {str(op): int(n) for op, n in mode.get_flop_counts().get("Global", {}).items()}
    return CountedFlops(
        total=int(mode.get_total_flops()),
        by_op=by_op,
        result=result,
        method="FlopCounterMode (matmul + conv; CPU SDPA and int8 Linear by added formulas)",
    )


def achieved_gflops(flops: float, seconds: float) -> float:
    """GFLOP/s achieved: flops / seconds / 1e9."""
    if not seconds > 0:
        raise MeasureError(f"achieved_gflops: seconds must be positive, got {seconds}")
    return flops / seconds / 1e9
