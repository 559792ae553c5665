"""Per-stage wall-clock timing: `with timer.window("encoder"): ...`.

Durations come from `time.perf_counter_ns` (monotonic, integer nanoseconds, so sums over many
clips do not lose precision). CUDA kernels run asynchronously: without a synchronise before
reading the clock, a window would measure the launch, not the work. So on a CUDA device the
timer synchronises before the start and before the end of every window; on CPU it never
imports or touches CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from voxmeter.measure.stats import percentile
from voxmeter.measure.windows import MeasureError, OpenWindows

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class TimingWindow:
    name: str
    ns: int

    @property
    def ms(self) -> float:
        return self.ns / NS_PER_MS

    @property
    def seconds(self) -> float:
        return self.ns / 1e9


def _is_cuda(device: str) -> bool:
    return device == "cuda" or device.startswith("cuda:")


def cuda_synchronize(device: str) -> None:
    """Wait for queued kernels on `device`; a no-op for CPU devices."""
    if not _is_cuda(device):
        return
    import torch

    torch.cuda.synchronize(device)


@dataclass
class StageTimer:
    """Records every duration of every named stage, in order, for percentiles later.

    device: "cpu", "cuda" or "cuda:N"; CUDA devices are synchronised around each window.
    """

    device: str = "cpu"
    durations_ns: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._open: OpenWindows[int] = OpenWindows("StageTimer")

    def begin_window(self, name: str) -> None:
        cuda_synchronize(self.device)
        self._open.begin(name, time.perf_counter_ns())

    def end_window(self, name: str) -> TimingWindow:
        cuda_synchronize(self.device)
        end = time.perf_counter_ns()
        start = self._open.end(name)
        w = TimingWindow(name, end - start)
        self.durations_ns.setdefault(name, []).append(w.ns)
        return w

    @contextmanager
    def window(self, name: str) -> Iterator[None]:
        """Time the body. If it raises, nothing is recorded (a failed stage has no duration)."""
        self.begin_window(name)
        try:
            yield
        except BaseException:
            self._open.discard(name)
            raise
        self.end_window(name)

    def ms(self, name: str) -> list[float]:
        """Every recorded duration of `name` in milliseconds, in order."""
        if name not in self.durations_ns:
            known = ", ".join(self.durations_ns) or "none"
            raise MeasureError(f"StageTimer: no window named {name!r} was recorded (have: {known})")
        return [ns / NS_PER_MS for ns in self.durations_ns[name]]

    def total_s(self, name: str) -> float:
        return sum(self.durations_ns.get(name, [])) / 1e9

    def percentiles_ms(self, name: str, qs: Sequence[float] = (50, 90, 99)) -> dict[float, float]:
        return percentiles(self.ms(name), qs)

    def reset(self) -> None:
        """Drop recorded durations (e.g. after warm-up); open windows stay open."""
        self.durations_ns.clear()


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[float, float]:
    """{q: q-th percentile} with linear interpolation (numpy's default, as `stats` uses)."""
    return {q: percentile(values, q) for q in qs}
