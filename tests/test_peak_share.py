"""Share of peak divides by the peak of the dtype each encoder matmul runs in, never by the
fp32 peak for an int8 or bf16 run; where that peak was not measured there is no share."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from test_batch_figures import DIMS, _clip, _Engine
from test_cli import assert_one_line_error, voxmeter

from voxmeter.measure.flops import analytic_encoder_flops
from voxmeter.measure.peak import PeakResult, cache_key, cache_path
from voxmeter.run.harness import run_spec
from voxmeter.run.peakshare import encoder_dtypes, encoder_peak_share
from voxmeter.run.summary import summarize_repeat
from voxmeter.spec import RunSpec


def _peak(gflops: float, dtype: str, kernel: str = "torch.mm") -> PeakResult:
    return PeakResult(gflops, 1024, dtype, "cpu", 2, "cpu", "t", 1.0, "now", kernel=kernel)


FP32 = _peak(100.0, "float32")
INT8 = _peak(400.0, "int8", "torch.ao dynamic int8 Linear")
INT8_HF = RunSpec().with_(precision="int8")
BF16_HF = RunSpec().with_(precision="bf16")
INT8_CT2 = RunSpec(engine="ct2").with_(precision="int8")


def _summary(spec: RunSpec, peaks: dict) -> dict:
    """summarize_repeat over three clips of one batch, the window carrying `peaks` (and the
    fp32 peak as the one figure older code read)."""
    recs = [_clip(i, 0, 1000, 40.0) for i in range(3)]
    window = SimpleNamespace(
        metrics={}, warnings=[], peaks=peaks, peak_gflops=peaks["fp32"].gflops_per_s
    )
    source = SimpleNamespace(dims=DIMS, has_weights=False)
    m, _ = summarize_repeat(
        spec, _Engine(), source, SimpleNamespace(skipped=[]), recs, window, None
    )
    return m


@pytest.mark.parametrize("spec", [INT8_HF, BF16_HF, INT8_CT2], ids=["hf-int8", "bf16", "ct2-int8"])
def test_int8_and_bf16_runs_never_get_an_fp32_share(spec):
    m = _summary(spec, {"fp32": FP32})
    assert m["enc_gflops_per_s"] > 0 and m["enc_peak_share"] is None
    assert "100.0" not in m["peak_note"]  # the fp32 peak is not quoted as theirs


def test_missing_peak_names_the_command_that_measures_it():
    note = _summary(INT8_HF, {"fp32": FP32})["peak_note"]
    assert "voxmeter peak --dtype int8 --threads 2" in note
    assert "--dtype bf16" in _summary(BF16_HF, {"fp32": FP32})["peak_note"]
    ct2 = _summary(INT8_CT2, {"fp32": FP32, "int8": INT8})  # hf's int8 kernel is not ct2's
    assert ct2["enc_peak_share"] is None and "ct2" in ct2["peak_note"]


def test_int8_share_puts_linear_flops_at_the_int8_peak_and_the_rest_at_fp32():
    f = analytic_encoder_flops(DIMS, 1000)
    floor_s = 3 * (f.linear / 400e9 + (f.conv + f.attention) / 100e9)
    m = _summary(INT8_HF, {"fp32": FP32, "int8": INT8})
    assert m["enc_peak_share"] == pytest.approx(100 * floor_s / 0.040)
    assert m["enc_peak_dtype"] == "int8 Linear, fp32 conv and attention"
    assert "int8 peak 400.0" in m["peak_note"] and "fp32 peak 100.0" in m["peak_note"]
    fp32 = _summary(RunSpec(), {"fp32": FP32, "int8": INT8})
    assert fp32["enc_peak_share"] == pytest.approx(100 * 3 * f.total / 100e9 / 0.040)
    assert fp32["enc_peak_dtype"] == "fp32" and "fp32 peak 100.0" in fp32["peak_note"]


@pytest.mark.parametrize(
    ("compress", "expected"),
    [
        ({"quant": "int8-dynamic"}, ("int8", "fp32")),
        ({"quant": "int8-weight"}, ("fp32", "fp32")),  # int8 weights cast to fp32 per matmul
        ({"quant": "int8-dynamic", "keep": "enc.0"}, None),  # a hybrid encoder: no one split
        ({"quant": "torchao-int8-dynamic"}, None),  # a kernel `peak` does not time
        ({"quant_embed": True}, ("fp32", "fp32")),  # the encoder has no embedding
    ],
)
def test_encoder_dtypes_follow_the_kernels_the_engine_runs(compress, expected):
    from dataclasses import replace

    spec = RunSpec()
    spec = replace(spec, compression=replace(spec.compression, **compress))
    dts, why = encoder_dtypes(spec)
    assert (dts and (dts.linear, dts.other)) == expected
    assert bool(why) == (expected is None)


def test_share_needs_time_and_flops():
    out = encoder_peak_share(RunSpec(), 1e9, 1e9, 0.0, {"fp32": FP32})
    assert out["enc_peak_share"] is None and out["enc_peak_dtype"] == "fp32"


@pytest.mark.slow
def test_an_int8_run_reads_its_own_peak_from_the_cache(tmp_path, monkeypatch, cache_dir):
    """Through the harness: with only an fp32 peak cached, an int8 run has no share."""
    monkeypatch.setenv("VOXMETER_CACHE", str(tmp_path))
    path = cache_path()
    entry = {k: v for k, v in FP32.__dict__.items() if k != "kernel"}  # any layout reads it
    path.write_text(json.dumps({cache_key(2, "float32", "cpu"): entry}))
    spec = RunSpec(repeats=1, warmup=0, max_clips=1).with_(precision="int8", frames="fit")
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir))
    assert res.metrics["enc_gflops_per_s"] > 0 and res.metrics["enc_peak_share"] is None
    assert "--dtype int8" in res.metrics["peak_note"]


def test_peak_rejects_an_unknown_dtype_in_one_line():
    assert_one_line_error(voxmeter("peak", "--dtype", "int4"), "'int4'", "fp32, bf16, fp16, int8")
