"""CUDA paths: fp16 engines, CUDA memory and NVML energy. Skipped where no GPU is present."""

import pytest
import torch

from voxmeter.spec import RunSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
]


@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_fp16_bench_on_cuda(engine, cache_dir):
    from voxmeter.run.harness import run_spec

    spec = RunSpec(engine=engine, device="cuda", max_clips=3, repeats=1).with_(precision="fp16")
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir))
    m = res.metrics
    assert m["wer"] is not None and m["wer"] < 40
    assert m["rtfx"] > 0
    if engine == "hf":
        assert m["cuda_max_alloc_mb"] > 50  # fp16 tiny.en weights alone are ~72 MiB
    assert res.env["gpu"]


def test_nvml_energy_is_measured_not_estimated():
    from voxmeter.measure.energy import EnergyMeter

    meter = EnergyMeter(device="cuda")
    meter.begin_window("w")
    x = torch.randn(4096, 4096, device="cuda")
    for _ in range(50):
        x = x @ x
        x = x / x.norm()
    torch.cuda.synchronize()
    e = meter.end_window("w")
    assert "nvml" in e.method.lower() and e.joules > 0
