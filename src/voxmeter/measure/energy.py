"""Energy over a window, from hardware counters where readable, else a labelled estimate.

Back ends, one interface (a monotonic joule counter per component):
- RAPL: /sys/class/powercap/intel-rapl:N/energy_uj, the CPU package domains (also used by
  AMD since Linux 5.8). Sub-domains (core, uncore, dram) are parts of or beside a package and
  are not added in, so the figure is package energy. Counters wrap at max_energy_range_uj
  (usually ~262 kJ: every ~44 min at 100 W); one wrap per window is corrected, so a single
  window must stay shorter than that. Since 2020 kernels make energy_uj root-only, so
  "present but unreadable" is common and reported as such.
- NVML: nvmlDeviceGetTotalEnergyConsumption (mJ since driver load; Volta and newer) for the
  GPU a CUDA run uses.
- Estimate, where no CPU counter is readable: W per busy CPU x CPU-seconds this process used,
  i.e. a TDP share times time. The assumed wattage is stated in the method string, the figure
  is flagged `estimated`, and VOXMETER_CPU_TDP_W (the CPU package TDP in watts, shared over the
  logical CPUs) replaces the default of 15 W per logical CPU.

A measurement adds the components it has (CPU + GPU on a CUDA run); it is `estimated` when any
component is, and its method names each component's source. A CUDA run whose GPU has no
readable counter says so in its method ("; GPU not measured (why)"): the figure is then the
CPU's alone, far below what the run drew. `is_estimated(method)` and `gpu_unmeasured(method)`
read those two facts back from a stored method string (the report marks every such figure).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from voxmeter.measure.windows import MeasureError, OpenWindows
from voxmeter.spec import is_cuda

POWERCAP = Path("/sys/class/powercap")
DEFAULT_W_PER_CPU = 15.0
TDP_ENV = "VOXMETER_CPU_TDP_W"
ESTIMATED_PREFIX = "estimated"  # every estimated figure's method starts with it
GPU_NOT_MEASURED = "GPU not measured"


def is_estimated(method: str | None) -> bool:
    """Whether an energy method string (as stored with a result) describes an estimate.

    EnergyMeter starts the method of any sum with an estimated part with "estimated", so the
    prefix is the whole test; no method (nothing measured) is not an estimate.
    """
    return method is not None and method.strip().lower().startswith(ESTIMATED_PREFIX)


def gpu_unmeasured(method: str | None) -> bool:
    """Whether an energy method says a GPU the run used was not measured (CPU energy only)."""
    return method is not None and GPU_NOT_MEASURED in method


# the estimate's readings of one run (CpuEstimateCounter.joules writes them)
_RUN_READINGS = re.compile(r", \d+(?:\.\d+)? cores busy on average over \d+(?:\.\d+)? s")


def method_family(method: str) -> str:
    """An energy method without one run's readings (busy cores, seconds): the part that
    says how energy was obtained, the same for every run measured the same way."""
    return _RUN_READINGS.sub("", method)


@dataclass(frozen=True)
class EnergyMeasurement:
    name: str
    joules: float
    seconds: float
    method: str  # e.g. "RAPL package (1 domain)" or "estimated: CPU TDP share x time (...)"
    estimated: bool
    detail: dict[str, Any] = field(default_factory=dict)  # joules per component, assumptions

    @property
    def watts(self) -> float | None:
        return self.joules / self.seconds if self.seconds > 0 else None


class EnergyCounter(Protocol):
    """One component's cumulative energy. `read` returns an opaque reading; `joules` the
    energy between two readings."""

    component: str
    estimated: bool

    def read(self) -> Any: ...

    def joules(self, start: Any, end: Any) -> tuple[float, str]:
        """Energy between readings and the method string for it."""
        ...


# -- RAPL ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaplDomain:
    path: Path
    name: str  # "package-0"
    max_range_uj: int


def rapl_package_domains(root: Path = POWERCAP) -> tuple[list[RaplDomain], str]:
    """Readable RAPL package domains under `root`, or none and why not."""
    if not root.is_dir():
        return [], f"RAPL: {root} not present"
    tops = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not tops:
        return [], f"RAPL: no intel-rapl:N domains under {root}"
    domains: list[RaplDomain] = []
    why: list[str] = []
    for p in tops:
        try:
            name = (p / "name").read_text().strip()
            if not name.startswith("package"):
                continue
            int((p / "energy_uj").read_text())
            rng = int((p / "max_energy_range_uj").read_text())
        except PermissionError:
            why.append(f"{p / 'energy_uj'} not readable (root-only since Linux 5.10)")
            continue
        except (OSError, ValueError) as e:
            why.append(f"{p}: {e}")
            continue
        domains.append(RaplDomain(p, name, rng))
    if domains:
        return domains, f"RAPL: {len(domains)} package domain(s) readable"
    return [], "RAPL: " + ("; ".join(why) or f"no package domain under {root}")


def rapl_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Counter difference, assuming at most one wrap at max_range_uj between the readings."""
    return end - start if end >= start else end + max_range_uj - start


class RaplCounter:
    component = "cpu"
    estimated = False

    def __init__(self, domains: list[RaplDomain]) -> None:
        if not domains:
            raise MeasureError("RaplCounter: no RAPL package domains given")
        self.domains = domains

    def read(self) -> list[int]:
        return [int((d.path / "energy_uj").read_text()) for d in self.domains]

    def joules(self, start: list[int], end: list[int]) -> tuple[float, str]:
        uj = sum(rapl_delta_uj(s, e, d.max_range_uj) for s, e, d in zip(start, end, self.domains))
        n = len(self.domains)
        return uj / 1e6, f"RAPL package ({n} domain{'s' if n > 1 else ''})"


# -- NVML ----------------------------------------------------------------------------------
def _nvml_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def nvml_init() -> tuple[Any | None, str]:
    """The pynvml module with NVML initialised, or None and why not (no package, no driver).

    nvmlInit is reference-counted: a caller done with NVML may call nvmlShutdown once.
    """
    try:
        import pynvml
    except ImportError:
        return None, "NVML: pynvml (nvidia-ml-py) not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return None, f"NVML: no NVIDIA driver ({e})"
    return pynvml, "NVML: initialised"


def nvml_handle(device: str) -> tuple[Any | None, str]:
    """An NVML handle with a total-energy counter for `device` ("cuda[:N]"), or None and why.

    NVML numbers GPUs in PCI order and ignores CUDA_VISIBLE_DEVICES, so the handle is found by
    the UUID torch reports for the device when torch can give one.
    """
    pynvml, why = nvml_init()
    if pynvml is None:
        return None, why
    idx = _nvml_index(device)
    try:
        handle = None
        uuid = _torch_uuid(idx)
        if uuid is not None:
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            except pynvml.NVMLError:
                handle = None
        if handle is None:
            handle = pynvml.nvmlDeviceGetHandleByIndex(idx)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as e:
        return None, f"NVML: GPU {idx} has no readable total-energy counter ({e})"
    return handle, f"NVML: GPU {idx} total-energy counter readable"


def _torch_uuid(idx: int) -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or idx >= torch.cuda.device_count():
        return None
    uuid = getattr(torch.cuda.get_device_properties(idx), "uuid", None)
    if uuid is None:
        return None
    s = str(uuid)
    return s if s.startswith("GPU-") else f"GPU-{s}"


class NvmlCounter:
    component = "gpu"
    estimated = False

    def __init__(self, handle: Any, label: str) -> None:
        self.handle = handle
        self.label = label

    def read(self) -> int:
        import pynvml

        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def joules(self, start: int, end: int) -> tuple[float, str]:
        return (end - start) / 1e3, f"NVML {self.label}"


# -- estimate ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CpuPowerAssumption:
    w_per_cpu: float
    n_cpus: int
    source: str  # where the wattage comes from, for the method string

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CpuPowerAssumption:
        env = os.environ if environ is None else environ
        n = os.cpu_count() or 1
        raw = env.get(TDP_ENV)
        if raw is None:
            return cls(DEFAULT_W_PER_CPU, n, f"TDP {DEFAULT_W_PER_CPU:g} W/core assumed")
        try:
            tdp = float(raw)
        except ValueError:
            raise MeasureError(f"{TDP_ENV}: expected watts as a number, got {raw!r}") from None
        if not tdp > 0:
            raise MeasureError(f"{TDP_ENV}: must be positive, got {raw!r}")
        return cls(tdp / n, n, f"TDP {tdp:g} W from {TDP_ENV} over {n} CPUs = {tdp / n:.3g} W/core")


class CpuEstimateCounter:
    """Joules = W per CPU x CPU-seconds of this process (all its threads): a TDP share x time.

    It ignores idle and uncore power and other processes, and real power is not linear in
    load, so it is a rough figure, always labelled `estimated`.
    """

    component = "cpu"
    estimated = True

    def __init__(self, assumption: CpuPowerAssumption) -> None:
        self.assumption = assumption

    def read(self) -> tuple[float, float]:
        return time.process_time(), time.perf_counter()

    def joules(self, start: tuple[float, float], end: tuple[float, float]) -> tuple[float, str]:
        cpu_s = end[0] - start[0]
        wall = end[1] - start[1]
        busy = cpu_s / wall if wall > 0 else 0.0
        a = self.assumption
        method = (
            f"estimated: CPU TDP share x time ({a.source}, {busy:.2f} cores busy "
            f"on average over {wall:.2f} s)"
        )
        return a.w_per_cpu * cpu_s, method


# -- detection and the meter ---------------------------------------------------------------
@dataclass(frozen=True)
class EnergyBackends:
    """What this machine offers: the CPU source, the GPU source (if any), and why not."""

    cpu: str  # "rapl" or "estimate"
    gpu: str | None  # "nvml" or None
    reasons: list[str]
    # components the run uses but no counter covers, as they appear in a method string
    unmeasured: tuple[str, ...] = ()

    def summary(self) -> str:
        return "; ".join(self.reasons)


def detect_energy_backend(
    device: str = "cpu", powercap: Path = POWERCAP
) -> tuple[EnergyBackends, list[EnergyCounter]]:
    """Which energy counters work here for a run on `device`, with a reason for each choice."""
    counters: list[EnergyCounter] = []
    domains, why_rapl = rapl_package_domains(powercap)
    reasons = [why_rapl]
    if domains:
        counters.append(RaplCounter(domains))
        cpu = "rapl"
    else:
        a = CpuPowerAssumption.from_env()
        counters.append(CpuEstimateCounter(a))
        cpu = "estimate"
        reasons.append(f"CPU energy estimated ({a.source})")
    gpu = None
    unmeasured: tuple[str, ...] = ()
    if is_cuda(device):
        handle, why_nvml = nvml_handle(device)
        reasons.append(why_nvml)
        if handle is not None:
            counters.append(NvmlCounter(handle, f"GPU {_nvml_index(device)}"))
            gpu = "nvml"
        else:
            reasons.append("GPU energy not measured")
            unmeasured = (f"{GPU_NOT_MEASURED} ({why_nvml})",)
    return EnergyBackends(cpu, gpu, reasons, unmeasured), counters


class EnergyMeter:
    """begin_window(name) / end_window(name) -> EnergyMeasurement over every counter here."""

    def __init__(
        self,
        device: str = "cpu",
        counters: list[EnergyCounter] | None = None,
        unmeasured: tuple[str, ...] = (),
    ) -> None:
        """Counters detected for `device`, or the given ones; `unmeasured` (with given
        counters) names components the run uses that none of them covers."""
        if counters is None:
            self.backends, counters = detect_energy_backend(device)
        else:
            self.backends = EnergyBackends(
                "given", None, [f"given counters: {[c.component for c in counters]}"], unmeasured
            )
        if not counters:
            raise MeasureError("EnergyMeter: no energy counters")
        self.counters = counters
        self._open: OpenWindows[tuple[float, list[Any]]] = OpenWindows("EnergyMeter")

    def begin_window(self, name: str) -> None:
        self._open.begin(name, (time.perf_counter(), [c.read() for c in self.counters]))

    def end_window(self, name: str) -> EnergyMeasurement:
        end = [c.read() for c in self.counters]
        t1 = time.perf_counter()
        t0, start = self._open.end(name)
        total = 0.0
        methods: list[str] = []
        detail: dict[str, Any] = {}
        for c, s, e in zip(self.counters, start, end):
            j, m = c.joules(s, e)
            total += j
            methods.append(m)
            detail[f"{c.component}_j"] = j
            detail[f"{c.component}_method"] = m
        estimated = any(c.estimated for c in self.counters)
        method = " + ".join(methods)
        if estimated and not method.startswith(ESTIMATED_PREFIX):
            method = "estimated: " + method  # a sum with any estimated part is an estimate
        for what in self.backends.unmeasured:
            # not added in, so the total is below what the run drew: the method must say so
            method += f"; {what}"
            detail.setdefault("unmeasured", []).append(what)
        return EnergyMeasurement(name, total, t1 - t0, method, estimated, detail)

    def discard_window(self, name: str) -> None:
        self._open.discard(name)
