"""Sweep files: read a TOML sweep file and check every key of it.

A sweep file names the models, engines and data in [sweep], the axis values to cross in
[axes], workload and compression settings to cross in [workload] and [compression], optional
[constraints] for `recommend`/`report`, and an optional [budget] that asks for an iso-FLOPs
grid instead of the axes grid. An unknown key or an impossible value is a one-line SpecError
naming the file and the key. Expanding a file into specs is sweep/grid.py's work.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from voxmeter.errors import SpecError
from voxmeter.paths import shorten
from voxmeter.spec import (
    DEVICES,
    ENGINES,
    AxisSettings,
    CompressionSettings,
    RunSpec,
    WorkloadSettings,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

MINIMISE = ("latency", "energy", "memory", "flops")

_SWEEP_KEYS = {
    "name": str,
    "models": list,
    "engines": list,
    "data": str,
    "device": (str, list),
    "repeats": int,
    "warmup": int,
    "threads": int,
    "batch_size": (int, list),
    "seed": int,
    "max_clips": int,
    "cost_only": bool,  # consent to seeded random weights for sizes without weights here
}
_AXES_KEYS = ("frames", "pad", "stride", "pool", "precision", "fit_step_s")
# The one list of limits: constraint name -> (the result metric it limits, its unit). The
# Constraints fields, the [constraints] keys, check_constraints and analysis.budget follow it.
LIMITS: dict[str, tuple[str, str]] = {
    "max_wer": ("wer", "%"),
    "max_rtf": ("rtf", ""),
    "max_memory_mb": ("peak_rss_mb", " MiB"),
    "max_gflops": ("gflops_analytic_total", " GFLOP"),
}
_CONSTRAINT_KEYS = {**dict.fromkeys(LIMITS, float), "minimise": str}
_BUDGET_KEYS = {"gflops": float, "tol": float, "strides": list, "frames": list}
_SECTIONS = ("sweep", "axes", "workload", "compression", "constraints", "budget")
_WORKLOAD_KEYS = tuple(f.name for f in fields(WorkloadSettings))
_COMPRESSION_KEYS = tuple(f.name for f in fields(CompressionSettings))


@dataclass(frozen=True)
class Constraints:
    """What a recommendation must satisfy; None means unconstrained."""

    max_wer: float | None = None
    max_rtf: float | None = None
    max_memory_mb: float | None = None
    max_gflops: float | None = None
    minimise: str = "latency"

    def limits(self) -> dict[str, float]:
        """The limits that are set, by constraint name (in LIMITS order)."""
        return {k: getattr(self, k) for k in LIMITS if getattr(self, k) is not None}

    def merged(self, **overrides: Any) -> Constraints:
        """These constraints with every non-None override applied (command line over file)."""
        kept = {k: v for k, v in overrides.items() if v is not None}
        return Constraints(**{**self.__dict__, **kept})


@dataclass(frozen=True)
class BudgetSettings:
    gflops: float | None = None
    tol: float = 0.05
    strides: tuple[int, ...] = ()
    frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class SweepFile:
    path: Path
    name: str
    models: tuple[str, ...]
    engines: tuple[str, ...]
    data: str
    devices: tuple[str, ...]
    base: RunSpec  # threads, repeats, seed...: the fields every spec shares
    axes: dict[str, tuple[Any, ...]]  # only the axes the file names
    constraints: Constraints
    budget: BudgetSettings
    # workload and compression settings and batch sizes the file names, crossed like the axes
    workload: dict[str, tuple[Any, ...]] = field(default_factory=dict)


# -- parsing ----------------------------------------------------------------------------
def _err(path: Path, key: str, msg: str) -> SpecError:
    return SpecError(f"{path}: {key}: {msg}")


def _check_keys(path: Path, section: str, table: Any, allowed: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _err(path, section, f"expected a table, got {type(table).__name__}")
    for k in table:
        if k not in allowed:
            raise _err(path, f"{section}.{k}", f"unknown key (known: {', '.join(allowed)})")
    return table


def _typed(path: Path, key: str, v: Any, kind: Any) -> Any:
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if kind is bool and isinstance(v, bool):
        return v
    if isinstance(v, bool) or not isinstance(v, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _err(path, key, f"expected {want}, got {v!r}")
    return v


def _options(path: Path, key: str, v: Any) -> tuple[Any, ...]:
    """A scalar or a non-empty list of scalars, as a tuple without duplicates."""
    vals = v if isinstance(v, list) else [v]
    if not vals:
        raise _err(path, key, "empty list: the grid would have no specs")
    for x in vals:
        if isinstance(x, list | dict):
            raise _err(path, key, f"expected scalars, got {x!r}")
    return tuple(dict.fromkeys(vals))


def load_sweep(path: str | Path) -> SweepFile:
    """Read and check a sweep file; SpecError naming the file and key for anything wrong."""
    p = Path(path)
    doc = _read_toml(p)
    for k in doc:
        if k not in _SECTIONS:
            raise _err(p, k, f"unknown section (known: {', '.join(_SECTIONS)})")
    if "sweep" not in doc:
        raise _err(p, "sweep", "missing section [sweep]")
    sw = _check_keys(p, "sweep", doc["sweep"], _SWEEP_KEYS)
    sw = {k: _typed(p, f"sweep.{k}", v, _SWEEP_KEYS[k]) for k, v in sw.items()}
    models, engines, devices = _names(p, sw)
    base_fields = ("repeats", "warmup", "threads", "seed", "max_clips", "data", "cost_only")
    base = RunSpec(**{k: sw[k] for k in base_fields if k in sw})
    for m in models:
        _check_model(p, m, base.cost_only)
    workload = _workload(p, doc.get("workload", {}), sw.get("batch_size"))
    workload.update(_compression(p, doc.get("compression", {})))
    try:
        base.validate()
    except SpecError as e:
        raise SpecError(f"{p}: sweep.{e}") from None
    return SweepFile(
        path=p,
        name=sw.get("name", p.stem),
        models=models,
        engines=engines,
        data=base.data,
        devices=devices,
        base=base,
        axes=_axes(p, doc.get("axes", {})),
        workload=workload,
        constraints=_constraints(p, doc.get("constraints", {})),
        budget=_budget(p, doc.get("budget", {})),
    )


def _read_toml(p: Path) -> dict[str, Any]:
    """The parsed TOML document; a one-line SpecError for a missing, unreadable or bad file."""
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))  # TOML is UTF-8 by definition
    except FileNotFoundError:
        raise SpecError(f"{p}: no such sweep file") from None
    except UnicodeDecodeError as e:
        bad = e.object[e.start : e.start + 1].hex()
        raise SpecError(f"{p}: not UTF-8 text (byte 0x{bad} at offset {e.start})") from None
    except OSError as e:
        raise SpecError(f"{p}: cannot read sweep file ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{p}: not valid TOML ({e})") from None
    except RecursionError:
        raise SpecError(f"{p}: not usable TOML (nested too deeply)") from None


def _names(p: Path, sw: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The [sweep] models, engines and devices, engines and devices checked by name."""
    models = _options(p, "sweep.models", sw.get("models", ["tiny.en"]))
    engines = _options(p, "sweep.engines", sw.get("engines", ["hf"]))
    devices = _options(p, "sweep.device", sw.get("device", "cpu"))
    for e in engines:
        if e not in ENGINES:
            raise _err(p, "sweep.engines", f"unknown engine {e!r} (known: {', '.join(ENGINES)})")
    for d in devices:
        if d not in DEVICES:
            raise _err(p, "sweep.device", f"unknown device {d!r} (known: {', '.join(DEVICES)})")
    return models, engines, devices


def _axes(p: Path, table: Any) -> dict[str, tuple[Any, ...]]:
    axes_t = _check_keys(p, "axes", table, _AXES_KEYS)
    axes = {k: _options(p, f"axes.{k}", v) for k, v in axes_t.items()}
    for v in axes.get("fit_step_s", ()):
        _typed(p, "axes.fit_step_s", v, (int, float))
    for k, vals in axes.items():
        for v in vals:
            try:
                AxisSettings(**{k: v}).validate()
            except (SpecError, TypeError) as e:
                raise _err(p, f"axes.{k}", str(e).split(": ", 1)[-1]) from None
    return axes


def _constraints(p: Path, table: Any) -> Constraints:
    cons_t = _check_keys(p, "constraints", table, _CONSTRAINT_KEYS)
    cons_t = {k: _typed(p, f"constraints.{k}", v, _CONSTRAINT_KEYS[k]) for k, v in cons_t.items()}
    constraints = Constraints(**cons_t)
    check_constraints(constraints, where=f"{p}: constraints.")
    return constraints


def _budget(p: Path, table: Any) -> BudgetSettings:
    bud_t = _check_keys(p, "budget", table, _BUDGET_KEYS)
    bud_t = {k: _typed(p, f"budget.{k}", v, _BUDGET_KEYS[k]) for k, v in bud_t.items()}
    budget = BudgetSettings(
        gflops=bud_t.get("gflops"),
        tol=bud_t.get("tol", 0.05),
        strides=_int_options(p, "budget.strides", bud_t.get("strides", [])),
        frames=_int_options(p, "budget.frames", bud_t.get("frames", [])),
    )
    try:
        check_budget(budget.gflops, budget.tol, budget.frames, budget.strides)
    except SpecError as e:
        raise SpecError(f"{p}: budget.{e}") from None
    return budget


def _int_options(path: Path, key: str, vals: list[Any]) -> tuple[int, ...]:
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _err(path, key, f"expected integers, got {v!r}")
    return tuple(dict.fromkeys(vals))


def _check_model(path: Path, model: Any, cost_only: bool) -> None:
    from voxmeter.assets.bundled import needs_cost_only
    from voxmeter.assets.dims import ARCHITECTURES

    if not isinstance(model, str) or not model:
        raise _err(path, "sweep.models", f"expected model names, got {model!r}")
    if needs_cost_only(model) and not cost_only:
        raise _err(
            path,
            "sweep.models",
            f"{model!r} has no weights here; to measure its cost only (seeded random weights, "
            "no accuracy) set cost_only = true in [sweep]",
        )
    if model in ARCHITECTURES:
        return
    try:
        is_dir = Path(model).expanduser().is_dir()
    except OSError as e:  # e.g. a name too long for the file system
        raise _err(path, "sweep.models", f"{shorten(model)!r}: {e.strerror}") from None
    if not is_dir:
        known = ", ".join(ARCHITECTURES)
        raise _err(path, "sweep.models", f"unknown model {model!r} (known: {known}, or a dir)")


def check_constraints(c: Constraints, where: str = "--") -> None:
    """Reject impossible limits; `where` prefixes the key ("--" names command-line options)."""

    def name(k: str) -> str:
        return f"--{k.replace('_', '-')}" if where == "--" else f"{where}{k}"

    for k, v in c.limits().items():
        if not v > 0:
            raise SpecError(f"{name(k)}: must be > 0, got {v}")
    if c.minimise not in MINIMISE:
        raise SpecError(
            f"{name('minimise')}: expected one of {', '.join(MINIMISE)}, got {c.minimise!r}"
        )


def _workload(p: Path, table: Any, batch_size: Any) -> dict[str, tuple[Any, ...]]:
    """[workload] options (each a scalar or a list) plus [sweep] batch_size, checked."""
    t = _check_keys(p, "workload", table, _WORKLOAD_KEYS)
    out = {k: _options(p, f"workload.{k}", v) for k, v in t.items()}
    for k, vals in out.items():
        for v in vals:
            try:
                WorkloadSettings.check_field(k, v)
            except (SpecError, TypeError) as e:
                raise _err(p, f"workload.{k}", str(e).split(": ", 1)[-1]) from None
    if batch_size is not None:
        sizes = _options(p, "sweep.batch_size", batch_size)
        for b in sizes:
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise _err(p, "sweep.batch_size", f"expected integers >= 1, got {b!r}")
        out["batch_size"] = sizes
    return out


def _compression(p: Path, table: Any) -> dict[str, tuple[Any, ...]]:
    """[compression] options (each a scalar or a list), each checked alone."""
    t = _check_keys(p, "compression", table, _COMPRESSION_KEYS)
    out = {k: _options(p, f"compression.{k}", v) for k, v in t.items()}
    for k, vals in out.items():
        for v in vals:
            one = {k: v}
            if k == "keep":  # a keep-list only means something under a quantization scheme
                one["quant"] = "int8-dynamic"
            if k == "recover" and v != "none":
                one["decoder_layers"] = 1  # likewise: recovery needs something removed
            try:
                CompressionSettings(**one).validate()
            except (SpecError, TypeError) as e:
                raise _err(p, f"compression.{k}", str(e).split(": ", 1)[-1]) from None
    return out


def check_budget(
    gflops: float | None, tol: float, frames: tuple[int, ...], strides: tuple[int, ...]
) -> None:
    if gflops is not None and not gflops > 0:
        raise SpecError(f"gflops: must be > 0, got {gflops}")
    if not 0 < tol < 1:
        raise SpecError(f"tol: must be in (0, 1), got {tol}")
    for f in frames:
        try:
            AxisSettings(frames=f).validate()
        except SpecError as e:
            raise SpecError(f"frames: {str(e).split(': ', 1)[-1]}") from None
    for k in strides:
        if k < 1:
            raise SpecError(f"strides: must be integers >= 1, got {k}")
