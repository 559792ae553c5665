"""Sensitivity by layer group on real tiny.en weights and calibration speech, and the choice
of groups to keep fp32 under a budget, on a hand-made map whose answers are known."""

from __future__ import annotations

import json
import math

import pytest
import torch

from voxmeter.compress.sensitivity import (
    ALL,
    PER_CHANNEL,
    PER_TENSOR,
    choose_keep,
    estimate,
    keep_spec,
    per_channel_gain,
)
from voxmeter.errors import SpecError
from voxmeter.spec import RunSpec

GROUPS = ["conv", "enc.0", "enc.1", "enc.2", "enc.3", "dec.0", "dec.1", "dec.2", "dec.3", "proj"]


@pytest.fixture(scope="module")
def engine(cache_dir):
    from voxmeter.engines import load_engine

    # one thread: the test machine's cores are shared, and torch's spinning threads lose more
    # than they gain there
    return load_engine(RunSpec(model="tiny.en", threads=1), cache_dir)


@pytest.fixture(scope="module")
def calib1():
    from voxmeter.data.datasets import load_dataset

    ds = load_dataset("calib")
    ds.clips = sorted(ds.clips, key=lambda c: c.duration_s or 0.0)[
        :1
    ]  # the shortest: the 23 passes stay under a minute
    return ds


@pytest.fixture(scope="module")
def measured(engine, calib1):
    from voxmeter.compress.sensitivity import sensitivity_map

    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    seen = []
    smap = sensitivity_map(engine, calib1, progress=lambda w, d, t: seen.append((d, t)))
    return smap, before, seen, engine


def test_the_map_has_every_group_at_both_granularities(measured):
    smap, _, seen, _ = measured
    assert smap["groups"] == GROUPS
    assert smap["granularities"] == [PER_CHANNEL, PER_TENSOR]
    for gran in (PER_CHANNEL, PER_TENSOR):
        assert set(smap["cells"][gran]) == {*GROUPS, ALL}
        for cell in smap["cells"][gran].values():
            assert cell["kl"] >= 0 and math.isfinite(cell["kl"]) and cell["n_tokens"] > 2
            assert cell["delta_wer"] == pytest.approx(cell["wer"] - smap["baseline"]["wer"])
    # every weight rounded at once moves the distributions, per tensor more than per channel
    pc, pt = smap["cells"][PER_CHANNEL][ALL], smap["cells"][PER_TENSOR][ALL]
    assert 0 < pc["kl"] < pt["kl"]
    assert smap["data"]["name"] == "calib" and smap["data"]["n_clips"] == 1
    assert smap["model"] == "tiny.en" and smap["bits"] == 8 and "KL(fp32" in smap["method"]
    json.loads(json.dumps(smap))  # serialisable as is
    assert seen[-1] == (23, 23)  # baseline + (10 groups + all) x 2, one clip
    # what was measured is said: the hybrid's scheme, conv left out of 'all' as hybrids do
    assert smap["measured"] == "int8-dynamic" and "torch.ao dynamic int8" in smap["method"]
    assert smap["all_groups"] == GROUPS[1:]
    for gran in (PER_CHANNEL, PER_TENSOR):
        for cell in smap["cells"][gran].values():
            lo, hi = cell["delta_wer_ci"]  # one clip: the interval is the point
            assert lo == pytest.approx(cell["delta_wer"]) == pytest.approx(hi)
    assert smap["one_word_points"] == pytest.approx(100 / smap["baseline"]["ref_words"])
    assert smap["warnings"] and "one word is worth" in smap["warnings"][0]


def test_the_maps_all_row_is_what_the_hybrid_with_nothing_kept_decodes(measured, calib1, cache_dir):
    """Fault 9: the map measures the configuration it recommends. Its 'all' cell (per
    channel) must give the hypothesis and the divergence from fp32 that an engine loaded with
    int8-dynamic + quant_embed (the hybrid with nothing kept) gives."""
    from voxmeter.compress.sensitivity import _clips, _reference_ids, _teacher_forced
    from voxmeter.engines import load_engine
    from voxmeter.metrics import corpus_wer

    smap, fp32 = measured[0], measured[3]
    spec = RunSpec(model="tiny.en", threads=1).with_(quant="int8-dynamic", quant_embed=True)
    hybrid = load_engine(spec, cache_dir)
    clips, _ = _clips(calib1)
    ((clip, audio),) = clips
    enc = hybrid.encode(hybrid.features([audio.samples]))
    hyp = hybrid.decode(enc)[0].text
    targets = [_reference_ids(hybrid, clip.text)]
    (p1,) = _teacher_forced(hybrid, enc, targets)
    hybrid.close()
    (p0,) = _teacher_forced(fp32, fp32.encode(fp32.features([audio.samples])), targets)
    kl = float((p0.exp() * (p0 - p1)).sum()) / p0.shape[0]
    cell = smap["cells"][PER_CHANNEL][ALL]
    assert cell["wer"] == pytest.approx(corpus_wer([clip.text], [hyp]).wer)
    assert cell["kl"] == pytest.approx(kl, rel=1e-4)


def test_a_group_is_swapped_for_the_schemes_modules_and_put_back(engine):
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch import nn

    from voxmeter.compress.quantize import Int8Projection
    from voxmeter.compress.sensitivity import _How, _quantized

    m = engine.model
    before = (m.model.decoder.layers[0].fc1, m.proj_out, m.model.decoder.embed_tokens)
    with _quantized(m, ["dec.0", "proj", "conv"], True, _How(8, False, ())):
        assert isinstance(m.model.decoder.layers[0].fc1, nnqd.Linear)
        assert isinstance(m.proj_out, Int8Projection)
        assert type(m.model.decoder.layers[1].fc1) is nn.Linear  # other groups untouched
    after = (m.model.decoder.layers[0].fc1, m.proj_out, m.model.decoder.embed_tokens)
    assert all(a is b for a, b in zip(before, after))
    assert not hasattr(after[0], "qconfig")  # nothing of the conversion left behind


def test_weight_bytes_per_group_are_counted_from_the_shapes(measured, engine):
    smap, _, _, _ = measured
    w = smap["weights"]
    # conv1 (384, 80, 3) and conv2 (384, 384, 3), each with a 384 bias
    n_conv = 384 * 80 * 3 + 384 * 384 * 3 + 2 * 384
    assert w["conv"]["n_params"] == n_conv and w["conv"]["fp32_bytes"] == 4 * n_conv
    q = w["conv"]["quant_bytes"]
    assert q[PER_CHANNEL] == (384 * 80 * 3 + 384 * 384 * 3) + 2 * 384 * 4 + 2 * 384 * 4
    assert q[PER_TENSOR] == (384 * 80 * 3 + 384 * 384 * 3) + 2 * 4 + 2 * 384 * 4
    assert w["proj"]["n_params"] == 51864 * 384  # the tied embedding, once
    total = sum(g["fp32_bytes"] for g in w.values()) + smap["other_fp32_bytes"]
    params = {id(p): p for p in engine.model.parameters()}
    buffers = {id(b): b for b in engine.model.buffers()}
    assert total == sum(t.numel() * t.element_size() for t in [*params.values(), *buffers.values()])


def test_baseline_is_an_unquantized_runs_wer_and_the_weights_come_back(measured, engine, calib1):
    from voxmeter.compress.sensitivity import _clips
    from voxmeter.metrics import corpus_wer

    smap, before, _, _ = measured
    after = engine.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    clips, _ = _clips(calib1)
    hyps = [engine.decode(engine.encode(engine.features([a.samples])))[0].text for _, a in clips]
    assert smap["baseline"]["wer"] == corpus_wer([c.text for c, _ in clips], hyps).wer


def test_the_heat_map_is_one_self_contained_page(measured):
    from voxmeter.cli.compress import heatmap_html

    page = heatmap_html(measured[0])
    assert page.startswith("<!doctype html>") and "plotly" in page and "dec.3" in page
    assert "<script src=" not in page  # plotly.js inlined, no network


# -- choosing what to keep, on a hand-made map --------------------------------------------------


def _cell(dwer: float, kl: float) -> dict:
    return {"wer": 10.0 + dwer, "delta_wer": dwer, "kl": kl}


def _weights(fp32: int) -> dict:
    return {"n_params": fp32 // 4, "fp32_bytes": fp32, "quant_bytes": {PER_CHANNEL: fp32 // 4}}


@pytest.fixture
def hand_map():
    return {
        "groups": ["conv", "enc.0", "enc.1", "dec.0", "proj"],
        "granularities": [PER_CHANNEL],
        "cells": {
            PER_CHANNEL: {
                "conv": _cell(5.0, 0.9),  # the worst, but no int8 path quantizes it
                "enc.0": _cell(2.0, 0.1),
                "enc.1": _cell(0.0, 0.3),  # ties on WER are broken by KL
                "dec.0": _cell(0.0, 0.2),
                "proj": _cell(1.0, 0.5),
                ALL: _cell(3.5, 1.0),
            }
        },
        "weights": {
            "conv": _weights(400),
            "enc.0": _weights(800),
            "enc.1": _weights(800),
            "dec.0": _weights(800),
            "proj": _weights(4000),
        },
        "other_fp32_bytes": 100,
    }


def test_a_wer_budget_keeps_the_fewest_most_sensitive_groups(hand_map):
    assert choose_keep(hand_map, max_wer_increase=3.0) == []  # 2 + 1 (conv is fp32 anyway)
    assert choose_keep(hand_map, max_wer_increase=1.5) == ["enc.0"]
    assert choose_keep(hand_map, max_wer_increase=0.5) == ["enc.0", "proj"]
    assert estimate(hand_map, ["enc.0"])["delta_wer"] == 1.0
    # nothing quantized: the always-met budget, every group listed, most sensitive first
    keep = choose_keep(hand_map, max_wer_increase=0.0)
    assert keep == ["enc.0", "proj"]
    assert choose_keep(hand_map, max_wer_increase=0.0, always_fp32=()) == ["conv", "enc.0", "proj"]


def test_a_weight_budget_keeps_what_fits_in_order_of_sensitivity(hand_map):
    # everything int8 but conv: 100 + 400 + 200 * 3 + 1000 = 2100 bytes
    assert estimate(hand_map, [])["weight_bytes"] == 2100
    assert choose_keep(hand_map, max_weight_bytes=2100) == []
    # enc.0 (+600) fits; proj (+3000) does not, so the next ones are tried: enc.1, dec.0
    assert choose_keep(hand_map, max_weight_bytes=3900) == ["enc.0", "enc.1", "dec.0"]
    assert choose_keep(hand_map, max_weight_bytes=3300) == ["enc.0", "enc.1"]
    assert choose_keep(hand_map, max_weight_bytes=2800) == ["enc.0"]
    for keep, budget in (([], 2100), (["enc.0"], 2800)):
        assert estimate(hand_map, keep)["weight_bytes"] <= budget


def test_a_budget_nothing_meets_is_one_clear_error(hand_map):
    with pytest.raises(SpecError, match="fits nothing") as e:
        choose_keep(hand_map, max_weight_bytes=2099)
    assert "\n" not in str(e.value)
    with pytest.raises(SpecError, match=">= 0"):
        choose_keep(hand_map, max_wer_increase=-1.0)
    with pytest.raises(SpecError, match="one budget"):
        choose_keep(hand_map, max_wer_increase=1.0, max_weight_bytes=5000)
    with pytest.raises(SpecError, match="per-tensor"):
        choose_keep(hand_map, max_wer_increase=1.0, gran=PER_TENSOR)


def test_the_keep_list_becomes_bench_options_that_parse():
    from voxmeter.cli.common import parse_compress

    line = keep_spec(["enc.0", "dec.3"])
    assert line == (
        "--compress quant=int8-dynamic --compress quant_embed=true --compress keep=enc.0,dec.3"
    )
    comp = parse_compress(line.replace("--compress ", "").split())
    comp.validate()
    assert comp.keep == "enc.0,dec.3" and comp.quant_embed
    # proj kept fp32: the embedding is not quantized, and keep needs no 'proj'
    assert keep_spec(["proj"], PER_TENSOR) == "--compress quant=int8-dynamic-tensor"


def test_per_channel_gain_answers_which_group_gains(hand_map):
    assert per_channel_gain(hand_map) is None  # one granularity only
    m = json.loads(json.dumps(hand_map))
    m["cells"][PER_TENSOR] = {g: dict(c) for g, c in m["cells"][PER_CHANNEL].items()}
    m["cells"][PER_TENSOR]["conv"] = _cell(9.0, 1.9)
    m["cells"][PER_TENSOR][ALL] = _cell(8.5, 2.0)
    gain = per_channel_gain(m)
    assert gain["gain"]["conv"]["wer"] == pytest.approx(4.0)
    assert gain["conv_share_wer"] == pytest.approx(4.0 / 5.0)
    assert gain["conv_share_kl"] == pytest.approx(1.0)


def test_two_budgets_on_the_command_line_are_one_line_before_any_work(capsys):
    from voxmeter.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sensitivity", "--max-wer-increase", "1", "--max-weight-mb", "50"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one budget" in err[0]


# -- the noise: intervals over clips, the word's worth, one additive estimate -------------------


def _tally(refs, hyps):
    from voxmeter.compress.sensitivity import _Tally

    t = _Tally()
    t.refs, t.hyps = list(refs), list(hyps)
    return t


def test_a_groups_change_gets_a_paired_interval_over_clips():
    from voxmeter.compress.sensitivity import _gap_ci

    refs = ["the cat sat on the mat", "a dog ran far away", "birds sing at dawn today"]
    base = _tally(refs, refs)
    same = _gap_ci(base, _tally(refs, refs))
    assert same == [0.0, 0.0]  # paired: the same hypotheses, no change in any resample
    one = list(refs)
    one[0] = "the cat sat on the hat"  # one substitution in clip 0's 6 words (16 in all)
    lo, hi = _gap_ci(base, _tally(refs, one))
    # a resample holds 0 to 3 copies of clip 0; at the top, all three: 3 edits in 18 words
    assert lo == 0.0 and hi == pytest.approx(100 * 3 / 18)


def test_a_word_worth_more_than_half_a_point_is_warned():
    from voxmeter.compress.sensitivity import WORD_WARN, noise_warnings

    assert noise_warnings(100 / 48, 3)[0].startswith("one word is worth 2.08 WER points")
    assert noise_warnings(WORD_WARN, 60) == [] and noise_warnings(100 / 558, 60) == []
    assert noise_warnings(None, 0) == []


def test_the_additive_estimate_has_one_definition(hand_map):
    from voxmeter.compress.sensitivity import _additivity, additive_estimate

    cells = hand_map["cells"][PER_CHANNEL]
    cells["dec.0"] = _cell(-1.0, 0.2)  # an improvement is not counted on
    joint = ["enc.0", "enc.1", "dec.0", "proj"]
    a = _additivity(cells, joint)
    assert a["estimate_delta_wer"] == additive_estimate(cells, joint) == 3.0
    hand_map["additivity"] = {PER_CHANNEL: a}
    assert estimate(hand_map, [])["delta_wer"] == a["estimate_delta_wer"]  # the same figure
    assert estimate(hand_map, ["enc.0"])["delta_wer"] == 1.0


def test_the_keep_line_shows_both_estimates_and_the_noise(hand_map, capsys):
    from voxmeter.cli.compress import _print_keep
    from voxmeter.compress.sensitivity import _additivity

    joint = ["enc.0", "enc.1", "dec.0", "proj"]
    hand_map["cells"][PER_CHANNEL][ALL]["delta_wer_ci"] = [1.0, 6.0]
    hand_map["additivity"] = {PER_CHANNEL: _additivity(hand_map["cells"][PER_CHANNEL], joint)}
    hand_map["warnings"] = ["one word is worth 2.08 WER points here"]
    _print_keep(hand_map, ["enc.0", "proj"], "tiny.en")
    out = " ".join(capsys.readouterr().out.split())
    assert "Estimated: WER +0.00 points" in out
    assert "with nothing kept the same estimate is +3.00 against +3.50 [+1.00, +6.00]" in out
    assert "within the noise" in out


def test_a_directory_that_carries_quantization_is_no_fp32_model_to_map():
    from types import SimpleNamespace

    from torch import nn

    from voxmeter.compress.sensitivity import _fp32_model
    from voxmeter.spec import CompressionSettings

    spec = RunSpec(model="some-dir")
    fake = SimpleNamespace(name="hf", model=nn.Linear(2, 2), spec=spec)
    assert _fp32_model(fake) is fake.model
    fake.compression = CompressionSettings(quant="int8-dynamic")  # what the directory carried
    with pytest.raises(SpecError, match="fp32 and unquantized"):
        _fp32_model(fake)
