"""The precision a result names is what the engine ran, not only what the spec asked for."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from voxmeter.run.summary import precision_ran
from voxmeter.spec import AxisSettings, CompressionSettings, RunSpec


def engine(compression: CompressionSettings | None = None) -> SimpleNamespace:
    return SimpleNamespace(compression=compression)


def test_a_directory_that_carries_quantization_is_named_by_it():
    """A spec with no quantization loading a directory that carries int8-dynamic (the engine's
    load-time compression) runs int8: the bench table showed fp32 from the spec before."""
    spec = RunSpec(model="tiny.en")
    carried = replace(CompressionSettings(), quant="int8-dynamic")
    assert precision_ran(spec, engine(carried)) == "int8-dynamic"
    both = replace(carried, quant_embed=True)
    assert precision_ran(spec, engine(both)) == "int8-dynamic+emb"


def test_the_precision_axis_where_nothing_is_quantized():
    spec = RunSpec(engine="ct2", axes=AxisSettings(precision="int8"))
    assert precision_ran(spec, SimpleNamespace()) == "int8"  # ct2 has no .compression
    assert precision_ran(RunSpec(), engine(CompressionSettings())) == "fp32"
    emb = replace(CompressionSettings(), quant_embed=True)
    assert precision_ran(RunSpec(), engine(emb)) == "fp32, int8 emb"
