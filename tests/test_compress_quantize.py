"""Quantization schemes, layer groups and fake quantization on the real tiny.en weights.

Closeness to fp32 is judged on decisions, not on raw logits: one clip is greedily decoded in
fp32, and each quantized model reruns transformers' forward teacher-forced on those tokens.
A quantized model may pick another token only where fp32 itself hardly chose: where its
top-1 led the runner-up by less than `MARGIN` logits. Measured on 10 default clips (145
positions): the int8 schemes flipped 0-4 positions, the largest fp32 lead among them 0.63;
int4 flipped 5, the largest lead 1.58. The bounds below leave about 1.6x of that.
"""

import copy
import gc
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from voxmeter.compress.groups import group_of, is_linear, layer_groups
from voxmeter.compress.quantize import (
    fake_quantize,
    quantize,
    silence_torchao_noise,
    weight_bytes,
)
from voxmeter.errors import SpecError
from voxmeter.measure.envinfo import cpu_info

silence_torchao_noise()  # before transformers imports torchao

SOT, NO_TS, EOT = 50257, 50362, 50256
VOCAB, D = 51864, 384
# a decision the fp32 model leads by more than this (top-1 minus top-2 logit) must survive
# the scheme. Per-tensor int8 gets more: one scale per whole activation and weight; on this
# clip its largest logit error is 3.5, and a decision led by 1.57 flipped once the log-mel's
# projection ran on one BLAS thread (features that moved in the last bit, ~1e-9)
MARGIN = {"int8": 1.0, "int8-tensor": 2.0, "int4": 2.5}
SCHEMES = [
    "int8-dynamic",
    "int8-dynamic-tensor",
    "int8-weight",
    "torchao-int8-dynamic",
    "torchao-int4-weight",
]


@pytest.fixture(scope="module")
def fp32(cache_dir):
    from transformers import WhisperForConditionalGeneration

    from voxmeter.assets.bundled import resolve_model
    from voxmeter.assets.convert import convert_cached

    src = resolve_model("tiny.en", cache_dir)
    hf_dir = convert_cached(src.ct2_dir, cache_dir)
    return WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()


@pytest.fixture(scope="module")
def forced(fp32):
    """(features, fp32 greedy tokens, fp32 teacher-forced logits) of one bundled clip."""
    from voxmeter.audio.features import clip_features
    from voxmeter.audio.io import load_audio
    from voxmeter.data.datasets import load_dataset

    clip = load_dataset("default").clips[0]
    feats = torch.as_tensor(clip_features(load_audio(clip.audio).samples, 3000))
    ids = [SOT, NO_TS]
    with torch.inference_mode():
        states = (fp32.model.encoder(feats).last_hidden_state,)
        while ids[-1] != EOT and len(ids) < 40:
            logits = fp32(encoder_outputs=states, decoder_input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
        seq = torch.tensor([ids])
        return feats, seq, fp32(encoder_outputs=states, decoder_input_ids=seq).logits[0]


def _linear_bytes(model: nn.Module) -> int:
    groups = layer_groups(model)
    names = [n for g, members in groups.items() if g not in ("conv", "proj") for n in members]
    return sum(weight_bytes(model.get_submodule(n)) for n in names)


def _layer_linears(model: nn.Module) -> list[nn.Linear]:
    groups = layer_groups(model)
    return [model.get_submodule(n) for g in groups if g not in ("conv", "proj") for n in groups[g]]


def _fp32_linear(m: nn.Module) -> bool:
    """Still a plain fp32 Linear (torchao keeps the class and swaps the weight's)."""
    return (
        isinstance(m, nn.Linear)
        and type(m.weight) is nn.Parameter
        and m.weight.dtype == torch.float32
    )


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# -- groups ----------------------------------------------------------------------------------


def test_groups_cover_every_linear_once(fp32):
    groups = layer_groups(fp32)
    assert list(groups)[:1] == ["conv"] and list(groups)[-1] == "proj"
    assert [g for g in groups if g.startswith("enc.")] == [f"enc.{i}" for i in range(4)]
    assert [g for g in groups if g.startswith("dec.")] == [f"dec.{i}" for i in range(4)]
    members = [n for g, ns in groups.items() if g != "conv" for n in ns]
    linears = [n for n, m in fp32.named_modules() if isinstance(m, nn.Linear)]
    assert sorted(members) == sorted(linears) and len(set(members)) == len(members)
    assert groups["conv"] == ["model.encoder.conv1", "model.encoder.conv2"]
    assert len(groups["enc.0"]) == 6 and len(groups["dec.0"]) == 10  # + cross-attention
    for g, ns in groups.items():
        assert all(group_of(n) == g for n in ns)
    assert group_of("model.decoder.embed_tokens") == "proj"
    with pytest.raises(ValueError):
        group_of("model.encoder.layer_norm")


def test_groups_follow_a_shallower_pruned_low_rank_model(fp32):
    m = copy.deepcopy(fp32)
    del m.model.decoder.layers[2:]
    layer = m.model.encoder.layers[1]
    layer.fc1, layer.fc2 = nn.Linear(D, 1008), nn.Linear(1008, D)  # pruned FFN
    layer.self_attn.q_proj = nn.Sequential(nn.Linear(D, 32, bias=False), nn.Linear(32, D))
    groups = layer_groups(m)
    assert [g for g in groups if g.startswith("dec.")] == ["dec.0", "dec.1"]
    enc1 = groups["enc.1"]
    assert "model.encoder.layers.1.self_attn.q_proj.0" in enc1
    assert "model.encoder.layers.1.self_attn.q_proj.1" in enc1
    assert "model.encoder.layers.1.self_attn.q_proj" not in enc1 and len(enc1) == 7
    assert group_of("model.encoder.layers.1.self_attn.q_proj.1") == "enc.1"

    # quantization follows the same groups; int4 needs 32 | in_features (fc2's is 1008)
    _, method = quantize(m, "torchao-int4-weight")
    assert "groups of 128/32 inputs" in method and "1 Linear left fp32" in method
    assert _fp32_linear(m.model.encoder.layers[1].fc2)
    assert not _fp32_linear(m.model.encoder.layers[1].fc1)
    assert not _fp32_linear(m.model.encoder.layers[1].self_attn.q_proj[1])
    assert all(is_linear(m.get_submodule(n)) for n in layer_groups(m)["enc.1"])
    _, method = quantize(copy.deepcopy(fp32), "int8-dynamic", keep="dec.3")
    assert "fp32: conv (always), dec.3" in method


# -- schemes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme,embed", [(s, False) for s in SCHEMES] + [("int8-dynamic", True)])
def test_scheme_keeps_fp32_decisions(fp32, forced, scheme, embed):
    feats, seq, ref = forced
    model, method = quantize(copy.deepcopy(fp32), scheme, embed=embed, cpu_flags=cpu_info().flags)
    assert method.startswith(f"{scheme}: ") and "64 Linear layers quantized" in method
    assert not any(_fp32_linear(m) for m in _layer_linears(model))
    with torch.inference_mode():
        out = model(input_features=feats, decoder_input_ids=seq).logits[0]
    top2 = ref.topk(2, dim=-1).values
    lead = top2[:, 0] - top2[:, 1]
    same = out.argmax(-1) == ref.argmax(-1)
    kind = "int4" if "int4" in scheme else "int8-tensor" if scheme.endswith("-tensor") else "int8"
    margin = MARGIN[kind]
    assert same[lead > margin].all(), (scheme, lead[~same])
    assert same.float().mean() >= 0.9, (scheme, same.float().mean())


def test_precision_int8_is_int8_dynamic_with_the_embedding(cache_dir):
    """--precision int8 in the hf engine runs quant=int8-dynamic with quant_embed, as
    CTranslate2's int8 does: no fp32 embedding beside an int8 copy of the projection."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.compress.quantize import Int8Projection
    from voxmeter.engines.hf_whisper import HFWhisperEngine
    from voxmeter.spec import RunSpec

    spec = RunSpec(engine="hf").with_(precision="int8")
    engine = HFWhisperEngine(spec, resolve_model("tiny.en", cache_dir), cache_dir)
    model = engine.model
    assert isinstance(model.proj_out, Int8Projection)
    assert model.proj_out.qweight is model.model.decoder.embed_tokens.qweight
    fc2 = model.model.encoder.layers[2].fc2
    assert isinstance(fc2, torch.ao.nn.quantized.dynamic.Linear)
    assert fc2.weight().qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    assert engine.precision_method.startswith("int8-dynamic: torch.ao dynamic int8")
    assert "fp32 matrix freed" in engine.precision_method


def _hand_count(model: nn.Module, scheme: str) -> int:
    """Bytes the Linear layers of `model` (fp32) take under `scheme`, counted by hand."""
    total = 0
    for lin in _layer_linears(model):
        out, inp = lin.weight.shape
        bias = 0 if lin.bias is None else out
        total += {
            "none": 4 * out * inp + 4 * bias,
            "int8-dynamic": out * inp + 16 * out + 4 * bias,  # fp64 scale + int64 zero
            "int8-dynamic-tensor": out * inp + 16 + 4 * bias,
            "int8-weight": out * inp + 4 * out + 4 * bias,  # fp32 scale per row
            "torchao-int8-dynamic": out * inp + 5 * out + 4 * bias,  # + int8 zero point
            "torchao-int4-weight": out * inp // 2 + (inp // 128) * out * 4 + 2 * bias,
        }[scheme]
    return total


def test_weight_bytes_against_hand_counts(fp32):
    fp32_total = sum(p.numel() * 4 for p in fp32.parameters())
    assert weight_bytes(fp32) == fp32_total
    dense = _hand_count(fp32, "none")
    assert _linear_bytes(fp32) == dense
    for scheme in SCHEMES:
        model, _ = quantize(copy.deepcopy(fp32), scheme, cpu_flags=cpu_info().flags)
        got = _linear_bytes(model)
        assert got == _hand_count(fp32, scheme), scheme
        assert weight_bytes(model) == fp32_total - dense + got, scheme
        ratio = got / dense
        assert (1 / 8 <= ratio < 1 / 7) if "int4" in scheme else (0.25 <= ratio < 0.26), ratio


def test_embed_frees_the_fp32_matrix(fp32):
    model = copy.deepcopy(fp32)
    shared = weakref.ref(model.proj_out.weight)
    assert shared() is model.model.decoder.embed_tokens.weight
    before = weight_bytes(model)
    model, method = quantize(model, "none", embed=True)
    gc.collect()
    assert shared() is None, "the fp32 embedding matrix is still referenced"
    tensors = [*model.parameters(), *model.buffers()]
    assert not any(t.shape == (VOCAB, D) and t.is_floating_point() for t in tensors)
    # one int8 matrix for both, a byte per value plus an fp32 scale per row
    assert model.proj_out.qweight is model.model.decoder.embed_tokens.qweight
    assert weight_bytes(model) == before - 4 * VOCAB * D + VOCAB * D + 4 * VOCAB
    assert method.startswith("none: Linear layers fp32") and "fp32 matrix freed" in method
    # the modules compute with the int8 matrix: lookups are its rows dequantized, the
    # projection equals x @ dequantized^T but for run-time activation rounding (1.3% on
    # Gaussian rows, whose 3-sigma peak sets the step: real hidden states do better). The
    # rounding of the matrix itself costs 3.1% of its norm (rows with a few large dims set
    # their own scale); what that does to decisions is test_scheme_keeps_fp32_decisions'.
    emb, proj = model.model.decoder.embed_tokens, model.proj_out
    deq = emb.qweight.float() * emb.scale[:, None]
    ids = torch.tensor([[SOT, NO_TS, 843, 1770]])
    x = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(emb(ids), deq[ids])
        want = x @ deq.t()
        got = proj(x)
    assert got.shape == (2, 3, VOCAB) and ((got - want).norm() / want.norm()) < 0.02
    w = fp32.proj_out.weight.detach()
    assert ((deq - w).norm() / w.norm()) < 0.035


def test_keep_leaves_exactly_those_groups_fp32(fp32):
    model, method = quantize(copy.deepcopy(fp32), "int8-weight", keep={"enc.0", "dec.3"})
    assert "48 Linear layers quantized; fp32: conv (always), enc.0, dec.3" in method
    for g, names in layer_groups(model).items():
        for n in names:
            m = model.get_submodule(n)
            fp = _fp32_linear(m) or isinstance(m, nn.Conv1d)
            assert fp == (g in ("conv", "enc.0", "dec.3", "proj")), n
            if fp:
                assert torch.equal(m.weight, fp32.get_submodule(n).weight), n


# -- fake quantization ------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["conv", "enc.1", "proj"])
def test_fake_quantize_rounds_and_restores_bit_for_bit(fp32, group):
    model = copy.deepcopy(fp32)
    names = layer_groups(model)[group]
    orig = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    errors = {}
    for per_channel in (True, False):
        # an error inside the block restores the weights too
        with pytest.raises(KeyError), fake_quantize(model, group, 4, per_channel=per_channel):
            w = model.get_submodule(names[0]).weight
            levels = w[0].unique() if per_channel else w.unique()
            assert len(levels) <= 15 and not torch.equal(w, orig[names[0]])
            errors[per_channel] = sum(
                (model.get_submodule(n).weight - orig[n]).pow(2).sum() for n in names
            )
            raise KeyError
        for n in names:
            w = model.get_submodule(n).weight
            assert torch.equal(w.view(torch.int32), orig[n].view(torch.int32)), n
    assert errors[True] < errors[False]
    if group == "proj":  # the tied embedding is the same matrix
        assert model.model.decoder.embed_tokens.weight is model.proj_out.weight


# -- errors ----------------------------------------------------------------------------------


def test_bad_scheme_group_or_bits_is_one_line(fp32):
    model = copy.deepcopy(fp32)
    with pytest.raises(SpecError) as e:
        quantize(model, "int3")
    assert _one_line(e).startswith("quant: expected one of")
    with pytest.raises(SpecError) as e:
        quantize(model, "int8-weight", keep="enc.0, enc.9")
    msg = _one_line(e)
    assert "'enc.9'" in msg and "conv, enc.0..enc.3, dec.0..dec.3, proj" in msg
    with pytest.raises(SpecError) as e:
        quantize(model, "int8-weight", keep={"proj"}, embed=True)
    assert _one_line(e).startswith("keep: 'proj'")
    with pytest.raises(SpecError) as e, fake_quantize(model, "dec.7"):
        pass
    assert _one_line(e).startswith("group: unknown layer group 'dec.7'")
    with pytest.raises(SpecError) as e, fake_quantize(model, "dec.0", bits=1):
        pass
    assert _one_line(e).startswith("bits:")
    assert all(_fp32_linear(m) for m in _layer_linears(model))  # nothing touched


def test_int4_without_a_cpu_kernel_is_a_spec_error(fp32, monkeypatch):
    import voxmeter.engines.quant as q

    monkeypatch.setattr(q, "_int4_kernel_runs", lambda: False)
    with pytest.raises(SpecError) as e:
        quantize(copy.deepcopy(fp32), "torchao-int4-weight")
    assert _one_line(e).startswith("quant: torchao-int4-weight: ")
    assert e.value.args[0].endswith("on this CPU")


def _file_ranges(path) -> list[tuple[int, int]]:
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.rstrip().endswith(str(path)):
            a, b = (int(x, 16) for x in line.split()[0].split("-"))
            spans.append((a, b))
    return spans


def _storages(model: nn.Module) -> list[torch.Tensor]:
    out = [*model.parameters(), *model.buffers()]
    for m in model.modules():  # torch.ao dynamic Linears hold weight and bias in packed params
        if getattr(m, "_packed_params", None) is not None and callable(getattr(m, "bias", None)):
            out += [t for t in (m.weight(), m.bias()) if t is not None]
    return out


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("route", ["int8-dynamic", "int8-weight"])
def test_quantized_model_keeps_no_view_into_the_weights_file(cache_dir, route):
    """transformers memory-maps the safetensors file and its tensors are views into the map:
    one surviving view (a bias inside torch.ao's packed params, a layer norm) keeps the whole
    fp32 file resident beside the int8 copy. After quantization, no tensor may point there."""
    from transformers import WhisperForConditionalGeneration

    from voxmeter.assets.bundled import resolve_model
    from voxmeter.assets.convert import convert_cached

    hf_dir = convert_cached(resolve_model("tiny.en", cache_dir).ct2_dir, cache_dir)
    path = (hf_dir / "model.safetensors").resolve()
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    spans = _file_ranges(path)
    assert spans, "transformers no longer memory-maps the file: this test checks nothing"
    inside = [t for t in _storages(model) if any(a <= t.data_ptr() < b for a, b in spans)]
    assert inside, "the freshly loaded model should view the mapped file"
    model, _ = quantize(model, route, embed=True, cpu_flags=cpu_info().flags)
    left = [
        tuple(t.shape) for t in _storages(model) if any(a <= t.data_ptr() < b for a, b in spans)
    ]
    assert left == [], f"{route}: tensors still viewing the weights file: {left[:5]}"
