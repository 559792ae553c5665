"""The harness's instruments in one place: stage timing, RSS sampling, energy, CPU watch.

`stage(name, rec)` wraps one pipeline stage of one clip: it records `<name>_ms` and, with the
instruments on, `<name>_mem_mb` (peak RSS during the stage minus RSS before it). A repeat is
one energy/CPU window. With `enabled=False` only the clocks run (the overhead benchmark
compares the two).

GPU memory depends on who allocates it. A torch engine's tensors go through torch's caching
allocator, so torch.cuda.max_memory_allocated over the repeat is its peak (`cuda_max_alloc_mb`).
CTranslate2 allocates outside torch (torch would read 0), so a ct2 run records the memory NVML
attributes to the process (`gpu_process_mb`). `gpu_mem_method` says which one a result holds,
or why neither: a CPU run has none, and NVML may be absent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from voxmeter.spec import RunSpec, is_cuda

MB = 1024 * 1024
# engines whose GPU work runs through torch (timed with torch.cuda.synchronize, sized with
# torch's allocator counters); any other engine is sized from outside, by NVML
TORCH_ENGINES = frozenset({"hf"})
TORCH_PEAK_METHOD = (
    "torch.cuda.max_memory_allocated over the repeat (tensors only: no CUDA context, no "
    "allocator cache)"
)


def gpu_memory(spec: RunSpec) -> dict[str, Any]:
    """The repeat's GPU memory figure for `spec`'s engine, with `gpu_mem_method`.

    Call at the end of a repeat, after torch's peak counter was reset at its start. A CPU run
    gives only the method ("no GPU memory"): nothing is imported or initialised for it.
    """
    if not is_cuda(spec.device):
        return {"gpu_mem_method": f"no GPU memory: {spec.device} run"}
    if spec.engine in TORCH_ENGINES:
        import torch

        mb = torch.cuda.max_memory_allocated(spec.device) / MB
        return {"cuda_max_alloc_mb": mb, "gpu_mem_method": TORCH_PEAK_METHOD}
    from voxmeter.measure.memory import nvml_process_gpu_mb

    mb, method = nvml_process_gpu_mb(spec.device)
    return {"gpu_process_mb": mb, "gpu_mem_method": method}


@dataclass
class RepeatWindow:
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # the cached matmul peaks of this machine and thread count, by dtype (measure.peak)
    peaks: dict[str, Any] = field(default_factory=dict)


class Instruments:
    def __init__(self, spec: RunSpec, enabled: bool = True) -> None:
        self.spec = spec
        self.enabled = enabled
        # only torch's queue needs a synchronize before a clock read: CTranslate2 returns
        # results on the host, and torch calls in a ct2 run would only set up torch's CUDA
        # state in the process whose GPU memory NVML reports
        self.cuda = is_cuda(spec.device) and spec.engine in TORCH_ENGINES
        self._env: dict[str, Any] | None = None
        self.rss = self.energy = self.cpu = None
        if enabled:
            from voxmeter.measure.energy import EnergyMeter
            from voxmeter.measure.envinfo import CpuMonitor
            from voxmeter.measure.memory import RssSampler

            self.rss = RssSampler()
            self.rss.start()
            self.energy = EnergyMeter(device=spec.device)
            self.cpu = CpuMonitor()

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.spec.device)

    @contextmanager
    def stage(self, name: str, rec: dict[str, Any]) -> Iterator[None]:
        self._sync()
        if self.rss is not None:
            self.rss.begin_window(name)
        t0 = time.perf_counter_ns()
        try:
            yield
        except BaseException:
            if self.rss is not None:
                self.rss.discard_window(name)  # the next clip must find no window open
            raise
        self._sync()
        rec[f"{name}_ms"] = (time.perf_counter_ns() - t0) / 1e6
        if self.rss is not None:
            w = self.rss.end_window(name)
            rec[f"{name}_mem_mb"] = w.transient_mb

    def off(self) -> Instruments:
        """Clocks only: for warm-up, whose figures are thrown away."""
        return Instruments(self.spec, enabled=False)

    def begin_repeat(self) -> None:
        self._t0 = time.perf_counter()
        self._stage_mem: dict[str, float] = {}
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.spec.device)
        if not self.enabled:
            return
        self.rss.reset_peak()
        self.energy.begin_window("repeat")
        self.cpu.start()

    def end_repeat(self) -> RepeatWindow:
        w = RepeatWindow()
        w.metrics["wall_s"] = time.perf_counter() - self._t0
        w.metrics.update(gpu_memory(self.spec))
        if not self.enabled:
            return w
        e = self.energy.end_window("repeat")
        w.metrics["energy_j"] = e.joules
        w.metrics["energy_method"] = e.method
        cpu = self.cpu.stop()
        w.metrics.update(
            cpu_mhz_mean=cpu.mhz_mean, cpu_mhz_min=cpu.mhz_min, other_cpu_pct=cpu.other_cpu_pct
        )
        w.warnings.extend(cpu.warnings)
        peaks = self.rss.peak_rss()
        # peak during the measured clips (weights resident) vs. the whole process's life,
        # model loading and conversion included
        w.metrics["peak_rss_mb"] = peaks.span_mb
        w.metrics["process_peak_rss_mb"] = peaks.lifetime_mb
        w.metrics["rss_method"] = self.rss.method
        w.metrics["steady_rss_mb"] = self.rss.current_mb()
        for stage in ("feat", "enc", "dec"):
            w.metrics[f"{stage}_mem_mb"] = self.rss.max_transient_mb(stage)
        w.peaks = self._peaks()
        return w

    def _peaks(self) -> dict[str, Any]:
        from voxmeter.measure.peak import cached_peaks

        return cached_peaks(threads=self.spec.threads, device=self.spec.device)

    def environment(self) -> dict[str, Any]:
        if self._env is None:
            from voxmeter.measure.envinfo import collect_env

            self._env = collect_env(self.spec.threads, self.spec.seed, self.spec.device)
        return self._env

    def close(self) -> None:
        if self.rss is not None:
            self.rss.stop()
