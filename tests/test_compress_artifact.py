"""A compressed model directory: built from real tiny.en weights, saved, loaded back with its
shapes, run by the hf engine, and charged the FLOPs it really runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from voxmeter.spec import RunSpec


@pytest.fixture(scope="module")
def hf_source(cache_dir):
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.run.harness import prepare_weights

    src = resolve_model("tiny.en", cache_dir)
    return prepare_weights(RunSpec(), src, cache_dir)[0]


@pytest.fixture(scope="module")
def small_calib():
    from voxmeter.data.datasets import load_dataset

    ds = load_dataset("calib")  # a few clips suffice to exercise the importance pass
    ds.clips = ds.clips[:3]  # (never a test set's: build refuses any overlap)
    return ds


@pytest.fixture(scope="module")
def compressed_dir(tmp_path_factory, hf_source, small_calib):
    from voxmeter.compress import build

    comp = RunSpec().with_(decoder_layers=2, prune_heads=0.34, prune_ffn=0.25, lowrank_energy=0.9)
    out = tmp_path_factory.mktemp("art") / "tiny-compressed"
    return build(comp.compression, hf_source, out, small_calib)


def test_the_directory_says_what_made_it_and_loads_back_with_its_shapes(compressed_dir):
    from voxmeter.compress.artifact import load_model, read_meta
    from voxmeter.measure.flops import ModelShape

    meta = read_meta(compressed_dir)
    assert meta["compression"]["decoder_layers"] == 2 and meta["base"]["name"] == "tiny.en"
    assert meta["report"]["params_after"] < meta["report"]["params_before"]
    gen = json.loads((compressed_dir / "generation_config.json").read_text())
    assert gen["suppress_tokens"] and gen["begin_suppress_tokens"]
    m = load_model(compressed_dir)
    assert sum(p.numel() for p in m.parameters()) == meta["report"]["params_after"]
    shape = ModelShape.of_model(m)
    assert len(shape.decoder) == 2 and len(shape.encoder) == 4
    # 6 heads - floor(0.34 * 6) = 4 heads of 64 in every attention
    assert {x.width for x in shape.encoder + shape.decoder} == {256}
    assert m.proj_out.weight.data_ptr() == m.model.decoder.embed_tokens.weight.data_ptr()


def test_loaded_model_gives_the_saved_models_logits(compressed_dir, hf_source, small_calib):
    from voxmeter.compress import calibration_pairs
    from voxmeter.compress.artifact import load_model

    a, b = load_model(compressed_dir), load_model(compressed_dir)
    feats, tokens = calibration_pairs(hf_source, small_calib).pairs[0]
    ids = torch.tensor([tokens[:-1]])
    with torch.no_grad():
        la = a(input_features=feats, decoder_input_ids=ids).logits
        lb = b(input_features=feats, decoder_input_ids=ids).logits
    assert torch.equal(la, lb) and la.shape == (1, len(tokens) - 1, 51864)


def test_a_calibration_clip_that_fails_to_load_is_recorded_and_not_counted(
    tmp_path, hf_source, small_calib
):
    from dataclasses import replace

    from voxmeter.compress import build
    from voxmeter.compress.artifact import read_meta
    from voxmeter.data.datasets import load_dataset
    from voxmeter.data.manifest import write_manifest

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    calib = load_dataset("calib")
    calib.clips = [*small_calib.clips[:2], replace(small_calib.clips[2], id="broken", audio=bad)]
    write_manifest(calib, tmp_path / "calib.jsonl")
    manifest = load_dataset(tmp_path / "calib.jsonl")
    comp = RunSpec().with_(prune_ffn=0.25).compression
    out = build(comp, hf_source, tmp_path / "pruned", manifest)
    record = read_meta(out)["calibration"]
    assert record["n_clips"] == 2  # the clips used, not the clips listed
    assert [s["id"] for s in record["skipped"]] == ["broken"] and record["skipped"][0]["reason"]
    assert read_meta(out)["report"]["prune"]["calibration_clips"] == 2


@pytest.mark.parametrize("structural", [{}, {"prune_ffn": 0.25}], ids=["quant", "prune+quant"])
def test_a_directory_built_with_quant_carries_it_and_runs_quantized(
    tmp_path, hf_source, small_calib, cache_dir, structural
):
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch import nn

    from voxmeter.compress import build
    from voxmeter.compress.artifact import load_model, read_meta
    from voxmeter.data.datasets import iter_audio
    from voxmeter.engines import load_engine
    from voxmeter.errors import SpecError

    carried = {"quant": "int8-dynamic", "quant_embed": True, "keep": "enc.0"}
    comp = RunSpec().with_(**carried, **structural).compression
    out = build(comp, hf_source, tmp_path / "q", small_calib, carry_quant=True)
    assert read_meta(out)["quantization"] == carried
    fp32 = load_model(out)  # the stored weights stay fp32
    fp32_bytes = sum(p.numel() * 4 for p in fp32.parameters())
    engine = load_engine(RunSpec(model=str(out), threads=1), cache_dir)
    m = engine.model
    assert type(m.model.encoder.layers[0].fc1) is nn.Linear  # kept fp32
    assert isinstance(m.model.decoder.layers[0].fc1, nnqd.Linear)  # torch.ao dynamic int8
    assert type(m.proj_out).__name__ == "Int8Projection"
    assert engine.weight_bytes() < 0.5 * fp32_bytes  # the int8 matrices, not fp32 ones
    assert "carried by the model directory" in engine.precision_method
    assert "int8-dynamic" in engine.precision_method
    _, audio = next(iter_audio(small_calib))
    (out_text,) = engine.decode(engine.encode(engine.features([audio.samples])))
    assert out_text.tokens and out_text.text.strip()
    engine.close()
    again = RunSpec(model=str(out), threads=1).with_(quant="int8-weight")
    with pytest.raises(SpecError, match="carries its quantization") as e:
        load_engine(again, cache_dir)
    assert "\n" not in str(e.value)


def test_the_hf_engine_runs_it_and_counted_flops_equal_analytic(compressed_dir, cache_dir):
    from voxmeter.run.flopsreport import flops_table

    t = flops_table(str(compressed_dir), 1000, 2, "silence", "avg", 9, cache_dir)
    for stage in ("encoder", "decoder"):
        assert t["counted"][stage] == pytest.approx(t["analytic"][stage], rel=0.01), stage
    full = flops_table("tiny.en", 1000, 2, "silence", "avg", 9, cache_dir)
    assert t["analytic"]["total"] < 0.75 * full["analytic"]["total"]


def test_a_save_that_fails_midway_leaves_no_directory(tmp_path, hf_source, monkeypatch):
    import safetensors.torch
    from transformers import WhisperForConditionalGeneration

    from voxmeter.compress.artifact import save_model

    model = WhisperForConditionalGeneration.from_pretrained(hf_source.hf_dir)

    def boom(*a, **k):
        raise KeyboardInterrupt  # as a Ctrl-C during the write would

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        save_model(model, out, {}, tokenizer=None, suppress=([], []))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_directory_whose_weights_do_not_fit_is_a_model_error(compressed_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from voxmeter.compress.artifact import load_model
    from voxmeter.errors import ModelError

    bad = tmp_path / "bad"
    shutil.copytree(compressed_dir, bad)
    state = load_file(str(bad / "model.safetensors"))
    state.pop(next(k for k in state if k.endswith("final_layer_norm.weight")))
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ModelError, match=str(Path(bad))):
        load_model(bad)


def test_a_factorised_model_is_charged_its_factors_in_memory_and_after_loading(tmp_path, hf_source):
    from transformers import WhisperForConditionalGeneration

    from voxmeter.compress.artifact import load_model, save_model
    from voxmeter.compress.lowrank import LowRankLinear, factorize
    from voxmeter.measure.flops import ModelShape

    model = WhisperForConditionalGeneration.from_pretrained(hf_source.hf_dir).eval()
    dense = ModelShape.of_model(model)
    factorize(model, 0.9, include=["model.encoder.layers.0.fc1"])
    fc1 = model.model.encoder.layers[0].fc1
    assert isinstance(fc1, LowRankLinear)
    low = ModelShape.of_model(model)
    r = fc1.rank
    assert low.encoder[0].ffn == dense.encoder[0].ffn - 384 * 1536 + r * (384 + 1536)
    back = load_model(save_model(model, tmp_path / "m", {}, tokenizer=None, suppress=([], [])))
    assert isinstance(back.model.encoder.layers[0].fc1, LowRankLinear)
    assert ModelShape.of_model(back) == low
