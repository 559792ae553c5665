"""Pareto fronts, recommendations, scaling fits and regressions against hand-worked answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_store import make_result, sample_results

from voxmeter.analysis.budget import NoConfigurationError, recommend, recommend_or_raise
from voxmeter.analysis.pareto import dominates, pareto_front, standard_fronts
from voxmeter.analysis.regress import compare
from voxmeter.analysis.scaling import fit_power_law, fit_report, scaling_fits
from voxmeter.errors import SpecError, StoreError
from voxmeter.spec import RunSpec
from voxmeter.store import aggregate_results


def rows_of(points: dict[str, dict]) -> list:
    """One AggRow per named point; the name goes in the seed so every spec differs."""
    results = []
    for i, (name, m) in enumerate(points.items()):
        r = make_result(RunSpec(seed=i), 0, **m)
        r.spec["name"] = name
        results.append(r)
    rows = aggregate_results(results)
    for row in rows:
        row.label = row.spec["name"]
    return rows


def names(rows) -> list[str]:
    return [r.label for r in rows]


def test_pareto_front_ties_and_missing_figures():
    rows = rows_of(
        {
            "A": dict(x=1.0, wer=10.0),
            "G": dict(x=1.0, wer=10.0),  # exact tie with A: both stay
            "B": dict(x=2.0, wer=5.0),
            "C": dict(x=2.0, wer=5.0),  # exact tie with B
            "D": dict(x=3.0, wer=5.0),  # same WER as B at more cost: dominated
            "H": dict(x=1.0, wer=12.0),  # same cost as A, worse WER: dominated
            "F": dict(x=4.0, wer=1.0),
            "E": dict(x=0.5, wer=None),  # no WER: left out, counted
            "N": dict(wer=3.0),  # no x at all
        }
    )
    f = pareto_front(rows, "x", "wer")
    assert names(f.front) == ["A", "G", "B", "C", "F"]
    assert sorted(names(f.dominated)) == ["D", "H"]
    assert f.n_excluded == 2
    assert f.xy() == [(1, 10), (1, 10), (2, 5), (2, 5), (4, 1)]


def test_dominates_is_strict():
    assert dominates((1, 1), (1, 2)) and dominates((1, 1), (2, 1))
    assert not dominates((1, 1), (1, 1))
    assert not dominates((1, 3), (2, 2))


def test_front_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    pts = {
        f"p{i}": dict(x=float(a), wer=float(b))
        for i, (a, b) in enumerate(rng.integers(0, 6, (40, 2)))
    }
    rows = rows_of(pts)
    f = pareto_front(rows, "x", "wer")
    for r in rows:
        p = (pts[r.label]["x"], pts[r.label]["wer"])
        beaten = any(
            q["x"] <= p[0] and q["wer"] <= p[1] and (q["x"], q["wer"]) != p for q in pts.values()
        )
        assert (r in f.front) == (not beaten), r.label


def test_standard_fronts_on_sample_results():
    rows = aggregate_results(sample_results())
    fronts = standard_fronts(rows)
    assert [f.x for f in fronts][:2] == ["gflops_analytic_total", "e2e_ms_p50"]
    for f in fronts:
        assert f.n_excluded == 4  # the cost-only model has no WER
        xs = [r.value(f.x) for r in f.front]
        ys = [r.value(f.y) for r in f.front]
        assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # a front slopes down


LAT = {
    "fast-bad": dict(
        wer=14.0,
        rtf=0.05,
        e2e_ms_p50=100.0,
        peak_rss_mb=400.0,
        j_per_audio_s=1.0,
        gflops_analytic_total=5.0,
    ),
    "mid": dict(
        wer=9.0,
        rtf=0.10,
        e2e_ms_p50=200.0,
        peak_rss_mb=600.0,
        j_per_audio_s=3.0,
        gflops_analytic_total=10.0,
    ),
    "mid-lean": dict(
        wer=9.5,
        rtf=0.12,
        e2e_ms_p50=250.0,
        peak_rss_mb=450.0,
        j_per_audio_s=2.0,
        gflops_analytic_total=9.0,
    ),
    "slow-good": dict(
        wer=6.0,
        rtf=0.40,
        e2e_ms_p50=800.0,
        peak_rss_mb=900.0,
        j_per_audio_s=8.0,
        gflops_analytic_total=40.0,
    ),
    "cost-only": dict(wer=None, rtf=0.01, e2e_ms_p50=50.0, peak_rss_mb=300.0),
}


def test_recommend_picks_the_cheapest_qualifying():
    rows = rows_of(LAT)
    rec = recommend(rows, max_wer=10.0)
    assert rec.ok and rec.best.label == "mid" and rec.runner_up.label == "mid-lean"
    assert "e2e_ms_p50" in rec.reason and "max_wer=10" in rec.reason
    assert [c.label for c in rec.candidates[:3]] == ["mid", "mid-lean", "slow-good"]
    # a missing WER fails the WER check; it is never read as 0
    cost_only = next(c for c in rec.candidates if c.label == "cost-only")
    assert not cost_only.ok and cost_only.checks[0].value is None

    assert recommend(rows, max_wer=10.0, minimise="memory").best.label == "mid-lean"
    assert recommend(rows, max_wer=10.0, minimise="energy").best.label == "mid-lean"
    assert recommend(rows, max_wer=10.0, minimise="flops").best.label == "mid-lean"
    assert recommend(rows, max_wer=10.0, max_memory_mb=500).best.label == "mid-lean"
    assert recommend(rows, max_wer=20.0, max_rtf=0.08).best.label == "fast-bad"
    assert recommend(rows, max_wer=7.0).best.label == "slow-good"
    assert recommend(rows, max_wer=7.0).runner_up is None


def test_recommend_reports_ci_and_marks_marginal():
    r = make_result(RunSpec(), 0, wer=9.0, wer_ci_lo=7.0, wer_ci_hi=11.5, e2e_ms_p50=1.0)
    rows = aggregate_results([r])
    rec = recommend(rows, max_wer=10.0)
    assert rec.ok  # qualifies on its mean...
    wer_check = rec.candidates[0].checks[0]
    assert wer_check.ci == (7.0, 11.5) and wer_check.marginal  # ...but its CI reaches past 10
    assert any("marginal" in n for n in rec.notes)
    assert not recommend(rows, max_wer=12.0).candidates[0].checks[0].marginal


def test_nothing_qualifies_names_the_constraint():
    rows = rows_of(LAT)
    rec = recommend(rows, max_wer=5.0, max_rtf=0.2)
    assert not rec.ok and rec.best is None
    msg = rec.reason
    assert "\n" not in msg
    assert msg.startswith("no configuration meets max_wer=5, max_rtf=0.2")
    assert "max_wer ruled out 5 of 5" in msg and "max_rtf ruled out 1 of 5" in msg
    # the closest candidate is named first with the limit that failed it
    assert "closest: mid: wer 9% > 5%" in msg
    with pytest.raises(NoConfigurationError, match="max_wer ruled out"):
        recommend_or_raise(rows, max_wer=5.0)


def test_recommend_input_errors():
    rows = rows_of(LAT)
    with pytest.raises(SpecError, match="--minimise"):
        recommend(rows, max_wer=10, minimise="cost")
    with pytest.raises(SpecError, match="--max-wer"):
        recommend(rows, max_wer=-1)
    with pytest.raises(StoreError, match="no results"):
        recommend([], max_wer=10)


def test_power_law_fit_recovers_known_exponent():
    flops = [2.0, 5.0, 11.0, 40.0]
    wer = [50 * f**-0.3 for f in flops]
    a, b, r2 = fit_power_law(flops, wer)
    assert (a, b, r2) == pytest.approx((50, 0.3, 1.0))
    # noisy points: the same answer as numpy's least squares in log-log space
    noisy = [w * m for w, m in zip(wer, (1.1, 0.9, 1.05, 0.97))]
    a, b, r2 = fit_power_law(flops, noisy)
    slope, icpt = np.polyfit(np.log(flops), np.log(noisy), 1)
    assert b == pytest.approx(-slope) and a == pytest.approx(math.exp(icpt))
    pred = icpt + slope * np.log(flops)
    ss_res = np.sum((np.log(noisy) - pred) ** 2)
    ss_tot = np.sum((np.log(noisy) - np.log(noisy).mean()) ** 2)
    assert r2 == pytest.approx(1 - ss_res / ss_tot) and 0 < r2 < 1
    with pytest.raises(ValueError, match="at least two"):
        fit_power_law([1.0], [2.0])
    with pytest.raises(ValueError, match="same FLOPs"):
        fit_power_law([3.0, 3.0], [2.0, 1.0])


def test_scaling_fits_group_by_axis():
    rows = aggregate_results(sample_results())
    fits = scaling_fits(rows)
    by_axis = {}
    for f in fits:
        by_axis.setdefault(f.axis, []).append(f)
    # stride varies (1, 2) at frames 3000 for tiny.en and base: one fit each
    strides = by_axis["stride"]
    assert len(strides) == 2 and all(f.n == 2 and f.ok for f in strides)
    # model size varies (tiny.en, base) at each of the 4 settings; small has no WER
    assert len(by_axis["model size"]) == 4 and all(f.n == 2 for f in by_axis["model size"])
    # frames: 3000 vs fit at stride 1, per model
    assert len(by_axis["frames"]) == 2
    # sample WER = s * 40 * GFLOPs^-0.3 within a model at stride 1: exponent exactly 0.3
    frames_tiny = next(f for f in by_axis["frames"] if "tiny.en" in f.group)
    assert frames_tiny.b == pytest.approx(0.3) and frames_tiny.r2 == pytest.approx(1.0)
    lines = fit_report(rows)
    assert any(line.startswith("frames [tiny.en") and "-0.300" in line for line in lines)
    assert any("4 of 12 configurations have no WER" in line for line in lines)


def test_scaling_says_when_it_cannot_fit():
    rows = rows_of({"one": dict(wer=5.0, gflops_analytic_total=3.0)})
    assert scaling_fits(rows) == []
    assert "cannot fit" in fit_report(rows)[0]
    same = [
        make_result(RunSpec(model=m), 0, wer=w, gflops_analytic_total=10.0)
        for m, w in (("tiny.en", 9.0), ("base", 7.0))
    ]
    (f,) = scaling_fits(aggregate_results(same))
    assert not f.ok and "same FLOPs" in f.describe()


def test_regressions_beyond_cis():
    s = RunSpec(repeats=3)

    def rows(lat, rtfx):
        rs = [make_result(s, i, e2e_ms_p50=v, rtfx=x) for i, (v, x) in enumerate(zip(lat, rtfx))]
        for r, v in zip(rs, lat):  # five clips a repeat: latency CIs resample clips
            r.clips = [{"id": f"c{j}", "e2e_ms": v + 10.0 * j} for j in range(5)]
        return aggregate_results(rs)

    old = rows([100, 101, 99], [10, 10.1, 9.9])
    slower = rows([150, 151, 149], [7, 7.1, 6.9])
    noisy = rows([90, 115, 100], [9, 11, 10])
    regs, notes = compare(old, slower)
    # rtfx: lower is worse; p90 is pooled from the same clip runs as p50, and got worse too
    assert {r.metric for r in regs} == {"e2e_ms_p50", "e2e_ms_p90", "rtfx"}
    assert all(r.by_ci for r in regs) and notes == []
    assert compare(old, noisy)[0] == []  # overlapping CIs: not a regression
    assert compare(slower, old)[0] == []  # got better
    other = aggregate_results([make_result(RunSpec(model="base"), 0, e2e_ms_p50=1.0)])
    assert compare(old, other) == (
        [],
        [
            "1 spec(s) only in the old results, not compared",
            "1 spec(s) only in the new results, not compared",
        ],
    )


def test_fit_description_signs_the_exponent_and_distrusts_two_points():
    from voxmeter.analysis.scaling import PowerFit

    rising = PowerFit("frames", "g", n=2, a=13.0, b=-0.035, r2=1.0)
    assert "GFLOPs^(+0.035)" in rising.describe() and "R² says nothing" in rising.describe()
    falling = PowerFit("stride", "g", n=3, a=200.0, b=0.5, r2=0.9)
    assert "GFLOPs^(-0.500)" in falling.describe() and "R² = 0.900" in falling.describe()


def test_energy_ranking_says_when_energy_is_estimated():
    from voxmeter.spec import RunSpec
    from voxmeter.store import aggregate_results

    est = "estimated: CPU TDP share x time (TDP 15 W/core assumed)"
    rows = aggregate_results(
        [
            make_result(RunSpec(model=m), 0, wer=w, j_per_audio_s=j, energy_method=est)
            for m, w, j in (("tiny.en", 12.0, 0.4), ("base", 9.0, 0.9))
        ]
    )
    rec = recommend(rows, max_wer=15.0, minimise="energy")
    assert rec.ok and rec.best.label.startswith("tiny.en")
    assert any("ESTIMATED" in n and est in n for n in rec.notes)
    measured = aggregate_results(
        [make_result(RunSpec(), 0, wer=12.0, j_per_audio_s=0.4, energy_method="RAPL package")]
    )
    assert not any("ESTIMATED" in n for n in recommend(measured, 15.0, minimise="energy").notes)
