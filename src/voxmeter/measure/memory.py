"""Process memory: per-stage RSS windows, the process peak, GPU memory (torch peaks, NVML).

A stage's *transient* is the peak RSS during it minus the RSS just before it: the memory the
stage needs on top of what was already resident. The peak comes from one of two sources:

- "hwm" (Linux, the default where it works): the kernel's own high-water mark. Writing "5" to
  /proc/self/clear_refs resets VmHWM to the current RSS; VmHWM in /proc/self/status is then
  the exact peak since the reset (the kernel records it before any unmap lowers RSS). Each
  window begin resets it (after folding the old mark into every open window, so nested
  windows stay exact) and each end reads it. No thread, no missed spikes, ~10 us per window.
- "thread" (fallback: macOS, or containers where clear_refs is not writable): a daemon thread
  reads RSS every `interval_s` (default 3 ms) and raises the peak of every open window.
  Spikes shorter than the interval can be missed. It is not the default because it costs:
  on a 2-core VM running 2 torch threads of 512x512 matmuls, a 3 ms thread slowed the work by
  ~2.5% (10 ms: ~1.2%), and a thread that only wakes and sleeps already cost ~1.9% at 3 ms,
  so the price is the wake-ups (GIL hand-offs and preempted OpenMP threads), not the read:
  one RSS read is ~0.7 us via pread of /proc/self/statm on a kept descriptor (psutil's
  memory_info ~6.5 us, open+read of statm ~4.6 us).

Side effect of "hwm": the reset also lowers what getrusage's ru_maxrss reports for the live
process, so run one hwm sampler per process and take the process peak from `peak_rss()`,
whose lifetime figure keeps the mark found at start (model loading) and every mark read
before a reset.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voxmeter.measure.windows import MeasureError, OpenWindows
from voxmeter.spec import is_cuda

if TYPE_CHECKING:
    from typing_extensions import Self

MIB = 1024 * 1024
KIB = 1024
DEFAULT_INTERVAL_S = 0.003
MODES = ("auto", "hwm", "thread")


class RssReader:
    """Reads this process's resident set size in bytes, as cheaply as the platform allows."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._psutil_proc = None
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            import psutil

            self._psutil_proc = psutil.Process()
        self.source = "/proc/self/statm" if self._fd is not None else "psutil.memory_info"

    def __call__(self) -> int:
        if self._fd is not None:
            # statm: size resident shared text lib data dt, in pages
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
        return int(self._psutil_proc.memory_info().rss)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _status_kib(buf: bytes, key: bytes) -> int:
    i = buf.find(key)
    if i < 0:
        raise MeasureError(f"/proc/self/status has no {key.decode()} line")
    return int(buf[i + len(key) : buf.index(b"kB", i)])


class HighWaterMark:
    """The kernel's peak-RSS mark for this process: read (peak, current) and reset it."""

    def __init__(self) -> None:
        self._status = os.open("/proc/self/status", os.O_RDONLY)
        try:
            self._clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:
            os.close(self._status)
            raise
        # the mark so far is the process's lifetime peak: keep it before the first reset
        self.initial_peak, _ = self.read()
        try:
            self.reset()
        except OSError:
            self.close()
            raise

    @classmethod
    def open(cls) -> tuple[HighWaterMark | None, str]:
        """A working mark, or None and why not."""
        if not sys.platform.startswith("linux"):
            return None, f"kernel high-water mark: Linux only (this is {sys.platform})"
        try:
            return cls(), "kernel high-water mark (VmHWM, reset via /proc/self/clear_refs)"
        except OSError as e:
            return None, f"kernel high-water mark: /proc/self/clear_refs not usable ({e})"

    def read(self) -> tuple[int, int]:
        """(peak since the last reset, current RSS), in bytes."""
        buf = os.pread(self._status, 8192, 0)
        return _status_kib(buf, b"VmHWM:") * KIB, _status_kib(buf, b"VmRSS:") * KIB

    def reset(self) -> None:
        os.write(self._clear, b"5")  # 5: reset the peak RSS to the current RSS, nothing else

    def close(self) -> None:
        for fd in (self._status, getattr(self, "_clear", None)):
            if fd is not None:
                os.close(fd)
        self._status = self._clear = None  # type: ignore[assignment]


def ru_maxrss_mb() -> float:
    """getrusage's peak RSS (KiB on Linux, bytes on macOS); lowered by an hwm reset."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def cuda_reset_peak(device: str) -> None:
    """Restart torch's CUDA max-allocated counter; a no-op on CPU devices."""
    if is_cuda(device):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def cuda_max_allocated_mb(device: str) -> float | None:
    """torch.cuda.max_memory_allocated in MiB since the last reset; None on CPU devices."""
    if not is_cuda(device):
        return None
    import torch

    return torch.cuda.max_memory_allocated(device) / MIB


NVML_PROCESS_METHOD = (
    "NVML used GPU memory of this process (CUDA context and the runtime's allocator cache "
    "included; a reading at the time asked, not a peak)"
)


def nvml_process_gpu_mb(device: str, pid: int | None = None) -> tuple[float | None, str]:
    """GPU memory NVML attributes to process `pid` (default: this one), in MiB, and how.

    For runtimes torch cannot see into (CTranslate2 allocates through its own CUDA
    allocator, so torch.cuda.max_memory_allocated reads 0 for it). NVML lists each GPU's
    compute processes with their used memory; the process's entries on every GPU are added,
    so no mapping from CUDA to NVML device numbers is needed. None and the reason: on a CPU
    device, without pynvml or a driver, when NVML does not list the pid (in a container NVML
    may list host PIDs) or gives no per-process figure (MIG, Windows WDDM).
    """
    if not is_cuda(device):
        return None, f"no GPU memory: {device} run"
    from voxmeter.measure.energy import nvml_init

    pynvml, why = nvml_init()
    if pynvml is None:
        return None, f"GPU process memory not measured ({why})"
    pid = os.getpid() if pid is None else pid
    try:
        n_gpus = pynvml.nvmlDeviceGetCount()
        used: list[int | None] = []
        for i in range(n_gpus):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            used += [p.usedGpuMemory for p in procs if p.pid == pid]
    except pynvml.NVMLError as e:
        return None, f"GPU process memory not measured (NVML: {e})"
    finally:
        pynvml.nvmlShutdown()
    if not used:
        return None, (
            f"GPU process memory not measured (NVML lists no compute process with pid {pid} "
            f"on {n_gpus} GPU(s); in a container it may list host PIDs)"
        )
    if any(u is None for u in used):
        return None, "GPU process memory not measured (NVML gives no per-process figure here)"
    return sum(used) / MIB, NVML_PROCESS_METHOD


@dataclass(frozen=True)
class MemoryWindow:
    name: str
    rss_before_mb: float
    peak_mb: float  # highest RSS during the window
    rss_after_mb: float
    n_samples: int  # readings that fell in the window, begin and end included
    method: str  # where the peak came from
    cuda_peak_mb: float | None = None  # torch max allocated during the window (CUDA only)

    @property
    def transient_mb(self) -> float:
        """Peak during the window minus RSS before it: what the stage needed on top."""
        return self.peak_mb - self.rss_before_mb


@dataclass(frozen=True)
class PeakRss:
    span_mb: float  # highest RSS since start() or the last reset_peak() (e.g. one repeat)
    lifetime_mb: float  # the process's peak, model loading included; survives hwm resets
    ru_maxrss_mb: float  # getrusage's figure as it reads now (lowered by hwm resets)


class _OpenWindow:
    __slots__ = ("before", "n", "peak")

    def __init__(self, before: int) -> None:
        self.before = before
        self.peak = before
        self.n = 1


class RssSampler:
    """Per-window RSS peaks (begin_window/end_window); use as a context manager.

    mode: "auto" (kernel high-water mark where usable, else the thread), "hwm" or "thread".
    A given `reader` implies "thread" (it exists to script readings in tests).
    Besides each window's figures, the sampler keeps the largest transient per window name
    and the peak since the last reset_peak(), which is what a repeat over many clips reports.
    CUDA peaks per window reset torch's counter at begin, so they are exact for windows that
    do not overlap and only a lower bound for an enclosing window.
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        device: str = "cpu",
        reader: Callable[[], int] | None = None,
        mode: str = "auto",
    ) -> None:
        if not interval_s > 0:
            raise MeasureError(f"RssSampler: interval_s must be positive, got {interval_s}")
        if mode not in MODES:
            raise MeasureError(f"RssSampler: mode must be one of {MODES}, got {mode!r}")
        self.interval_s = interval_s
        self.device = device
        self._hwm: HighWaterMark | None = None
        why = "thread requested"
        if reader is None and mode in ("auto", "hwm"):
            self._hwm, why = HighWaterMark.open()
            if self._hwm is None and mode == "hwm":
                raise MeasureError(f"RssSampler: mode 'hwm' unavailable: {why}")
        self.mode = "hwm" if self._hwm is not None else "thread"
        self.method = why if self._hwm is not None else f"sampled every {interval_s * 1e3:g} ms"
        self.fallback_reason = None if self._hwm is not None else why
        self._own_reader = reader is None
        self._read = reader or RssReader()
        self._lock = threading.Lock()
        self._open: OpenWindows[_OpenWindow] = OpenWindows("RssSampler")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._peak = 0
        self._lifetime = self._hwm.initial_peak if self._hwm is not None else 0
        self._transients: dict[str, float] = {}  # largest transient per window name
        self.n_samples = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Self:
        if self._started:
            raise MeasureError("RssSampler: already started")
        self._started = True
        self._sample()
        if self.mode == "thread":
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="voxmeter-rss", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._sample()

    def close(self) -> None:
        """Stop and release the descriptors; peak figures stay readable."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        if self._own_reader:
            self._read.close()  # type: ignore[union-attr]
        if self._hwm is not None:
            self._hwm.close()
            self._hwm = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        # Event.wait sleeps without holding the GIL; one read and one locked update per tick
        while not self._stop.wait(self.interval_s):
            self._sample()

    # -- readings -------------------------------------------------------------------------
    def _sample(self, reset: bool = False) -> int:
        """Fold one reading into the process peak and every open window; return current RSS.

        In hwm mode the reading is the kernel's mark since the last reset, and `reset` starts
        a new mark after folding (the next window's peak must start at its own begin).
        """
        with self._lock:
            if self._hwm is not None:
                peak, rss = self._hwm.read()
                if reset:
                    self._hwm.reset()
            else:
                peak = rss = self._read()
            self.n_samples += 1
            self._peak = max(self._peak, peak)
            self._lifetime = max(self._lifetime, peak)
            for w in self._open.values():
                w.n += 1
                w.peak = max(w.peak, peak)
        return rss

    # -- windows --------------------------------------------------------------------------
    def begin_window(self, name: str) -> None:
        if name in self._open:  # checked first: a failed begin must not disturb the mark
            raise MeasureError(f"RssSampler: window {name!r} is already open")
        cuda_reset_peak(self.device)
        rss = self._sample(reset=True)
        with self._lock:
            self._open.begin(name, _OpenWindow(rss))

    def end_window(self, name: str) -> MemoryWindow:
        if name not in self._open:
            raise MeasureError(f"RssSampler: window {name!r} was never begun")
        rss = self._sample()  # counts toward this window's peak before it is closed
        with self._lock:
            w = self._open.end(name)
            transient = (w.peak - w.before) / MIB
            self._transients[name] = max(self._transients.get(name, transient), transient)
        return MemoryWindow(
            name=name,
            rss_before_mb=w.before / MIB,
            peak_mb=w.peak / MIB,
            rss_after_mb=rss / MIB,
            n_samples=w.n,
            method=self.method,
            cuda_peak_mb=cuda_max_allocated_mb(self.device),
        )

    def discard_window(self, name: str) -> None:
        with self._lock:
            self._open.discard(name)

    def current_mb(self) -> float:
        if self._hwm is not None:
            return self._hwm.read()[1] / MIB
        return self._read() / MIB

    def reset_peak(self) -> None:
        """Start a new span (e.g. a repeat): the peak restarts from the current RSS and the
        per-name largest transients are forgotten."""
        rss = self._sample(reset=True)
        with self._lock:
            self._peak = rss
            self._transients.clear()

    def peak_mb(self) -> float:
        """Highest RSS since start() or the last reset_peak()."""
        if not self._closed:
            self._sample()
        with self._lock:
            return self._peak / MIB

    def max_transient_mb(self, name: str) -> float | None:
        """Largest transient of the windows named `name` ended since the last reset_peak()."""
        with self._lock:
            return self._transients.get(name)

    def peak_rss(self) -> PeakRss:
        """The span's peak and the process's lifetime peak.

        With the kernel mark, lifetime is the highest mark seen (VmHWM belongs to this
        process image: it starts at exec). ru_maxrss is no measure of it: Linux carries the
        forking parent's high-water mark across fork and exec into the child's ru_maxrss, so
        an isolated child forked by a 1.2 GiB parent reported 1.2 GiB whatever it ran.
        Without the mark (the sampling thread), lifetime is the larger of the samples and
        ru_maxrss, that caveat included.
        """
        span = self.peak_mb()
        ru = ru_maxrss_mb()
        with self._lock:
            lifetime = self._lifetime / MIB
            if self.mode != "hwm":
                lifetime = max(lifetime, ru)
        return PeakRss(span_mb=span, lifetime_mb=lifetime, ru_maxrss_mb=ru)
