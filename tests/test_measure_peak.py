"""Matmul peak: the formula, a real (small) measurement, and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from voxmeter.measure.peak import (
    cache_key,
    cache_path,
    cached_peak,
    cached_peaks,
    get_peak,
    matmul_flops,
    measure_matmul_peak,
    peak_dtype,
)
from voxmeter.measure.windows import MeasureError

FAST = {"seconds": 0.05, "sizes": (64, 128)}


def test_matmul_flops_formula():
    assert matmul_flops(1024) == 2 * 1024**3 == 2_147_483_648


def test_measurement_is_real_and_restores_threads():
    before = torch.get_num_threads()
    r = measure_matmul_peak(threads=1, **FAST)
    assert torch.get_num_threads() == before
    assert r.gflops_per_s > 0 and r.n in (64, 128)
    assert (r.threads, r.dtype, r.device) == (1, "float32", "cpu")
    assert r.torch_version == torch.__version__
    assert r.other_cpu_pct is None or 0 <= r.other_cpu_pct <= 100
    assert all("underestimated" in w for w in r.warnings)
    with pytest.raises(MeasureError):
        measure_matmul_peak(threads=0)
    with pytest.raises(MeasureError):
        measure_matmul_peak(threads=1, dtype="float77")


def test_cache_round_trip_and_refresh(tmp_path: Path):
    assert cached_peak(1, cache_dir=tmp_path) is None
    first = get_peak(threads=1, cache_dir=tmp_path, **FAST)
    path = cache_path(tmp_path)
    data = json.loads(path.read_text())
    key = cache_key(1, "float32", "cpu")
    assert data[key]["gflops_per_s"] == first.gflops_per_s
    assert "threads=1" in key and "float32" in key and torch.__version__ in key
    data[key]["gflops_per_s"] = 12345.0  # a sentinel only a cache read can return
    path.write_text(json.dumps(data))
    assert get_peak(threads=1, cache_dir=tmp_path, **FAST).gflops_per_s == 12345.0
    assert cached_peak(1, torch.float32, cache_dir=tmp_path).gflops_per_s == 12345.0
    assert cached_peak(2, cache_dir=tmp_path) is None  # threads are part of the key
    fresh = get_peak(threads=1, cache_dir=tmp_path, refresh=True, **FAST)
    assert fresh.gflops_per_s != 12345.0
    assert json.loads(path.read_text())[key]["gflops_per_s"] == fresh.gflops_per_s


def test_corrupt_cache_is_measured_again(tmp_path: Path, caplog):
    path = cache_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    r = get_peak(threads=1, cache_dir=tmp_path, **FAST)
    assert r.gflops_per_s > 0 and "unreadable" in caplog.text
    assert cache_key(1, "float32", "cpu") in json.loads(path.read_text())


def test_cache_dir_from_env(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VOXMETER_CACHE", str(tmp_path))
    assert cache_path() == tmp_path / "matmul_peak.json"


def test_int8_times_the_engines_int8_linear_kernel():
    r = measure_matmul_peak(threads=1, dtype="int8", **FAST)
    assert r.dtype == "int8" and r.gflops_per_s > 0 and r.n in (64, 128)
    assert "linear_dynamic" in r.kernel and "7-bit" in r.kernel
    full = measure_matmul_peak(threads=1, dtype="int8", int8_full_range=True, **FAST)
    assert "8-bit activations (VNNI)" in full.kernel
    assert measure_matmul_peak(threads=1, dtype="bf16", **FAST).dtype == "bfloat16"


def test_the_cache_keeps_one_peak_per_dtype(tmp_path: Path):
    fp32 = get_peak(threads=1, cache_dir=tmp_path, **FAST)
    assert cached_peak(1, "int8", cache_dir=tmp_path) is None  # never the fp32 one
    assert set(cached_peaks(1, cache_dir=tmp_path)) == {"fp32"}
    int8 = get_peak(threads=1, dtype="int8", cache_dir=tmp_path, **FAST)
    data = json.loads(cache_path(tmp_path).read_text())
    assert data[cache_key(1, "int8", "cpu")]["kernel"] == int8.kernel
    assert data[cache_key(1, "fp32", "cpu")]["gflops_per_s"] == fp32.gflops_per_s
    assert cache_key(1, "fp32", "cpu") == cache_key(1, "float32", "cpu")
    peaks = cached_peaks(1, cache_dir=tmp_path)
    assert set(peaks) == {"fp32", "int8"} and peaks["int8"].gflops_per_s == int8.gflops_per_s


def test_unknown_dtype_names_the_input():
    with pytest.raises(MeasureError, match="'int4'"):
        peak_dtype("int4")
    with pytest.raises(MeasureError, match="cpu"):
        measure_matmul_peak(threads=1, dtype="int8", device="cuda", **FAST)
