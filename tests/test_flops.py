"""FLOPs: analytic formulas against hand counts, counted (FlopCounterMode) against analytic.

The counted checks run a tiny.en-shaped transformers Whisper with random weights (shapes are all
that matter to a count), so they need no download.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from voxmeter.assets.dims import ARCHITECTURES, ModelDims
from voxmeter.measure.flops import (
    PAPER_PUBLISHED_GFLOPS,
    achieved_gflops,
    analytic_decoder_flops,
    analytic_encoder_flops,
    analytic_flops,
    count_flops,
    decoder_positions_for,
    kv_positions_for,
    paper_flops,
    paper_label,
    paper_misfit,
)
from voxmeter.measure.windows import MeasureError

TINY = ARCHITECTURES["tiny.en"]
SOT, NO_TIMESTAMPS = 50257, 50362  # tiny.en prompt


# -- analytic against hand counts ------------------------------------------------------------
def test_encoder_tiny_en_full_window_hand_count():
    f = analytic_encoder_flops(TINY, 3000)
    # MACs: conv1 80*384*3*3000 + conv2 384*384*3*1500; linear 12*384^2*1500*4 layers;
    # attention 2*1500^2*384*4 layers; 2 FLOPs each
    assert f.conv == 2 * (80 * 384 * 3 * 3000 + 384 * 384 * 3 * 1500) == 1_880_064_000
    assert f.linear == 2 * 12 * 384**2 * 1500 * 4 == 21_233_664_000
    assert f.attention == 2 * 2 * 1500**2 * 384 * 4 == 13_824_000_000
    assert f.total == 36_937_728_000
    assert sum(f.parts.values()) == f.total
    assert round(f.gflops, 2) == 36.94


def test_encoder_scales_with_frames():
    full, half = analytic_encoder_flops(TINY, 3000), analytic_encoder_flops(TINY, 1500)
    assert half.linear * 2 == full.linear  # linear in positions
    assert half.attention * 4 == full.attention  # quadratic in positions
    assert analytic_encoder_flops(TINY, 3001).parts["conv2"] == 2 * 384 * 384 * 3 * 1501


def test_decoder_hand_count_on_toy_dims():
    toy = ModelDims(2, 8, 4, 1, 1, 10, 16, 4, 1, 1)  # d=4, 1 layer, vocab 10
    f = analytic_decoder_flops(toy, n_positions=5, prompt_len=2, n_generated=3)
    # fed tokens 2 + 3 - 1 = 4; MACs:
    # cross K,V 2*16*5=160; self q,k,v,o 4*16*4=256; cross q,o 2*16*4=128; ffn 2*4*16*4=512
    # self-attn keys: prompt 2x2=4, then 3, 4 -> 11 keys; 2*4*11=88
    # cross-attn 2*5*4 per token * 4 = 160; logits 4*10 per step * 3 = 120
    assert f.parts == {
        "cross_kv": 320,
        "self_attn_proj": 512,
        "cross_attn_proj": 256,
        "ffn": 1024,
        "logits": 240,
        "self_attn": 176,
        "cross_attn": 320,
    }
    assert f.total == 2 * 1424 and f.conv == 0


def test_decoder_positions_match_the_engine():
    from voxmeter.engines.common import decoder_positions
    from voxmeter.spec import AxisSettings

    for frames in (2, 998, 1000, 2999, 3000):
        for k in (1, 2, 3, 7):
            for pad in ("silence", "none"):
                for pool in ("stride", "avg"):
                    ax = AxisSettings(frames=frames, pad=pad, stride=k, pool=pool)
                    computed = (frames + 1) // 2
                    want = decoder_positions(computed, 1500, ax)
                    assert decoder_positions_for(frames, 1500, k, pad, pool) == want


def test_analytic_flops_combines_both_stages():
    a = analytic_flops(TINY, 1000, stride_k=2, pad="none", prompt_len=2, n_generated=10)
    assert a["computed_positions"] == 500 and a["decoder_positions"] == a["kv_positions"] == 250
    assert a["decoder"] == analytic_decoder_flops(TINY, 250, 2, 10)
    assert a["total"] == analytic_encoder_flops(TINY, 1000).total + a["decoder"].total
    s = analytic_flops(TINY, 1000, stride_k=3, pad="silence", pool="avg", n_generated=10)
    assert s["decoder_positions"] == 500  # floor(1500 / 3)
    # silence K/V are cached per model: only ceil(500 / 3) = 167 positions are projected
    assert s["kv_positions"] == 167
    assert s["decoder"] == analytic_decoder_flops(TINY, 500, 2, 10, kv_positions=167)
    cached = analytic_decoder_flops(TINY, 500, 2, 10, kv_positions=167)
    full = analytic_decoder_flops(TINY, 500, 2, 10)
    assert full.total - cached.total == 2 * 4 * 2 * 384 * 384 * (500 - 167)  # 4 layers, K and V


def test_kv_positions_never_exceed_the_positions_that_exist():
    for frames in (2, 998, 2998, 3000):
        for k in (1, 2, 3, 7):
            for pool in ("stride", "avg"):
                n = decoder_positions_for(frames, 1500, k, "silence", pool)
                assert 1 <= kv_positions_for(frames, 1500, k, "silence", pool) <= n
    # 2998 frames -> 1499 computed; avg by 7 keeps floor(1500/7) = 214 < ceil(1499/7) = 215
    assert kv_positions_for(2998, 1500, 7, "silence", "avg") == 214


def test_bad_shapes_raise():
    with pytest.raises(MeasureError):
        analytic_encoder_flops(TINY, 0)
    with pytest.raises(MeasureError):
        analytic_decoder_flops(TINY, 1500, 2, 0)
    with pytest.raises(MeasureError):
        decoder_positions_for(3000, 1500, 2, pad="zeros")


# -- the paper's column -----------------------------------------------------------------------
def test_paper_formula_against_published_figures():
    large = ARCHITECTURES["large-v3"]
    for (model, tokens), published in PAPER_PUBLISHED_GFLOPS.items():
        p = paper_flops(ARCHITECTURES[model], stride_k=1500 // tokens)
        assert p.encoder_tokens == tokens and p.n_tokens == 20
        err = p.total / 1e9 / published - 1
        print(f"paper formula {model} {tokens} tokens: {p.total / 1e9:.1f} GFLOPs "
              f"vs published {published:.0f} ({100 * err:+.2f}%)")  # fmt: skip
        assert abs(err) < 0.05  # documented: -3.1% and -3.9%
    assert paper_flops(large).n_params == 1_543_490_560


def test_paper_misfit_is_computed_from_the_formula():
    fits = paper_misfit()
    assert [f.published_gflops for f in fits] == list(PAPER_PUBLISHED_GFLOPS.values())
    large = ARCHITECTURES["large-v3"]
    for f, k in zip(fits, (1, 2)):  # 1500 and 750 encoder tokens
        assert f.ours_gflops == paper_flops(large, stride_k=k).total / 1e9
        assert f.rel_error == pytest.approx(f.ours_gflops / f.published_gflops - 1)
    assert fits[0].setting == "large-v3, 1500 encoder tokens"
    assert [round(100 * f.rel_error, 1) for f in fits] == [-3.1, -3.9]  # the documented misfit


def test_paper_label_states_the_computed_misfit():
    import re

    label = paper_label()
    assert label.startswith("paper formula, our reconstruction (large-v3 at 1500 / 750 ")
    shown = [float(x) for x in re.findall(r"([+-]\d+\.\d)%", label)]
    assert shown == [round(100 * f.rel_error, 1) for f in paper_misfit()]
    assert label.endswith("vs published)")


def test_paper_formula_is_its_own_column():
    p = paper_flops(TINY)
    a = analytic_flops(TINY, 3000, n_generated=20)
    assert p.total == p.encoder + p.decoder
    assert p.total != a["total"]  # charges every parameter per token, embeddings included
    # the paper charges the encoder at T/k tokens; the analytic encoder never changes with k
    assert paper_flops(TINY, stride_k=2).encoder < p.encoder
    assert analytic_flops(TINY, 3000, stride_k=2)["encoder"] == a["encoder"]


# -- counted against analytic -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    d = TINY
    cfg = WhisperConfig(
        vocab_size=d.n_vocab,
        num_mel_bins=d.n_mels,
        d_model=d.n_audio_state,
        encoder_layers=d.n_audio_layer,
        encoder_attention_heads=d.n_audio_head,
        decoder_layers=d.n_text_layer,
        decoder_attention_heads=d.n_text_head,
        encoder_ffn_dim=d.d_ff_audio,
        decoder_ffn_dim=d.d_ff_text,
        max_source_positions=d.n_audio_ctx,
        max_target_positions=d.n_text_ctx,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(cfg).eval()


def _close(counted: int, analytic: int) -> float:
    return abs(counted / analytic - 1)


@torch.inference_mode()
def test_counted_encoder_full_window_matches_analytic(tiny_model):
    feats = torch.randn(1, TINY.n_mels, 3000)
    c = count_flops(tiny_model.model.encoder, feats)
    a = analytic_encoder_flops(TINY, 3000)
    assert _close(c.total, a.total) < 0.01
    assert c.by_op["aten.convolution"] == a.conv
    assert c.result.last_hidden_state.shape == (1, 1500, TINY.n_audio_state)


@torch.inference_mode()
def test_counted_sdpa_equals_eager(tiny_model):
    """CPU SDPA is invisible to plain FlopCounterMode; the added formula makes it count."""
    from torch.utils.flop_counter import FlopCounterMode

    layer = tiny_model.model.encoder.layers[0].self_attn
    x = torch.randn(1, 1500, TINY.n_audio_state)
    h, dh = TINY.n_audio_head, TINY.n_audio_state // TINY.n_audio_head
    q, k, v = (
        p(x).view(1, 1500, h, dh).transpose(1, 2)
        for p in (layer.q_proj, layer.k_proj, layer.v_proj)
    )
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, k, v)
    assert plain.get_total_flops() == 0  # the gap this module closes
    sdpa = count_flops(F.scaled_dot_product_attention, q, k, v)
    eager = count_flops(lambda: (q @ k.transpose(-1, -2)).softmax(-1) @ v)
    assert sdpa.total == eager.total == 2 * 2 * 1500 * 1500 * TINY.n_audio_state


@torch.inference_mode()
def test_counted_encoder_short_input_matches_analytic(tiny_model):
    """transformers refuses non-3000 inputs, so run the encoder's own modules on 1000 frames."""
    enc = tiny_model.model.encoder

    def run(feats: torch.Tensor) -> torch.Tensor:
        x = F.gelu(enc.conv2(F.gelu(enc.conv1(feats)))).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            x = layer(x, None)
        return enc.layer_norm(x)

    c = count_flops(run, torch.randn(1, TINY.n_mels, 1000))
    assert c.result.shape == (1, 500, TINY.n_audio_state)
    assert _close(c.total, analytic_encoder_flops(TINY, 1000).total) < 0.01


@pytest.mark.parametrize("n_positions", [1500, 750])
@torch.inference_mode()
def test_counted_decoder_loop_matches_analytic(tiny_model, n_positions):
    """Prompt of 2 at once, then one token per step with a KV cache; logits on the last only."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    states = torch.randn(1, n_positions, TINY.n_text_state)
    n_generated = 6

    def decode() -> list[int]:
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        fed = torch.tensor([[SOT, NO_TIMESTAMPS]])
        out = []
        for _ in range(n_generated):
            h = tiny_model.model.decoder(
                input_ids=fed, encoder_hidden_states=states, cache=cache, use_cache=True
            ).last_hidden_state
            tok = int(tiny_model.proj_out(h[:, -1:]).argmax())
            out.append(tok)
            fed = torch.tensor([[tok]])
        return out

    c = count_flops(decode)
    a = analytic_decoder_flops(TINY, n_positions, prompt_len=2, n_generated=n_generated)
    assert len(c.result) == n_generated
    assert _close(c.total, a.total) < 0.01


@torch.inference_mode()
def test_counted_int8_linear():
    lin = torch.nn.Sequential(torch.nn.Linear(64, 32))
    q = torch.ao.quantization.quantize_dynamic(lin, {torch.nn.Linear}, dtype=torch.qint8)
    c = count_flops(q, torch.randn(5, 7, 64))
    assert c.total == 2 * 35 * 64 * 32


# -- throughput helpers -----------------------------------------------------------------------
def test_achieved_gflops():
    assert achieved_gflops(36.94e9, 0.5) == pytest.approx(73.88)
    with pytest.raises(MeasureError):
        achieved_gflops(1e9, 0)
