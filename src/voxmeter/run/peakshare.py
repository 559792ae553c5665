"""The encoder's share of peak, divided by the peak of the dtype each of its matmuls runs in.

share = (F_linear / P[linear dtype] + F_conv+attention / P[their dtype]) / t_encoder: the time
the stage's FLOPs would take at the measured peaks (measure.peak) over the time it took. With
one dtype it is nanoGPT's MFU, F / (P t). An int8 run computes its Linears in int8 but its
convolutions and attention in fp32, so it needs both peaks; a dtype whose peak was never
measured (or whose kernel cannot be measured: CTranslate2's int8 GEMM, torchao's, int4) gives
no share at all, never one over the fp32 peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxmeter.spec import RunSpec, is_cuda

TORCHAO_OR_OTHER = "its kernel has no `voxmeter peak` measurement"


@dataclass(frozen=True)
class EncoderDtypes:
    """What the encoder computes in: its Linear layers' matmuls, and conv and attention."""

    linear: str  # spec.py's dtype names: fp32, bf16, fp16, int8
    other: str

    def label(self) -> str:
        if self.linear == self.other:
            return self.linear
        return f"{self.linear} Linear, {self.other} conv and attention"


def encoder_dtypes(spec: RunSpec) -> tuple[EncoderDtypes | None, str]:
    """The dtypes of the encoder's matmuls under `spec`, or None and why no measured peak can
    stand for them."""
    p, c = spec.axes.precision, spec.compression
    if spec.engine != "hf":
        if p == "fp32":  # the machine's fp32 GEMM rate, as torch.mm reaches it
            return EncoderDtypes("fp32", "fp32"), ""
        return None, (
            f"{spec.engine} computes {p} in its own GEMM, which `voxmeter peak` cannot time "
            "from Python: no measured peak"
        )
    quant = "int8-dynamic" if p == "int8" and c.quant == "none" else c.quant
    if quant == "none":
        return EncoderDtypes(p, p), ""
    if p not in ("fp32", "int8"):
        return None, f"quant={quant} at precision {p}: no single peak for that mix"
    kept = [g for g in c.keep.split(",") if g.strip().startswith("enc")]
    if kept:
        return None, f"hybrid: encoder groups {','.join(kept)} kept fp32, the rest {quant}"
    if quant in ("int8-dynamic", "int8-dynamic-tensor"):  # torch.ao's dynamic int8 Linear
        return EncoderDtypes("int8", "fp32"), ""
    if quant == "int8-weight":  # int8 weights cast to fp32 at each matmul
        return EncoderDtypes("fp32", "fp32"), ""
    return None, f"quant={quant}: {TORCHAO_OR_OTHER}"


def _peak_command(dtype: str, spec: RunSpec) -> str:
    dev = f" --device {spec.device}" if is_cuda(spec.device) else ""
    return f"`voxmeter peak --dtype {dtype} --threads {spec.threads}{dev}`"


def encoder_peak_share(
    spec: RunSpec, linear_flops: float, other_flops: float, enc_s: float, peaks: dict[str, Any]
) -> dict[str, Any]:
    """enc_peak_share (%, or None), enc_peak_dtype and peak_note for one repeat: FLOPs over
    the whole repeat, `enc_s` the encoder's seconds (each batch counted once), `peaks` the
    cached measure.peak results by dtype."""
    dts, why = encoder_dtypes(spec)
    out: dict[str, Any] = {"enc_peak_share": None, "enc_peak_dtype": dts.label() if dts else None}
    if dts is None:
        out["peak_note"] = why
        return out
    missing = [d for d in dict.fromkeys((dts.linear, dts.other)) if d not in peaks]
    if missing:
        out["peak_note"] = "; ".join(
            f"no {d} peak measured here: run {_peak_command(d, spec)}" for d in missing
        )
        return out
    if not enc_s > 0 or not linear_flops + other_flops > 0:
        out["peak_note"] = "no encoder time or FLOPs in this repeat"
        return out
    lin, oth = peaks[dts.linear], peaks[dts.other]
    floor_s = linear_flops / 1e9 / lin.gflops_per_s + other_flops / 1e9 / oth.gflops_per_s
    out["enc_peak_share"] = 100.0 * floor_s / enc_s
    if dts.linear == dts.other:
        out["peak_note"] = (
            f"of the {dts.linear} peak {lin.gflops_per_s:.1f} GFLOP/s ({lin.kernel}), "
            f"measured by {_peak_command(dts.linear, spec)}"
        )
    else:
        out["peak_note"] = (
            f"time at the measured peaks / time taken: Linear FLOPs at the {dts.linear} peak "
            f"{lin.gflops_per_s:.1f} GFLOP/s ({lin.kernel}), conv and attention at the "
            f"{dts.other} peak {oth.gflops_per_s:.1f} GFLOP/s ({oth.kernel})"
        )
    return out
