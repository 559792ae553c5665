"""The memory budget: the fallback ladder, the resident-set guard on the isolated child, the
choice and its reasons, and the build of a compressed model in a child of its own."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from voxmeter.result import Result
from voxmeter.run import budget
from voxmeter.run.budget import BudgetError, candidates, measure_within_budget
from voxmeter.run.isolate import OverBudget, run_spec_isolated
from voxmeter.spec import RunSpec


def _labels(specs):
    return [
        (s.model, s.axes.precision, s.compression.quant, s.compression.quant_embed) for s in specs
    ]


def test_ladder_goes_from_the_spec_to_int8_then_smaller_models():
    got = _labels(candidates(RunSpec(model="base")))
    assert got == [
        ("base", "fp32", "none", False),
        ("base", "int8", "none", False),
        ("tiny.en", "fp32", "none", False),
        ("tiny.en", "int8", "none", False),
    ]
    # already int8 or quantized: nothing to add but smaller models; tiny.en is the smallest
    assert _labels(candidates(RunSpec().with_(precision="int8"))) == [
        ("tiny.en", "int8", "none", False)
    ]
    q = RunSpec(model="base").with_(quant="int8-weight")
    assert _labels(candidates(q)) == [
        ("base", "fp32", "int8-weight", False),
        ("tiny.en", "fp32", "int8-weight", False),
    ]
    # a model directory has no smaller sibling: only its int8
    assert len(candidates(RunSpec(model="/some/dir"))) == 2


def _result(spec: RunSpec, peak: float) -> Result:
    return Result(spec.spec_hash, spec.to_dict(), 0, {"process_peak_rss_mb": peak}, mode="isolated")


def test_choice_skips_measured_and_stopped_candidates_and_says_why(monkeypatch, tmp_path):
    spec = RunSpec(model="base")
    ladder = candidates(spec)
    stored = {ladder[0].spec_hash: [_result(ladder[0], 900.0)]}  # measured before: too big
    ran = []

    def fake_stored(s, *a, **k):
        return stored.get(s.spec_hash, [])

    def fake_measure(s, store_path, **kw):
        ran.append((s.spec_hash, kw["rss_limit_mb"], kw["isolated"]))
        if s.spec_hash == ladder[1].spec_hash:
            raise OverBudget("over", 612.3)
        if s.spec_hash == ladder[2].spec_hash:
            return [_result(s, 640.0)], ""  # a spike the 20 ms sampler missed
        return [_result(s, 480.0)], "measured"

    monkeypatch.setattr("voxmeter.run.bench.stored_results", fake_stored)
    monkeypatch.setattr("voxmeter.run.bench.measure_spec", fake_measure)
    choice = measure_within_budget(spec, 600, tmp_path / "s.sqlite")
    assert choice.spec.spec_hash == ladder[3].spec_hash
    assert [h for h, _, _ in ran] == [c.spec_hash for c in ladder[1:]]  # the stored one not rerun
    assert all(limit == 600 and iso for _, limit, iso in ran)
    text = choice.explain(600)
    assert "running tiny.en" in text and "process peak 480 MiB" in text
    assert "base hf fp32 T=3000 k=1: measured process peak 900 MiB > 600" in text
    assert "stopped at 612 MiB resident, over 600" in text
    assert "tiny.en hf fp32 T=3000 k=1: measured process peak 640 MiB > 600" in text

    monkeypatch.setattr(budget, "candidates", lambda s: ladder[:2])
    with pytest.raises(
        BudgetError, match="no configuration fits; base hf fp32 T=3000 k=1: measured"
    ):
        measure_within_budget(spec, 600, tmp_path / "s.sqlite")
    with pytest.raises(BudgetError, match="positive"):
        measure_within_budget(spec, 0, tmp_path / "s.sqlite")


def test_guard_stops_a_child_past_the_budget(cache_dir):
    """100 MiB: torch alone takes more, so the hf child is stopped while loading."""
    spec = RunSpec(engine="hf", max_clips=1, repeats=1, warmup=0)
    with pytest.raises(OverBudget) as e:
        list(run_spec_isolated(spec, [0], cache_dir=cache_dir, rss_limit_mb=100))
    assert 100 < e.value.rss_mb < 400, e.value.rss_mb
    assert "over the 100 MiB budget" in str(e.value)


def test_cli_budget_nothing_fits_is_one_line(tmp_path, cache_dir):
    env = dict(os.environ, VOXMETER_CACHE=str(cache_dir))
    store = tmp_path / "s.sqlite"
    args = ["bench", "--max-clips", "1", "--repeats", "1", "--store", str(store)]
    p = subprocess.run(
        [sys.executable, "-m", "voxmeter.cli", *args, "--memory-budget", "60"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "--memory-budget 60 MiB: no configuration fits" in lines[0]
    assert "tiny.en hf fp32 T=3000 k=1: stopped at" in lines[0]
    assert "tiny.en hf int8 T=3000 k=1: stopped at" in lines[0]


@pytest.mark.slow
def test_compressed_model_is_built_in_its_own_child(cache_dir, short_clip):
    """The measured child finds the model built (by a first child) and the first result
    carries the build seconds; a second run builds nothing. A low-rank factorization that
    keeps 99% of the energy: a model built like any other, whose decodes stay short (a
    shallower decoder repeats itself to the token limit, which costs both runs minutes)."""
    # a 2.8 s clip at its own length (frames="fit"), not 30 s, for the hf engine's timed and
    # counted passes; what is checked here is where and when the model is built
    spec = RunSpec(engine="hf", data=short_clip, max_clips=1, repeats=1, warmup=0)
    spec = spec.with_(lowrank_energy=0.99, frames="fit")
    root = cache_dir / "compressed"
    for d in root.glob("*") if root.is_dir() else []:
        meta = d / "voxmeter.json"
        if meta.is_file():
            comp = json.loads(meta.read_text())["compression"]
            if (
                comp.get("lowrank_energy") == 0.99
                and comp.get("recover") == "none"
                and not any(comp.get(k) for k in ("prune_heads", "prune_ffn", "decoder_layers"))
            ):
                shutil.rmtree(d)
    (first,) = list(run_spec_isolated(spec, [0], cache_dir=cache_dir))
    assert first.metrics["compress_s"] > 0
    assert first.metrics.get("wer") is not None
    (again,) = list(run_spec_isolated(spec, [0], cache_dir=cache_dir))
    assert "compress_s" not in again.metrics
