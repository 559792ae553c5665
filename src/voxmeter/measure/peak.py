"""The machine's matmul peak (GFLOP/s), measured once and cached, to put achieved FLOPs in scale.

Like nanoGPT's estimate_mfu, a share of peak needs a peak. Ours is measured, not taken from a
datasheet: square n x n matmuls in the given dtype and thread count, after warm-up, best of
several timed runs, where one n x n @ n x n matmul is 2 n^3 FLOPs (n^3 multiply-adds).
The best run is the honest ceiling for "what this torch build reaches on this machine"; the
encoder's matmuls are smaller and less square, so its share sits well below 100%.

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
    if name in FLOAT_DTYPES:
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


def measure_matmul_peak(
    threads: int,
    dtype: Any = "float32",
    device: str = "cpu",
    seconds: float = 2.0,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
) -> PeakResult:
    """Best GFLOP/s over timed square matmuls of each size, within about `seconds`.

    Each size gets one untimed warm-up (page faults, packing buffers, thread pool start), then
    the sizes take turns until the time is spent (at least 3 runs each), so a burst of load
    from another process cannot spoil every run of one size. Load from other processes is
    recorded, and warned about, since it makes the peak an underestimate.
    """
    import torch

    from voxmeter.measure.envinfo import CpuMonitor

    if threads < 1:
        raise MeasureError(f"peak: threads must be >= 1, got {threads}")
    if not seconds > 0 or not sizes:
        raise MeasureError(f"peak: need seconds > 0 and sizes, got {seconds}, {sizes}")
    dt = _dtype(dtype)
    _check_device(device)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    monitor = CpuMonitor()
    t_start = time.perf_counter()
    best, best_n = 0.0, sizes[0]
    try:
        gen = torch.Generator(device="cpu").manual_seed(0)
        mats = []
        for n in sizes:
            a = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)
            b = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)
            out = torch.empty(n, n, device=device, dtype=dt)
            torch.mm(a, b, out=out)  # warm-up
            mats.append((n, a, b, out))
        cuda_synchronize(device)
        monitor.begin_window("peak")
        deadline = time.perf_counter() + seconds
        rounds = 0
        while rounds < 3 or time.perf_counter() < deadline:
            for n, a, b, out in mats:
                t0 = time.perf_counter_ns()
                torch.mm(a, b, out=out)
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
        dtype=_dtype_name(dt),
        device=device,
        threads=threads,
        cpu_model=_hardware_name(device),
        torch_version=torch.__version__,
        seconds=time.perf_counter() - t_start,
        measured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        other_cpu_pct=load.other_cpu_pct,
        warnings=warns,
    )


def cache_path(cache_dir: str | Path | None = None) -> Path:
    """The peak cache file, in the cache dir (created; a SpecError if it cannot be written)."""
    return default_cache_dir(cache_dir) / CACHE_FILE


def cache_key(threads: int, dtype: Any, device: str) -> str:
    hw = _hardware_name(device) or "unknown-cpu"
    return f"{hw}|{device}|threads={threads}|{_dtype_name(dtype)}|torch={_torch_version()}"


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


def get_peak(
    threads: int = 2,
    dtype: Any = "float32",
    device: str = "cpu",
    refresh: bool = False,
    cache_dir: str | Path | None = None,
    seconds: float = 2.0,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
) -> PeakResult:
    """The cached peak, measuring (and caching) it when missing or when refresh is set."""
    _check_device(device)
    path = cache_path(cache_dir)  # an unwritable cache fails here, before measuring
    if not refresh:
        hit = cached_peak(threads, dtype, device, cache_dir)
        if hit is not None:
            return hit
    res = measure_matmul_peak(threads, dtype, device, seconds, sizes)
    data = _read_cache(path)
    data[cache_key(threads, dtype, device)] = asdict(res)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    return res
