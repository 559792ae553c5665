"""The environment a figure was measured in, and a monitor for what disturbs a run.

`collect_env` records what a reader needs to compare figures across machines and days: code
version and commit, Python and library versions, CPU model and the SIMD/matrix flags int8 and
bf16 speed depends on, cores and threads, GPU, OS, time and seed. Anything that cannot be read
is None, never a guess.

`CpuMonitor` samples CPU frequency every ~200 ms and counts CPU time used by *other*
processes, then says in words when either may have inflated the figures (thermal or power
throttling; a noisy neighbour).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxmeter.measure.windows import MeasureError, OpenWindows

if TYPE_CHECKING:
    from typing_extensions import Self

LIBRARIES = ("torch", "transformers", "ctranslate2", "faster_whisper", "numpy", "jiwer")
# Flags that change which kernels run (and so int8/bf16 speed-ups), x86 and Arm spellings.
RELEVANT_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16",
)  # fmt: skip
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY",
    "OMP_PROC_BIND", "CT2_USE_EXPERIMENTAL_PACKED_GEMM", "CUDA_VISIBLE_DEVICES",
)  # fmt: skip
GIT_TIMEOUT_S = 2.0
THROTTLE_DROP = 0.10  # warn when frequency falls this far below its start
OTHER_CPU_WARN_PCT = 10.0  # warn when other processes used this share of the machine


def _mean(vals: list[float]) -> float:
    """Mean kept within [min, max]: a float sum of equal values can land one ulp below."""
    return min(max(sum(vals) / len(vals), min(vals)), max(vals))


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state(where: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding voxmeter's sources; (None, None) when not run
    from a checkout or git is missing or slow."""
    if where is None:
        import voxmeter

        where = Path(voxmeter.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            check=False, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
        )  # fmt: skip
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            check=False, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None  # no git binary, or it hung: the commit is simply unknown
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip() or None, dirty


@dataclass(frozen=True)
class CpuInfo:
    model: str | None
    flags: list[str]  # RELEVANT_FLAGS present, in that order
    logical: int | None
    physical: int | None


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """Model name and flag set from /proc/cpuinfo text (x86 "flags", Arm "Features")."""
    model = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if model is None and key in ("model name", "hardware", "cpu model"):
            model = value.strip() or None
        elif not flags and key in ("flags", "features"):
            flags = set(value.split())
    return model, flags


def cpu_info(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    import psutil

    text = cpuinfo_path.read_text() if cpuinfo_path.is_file() else ""
    model, flags = parse_cpuinfo(text)
    if model is None:
        model = platform.processor() or None
    return CpuInfo(
        model=model,
        flags=[f for f in RELEVANT_FLAGS if f in flags],
        logical=psutil.cpu_count(logical=True),
        physical=psutil.cpu_count(logical=False),
    )


def gpu_info() -> dict[str, Any]:
    """GPU name, driver and CUDA version where a GPU is seen; all None otherwise.

    torch answers where the run has loaded it (an hf run: it sees the devices
    CUDA_VISIBLE_DEVICES leaves and knows the CUDA it was built with). A process without torch
    (a ct2 run) asks NVML, which sees every GPU of the machine and leaves cuda_version None:
    importing torch only to describe the machine would add ~195 MiB to the very RSS the run
    is measured by.
    """
    out: dict[str, Any] = {"gpu": None, "gpu_count": 0, "gpu_driver": None, "cuda_version": None}
    torch = sys.modules.get("torch")
    if torch is None:
        return _nvml_gpu_info(out)
    out["cuda_version"] = torch.version.cuda
    if not torch.cuda.is_available():
        return out
    out["gpu_count"] = torch.cuda.device_count()
    out["gpu"] = torch.cuda.get_device_name(0)
    try:
        import pynvml
    except ImportError:
        return out  # driver version stays None: nvidia-ml-py is optional
    try:
        pynvml.nvmlInit()
        drv = pynvml.nvmlSystemGetDriverVersion()
    except pynvml.NVMLError as e:
        out["gpu_driver_error"] = str(e)
        return out
    out["gpu_driver"] = _text(drv)
    return out


def _nvml_gpu_info(out: dict[str, Any]) -> dict[str, Any]:
    """`out` filled from NVML (GPU 0's name, the count, the driver); unchanged without it."""
    try:
        import pynvml
    except ImportError:
        return out  # nvidia-ml-py is optional
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return out  # no NVIDIA driver: no GPU to describe
    try:
        out["gpu_count"] = pynvml.nvmlDeviceGetCount()
        out["gpu_driver"] = _text(pynvml.nvmlSystemGetDriverVersion())
        if out["gpu_count"]:
            out["gpu"] = _text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)))
    except pynvml.NVMLError as e:
        out["gpu_driver_error"] = str(e)
    finally:
        pynvml.nvmlShutdown()
    return out


def _text(value: str | bytes) -> str:
    """NVML strings: bytes from older pynvml releases, str from newer ones."""
    return value.decode() if isinstance(value, bytes) else value


def collect_env(threads: int, seed: int, device: str) -> dict[str, Any]:
    """Everything recorded with a result about where and how it was measured."""
    import voxmeter

    commit, dirty = git_state()
    cpu = cpu_info()
    torch = sys.modules.get("torch")  # None in a run that never used torch (ct2): no threads
    torch_threads = torch.get_num_threads() if torch is not None else None
    env: dict[str, Any] = {
        "voxmeter_version": voxmeter.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "python_impl": sys.implementation.name,
        "versions": {name: package_version(name.replace("_", "-")) for name in LIBRARIES},
        "cpu_model": cpu.model,
        "cpu_flags": cpu.flags,
        "cpu_logical": cpu.logical,
        "cpu_physical": cpu.physical,
        "threads": threads,
        "torch_threads": torch_threads,
        "thread_env": {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ},
        "device": device,
        "os": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
    }
    env.update(gpu_info())
    return env


# -- CPU monitor ---------------------------------------------------------------------------
def read_cpu_mhz() -> tuple[float | None, str]:
    """Mean current frequency over CPUs and where it came from.

    scaling_cur_freq follows the hardware; /proc/cpuinfo's "cpu MHz" is often a constant in
    VMs (the hypervisor's nominal clock), so a throttling check on it proves nothing.
    """
    paths = glob_cpufreq()
    vals = []
    for p in paths:
        try:
            vals.append(int(p.read_text()) / 1000)
        except (OSError, ValueError):
            continue
    if vals:
        return _mean(vals), "scaling_cur_freq"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "unavailable"
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    if mhz:
        return _mean(mhz), "/proc/cpuinfo (may be static in a VM)"
    return None, "unavailable"


def glob_cpufreq() -> list[Path]:
    return sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"))


def _busy_seconds() -> float:
    """System-wide non-idle CPU seconds, summed over CPUs."""
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    # guest time is already counted in user on Linux; steal is time we did not get
    total = sum(getattr(t, f) for f in t._fields if f not in ("guest", "guest_nice"))
    return total - idle - getattr(t, "steal", 0.0)


def _own_cpu_seconds() -> float:
    import psutil

    c = psutil.Process().cpu_times()
    return c.user + c.system + c.children_user + c.children_system


@dataclass(frozen=True)
class CpuReport:
    name: str
    seconds: float
    mhz_mean: float | None
    mhz_min: float | None
    mhz_start: float | None
    freq_source: str
    other_cpu_pct: float | None  # share of the whole machine (all CPUs) used by others, 0..100
    own_cpu_pct: float | None  # this process (and children) as a share of the machine
    warnings: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, float | None]:
        """The Result metrics this report fills."""
        return {
            "cpu_mhz_mean": self.mhz_mean,
            "cpu_mhz_min": self.mhz_min,
            "other_cpu_pct": self.other_cpu_pct,
        }


def cpu_warnings(
    mhz_start: float | None, mhz_min: float | None, other_pct: float | None
) -> list[str]:
    out = []
    if mhz_start and mhz_min is not None and mhz_min < mhz_start * (1 - THROTTLE_DROP):
        drop = 100 * (1 - mhz_min / mhz_start)
        out.append(
            f"CPU frequency dropped to {mhz_min:.0f} MHz ({drop:.0f}% below start): "
            "possible throttling"
        )
    if other_pct is not None and other_pct > OTHER_CPU_WARN_PCT:
        out.append(
            f"other processes used {other_pct:.0f}% CPU during the run: figures may be inflated"
        )
    return out


@dataclass
class _CpuStart:
    t: float
    busy: float
    own: float
    sample_index: int


class CpuMonitor:
    """A sampling thread for CPU frequency, plus windows that report other processes' load.

    start() starts the thread and opens a window over the whole span; stop() closes it and
    returns its CpuReport. Further windows (begin_window/end_window) may be used in between.
    """

    RUN = "run"

    def __init__(self, interval_s: float = 0.2) -> None:
        if not interval_s > 0:
            raise MeasureError(f"CpuMonitor: interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.freq_source = "not sampled"
        self._samples: list[float] = []  # MHz, appended by the thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: OpenWindows[_CpuStart] = OpenWindows("CpuMonitor")
        self._n_cpus = os.cpu_count() or 1

    def start(self) -> Self:
        if self._thread is not None:
            raise MeasureError("CpuMonitor: already started")
        self._stop.clear()
        self.begin_window(self.RUN)
        self._thread = threading.Thread(target=self._run, name="voxmeter-cpu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> CpuReport:
        """Stop the thread and report on the span since start()."""
        if self._thread is None:
            raise MeasureError("CpuMonitor: stop() without start()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        return self.end_window(self.RUN)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        mhz, source = read_cpu_mhz()
        with self._lock:
            self.freq_source = source
            if mhz is not None:
                self._samples.append(mhz)

    def begin_window(self, name: str) -> None:
        self._sample()
        with self._lock:
            idx = len(self._samples) - 1
        start = _CpuStart(time.perf_counter(), _busy_seconds(), _own_cpu_seconds(), idx)
        self._open.begin(name, start)

    def end_window(self, name: str) -> CpuReport:
        busy, own, t1 = _busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        self._sample()
        s = self._open.end(name)
        with self._lock:
            mhz = self._samples[max(s.sample_index, 0) :] if s.sample_index >= 0 else []
            source = self.freq_source
        wall = t1 - s.t
        capacity = wall * self._n_cpus
        other = own_pct = None
        if capacity > 0:
            own_pct = 100 * (own - s.own) / capacity
            # busy counters tick in 10 ms steps: clamp the small negative noise to zero
            other = max(0.0, 100 * ((busy - s.busy) - (own - s.own)) / capacity)
        start = mhz[0] if mhz else None
        lo = min(mhz) if mhz else None
        mean = _mean(mhz) if mhz else None
        warns = cpu_warnings(start, lo, other)
        if mhz and source.startswith("/proc/cpuinfo"):
            warns.append(
                "CPU frequency read from /proc/cpuinfo (no cpufreq in /sys; often static in VMs): "
                "throttling cannot be seen"
            )
        elif not mhz:
            warns.append("CPU frequency unavailable here: throttling cannot be seen")
        return CpuReport(name, wall, mean, lo, start, source, other, own_pct, warns)
