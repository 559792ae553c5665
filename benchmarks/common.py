"""Shared bits of the benchmarks: run a spec in a fresh process, write JSON beside the others."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write(name: str, payload: dict, device: str = "cpu") -> Path:
    from voxmeter.measure.envinfo import collect_env

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, env=collect_env(threads=2, seed=0, device=device), time=time.time())
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}", file=sys.stderr)
    return out


def pick(res, keys: tuple[str, ...]) -> dict:
    return {k: res.metrics.get(k) for k in keys}
