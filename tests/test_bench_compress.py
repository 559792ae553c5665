"""benchmarks/bench_compress.py's plumbing: test sets cut to spread clips, the configurations
each target needs, the targets checked on hand-made rows, and the side-by-side table."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the benchmarks import each other as scripts do

import bench_compress as bc
import compress_targets as ct

from voxmeter.data.manifest import load_manifest
from voxmeter.errors import DataError


def test_spread_is_even_deterministic_and_keeps_the_ends():
    items = list(range(742))
    got = bc.spread(items, 5)
    assert got == [0, 185, 371, 556, 741]  # (741 / 4) * i, rounded half up: 370.5 -> 371
    assert bc.spread(items, 5) == got
    assert bc.spread(list(range(11)), 10) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]  # no repeats
    assert bc.spread(items, 0) == items and bc.spread([1, 2], 3) == [1, 2]
    assert bc.spread(list(range(7)), 1) == [3]


def test_recorded_set_leaves_out_espeak_and_is_cut_to_a_manifest(tmp_path):
    ts = bc.test_set(bc.RECORDED, 3, tmp_path)
    assert (ts.name, ts.n, ts.n_total) == ("default-recorded-spread3", 3, 11)
    clips = load_manifest(ts.data).clips
    assert len(clips) == 3 and not any(c.id.startswith("tts-") for c in clips)
    assert all(c.audio.is_file() and c.text for c in clips)
    whole = bc.test_set("default", 0, tmp_path)
    assert (whole.name, whole.data, whole.n) == ("default", "default", 50)  # by name


def test_a_test_set_without_references_is_refused(tmp_path):
    from test_references import no_text_manifest

    with pytest.raises(DataError, match="none of its 2 clips has a reference"):
        bc.test_set(str(no_text_manifest(tmp_path, n=2)), 0, tmp_path / "w")


def test_configs_cover_every_target():
    cfgs = bc.configs("tiny.en", full=False, steps=200, train_clips=256)
    for base in ("dec2+distill", "prune-0.35+distill"):  # target 3: same config, three trainings
        assert cfgs[f"{base}@calib"]["train_data"] == "calib"
        assert cfgs[f"{base}@real"]["train_data"] == "real-train"
        assert cfgs[f"{base}@real/base"]["labeller"] == "base"
        assert cfgs[f"{base}@real"]["train_clips"] == 256
    assert {"fp32", "q-int8-dynamic+emb", "int8emb+fit+k2"} <= set(cfgs)  # targets 4 and 2
    assert cfgs["dec2+distill@real+int8emb+fit+k3"]["stride"] == 3
    assert "bf16" not in cfgs and "bf16" in bc.configs("tiny.en", True, 200, 256)
    assert not any(k.endswith("@real/base") for k in bc.configs("base", False, 200, 256))


def test_missing_training_fields_stop_with_one_line(monkeypatch):
    @dataclass
    class Old:  # CompressionSettings before issue 28's training-data fields
        quant: str = "none"

    monkeypatch.setattr(bc, "CompressionSettings", Old)
    bc.check_fields({"fp32": {}, "q": {"quant": "int8-dynamic"}})  # nothing trains: fine
    with pytest.raises(SystemExit) as e:
        bc.check_fields({"r": {"recover": "distill", "train_data": "calib"}})
    assert "no field train_data" in str(e.value) and "\n" not in str(e.value)


def row(changes, train_data=None, labeller=None, **by_set):
    training = {"train_data": train_data, "labeller": labeller, "train_clips": None}
    return {"changes": changes, "training": training, "by_data": by_set}


def fig(wer, gflops=40.0, rtfx=10.0, weights=100.0, rss=500.0):
    return {
        "wer": wer,
        "wer_ci_lo": wer - 1,
        "wer_ci_hi": wer + 1,
        "gflops_analytic_total": gflops,
        "rtfx": rtfx,
        "weight_bytes": weights,
        "process_peak_rss_mb": rss,
    }


def hand_rows():
    """Two test sets, A and B; fp32 WER 5.0 on both."""
    dist = {"recover": "distill"}
    prune = {"prune_heads": 0.35, "prune_ffn": 0.35, **dist}
    axes = {"quant": "int8-dynamic", "frames": "fit", "stride": 2}
    return {
        "tiny.en/ct2-int8": row({}, A=fig(5.2, rtfx=10), B=fig(5.0, rtfx=20)),
        "tiny.en/fp32": row({}, A=fig(5.0), B=fig(5.0)),
        # target 1: 30% fewer FLOPs within 2 points on A and B
        "tiny.en/prune-0.35+distill@real": row(
            prune, "real-train", "teacher", A=fig(6.9, 27), B=fig(7.0, 27)
        ),
        "tiny.en/prune-0.35+distill@calib": row(prune, "calib", A=fig(30.0, 27), B=fig(9, 27)),
        "tiny.en/prune-0.35+distill@real/base": row(prune, "real-train", "base", A=fig(6.0, 27)),
        "tiny.en/dec2+distill@real": row(
            {"decoder_layers": 2, **dist}, "real-train", A=fig(5.5, 38), B=fig(5.5, 38)
        ),
        # target 2: 8x ct2 on A (85 / 10) but not on B (85 / 20)
        "tiny.en/int8emb+fit+k2": row(axes, A=fig(5.9, rtfx=85), B=fig(5.9, rtfx=85)),
        # target 4: quarter weights, lower peak, within 0.5 on both; the other too heavy
        "tiny.en/q-int8-dynamic+emb": row(
            {"quant": "int8-dynamic"},
            A=fig(5.4, weights=26, rss=400),
            B=fig(5.5, weights=26, rss=400),
        ),
        "tiny.en/q-int8-weight": row(
            {"quant": "int8-weight"},
            A=fig(5.0, weights=40, rss=400),
            B=fig(5.0, weights=40, rss=400),
        ),
        "tiny.en/q-broken": row({"quant": "x"}, A={"error": "SpecError: boom"}),
    }


def test_targets_on_hand_made_rows():
    t = ct.targets(hand_rows(), ["A", "B"])
    assert t["1"]["met"] and t["1"]["configs"] == ["prune-0.35+distill@real"]
    (p,) = [x for x in t["1"]["by_set"]["A"] if x["config"] == "prune-0.35+distill@real"]
    assert p["flops_share"] == pytest.approx(27 / 40) and p["wer_change"] == pytest.approx(1.9)
    assert not any(x["config"].endswith("@calib") for x in t["1"]["by_set"]["A"])
    (a,) = t["2"]["by_set"]["A"]
    assert a["rtfx_over_ct2_int8"] == pytest.approx(8.5) and a["met"]
    assert not t["2"]["by_set"]["B"][0]["met"] and not t["2"]["met"]  # 4.25x on B
    assert t["4"]["met"] and t["4"]["configs"] == ["q-int8-dynamic+emb"]
    (pair,) = t["3"]["by_set"]["A"]
    assert pair["wer"] == {"@real": 6.9, "@real/base": 6.0, "@calib": 30.0}
    assert pair["real_minus_synthetic"] == pytest.approx(-23.1) and t["3"]["met"]


def test_markdown_puts_synthetic_and_real_recovery_side_by_side():
    md = ct.markdown(hand_rows(), ["A", "B"], "Measured on test-cpu:")
    assert md.startswith("Measured on test-cpu:")
    assert "| prune-0.35+distill | A | 5.0 | 30.0 | 6.9 | 6.0 |" in md
    assert "| prune-0.35+distill | B | 5.0 | 9.0 | 7.0 | n/a |" in md
    assert "| tiny.en/q-broken | | | SpecError: boom |" in md
    assert (
        "| tiny.en/prune-0.35+distill@real | real-train | teacher | 6.9 [5.9, 7.9] | +1.9 |" in md
    )


def test_plan_keeps_the_yardsticks_and_validates_each_spec():
    import argparse

    args = argparse.Namespace(
        models="tiny.en", full=False, steps=200, train_clips=256, only=r"q-int8-dynamic\+emb$"
    )
    specs = bc.plan(args)
    assert list(specs) == ["tiny.en/ct2-int8", "tiny.en/fp32", "tiny.en/q-int8-dynamic+emb"]
    assert (specs["tiny.en/ct2-int8"].engine, specs["tiny.en/ct2-int8"].axes.precision) == (
        "ct2",
        "int8",
    )
    q = specs["tiny.en/q-int8-dynamic+emb"]
    assert bc.changes_of(q) == {"quant": "int8-dynamic", "quant_embed": True}
    assert bc.training(q) == {"train_data": None, "labeller": None, "train_clips": None}


def test_resume_keeps_figures_measured_alike_and_measures_the_rest(tmp_path, monkeypatch):
    import argparse
    import json

    args = argparse.Namespace(
        models="tiny.en", full=False, steps=200, train_clips=256, only=r"q-int8-dynamic\+emb$"
    )
    specs = bc.plan(args)
    sets = [bc.TestSet("A", "a.jsonl", 3, 9), bc.TestSet("B", "b.jsonl", 3, 9)]
    q = "tiny.en/q-int8-dynamic+emb"
    old = {
        "test_sets": [ts.__dict__ for ts in sets],
        "settings": {"steps": 200, "train_clips": 256},
        "rows": {
            "tiny.en/fp32": {"changes": {}, "training": {}, "by_data": {"A": {"wer": 5.0}}},
            q: {
                "changes": {"quant": "int8-dynamic"},  # measured otherwise: not kept
                "training": {},
                "by_data": {"A": {"wer": 9.0}},
            },
            "tiny.en/ct2-int8": {
                "changes": {"precision": "int8"},
                "training": {},
                "by_data": {"A": {"error": "x"}},
            },
        },
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    monkeypatch.setattr(bc, "latest", lambda name: path)
    rows = bc.resumed("bench_compress-tiny.en", specs, sets, args)
    assert set(rows) == {"tiny.en/fp32", "tiny.en/ct2-int8"}
    assert rows["tiny.en/ct2-int8"]["by_data"] == {}  # an error is measured again
    calls = []
    monkeypatch.setattr(bc, "measure", lambda spec, ts: calls.append(ts.name) or {"wer": 1.0})
    bc.run(specs, sets, rows)
    assert calls == ["A", "B", "B", "A", "B"]  # ct2: both; fp32: B only; q: both
    assert rows["tiny.en/fp32"]["by_data"]["A"] == {"wer": 5.0}
    other = dict(args.__dict__, steps=100)
    assert bc.resumed("x", specs, sets, argparse.Namespace(**other)) == {}
