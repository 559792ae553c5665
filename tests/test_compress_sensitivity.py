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
    return smap, before, seen


def test_the_map_has_every_group_at_both_granularities(measured):
    smap, _, seen = measured
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
    assert seen[-1] == (23, 23)  # baseline + (10 groups + all) x 2, one chunk


def test_weight_bytes_per_group_are_counted_from_the_shapes(measured, engine):
    smap, _, _ = measured
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

    smap, before, _ = measured
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
