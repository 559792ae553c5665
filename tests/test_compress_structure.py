"""Structural compression on the real tiny.en weights: fewer decoder layers, low-rank Linears,
pruned heads and FFN neurons. Counts are checked against the shapes by hand, outputs against
transformers' own forward, and the pruning choice against the measured importance."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from voxmeter.compress.depth import keep_decoder_layers, spaced_layers
from voxmeter.compress.lowrank import (
    LowRankLinear,
    factorize,
    layer_linears,
    low_rank_params,
    rank_for_energy,
    split_linear,
)
from voxmeter.compress.prune import (
    attention_modules,
    ffn_layers,
    importance,
    n_kept,
    n_params,
    prune,
)
from voxmeter.errors import DataError, SpecError

D, F_DIM, HD, H = 384, 1536, 64, 6  # tiny.en: width, FFN width, head dim, heads
N_ATTN, N_LAYERS = 4 + 2 * 4, 8  # attention modules (enc self + dec self/cross), layers


@pytest.fixture(scope="module")
def base(cache_dir):
    from transformers import WhisperForConditionalGeneration

    from voxmeter.assets.bundled import resolve_model
    from voxmeter.assets.convert import convert_cached

    torch.manual_seed(0)
    src = resolve_model("tiny.en", cache_dir)
    hf_dir = convert_cached(src.ct2_dir, cache_dir)
    return WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()


@pytest.fixture
def model(base):
    return copy.deepcopy(base)


@pytest.fixture(scope="module")
def calib(cache_dir):
    """Two bundled clips as (features, prompt + reference tokens + eot)."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.assets.convert import special_ids
    from voxmeter.audio.features import clip_features
    from voxmeter.audio.io import load_audio
    from voxmeter.data.datasets import load_dataset
    from voxmeter.engines.common import Tokenizer, prompt_ids

    src = resolve_model("tiny.en", cache_dir)
    tok, eot = Tokenizer(src.tokenizer), special_ids(src.dims)["eot"]
    pairs = []
    for clip in load_dataset("default").clips[:2]:
        feats = torch.as_tensor(clip_features(load_audio(clip.audio).samples, 3000))
        pairs.append((feats, prompt_ids(src.dims) + tok.encode(clip.text) + [eot]))
    return pairs


@pytest.fixture(scope="module")
def scores(base, calib):
    return importance(base, calib)


def _logits(m, feats, ids, **kw):
    with torch.no_grad():
        return m(input_features=feats, decoder_input_ids=torch.tensor([ids]), **kw).logits


def _one_line_spec_error(fn, field):
    with pytest.raises(SpecError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(field), msg


# -- depth ------------------------------------------------------------------------------------
def test_spaced_layers_follow_distil_whisper():
    assert [spaced_layers(4, k) for k in (1, 2, 3, 4)] == [[3], [0, 3], [0, 1, 3], [0, 1, 2, 3]]
    assert spaced_layers(32, 2) == [0, 31]  # distil-large-v2's student
    assert spaced_layers(32, 3) == [0, 15, 31]


def test_keep_decoder_layers(model, base, calib):
    before = n_params(model)
    kept = keep_decoder_layers(model, 2)
    assert kept == [0, 3]
    dec, teacher = model.model.decoder, base.model.decoder
    assert model.config.decoder_layers == 2 and len(dec.layers) == 2
    for new, old in enumerate(kept):
        assert torch.equal(dec.layers[new].fc1.weight, teacher.layers[old].fc1.weight)
        assert dec.layers[new].self_attn.layer_idx == new == dec.layers[new].encoder_attn.layer_idx
    attn = 4 * D * D + 3 * D  # q, k, v, out weights; q, v, out biases (k has none)
    per_layer = 2 * attn + (D * F_DIM + F_DIM) + (F_DIM * D + D) + 3 * 2 * D  # + 3 LayerNorms
    assert before - n_params(model) == 2 * per_layer

    feats, ids = calib[0]
    full = _logits(model, feats, ids[:6], use_cache=False)
    assert full.shape == (1, 6, model.config.vocab_size)
    # transformers' KV cache indexes layers by layer_idx: a cached step must match
    with torch.no_grad():
        first = model(input_features=feats, decoder_input_ids=torch.tensor([ids[:5]]))
        step = model(
            encoder_outputs=(first.encoder_last_hidden_state,),
            decoder_input_ids=torch.tensor([ids[5:6]]),
            cache=first.cache,
        ).logits
    torch.testing.assert_close(step[0, -1], full[0, -1], atol=1e-4, rtol=1e-4)


def test_keep_decoder_layers_bad_k(model):
    _one_line_spec_error(lambda: keep_decoder_layers(model, 5), "decoder_layers")
    _one_line_spec_error(lambda: keep_decoder_layers(model, 0), "decoder_layers")
    assert len(model.model.decoder.layers) == 4  # untouched


# -- low rank ---------------------------------------------------------------------------------
def test_split_linear_full_rank_exact_and_error_grows(base):
    fc1 = base.model.encoder.layers[0].fc1
    x = torch.randn(200, D)
    ref = fc1(x).detach()
    s = torch.linalg.svdvals(fc1.weight.detach().double())
    assert rank_for_energy(s, 1.0) == D
    full = split_linear(fc1, D)
    assert isinstance(full, nn.Sequential) and full.rank == D
    assert (full[0].bias is None) and full[1].bias is not None
    assert full[0].weight.dtype == fc1.weight.dtype
    torch.testing.assert_close(full(x), ref, atol=1e-4, rtol=0)

    ranks, errors = [], []
    for energy in (0.99, 0.95, 0.9, 0.8, 0.5):
        r = rank_for_energy(s, energy)
        lr = split_linear(fc1, r)
        w_err = torch.linalg.norm(lr[1].weight @ lr[0].weight - fc1.weight) / torch.linalg.norm(
            fc1.weight
        )
        assert w_err <= (1 - energy) ** 0.5 + 1e-5  # Eckart-Young: sqrt(1 - kept energy)
        ranks.append(r)
        errors.append(float(torch.linalg.norm(lr(x).detach() - ref)))
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == len(ranks)
    assert errors == sorted(errors) and len(set(errors)) == len(errors)


def test_factorize_counts_and_forward(model, calib):
    before = n_params(model)
    linears = {
        name: (lin.in_features, lin.out_features) for name, _, _, lin in layer_linears(model)
    }
    assert len(linears) == 4 * 6 + 4 * 10  # encoder q/k/v/out/fc1/fc2, decoder + cross q/k/v/out
    report = factorize(model, 0.9)
    assert report.keys() == linears.keys()
    saved = 0
    for name, (r, full) in report.items():
        i, o = linears[name]
        assert full == min(i, o)
        module = model.get_submodule(name)
        if r < full:
            assert isinstance(module, LowRankLinear) and module.rank == r
            assert (module.in_features, module.out_features) == (i, o)
            assert r * (i + o) < i * o
            saved += i * o - r * (i + o)
        else:
            assert type(module) is nn.Linear
    assert saved > 0 and before - n_params(model) == saved
    now, dense = low_rank_params(model)
    assert dense - now == saved
    feats, ids = calib[1]
    assert _logits(model, feats, ids).shape == (1, len(ids), model.config.vocab_size)


def test_factorize_energy_one_and_include(model):
    before = n_params(model)
    report = factorize(model, 1.0, include=["model.encoder.layers.2"])
    assert len(report) == 6
    assert all(r == full for r, full in report.values())  # full rank never saves: left dense
    assert n_params(model) == before and low_rank_params(model) == (0, 0)
    only = factorize(model, 0.5, include=["model.decoder.layers.0.fc1"])
    assert list(only) == ["model.decoder.layers.0.fc1"]
    layer = model.model.decoder.layers[0]
    assert isinstance(layer.fc1, LowRankLinear)
    assert type(model.model.decoder.layers[1].fc1) is nn.Linear
    # a saved model comes back as a plain Sequential (artifact.py): still counted, not re-split
    counted = low_rank_params(model)
    layer.fc1 = nn.Sequential(*layer.fc1)
    assert low_rank_params(model) == counted
    assert factorize(model, 0.5, include=["model.decoder.layers.0.fc1"]) == {}
    _one_line_spec_error(lambda: factorize(model, 0.5, include=["model.decoder.fc9"]), "include")


def test_factorize_bad_energy(model):
    for e in (0, 1.5, -0.1, True):
        _one_line_spec_error(lambda e=e: factorize(model, e), "lowrank_energy")


# -- pruning ----------------------------------------------------------------------------------
def test_n_kept_rule():
    assert [n_kept(6, s) for s in (0.0, 0.25, 0.5, 0.75, 0.99)] == [6, 5, 3, 2, 1]
    assert n_kept(1536, 0.25) == 1152 and n_kept(1536, 0.5) == 768
    assert n_kept(100, 0.29) == 71  # float 0.29 * 100 = 28.999... still removes 29


def test_importance_is_the_gate_gradient(base, calib, scores):
    """Score of a head = sum over clips of |dL/dg| for a gate g on the head's output; the same
    for a neuron. Checked by hand with explicit gates on one encoder and one decoder layer."""
    enc, dec = base.model.encoder.layers[1], base.model.decoder.layers[2]
    gates = {
        "heads": torch.ones(H, requires_grad=True),
        "ffn": torch.ones(F_DIM, requires_grad=True),
    }
    sums = {k: torch.zeros_like(g, dtype=torch.float64) for k, g in gates.items()}

    def gate_heads(_m, args):
        x = args[0]
        return (x.view(*x.shape[:-1], H, HD) * gates["heads"][:, None]).flatten(-2)

    def gate_ffn(_m, args):
        return args[0] * gates["ffn"]

    hooks = [
        enc.self_attn.out_proj.register_forward_pre_hook(gate_heads),
        dec.fc2.register_forward_pre_hook(gate_ffn),
    ]
    try:
        for feats, ids in calib:
            logits = base(input_features=feats, decoder_input_ids=torch.tensor([ids[:-1]])).logits
            # prompt_ids(tiny.en) is [sot, no_timestamps]: text starts at position 2
            loss = nn.functional.cross_entropy(logits[0, 1:], torch.tensor(ids[2:]))
            g_heads, g_ffn = torch.autograd.grad(loss, [gates["heads"], gates["ffn"]])
            sums["heads"] += g_heads.abs().double()
            sums["ffn"] += g_ffn.abs().double()
    finally:
        for h in hooks:
            h.remove()
    got_h = scores.heads["model.encoder.layers.1.self_attn"]
    got_f = scores.ffn["model.decoder.layers.2"]
    torch.testing.assert_close(got_h, sums["heads"], rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(got_f, sums["ffn"], rtol=1e-3, atol=1e-7)


@pytest.fixture(scope="module")
def pruned(base, calib, scores):
    m = copy.deepcopy(base)
    return m, prune(m, 0.5, 0.25, calib, scores=scores)


def test_prune_shapes_and_counts(pruned, base):
    m, report = pruned
    h, n = 3, 384  # heads removed per attention module, neurons removed per layer
    for name, a in attention_modules(m):
        assert report["heads"][name] == (3, 6) and a.num_heads == 3 and a.head_dim == HD
        assert a.q_proj.out_features == a.k_proj.out_features == a.v_proj.out_features == 3 * HD
        assert a.out_proj.in_features == 3 * HD and a.out_proj.out_features == D
    for name, layer in ffn_layers(m):
        assert report["ffn"][name] == (F_DIM - n, F_DIM)
        assert layer.fc1.out_features == layer.fc2.in_features == F_DIM - n
    per_attn = 4 * HD * h * D + 2 * HD * h  # q, k, v rows and out_proj columns; q and v biases
    per_ffn = 2 * D * n + n  # fc1 rows and bias, fc2 columns
    assert report["params_before"] == n_params(base)
    assert (
        report["params_before"] - report["params_after"] == N_ATTN * per_attn + N_LAYERS * per_ffn
    )
    assert report["params_after"] == n_params(m)


def test_prune_keeps_the_highest_scores(pruned, base, scores):
    m, report = pruned
    for name, kept in report["head_indices"].items():
        top = torch.topk(scores.heads[name], 3).indices.sort().values.tolist()
        assert kept == top, name
    # one layer by hand: the kept rows/columns are the teacher's, in order
    name = "model.encoder.layers.1.self_attn"
    kept = report["head_indices"][name]
    rows = torch.cat([torch.arange(k * HD, (k + 1) * HD) for k in kept])
    old, new = base.get_submodule(name), m.get_submodule(name)
    for p in ("q_proj", "k_proj", "v_proj"):
        assert torch.equal(getattr(new, p).weight, getattr(old, p).weight[rows])
    assert torch.equal(new.q_proj.bias, old.q_proj.bias[rows])
    assert torch.equal(new.out_proj.weight, old.out_proj.weight[:, rows])
    low = torch.topk(scores.ffn["model.decoder.layers.0"], 384, largest=False).indices
    keep = torch.ones(F_DIM, dtype=torch.bool)
    keep[low] = False
    fc1_old = base.model.decoder.layers[0].fc1.weight
    assert torch.equal(m.model.decoder.layers[0].fc1.weight, fc1_old[keep])


def test_pruned_model_equals_the_masked_teacher(pruned, base, calib, scores):
    """transformers' forward on the pruned model = the teacher with the removed heads' and
    neurons' outputs zeroed: the slicing (Torch-Pruning's) cut exactly those units."""
    m, report = pruned
    hooks = []
    for name, a in attention_modules(base):
        mask = torch.zeros(H)
        mask[report["head_indices"][name]] = 1.0

        def zero_heads(_m, args, mask=mask):
            x = args[0]
            return (x.view(*x.shape[:-1], H, HD) * mask[:, None]).flatten(-2)

        hooks.append(a.out_proj.register_forward_pre_hook(zero_heads))
    for name, layer in ffn_layers(base):
        keep = torch.ones(F_DIM)
        keep[torch.topk(scores.ffn[name], 384, largest=False).indices] = 0.0
        hooks.append(layer.fc2.register_forward_pre_hook(lambda _m, a, k=keep: a[0] * k))
    try:
        feats, ids = calib[1]
        ref = _logits(base, feats, ids)
    finally:
        for h in hooks:
            h.remove()
    got = _logits(m, feats, ids)
    assert got.shape == (1, len(ids), m.config.vocab_size)
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)


def test_prune_then_depth_and_lowrank_still_run(pruned, calib):
    m = copy.deepcopy(pruned[0])
    keep_decoder_layers(m, 2)
    assert factorize(m, 0.9, include=["model.decoder.layers.1"])
    feats, ids = calib[0]
    assert _logits(m, feats, ids).shape == (1, len(ids), m.config.vocab_size)


def test_prune_quarter_keeps_five_heads(model, scores):
    report = prune(model, 0.25, 0.0, None, scores=scores)
    assert set(report["heads"].values()) == {(5, 6)}
    assert set(report["ffn"].values()) == {(F_DIM, F_DIM)}
    saved = N_ATTN * (4 * HD * D + 2 * HD)
    assert report["params_before"] - report["params_after"] == saved


def test_prune_bad_inputs(model):
    for heads in (1.0, -0.1, 1.5, True):
        _one_line_spec_error(lambda h=heads: prune(model, h, 0.0, []), "prune_heads")
    _one_line_spec_error(lambda: prune(model, 0.0, 1.0, []), "prune_ffn")
    with pytest.raises(DataError):
        prune(model, 0.5, 0.0, [])
    assert prune(model, 0.0, 0.0, [])["params_after"] == n_params(model)  # nothing to do


def test_importance_frees_each_clips_activations(base, calib):
    """No activation outlives its clip's backward pass without the cycle collector: a gradient
    hook that referred to its own tensor kept every clip's activations (16 GB at 256 clips)."""
    import gc
    import weakref

    seen: list = []
    probe = base.model.encoder.layers[0].fc2.register_forward_pre_hook(
        lambda _m, args: seen.append(weakref.ref(args[0]))
    )
    gc.disable()
    try:
        importance(base, calib)
    finally:
        gc.enable()
        probe.remove()
    assert len(seen) == len(calib)
    assert [r() is None for r in seen] == [True] * len(calib)
