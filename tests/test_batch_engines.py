"""Batches run as one tensor, and greedy results at B > 1 equal B = 1 for the same clips.

Clips of different lengths finish at different steps, so a batch that let a finished item
disturb the others, or mixed up rows, would show here. With frames="fit" a batch runs at its
longest clip's fit, so each clip alone is run at that same input length for the comparison.
"""

from __future__ import annotations

import pytest

from voxmeter.engines import load_engine
from voxmeter.spec import RunSpec

# real speech from 1.1 s to 7.1 s: each item stops at its own end-of-text
SIX = ["cards-001", "cards-003", "goforward", "librivox-0880", "librivox-0890", "librivox-0870"]
THREE = SIX[:3]


@pytest.fixture(scope="module")
def audio(default_clips):
    return {c.id: a.samples for c, a in default_clips}


def _batch_and_alone(e, audios):
    feats = e.features(audios)
    n_frames = int(feats.shape[-1])
    batch = e.decode(e.encode(feats))
    alone = [e.decode(e.encode(e.features([a], n_frames)))[0] for a in audios]
    return n_frames, batch, alone


def _assert_same(ids, batch, alone):
    assert len(batch) == len(ids)
    differ = [
        f"{cid}: batch {b.text!r} alone {a.text!r}"
        for cid, b, a in zip(ids, batch, alone)
        if (b.tokens, b.hit_max_length) != (a.tokens, a.hit_max_length)
    ]
    assert not differ, "B>1 differs from B=1: " + "; ".join(differ)


CASES = [
    ("ct2", SIX, dict(frames=3000)),
    ("ct2", SIX, dict(frames="fit")),
    ("ct2", SIX, dict(frames="fit", pad="none", stride=2, pool="avg")),
    ("ct2", SIX, dict(frames="fit", precision="int8")),  # CTranslate2 quantizes row by row
    ("hf", SIX, dict(frames="fit")),
    ("hf", THREE, dict(frames="fit", stride=2, pool="avg")),  # cached silence K/V, pooled
    pytest.param("hf", SIX, dict(frames=3000), marks=pytest.mark.slow),  # ~30 s on 2 cores
]


@pytest.mark.parametrize("engine, ids, axes", CASES)
def test_batch_equals_each_clip_alone(engine, ids, axes, audio, cache_dir, tiny_source):
    e = load_engine(RunSpec(engine=engine).with_(**axes), cache_dir, tiny_source)
    audios = [audio[i] for i in ids]
    n_frames, batch, alone = _batch_and_alone(e, audios)
    if axes["frames"] == "fit":  # the batch runs at the longest clip's fit
        assert n_frames == max(e.n_frames(len(a)) for a in audios)
    _assert_same(ids, batch, alone)
    assert len({len(b.tokens) for b in batch}) > 1, "items should stop at different steps"


def test_each_item_gets_its_own_front_end_at_the_batch_length(audio, cache_dir, tiny_source):
    """Row i of a batch's features is clip i brought to T frames alone (both front ends)."""
    import torch

    for frontend in ("audio", "features"):
        e = load_engine(RunSpec().with_(frames="fit", frontend=frontend), cache_dir, tiny_source)
        audios = [audio[i] for i in THREE]
        feats = e.features(audios)
        for i, a in enumerate(audios):
            assert torch.equal(feats[i : i + 1], e.features([a], feats.shape[-1])), frontend


def test_hf_runs_the_batch_as_one_tensor(audio, cache_dir, tiny_source):
    """Every decoder step runs the items still decoding as one tensor (batched self-attention
    cache and cross K/V); finished items leave the batch once a quarter of it is done."""
    e = load_engine(RunSpec().with_(frames="fit"), cache_dir, tiny_source)
    seen: list[int] = []
    layer = e.dec.layers[0]
    hooks = [
        layer.self_attn.q_proj.register_forward_hook(lambda m, i, o: seen.append(o.shape[0])),
        layer.encoder_attn.k_proj.register_forward_hook(lambda m, i, o: seen.append(o.shape[0])),
    ]
    try:
        outs = e.decode(e.encode(e.features([audio[i] for i in THREE])))
    finally:
        for h in hooks:
            h.remove()
    steps = max(o.extra["steps"] for o in outs)
    assert len(seen) == steps + 1  # one cross K/V projection, then one pass per step
    assert seen[:2] == [3, 3]  # K/V of all three, and the first step over all three
    assert sorted(seen[1:], reverse=True) == seen[1:]  # rows only ever leave
    for step, rows in enumerate(seen[1:], 1):  # never fewer rows than items still running
        assert rows >= sum(1 for o in outs if o.extra["steps"] >= step), (step, seen)


def test_ct2_runs_the_batch_in_one_generate(audio, cache_dir, tiny_source):
    e = load_engine(RunSpec(engine="ct2").with_(frames="fit"), cache_dir, tiny_source)
    calls: list[int] = []

    class Spy:
        def __init__(self, model):
            self._model = model

        def __getattr__(self, name):
            return getattr(self._model, name)

        def generate(self, states, prompts, **kw):
            calls.append(len(prompts))
            return self._model.generate(states, prompts, **kw)

    e.model = Spy(e.model)
    outs = e.decode(e.encode(e.features([audio[i] for i in SIX])))
    assert calls == [6] and len(outs) == 6


def test_hf_int8_batch_runs_but_shares_one_activation_scale(audio, cache_dir, tiny_source):
    """torch's dynamic int8 Linear quantizes activations per tensor, so the rows of a batch
    share one scale: at B > 1 an item's result may differ from B = 1 (librivox-0890 does on
    the six clips above). Batches still run and give one output per item."""
    e = load_engine(RunSpec().with_(frames="fit", precision="int8"), cache_dir, tiny_source)
    outs = e.decode(e.encode(e.features([audio[i] for i in THREE])))
    assert len(outs) == 3 and all(o.text for o in outs)


def test_hf_logits_of_a_batch_equal_the_output_projection(cache_dir, tiny_source):
    """The batched logits (W @ h.T, a faster kernel at small B) are the projection's own
    products, up to summation order; B = 1 goes through the projection itself."""
    import torch

    e = load_engine(RunSpec(), cache_dir, tiny_source)
    h = torch.randn(8, e.dims.n_text_state, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = e.model.proj_out(h)
        assert torch.allclose(e._logits(h), ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(e._logits(h[:1]), e.model.proj_out(h[:1]))
        assert torch.equal(e._logits(h).argmax(-1), ref.argmax(-1))
