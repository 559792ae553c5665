"""The machine's matmul peak (GFLOP/s) per dtype, measured once and cached, to put achieved
FLOPs in scale.

Like nanoGPT's estimate_mfu, a share of peak needs a peak. Ours is measured, not taken from a
datasheet: square n x n matmuls after warm-up, best of several timed runs, where one n x n @
n x n matmul is 2 n^3 FLOPs (n^3 multiply-adds). fp32, bf16 and fp16 time torch.mm in that
dtype; int8 times the kernel the hf engine's int8 Linears call (torch.ao's dynamic int8
Linear: fp32 in, activations quantized at run time, int8 GEMM by fbgemm, fp32 out), so an
int8 run's share is of what int8 reaches here, never of the fp32 peak.

Results are cached as JSON in the user cache dir (paths.default_cache_dir: VOXMETER_CACHE or
~/.cache/voxmeter), keyed by CPU (or GPU) model, threads, dtype, device and torch version,
since any of those changes the figure.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxmeter.measure.envinfo import package_version
from voxmeter.measure.timing import cuda_synchronize
from voxmeter.measure.windows import MeasureError
from voxmeter.paths import default_cache_dir
from voxmeter.spec import check_device, is_cuda

log = logging.getLogger("voxmeter")

DEFAULT_SIZES = (1024, 1536, 2048)
OTHER_CPU_WARN_PCT = 10.0
CACHE_FILE = "matmul_peak.json"
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")  # torch's names
# the dtypes a stage computes in, as spec.py names them, and the name each peak is cached under
PEAK_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "int8"}
INT8_KERNEL = "torch.ao dynamic int8 Linear (torch.ops.quantized.linear_dynamic, fbgemm)"


@dataclass(frozen=True)
class PeakResult:
    gflops_per_s: float
    n: int  # matrix size of the best run
    dtype: str
    device: str
    threads: int
    cpu_model: str | None  # the GPU name on CUDA devices
    torch_version: str
    seconds: float  # time spent measuring
    measured_at: str  # ISO UTC
    other_cpu_pct: float | None = None  # CPU other processes used while measuring, 0..100
    warnings: list[str] = field(default_factory=list)
    kernel: str = "torch.mm"  # what was timed


def peak_dtype(dtype: Any) -> str:
    """The cache name of a dtype: fp32/bf16/fp16/int8 (spec.py's names) or torch's float names;
    a MeasureError naming the input for anything else (the CLI's one-line exit 2)."""
    if isinstance(dtype, str) and dtype in PEAK_DTYPES:
        return PEAK_DTYPES[dtype]
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in FLOAT_DTYPES:
        return dtype.removeprefix("torch.")
    if isinstance(dtype, str) and not dtype.startswith("torch."):
        raise MeasureError(f"peak: dtype {dtype!r} is not one of {', '.join(PEAK_DTYPES)}")
    return _dtype_name(dtype)


def matmul_flops(n: int) -> int:
    """FLOPs of one n x n @ n x n matmul: n^3 multiply-adds, 2 FLOPs each."""
    return 2 * n**3


def _dtype(dtype: Any):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        d = getattr(torch, str(dtype).removeprefix("torch."))
    except AttributeError:
        raise MeasureError(f"peak: unknown dtype {dtype!r}") from None
    if not isinstance(d, torch.dtype):
        raise MeasureError(f"peak: unknown dtype {dtype!r}")
    return d


def _dtype_name(dtype: Any) -> str:
    """torch's name of the dtype; the float dtypes by name without importing torch (a ct2 run
    looks its peak up in the cache and must not load torch for a key)."""
    name = dtype.removeprefix("torch.") if isinstance(dtype, str) else None
    if name in FLOAT_DTYPES or name == "int8":
        return name
    return str(_dtype(dtype)).removeprefix("torch.")


def _torch_version() -> str | None:
    """torch's version: from the module where loaded, else from its installed metadata."""
    torch = sys.modules.get("torch")
    return torch.__version__ if torch is not None else package_version("torch")


def _check_device(device: str) -> None:
    """A SpecError for a malformed device, a MeasureError for a CUDA device torch cannot see."""
    check_device(device, "peak: device")
    if not is_cuda(device):
        return
    import torch

    if not torch.cuda.is_available():
        raise MeasureError(f"peak: device {device} requested but torch sees no CUDA device")
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise MeasureError(f"peak: device {device} requested but torch sees {n} CUDA device(s)")


def _hardware_name(device: str) -> str | None:
    if is_cuda(device):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    from voxmeter.measure.envinfo import cpu_info

    return cpu_info().model


def _float_mm(n: int, gen: Any, device: str, dtype: Any) -> Callable[[], Any]:
    """One n x n @ n x n torch.mm in `dtype`, warmed up, as a call."""
    import torch

    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up
    return lambda: torch.mm(a, b, out=out)


def _int8_linear(n: int, gen: Any, full_range: bool) -> Callable[[], Any]:
    """n fp32 rows through an n -> n int8 Linear as the hf engine's int8 runs it (engines/
    quant.py, compress/quantize.py): per-channel int8 weights prepacked by torch.ao, the
    activations quantized per tensor at each call (all 8 bits where the CPU has VNNI, else
    torch's reduced 7-bit range), warmed up."""
    import warnings

    import torch
    import torch.ao.nn.quantized.dynamic as nnqd
    import torch.ao.quantization as tq

    lin = torch.nn.Linear(n, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, n, generator=gen))
    lin.qconfig = tq.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        packed = nnqd.Linear.from_float(lin)._packed_params._packed_params
    x = torch.randn(n, n, generator=gen)
    op = torch.ops.quantized.linear_dynamic

    def run() -> Any:
        return op(x, packed, reduce_range=not full_range)

    run()  # warm-up
    return run


def _kernels(
    name: str, device: str, sizes: tuple[int, ...], full_range: bool, seconds: float
) -> tuple[str, list[tuple[int, Callable[[], Any]]]]:
    """What is timed for a dtype (its label) and one warmed-up call per size, smallest first.
    A size whose warm-up alone took over a third of `seconds` is the last one: a dtype the
    CPU has no fast path for (bf16 without AVX512-BF16: ~0.3 GFLOP/s) would otherwise spend
    minutes on 2048^3 matmuls."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    if name == "int8":
        rng = "8-bit activations (VNNI)" if full_range else "7-bit activations (reduced range)"
        label = f"{INT8_KERNEL}, {rng}"
    else:
        label, dt = "torch.mm", _dtype(name)
    calls = []
    for n in sorted(sizes):
        t0 = time.perf_counter()
        call = _int8_linear(n, gen, full_range) if name == "int8" else _float_mm(n, gen, device, dt)
        cuda_synchronize(device)
        calls.append((n, call))
        if time.perf_counter() - t0 > seconds / 3:
            break
    return label, calls


def measure_matmul_peak(
    threads: int,
    dtype: Any = "float32",
    device: str = "cpu",
    seconds: float = 2.0,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    int8_full_range: bool = False,
) -> PeakResult:
    """Best GFLOP/s over timed square matmuls of each size, within about `seconds`.

    Each size (up to one too slow to warm up: see _kernels) gets one untimed warm-up (page faults, packing buffers, thread pool start), then
    the sizes take turns until the time is spent (at least 3 runs each), so a burst of load
    from another process cannot spoil every run of one size. Load from other processes is
    recorded, and warned about, since it makes the peak an underestimate. `int8_full_range`:
    whether the engine's int8 Linear asks for all 8 bits of activation range (VNNI CPUs).
    """
    import torch

    from voxmeter.measure.envinfo import CpuMonitor

    if threads < 1:
        raise MeasureError(f"peak: threads must be >= 1, got {threads}")
    if not seconds > 0 or not sizes:
        raise MeasureError(f"peak: need seconds > 0 and sizes, got {seconds}, {sizes}")
    name = peak_dtype(dtype)
    if name == "int8" and is_cuda(device):
        raise MeasureError("peak: dtype int8 is the hf engine's CPU kernel; use --device cpu")
    _check_device(device)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    monitor = CpuMonitor()
    t_start = time.perf_counter()
    best, best_n = 0.0, sizes[0]
    try:
        kernel, calls = _kernels(name, device, sizes, int8_full_range, seconds)
        cuda_synchronize(device)
        monitor.begin_window("peak")
        deadline = time.perf_counter() + seconds
        rounds = 0
        while rounds < 3 or time.perf_counter() < deadline:
            for n, call in calls:
                t0 = time.perf_counter_ns()
                call()
                cuda_synchronize(device)
                rate = matmul_flops(n) / (time.perf_counter_ns() - t0)  # FLOPs/ns == GFLOP/s
                if rate > best:
                    best, best_n = rate, n
            rounds += 1
        load = monitor.end_window("peak")
    finally:
        torch.set_num_threads(prev)
    warns = []
    if load.other_cpu_pct is not None and load.other_cpu_pct > OTHER_CPU_WARN_PCT:
        warns.append(
            f"other processes used {load.other_cpu_pct:.0f}% CPU while measuring: the peak is "
            "likely underestimated; measure again on a quiet machine (voxmeter peak --refresh)"
        )
    return PeakResult(
        gflops_per_s=best,
        n=best_n,
        dtype=name,
        device=device,
        threads=threads,
        cpu_model=_hardware_name(device),
        torch_version=torch.__version__,
        seconds=time.perf_counter() - t_start,
        measured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        other_cpu_pct=load.other_cpu_pct,
        warnings=warns,
        kernel=kernel,
    )


def cache_path(cache_dir: str | Path | None = None) -> Path:
    """The peak cache file, in the cache dir (created; a SpecError if it cannot be written)."""
    return default_cache_dir(cache_dir) / CACHE_FILE


def cache_key(threads: int, dtype: Any, device: str) -> str:
    hw = _hardware_name(device) or "unknown-cpu"
    return f"{hw}|{device}|threads={threads}|{peak_dtype(dtype)}|torch={_torch_version()}"


def _read_cache(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("peak cache %s unreadable (%s): measuring again", path, e)
        return {}
    if not isinstance(data, dict):
        log.warning("peak cache %s is not a JSON object: measuring again", path)
        return {}
    return data


def cached_peak(
    threads: int,
    dtype: Any = "float32",
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> PeakResult | None:
    """The cached peak for this machine and setting, or None (never measures)."""
    _check_device(device)
    entry = _read_cache(cache_path(cache_dir)).get(cache_key(threads, dtype, device))
    if entry is None:
        return None
    try:
        return PeakResult(**entry)
    except TypeError:
        log.warning("peak cache entry for %s has an old layout: ignored", device)
        return None


def cached_peaks(
    threads: int, device: str = "cpu", cache_dir: str | Path | None = None
) -> dict[str, PeakResult]:
    """Every peak cached for this machine and setting, by spec.py's dtype name (fp32, bf16,
    fp16, int8); a dtype never measured is absent. Never measures."""
    found = {n: cached_peak(threads, n, device, cache_dir) for n in PEAK_DTYPES}
    return {n: p for n, p in found.items() if p is not None}


def get_peak(
    threads: int = 2,
    dtype: Any = "float32",
    device: str = "cpu",
    refresh: bool = False,
    cache_dir: str | Path | None = None,
    seconds: float = 2.0,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    int8_full_range: bool = False,
) -> PeakResult:
    """The cached peak, measuring (and caching) it when missing or when refresh is set.
    `int8_full_range`: as in measure_matmul_peak (the caller knows the engine's rule)."""
    _check_device(device)
    path = cache_path(cache_dir)  # an unwritable cache fails here, before measuring
    if not refresh:
        hit = cached_peak(threads, dtype, device, cache_dir)
        if hit is not None:
            return hit
    res = measure_matmul_peak(threads, dtype, device, seconds, sizes, int8_full_range)
    data = _read_cache(path)
    data[cache_key(threads, dtype, device)] = asdict(res)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    return res
