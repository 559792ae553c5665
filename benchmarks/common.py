"""Shared bits of the benchmarks: where their JSON goes and what it says about the machine.

Every benchmark writes `benchmarks/results/<name>-<date>-<cpu>.json` (UTC date; `cpu` a short
slug of the CPU model and the widest int8-relevant instruction set, since two machines with
one model name may differ there), holding the command line, the machine, the library
versions and every figure it printed. The files are small and committed: they are the
evidence behind the README's figures (docs/figures.md maps one to the other).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
# the widest instruction set first: it names the int8 kernels CTranslate2 and torch can use
ISA_TAGS = (
    ("amx_int8", "amx"),
    ("avx512_vnni", "avx512vnni"),
    ("avx512f", "avx512"),
    ("avx_vnni", "avxvnni"),
    ("avx2", "avx2"),
    ("i8mm", "i8mm"),
    ("asimddp", "neondot"),
)
NOISE = re.compile(r"\(r\)|\(tm\)|\bcpu\b|\bprocessor\b|@.*$|\b\d+-core\b", re.IGNORECASE)


def cpu_slug(model: str | None, flags: list[str] | tuple[str, ...] = ()) -> str:
    """A short file-name-safe name for a CPU: its model name without trademarks, clock and
    core count, plus its widest int8-relevant instruction set ("amd-epyc-avx512vnni")."""
    name = NOISE.sub(" ", model).lower() if model else "unknown cpu"
    words = re.sub(r"[^a-z0-9]+", "-", name).strip("-").split("-")
    slug = "-".join(words[:4]) or "unknown-cpu"
    tag = next((t for flag, t in ISA_TAGS if flag in flags), None)
    return f"{slug}-{tag}" if tag and tag not in slug else slug


def result_path(name: str, env: dict[str, Any], day: dt.date | None = None) -> Path:
    """Where benchmark `name` writes, for the machine `env` (collect_env's) describes; a GPU
    run's name adds the GPU's."""
    day = day or dt.datetime.now(dt.timezone.utc).date()
    slug = cpu_slug(env.get("cpu_model"), env.get("cpu_flags") or ())
    if env.get("device", "cpu") != "cpu" and env.get("gpu"):  # a GPU run: named by its GPU too
        slug += "-" + "-".join(re.sub(r"[^a-z0-9]+", "-", env["gpu"].lower()).split("-")[:3])
    return RESULTS / f"{name}-{day.isoformat()}-{slug}.json"


def named(name: str, data: str, default: str) -> str:
    """A benchmark's result name for data set `data`: `name` itself on its default set, else
    `name-<data>` (so a run on real-test never overwrites the default set's JSON, and
    `latest` finds each set's own)."""
    if data == default:
        return name
    return f"{name}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', Path(data).stem).strip('-')}"


def machine(env: dict[str, Any]) -> dict[str, Any]:
    """The machine in a few fields a reader compares first."""
    keys = ("cpu_model", "cpu_flags", "cpu_logical", "cpu_physical", "gpu", "gpu_driver", "os")
    # the name the result file carries, so a table can say which machine measured it
    name = cpu_slug(env.get("cpu_model"), env.get("cpu_flags") or ())
    return {"name": name, **{k: env.get(k) for k in keys}}


def write(name: str, payload: dict, device: str = "cpu", threads: int = 2) -> Path:
    """Write a benchmark's figures with its command line, machine and versions; the path."""
    from voxmeter.measure.envinfo import collect_env

    env = collect_env(threads=threads, seed=0, device=device)
    out = result_path(name, env)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    head = {"benchmark": name, "command": command, "machine": machine(env)}
    full = {**head, **payload, "versions": env.get("versions"), "env": env, "time": time.time()}
    out.write_text(json.dumps(full, indent=2, default=str) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return out


def latest(name: str) -> Path | None:
    """This machine's newest JSON of benchmark `name`, or None (for a run that adds to it)."""
    from voxmeter.measure.envinfo import cpu_info

    cpu = cpu_info()
    slug = cpu_slug(cpu.model, cpu.flags)
    date = r"\d{4}-\d{2}-\d{2}"
    pattern = re.compile(rf"{re.escape(name)}-({date})-{re.escape(slug)}\.json")
    found = sorted(
        (m.group(1), p) for p in RESULTS.glob(f"{name}-*.json") if (m := pattern.fullmatch(p.name))
    )
    return found[-1][1] if found else None


def machine_name() -> str:
    """This machine's slug, as result files name it (a table says which machine measured)."""
    from voxmeter.measure.envinfo import cpu_info

    cpu = cpu_info()
    return cpu_slug(cpu.model, cpu.flags)


def pick(res, keys: tuple[str, ...]) -> dict:
    return {k: res.metrics.get(k) for k in keys}
