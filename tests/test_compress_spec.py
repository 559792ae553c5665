"""Compression settings the spec refuses before any work, each in one line."""

from __future__ import annotations

import pytest

from voxmeter.errors import SpecError
from voxmeter.spec import CompressionSettings, RunSpec


@pytest.mark.parametrize(
    "comp",
    [CompressionSettings(quant="int8-dynamic"), CompressionSettings(quant_embed=True)],
)
def test_a_quantized_model_on_a_gpu_is_refused_by_the_spec(comp):
    device = "cuda"
    with pytest.raises(SpecError, match="CPU kernels only") as e:
        RunSpec(model="tiny.en", device=device, compression=comp).validate()
    assert "\n" not in str(e.value) and device in str(e.value)
    RunSpec(model="tiny.en", device="cpu", compression=comp).validate()  # the CPU runs it
    RunSpec(model="tiny.en", device=device).validate()  # unquantized on the GPU: fine


def test_cuda_with_quant_on_the_command_line_is_one_line_and_exit_2(capsys, tmp_path):
    from voxmeter.cli import main

    with pytest.raises(SystemExit) as e:
        main(
            [
                "bench", "--model", "tiny.en", "--device", "cuda",
                "--compress", "quant=int8-dynamic", "--store", str(tmp_path / "r.db"),
            ]
        )  # fmt: skip
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CPU kernels only" in err[0], err
