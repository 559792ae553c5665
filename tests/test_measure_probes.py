"""The harness's instruments: which GPU memory figure a result gets, by device and engine."""

from __future__ import annotations

import pytest
import torch

from voxmeter.measure.energy import nvml_init
from voxmeter.measure.probes import TORCH_PEAK_METHOD, Instruments, gpu_memory
from voxmeter.spec import RunSpec


def _nvml_works() -> bool:
    pynvml, _ = nvml_init()
    if pynvml is not None:
        pynvml.nvmlShutdown()
    return pynvml is not None


@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_cpu_run_has_no_gpu_figure_only_its_method(engine):
    assert gpu_memory(RunSpec(engine=engine)) == {"gpu_mem_method": "no GPU memory: cpu run"}


def test_cpu_repeat_records_the_method_and_no_gpu_figure():
    instr = Instruments(RunSpec())
    try:
        instr.begin_repeat()
        m = instr.end_repeat().metrics
    finally:
        instr.close()
    assert m["gpu_mem_method"] == "no GPU memory: cpu run"
    assert "cuda_max_alloc_mb" not in m and "gpu_process_mb" not in m


@pytest.mark.skipif(_nvml_works(), reason="checks a ct2 GPU run where NVML is absent")
def test_ct2_gpu_run_without_nvml_is_none_with_the_reason():
    g = gpu_memory(RunSpec(engine="ct2", device="cuda"))
    assert g["gpu_process_mb"] is None
    assert g["gpu_mem_method"].startswith("GPU process memory not measured (NVML: ")
    assert "cuda_max_alloc_mb" not in g  # torch's counter would read 0 for CTranslate2


def test_only_torch_engines_synchronise_torch():
    # building the instruments touches no GPU: safe without one
    assert Instruments(RunSpec(device="cuda"), enabled=False).cuda
    assert not Instruments(RunSpec(engine="ct2", device="cuda"), enabled=False).cuda
    assert not Instruments(RunSpec(), enabled=False).cuda


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_gpu_run_records_the_torch_peak():
    instr = Instruments(RunSpec(device="cuda"), enabled=False)
    instr.begin_repeat()
    x = torch.empty(64 * 2**20 // 4, device="cuda")
    del x
    m = instr.end_repeat().metrics
    assert m["cuda_max_alloc_mb"] >= 64 and m["gpu_mem_method"] == TORCH_PEAK_METHOD
