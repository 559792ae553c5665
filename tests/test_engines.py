"""Engines on real weights: parity with faster-whisper, and every axis changing real shapes."""

import numpy as np
import pytest
import torch

from voxmeter.engines import load_engine
from voxmeter.engines.common import decoder_positions, subsample
from voxmeter.errors import SpecError
from voxmeter.spec import AxisSettings, RunSpec


@pytest.fixture(scope="module")
def hf(cache_dir):
    return load_engine(RunSpec(), cache_dir)


@pytest.fixture(scope="module")
def some_clips(default_clips):
    real = [(c, a) for c, a in default_clips if "librivox" in c.source.lower()]
    return (real or default_clips)[:3]


def test_hf_tokens_equal_faster_whisper_float32(hf, some_clips, tiny_source):
    """The conversion is proven by equal greedy tokens against faster-whisper itself."""
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(tiny_source.ct2_dir), device="cpu", compute_type="float32", cpu_threads=2)
    for clip, audio in some_clips:
        (out,) = hf.decode(hf.encode(hf.features([audio.samples])))
        ours = out.tokens
        segments, _ = fw.transcribe(
            audio.samples,
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        theirs = [t for s in segments for t in s.tokens if t < 50256]
        assert ours == theirs, clip.id


def test_hf_and_ct2_engines_agree(hf, cache_dir, some_clips):
    ct2 = load_engine(RunSpec(engine="ct2"), cache_dir)
    for clip, audio in some_clips:
        (a,) = hf.decode(hf.encode(hf.features([audio.samples])))
        (b,) = ct2.decode(ct2.encode(ct2.features([audio.samples])))
        assert a.tokens == b.tokens, clip.id


def test_own_encoder_matches_transformers(hf, some_clips):
    """Our forward over transformers' modules reproduces transformers' own encoder."""
    feats = hf.features([some_clips[0][1].samples])
    with torch.inference_mode():
        ref = hf.model.model.encoder(feats).last_hidden_state
    ours = hf.run_encoder(feats)
    assert torch.allclose(ours, ref, atol=2e-4), (ours - ref).abs().max()


@pytest.mark.parametrize(
    "axes, computed, positions",
    [
        (dict(frames=1000, pad="silence"), 500, 1500),
        (dict(frames=1000, pad="none"), 500, 500),
        (dict(frames=3000, stride=2), 1500, 750),
        (dict(frames=3000, stride=3, pool="avg"), 1500, 500),
        (dict(frames=1000, pad="none", stride=4), 500, 125),
    ],
)
@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_axes_change_what_runs(engine, axes, computed, positions, cache_dir, some_clips):
    spec = RunSpec(engine=engine).with_(**axes)
    e = load_engine(spec, cache_dir)
    audios = [some_clips[0][1].samples, some_clips[1][1].samples]
    feats = e.features(audios)
    assert tuple(feats.shape) == (2, 80, axes["frames"])
    enc = e.encode(feats)
    assert (enc.computed_positions, enc.decoder_positions) == (computed, positions)
    assert tuple(enc.states.shape)[:2] == (2, positions)


def test_frames_fit_sizes_input_to_the_clip(cache_dir):
    e = load_engine(RunSpec().with_(frames="fit"), cache_dir)
    audio = np.zeros(16000 * 4 + 100, dtype=np.float32)  # 4.006 s -> 5 s at a 1 s step
    assert e.features([audio]).shape[-1] == 500
    assert e.n_frames(len(audio)) == 500
    # a batch runs at its longest clip's fit; n_frames overrides the spec
    short = np.zeros(16000, dtype=np.float32)
    assert tuple(e.features([short, audio]).shape) == (2, 80, 500)
    assert e.features([short, audio], 300).shape[-1] == 300


def test_subsample_definitions():
    x = torch.arange(10, dtype=torch.float32).view(1, 10, 1)
    assert subsample(x, 3, "stride").flatten().tolist() == [0, 3, 6, 9]
    assert subsample(x, 3, "avg").flatten().tolist() == [1, 4, 7]
    assert subsample(x.numpy(), 3, "stride").flatten().tolist() == [0, 3, 6, 9]
    assert subsample(x.numpy(), 3, "avg").flatten().tolist() == [1, 4, 7]
    ax = AxisSettings(frames=1000, pad="none", stride=3, pool="avg")
    assert decoder_positions(500, 1500, ax) == 166
    assert decoder_positions(500, 1500, AxisSettings(frames=1000, stride=3)) == 500


@pytest.mark.parametrize("t", [1500, 1501, 500, 2, 1])
@pytest.mark.parametrize("k", [2, 3, 4, 7])
@pytest.mark.parametrize("pool", ["stride", "avg"])
def test_subsample_numpy_equals_torch(t, k, pool):
    """The ct2 engine's numpy xV gives torch's avg_pool1d / stride numbers (the hf engine's),
    bit for bit, shorter-than-k inputs and dropped tails included."""
    x = (np.random.default_rng(t * k).standard_normal((2, t, 16)) * 3).astype(np.float32)
    ours = subsample(x, k, pool)
    assert isinstance(ours, np.ndarray) and ours.flags.c_contiguous
    assert ours.dtype == np.float32
    assert np.array_equal(ours, subsample(torch.from_numpy(x), k, pool).numpy())


def test_cost_only_runs_with_forced_length(cache_dir):
    e = load_engine(RunSpec(model="tiny").with_(frames=400), cache_dir)
    assert e.source.kind == "cost-only"
    (out,) = e.decode(e.encode(e.features([np.zeros(16000, dtype=np.float32)])), n_steps=7)
    assert out.extra["steps"] == 7 and len(out.tokens) == 6
    # per item in a batch: each runs its own number of steps
    enc = e.encode(e.features([np.zeros(16000, dtype=np.float32)] * 2))
    outs = e.decode(enc, n_steps=[3, 5])
    assert [o.extra["steps"] for o in outs] == [3, 5]
    assert [len(o.tokens) for o in outs] == [2, 4]


def test_int8_shrinks_weights(cache_dir, hf):
    q = load_engine(RunSpec().with_(precision="int8"), cache_dir)
    assert q.param_count() == hf.param_count()
    assert q.weight_bytes() < 0.85 * hf.weight_bytes()
    packed = [
        m.weight() for m in q.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
    ]
    assert len(packed) >= 6 * 4  # every Linear of the 4+4 layers, at least
    per_channel = (torch.per_channel_affine, torch.per_channel_symmetric)
    assert all(w.qscheme() in per_channel for w in packed)  # one scale per output row
    ct2q = load_engine(RunSpec(engine="ct2").with_(precision="int8"), cache_dir)
    assert ct2q.weight_bytes() < 0.35 * hf.weight_bytes()


@pytest.mark.slow
def test_base_tokens_equal_faster_whisper_float32(cache_dir, some_clips):
    """The multilingual base model (two-part package) converts exactly too."""
    from faster_whisper import WhisperModel

    from voxmeter.assets.bundled import resolve_model

    src = resolve_model("base", cache_dir)
    assert src.dims.n_vocab == 51865
    e = load_engine(RunSpec(model="base"), cache_dir, src)
    fw = WhisperModel(str(src.ct2_dir), device="cpu", compute_type="float32", cpu_threads=2)
    for clip, audio in some_clips[:2]:
        (out,) = e.decode(e.encode(e.features([audio.samples])))
        ours = out.tokens
        segments, _ = fw.transcribe(
            audio.samples,
            language="en",
            task="transcribe",
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        theirs = [t for s in segments for t in s.tokens if t < 50257]
        assert ours == theirs, clip.id


def test_ct2_precision_the_cpu_lacks_is_a_spec_error(cache_dir, tiny_source):
    import ctranslate2

    if "bfloat16" in ctranslate2.get_supported_compute_types("cpu"):
        pytest.skip("this CPU runs bfloat16 in CTranslate2")
    spec = RunSpec(engine="ct2").with_(precision="bf16")
    with pytest.raises(SpecError, match="bf16 .* not supported by CTranslate2 on this cpu"):
        load_engine(spec, cache_dir, tiny_source)
