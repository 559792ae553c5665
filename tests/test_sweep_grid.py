"""Sweep files: validation with one-line errors, expansion, iso-FLOPs budget grids."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxmeter.errors import SpecError
from voxmeter.sweep.grid import (
    budget_gflops_of,
    budget_grid,
    budget_specs,
    expand,
    load_sweep,
    sweep_budget_grid,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


BASE = """
[sweep]
models = ["tiny.en"]
engines = ["hf"]
repeats = 2
threads = 2
"""


def test_demo_example_expands_to_twelve_specs():
    sw = load_sweep(EXAMPLES / "demo_sweep.toml")
    exp = expand(sw)
    assert len(exp.specs) == 12 and exp.n_combinations == 12 and exp.dropped == {}
    assert len({s.spec_hash for s in exp.specs}) == 12
    assert {(s.axes.frames, s.axes.stride, s.axes.precision) for s in exp.specs} == {
        (f, k, p) for f in ("fit", 3000) for k in (1, 2, 4) for p in ("fp32", "int8")
    }
    assert all(s.repeats == 1 and s.threads == 2 and s.model == "tiny.en" for s in exp.specs)
    assert sw.constraints.max_wer == 24.0 and sw.constraints.max_rtf == 0.5


def test_budget_example_loads():
    sw = load_sweep(EXAMPLES / "budget.toml")
    grid = sweep_budget_grid(sw)
    assert grid.budget_gflops == 20.0 and set(grid.points) == {"tiny.en", "base", "small"}
    assert budget_specs(grid, sw).specs


@pytest.mark.parametrize(
    "extra, needles",
    [
        ("[axes]\nframes = [3001]", ["axes.frames", "3001"]),
        ("[axes]\nframes = [1001]", ["axes.frames", "even"]),
        ("[axes]\nframes = ['short']", ["axes.frames", "short"]),
        ("[axes]\nstride = [0]", ["axes.stride", "0"]),
        ("[axes]\nprecision = ['int4']", ["axes.precision", "int4"]),
        ("[axes]\npad = ['noise']", ["axes.pad", "noise"]),
        ("[axes]\nstride = []", ["axes.stride", "empty"]),
        ("[axes]\nstrides = [1]", ["axes.strides", "unknown key"]),
        ("[axes]\nfit_step_s = ['x']", ["axes.fit_step_s"]),
        ("[axes]\nfit_step_s = [inf]", ["axes.fit_step_s", "finite"]),
        ("[constraints]\nmax_rtf = nan", ["constraints.max_rtf", "> 0"]),
        ("[constraints]\nmax_wer = -1", ["constraints.max_wer", "> 0"]),
        ("[constraints]\nminimise = 'cost'", ["constraints.minimise", "cost"]),
        ("[budget]\ntol = 2", ["budget.tol"]),
        ("[extras]\nx = 1", ["extras", "unknown section"]),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, extra, needles):
    p = write(tmp_path, BASE + extra + "\n")
    with pytest.raises(SpecError) as e:
        load_sweep(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    for n in needles:
        assert n in msg


@pytest.mark.parametrize(
    "sweep_line, needles",
    [
        ('engines = ["onnx"]', ["sweep.engines", "onnx"]),
        ('models = ["huge"]', ["sweep.models", "huge"]),
        ("models = []", ["sweep.models", "empty"]),
        ("repetitions = 3", ["sweep.repetitions", "unknown key"]),
        ("threads = 0", ["sweep.threads"]),
        ('threads = "two"', ["sweep.threads", "int"]),
        ('device = "tpu"', ["sweep.device", "tpu"]),
        ("seed = -1", ["sweep.seed", "4294967295"]),
        ("seed = 4294967296", ["sweep.seed"]),
        (f"models = ['{'m' * 300}']", ["sweep.models", "File name too long"]),
    ],
)
def test_bad_sweep_section(tmp_path, sweep_line, needles):
    p = write(tmp_path, f"[sweep]\n{sweep_line}\n")
    with pytest.raises(SpecError) as e:
        load_sweep(p)
    for n in (str(p), *needles):
        assert n in str(e.value)


def test_constraint_names_are_defined_once():
    from dataclasses import fields

    from voxmeter.analysis import budget
    from voxmeter.sweep.grid import LIMITS, Constraints

    assert budget.LIMITS is LIMITS
    assert [f.name for f in fields(Constraints)] == [*LIMITS, "minimise"]
    c = Constraints(max_rtf=0.5, max_gflops=10)
    assert c.limits() == {"max_rtf": 0.5, "max_gflops": 10}


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match="no such sweep file"):
        load_sweep(tmp_path / "nope.toml")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_sweep(write(tmp_path, "[sweep\nmodels = 1"))
    with pytest.raises(SpecError, match=r"missing section \[sweep\]"):
        load_sweep(write(tmp_path, "[axes]\nstride = [1]\n"))
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"[sweep]\nname = 'caf\xe9'\n")
    with pytest.raises(SpecError, match=r"latin1.toml: not UTF-8 text \(byte 0xe9 at offset 19\)"):
        load_sweep(latin1)
    with pytest.raises(SpecError, match="cannot read sweep file"):
        load_sweep(tmp_path)  # a folder
    with pytest.raises(SpecError, match="nested too deeply"):
        load_sweep(write(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000))


def test_settings_without_effect_collapse(tmp_path):
    p = write(
        tmp_path,
        BASE
        + """
[axes]
frames = [3000, 1000]
pad = ["silence", "none"]
stride = [1, 2]
pool = ["stride", "avg"]
""",
    )
    exp = expand(load_sweep(p))
    # 2 frames x 2 pads x 2 strides x 2 pools = 16 combinations; pad is moot at 3000 and
    # pool is moot at stride 1: (1 + 2 pads) x (1 + 2 pools) = 9 distinct specs
    assert exp.n_combinations == 16 and len(exp.specs) == 9
    assert sum(exp.dropped.values()) == 7
    assert "pad has no effect at frames = 3000" in exp.dropped
    assert "pool has no effect at stride = 1" in exp.dropped
    assert exp.notes()[0] == "16 combinations -> 9 specs"
    full = [s for s in exp.specs if s.axes.frames == 3000 and s.axes.stride == 1]
    assert len(full) == 1 and full[0].axes.pad == "silence" and full[0].axes.pool == "stride"


def test_fp16_only_on_cuda(tmp_path):
    text = BASE.replace("threads = 2", 'threads = 2\ndevice = ["cpu", "cuda"]')
    exp = expand(load_sweep(write(tmp_path, text + '[axes]\nprecision = ["fp32", "fp16"]\n')))
    combos = {(s.device, s.axes.precision) for s in exp.specs}
    assert combos == {("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "fp16")}
    (why,) = exp.dropped
    assert exp.dropped[why] == 1 and why.startswith("precision: fp16 needs --device cuda")
    with pytest.raises(SpecError, match="no runnable specs"):
        expand(load_sweep(write(tmp_path, BASE + '[axes]\nprecision = ["fp16"]\n')))


def test_budget_grid_points_are_within_tolerance():
    from voxmeter.assets.dims import dims_for
    from voxmeter.measure.flops import analytic_flops

    grid = budget_grid(["tiny.en", "base"], 20.0, strides=(1, 2, 4))
    for model, pts in grid.points.items():
        assert {p.stride for p in pts} == {1, 2, 4}, model  # one point per stride
        for p in pts:
            # recomputed independently: prompt 2 + 20 generated tokens, pad silence
            f = analytic_flops(dims_for(model), p.frames, p.stride, "silence", 2, 20)
            assert f["total"] / 1e9 == pytest.approx(p.gflops)
            assert abs(p.gflops - 20.0) <= 0.05 * 20.0
            assert p.frames % 2 == 0
            # the closest even frame count: its neighbours are no closer to the budget
            for nb in (p.frames - 2, p.frames + 2):
                if 2 <= nb <= 3000:
                    assert abs(budget_gflops_of(model, nb, p.stride) - 20) >= abs(p.gflops - 20)
    # a bigger model gets fewer frames for the same compute
    t1 = {p.stride: p.frames for p in grid.points["tiny.en"]}
    b1 = {p.stride: p.frames for p in grid.points["base"]}
    assert all(b1[k] < t1[k] for k in (1, 2, 4))


def test_budget_grid_says_when_a_model_has_none():
    # 2 GFLOPs is below base's decoder cost alone: no frames/stride setting reaches it
    grid = budget_grid(["tiny.en", "base"], 2.0, strides=(1, 2))
    assert grid.missing == ["base"] and grid.points["tiny.en"]
    assert any(line.strip().startswith("base: no frames/stride") for line in grid.lines())


def test_budget_grid_explicit_frames_keeps_every_match():
    full = budget_gflops_of("tiny.en", 3000, 1)
    grid = budget_grid(["tiny.en"], full, tol=0.05, frames_options=[3000, 2900, 1000], strides=[1])
    assert [p.frames for p in grid.points["tiny.en"]] == [3000, 2900]
    assert grid.points["tiny.en"][0].rel_err == 0.0
    with pytest.raises(SpecError, match="frames"):
        budget_grid(["tiny.en"], 10.0, frames_options=[3001])
    with pytest.raises(SpecError, match="gflops"):
        budget_grid(["tiny.en"], -1.0)
    with pytest.raises(SpecError, match="huge"):
        budget_grid(["huge"], 10.0)


def test_budget_specs_cross_engines_and_precisions(tmp_path):
    p = write(
        tmp_path,
        BASE + '[axes]\nprecision = ["fp32", "int8"]\n[budget]\ngflops = 20.0\nstrides = [1, 2]\n',
    )
    sw = load_sweep(p)
    grid = sweep_budget_grid(sw)
    exp = budget_specs(grid, sw)
    assert len(exp.specs) == 2 * 2  # 2 points x 2 precisions
    for s in exp.specs:
        assert abs(budget_gflops_of(s.model, s.axes.frames, s.axes.stride) - 20) <= 1.0
    # the command-line budget overrides the file's
    assert sweep_budget_grid(sw, 30.0).budget_gflops == 30.0
    with pytest.raises(SpecError, match="no budget"):
        sweep_budget_grid(load_sweep(write(tmp_path, BASE)))


def test_workload_and_batch_sizes_are_crossed_like_axes(tmp_path):
    from voxmeter.sweep.grid import expand, load_sweep

    f = tmp_path / "w.toml"
    f.write_text(
        '[sweep]\nmodels = ["tiny.en"]\nbatch_size = [1, 8]\n'
        '[workload]\nfrontend = ["audio", "features"]\nlongform = "batched"\n'
    )
    specs = expand(load_sweep(f)).specs
    assert sorted((s.batch_size, s.workload.frontend) for s in specs) == [
        (1, "audio"), (1, "features"), (8, "audio"), (8, "features")
    ]  # fmt: skip
    assert {s.workload.longform for s in specs} == {"batched"}
    assert len({s.spec_hash for s in specs}) == 4


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[sweep]\nbatch_size = [0]\n", "sweep.batch_size"),
        ("[sweep]\n[workload]\nfrontend = 'mel'\n", "workload.frontend"),
        ("[sweep]\n[workload]\nmax_segment_s = 45\n", "workload.max_segment_s"),
        ("[sweep]\n[workload]\nvad_threshold = 1.5\n", "workload.vad_threshold"),
        ("[sweep]\n[workload]\nbeam = 5\n", "workload.beam"),
    ],
)
def test_bad_workload_settings_name_the_key(tmp_path, body, needle):
    from voxmeter.errors import SpecError
    from voxmeter.sweep.grid import load_sweep

    f = tmp_path / "w.toml"
    f.write_text(body)
    with pytest.raises(SpecError, match=needle.replace(".", r"\.")):
        load_sweep(f)


def test_a_compression_section_sweeps_like_the_axes(tmp_path):
    from voxmeter.sweep.grid import expand, load_sweep

    p = tmp_path / "c.toml"
    p.write_text(
        '[sweep]\nengines = ["hf", "ct2"]\n[axes]\nprecision = ["fp32", "int8"]\n'
        '[compression]\ndecoder_layers = [0, 2]\nquant = ["none", "int8-weight"]\n'
    )
    ex = expand(load_sweep(p))
    got = {
        (s.engine, s.axes.precision, s.compression.decoder_layers, s.compression.quant)
        for s in ex.specs
    }
    assert ("hf", "fp32", 2, "int8-weight") in got and ("ct2", "int8", 0, "none") in got
    assert not any(e == "ct2" and (d or q != "none") for e, _, d, q in got)
    assert not any(pr == "int8" and q != "none" for _, pr, _, q in got)
    assert any("changes a torch model; use --engine hf" in n for n in ex.notes())


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[compression]\nprune_heads = 1.5\n", "compression.prune_heads"),
        ("[compression]\nquant = 'int2'\n", "compression.quant"),
        ("[compression]\nwidth = 3\n", "compression.width"),
    ],
)
def test_bad_compression_options_name_the_key(tmp_path, body, key):
    from voxmeter.errors import SpecError
    from voxmeter.sweep.grid import load_sweep

    p = tmp_path / "c.toml"
    p.write_text("[sweep]\n" + body)
    with pytest.raises(SpecError, match=f"{key}: "):
        load_sweep(p)


def test_a_size_without_weights_needs_cost_only_in_the_file(tmp_path):
    from voxmeter.spec import RunSpec

    p = write(tmp_path, '[sweep]\nmodels = ["tiny.en", "tiny"]\n')
    with pytest.raises(SpecError) as e:
        load_sweep(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "sweep.models" in msg
    assert "'tiny'" in msg and "cost_only = true" in msg
    p = write(tmp_path, '[sweep]\nmodels = ["tiny.en", "tiny"]\ncost_only = true\n')
    specs = expand(load_sweep(p)).specs
    assert {s.model for s in specs} == {"tiny.en", "tiny"} and all(s.cost_only for s in specs)
    # the consent is not a setting: a spec keeps the hash it had before the field existed
    tiny = next(s for s in specs if s.model == "tiny")
    assert tiny.spec_hash == RunSpec(model="tiny").spec_hash
    p = write(tmp_path, '[sweep]\nmodels = ["tiny"]\ncost_only = "yes"\n')
    with pytest.raises(SpecError, match="sweep.cost_only: expected bool"):
        load_sweep(p)


def test_tomli_is_declared_where_tomllib_is_missing():
    """sweepfile.py falls back to tomli before Python 3.11; pyproject must install it there."""
    from packaging.requirements import Requirement

    from voxmeter.sweep.sweepfile import tomllib

    doc = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in doc["project"]["dependencies"]]
    (tomli,) = [r for r in reqs if r.name == "tomli"]
    assert tomli.marker is not None
    assert tomli.marker.evaluate({"python_version": "3.10"})
    assert not tomli.marker.evaluate({"python_version": "3.11"})
    assert doc["project"]["requires-python"] in (">=3.10", ">= 3.10")
