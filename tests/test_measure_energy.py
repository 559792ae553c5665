"""Energy back ends: RAPL over a powercap tree laid out like the kernel's, the labelled estimate,
and how components add up. NVML needs a GPU and is checked only where one is present."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from voxmeter.measure.energy import (
    TDP_ENV,
    CpuEstimateCounter,
    CpuPowerAssumption,
    EnergyMeter,
    RaplCounter,
    detect_energy_backend,
    gpu_unmeasured,
    is_estimated,
    nvml_handle,
    nvml_init,
    rapl_delta_uj,
    rapl_package_domains,
)
from voxmeter.measure.windows import MeasureError

RANGE = 262_143_328_850  # a typical max_energy_range_uj


def _domain(root: Path, name: str, label: str, uj: int) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{RANGE}\n")
    return d


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    _domain(root, "intel-rapl:0", "package-0", 1_000_000)
    _domain(root, "intel-rapl:0:0", "core", 500_000)  # part of package-0: not added again
    _domain(root, "intel-rapl:1", "package-1", RANGE - 2_000_000)  # about to wrap
    _domain(root, "intel-rapl:2", "psys", 7)  # platform domain: not a package
    return root


def test_wraparound_hand_count():
    assert rapl_delta_uj(100, 350, RANGE) == 250
    assert rapl_delta_uj(RANGE - 10, 5, RANGE) == 15


def test_rapl_packages_only_with_wrap(powercap: Path):
    domains, why = rapl_package_domains(powercap)
    assert [d.name for d in domains] == ["package-0", "package-1"]
    assert "2 package domain(s)" in why
    meter = EnergyMeter(counters=[RaplCounter(domains)])
    meter.begin_window("repeat")
    (powercap / "intel-rapl:0" / "energy_uj").write_text("4000000\n")  # +3 J
    (powercap / "intel-rapl:0:0" / "energy_uj").write_text("9000000\n")  # ignored
    (powercap / "intel-rapl:1" / "energy_uj").write_text("3000000\n")  # wrapped: +5 J
    m = meter.end_window("repeat")
    assert m.joules == pytest.approx(8.0)
    assert not m.estimated and m.method == "RAPL package (2 domains)"
    assert m.seconds > 0 and m.watts == pytest.approx(8.0 / m.seconds)


def test_rapl_absent_or_unreadable_says_why(tmp_path: Path, powercap: Path):
    assert rapl_package_domains(tmp_path / "nope") == ([], f"RAPL: {tmp_path / 'nope'} not present")
    broken = tmp_path / "broken"
    d = _domain(broken, "intel-rapl:0", "package-0", 1)
    (d / "energy_uj").unlink()
    (d / "energy_uj").mkdir()  # reading fails like an unreadable file does
    domains, why = rapl_package_domains(broken)
    assert domains == [] and why.startswith("RAPL: ") and "intel-rapl:0" in why


def test_detect_falls_back_to_a_stated_estimate(tmp_path: Path):
    backends, counters = detect_energy_backend("cpu", powercap=tmp_path / "absent")
    assert backends.cpu == "estimate" and backends.gpu is None
    assert "not present" in backends.summary() and "W/core" in backends.summary()
    assert isinstance(counters[0], CpuEstimateCounter)


def test_tdp_assumption_default_and_override():
    n = os.cpu_count() or 1
    default = CpuPowerAssumption.from_env({})
    assert default.w_per_cpu == 15.0 and "TDP 15 W/core assumed" in default.source
    a = CpuPowerAssumption.from_env({TDP_ENV: "40"})
    assert a.w_per_cpu == pytest.approx(40 / n)
    assert f"TDP 40 W from {TDP_ENV} over {n} CPUs" in a.source
    for bad in ("forty", "0", "-3"):
        with pytest.raises(MeasureError):
            CpuPowerAssumption.from_env({TDP_ENV: bad})


def test_estimate_is_labelled_and_bounded_by_the_machine():
    a = CpuPowerAssumption(10.0, os.cpu_count() or 1, "TDP 10 W/core assumed")
    meter = EnergyMeter(counters=[CpuEstimateCounter(a)])
    meter.begin_window("work")
    t0 = time.process_time()
    while time.process_time() - t0 < 0.05:
        pass
    m = meter.end_window("work")
    assert m.estimated and m.method.startswith("estimated: CPU TDP share x time (TDP 10 W/core")
    assert "cores busy" in m.method
    # at least the 50 ms of CPU just burnt, at most every CPU flat out for the whole window
    assert 10.0 * 0.05 <= m.joules <= 10.0 * a.n_cpus * m.seconds + 1e-9


class FixedCounter:
    """A measured (not estimated) component with known joules, to check how parts add up."""

    component = "gpu"
    estimated = False

    def __init__(self) -> None:
        self.value = 0.0

    def read(self) -> float:
        self.value += 2.5
        return self.value

    def joules(self, start: float, end: float) -> tuple[float, str]:
        return end - start, "NVML GPU 0"


def test_components_add_and_any_estimated_part_marks_the_sum(powercap: Path):
    domains, _ = rapl_package_domains(powercap)
    meter = EnergyMeter(counters=[RaplCounter(domains), FixedCounter()])
    meter.begin_window("a")
    m = meter.end_window("a")
    assert not m.estimated and m.method == "RAPL package (2 domains) + NVML GPU 0"
    assert m.joules == pytest.approx(2.5) and m.detail["gpu_j"] == 2.5
    est = CpuEstimateCounter(CpuPowerAssumption(15.0, 1, "TDP 15 W/core assumed"))
    mixed = EnergyMeter(counters=[est, FixedCounter()])
    mixed.begin_window("b")
    m2 = mixed.end_window("b")
    assert m2.estimated and m2.method.startswith("estimated: ") and "NVML GPU 0" in m2.method


def test_window_misuse():
    meter = EnergyMeter(counters=[FixedCounter()])
    with pytest.raises(MeasureError, match="never begun"):
        meter.end_window("x")
    meter.begin_window("x")
    with pytest.raises(MeasureError, match="already open"):
        meter.begin_window("x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_nvml_without_gpu_says_why():
    handle, why = nvml_handle("cuda:0")
    assert handle is None and why.startswith("NVML: ")


def _nvml_works() -> bool:
    pynvml, _ = nvml_init()
    if pynvml is not None:
        pynvml.nvmlShutdown()
    return pynvml is not None


@pytest.mark.skipif(_nvml_works(), reason="checks a GPU run on a machine without NVML")
def test_gpu_run_without_nvml_says_the_gpu_was_not_measured(tmp_path: Path):
    backends, counters = detect_energy_backend("cuda", powercap=tmp_path / "absent")
    assert backends.gpu is None and [c.component for c in counters] == ["cpu"]
    assert backends.unmeasured[0].startswith("GPU not measured (NVML: ")
    meter = EnergyMeter(device="cuda")
    meter.begin_window("r")
    m = meter.end_window("r")
    # the figure is the CPU's alone: its method must not read as the whole run's energy
    assert "; GPU not measured (NVML: " in m.method and gpu_unmeasured(m.method)
    assert m.detail["unmeasured"] == list(meter.backends.unmeasured)
    assert "gpu_j" not in m.detail


def test_a_cpu_run_leaves_nothing_unmeasured(tmp_path: Path):
    backends, _ = detect_energy_backend("cpu", powercap=tmp_path / "absent")
    assert backends.unmeasured == ()
    meter = EnergyMeter(device="cpu")
    meter.begin_window("r")
    assert not gpu_unmeasured(meter.end_window("r").method)


def test_is_estimated_reads_the_method_the_meter_writes(powercap: Path):
    est = CpuEstimateCounter(CpuPowerAssumption(15.0, 1, "TDP 15 W/core assumed"))
    domains, _ = rapl_package_domains(powercap)
    for counters, expected in (([est], True), ([RaplCounter(domains)], False)):
        meter = EnergyMeter(counters=counters)
        meter.begin_window("w")
        m = meter.end_window("w")
        assert is_estimated(m.method) is m.estimated is expected
    assert not is_estimated(None) and not is_estimated("")
    assert is_estimated("Estimated: by hand")
    # measured CPU with an unmeasured GPU is incomplete, not estimated
    partial = "RAPL package (1 domain); GPU not measured (NVML: no NVIDIA driver)"
    assert not is_estimated(partial) and gpu_unmeasured(partial)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvml_measures_gpu_work():
    meter = EnergyMeter(device="cuda")
    assert meter.backends.gpu == "nvml", meter.backends.summary()
    a = torch.randn(8192, 8192, device="cuda")
    meter.begin_window("mm")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        a = (a @ a) / 8192
    torch.cuda.synchronize()
    m = meter.end_window("mm")
    assert m.detail["gpu_j"] > 10  # a busy datacentre GPU draws far more than 10 W for 1 s
    assert "NVML GPU 0" in m.method
