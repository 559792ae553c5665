"""The server under load: `voxmeter serve` in its own process on loopback, `voxmeter load`'s
capacity search against it (fixed arrivals at 1, 2, 4, 6, ... real-time streams, each level for
`duration` seconds of audio or more: every level streams the bundled set once, divided among
its streams; until p99 commit latency passes the SLO). Used by bench_stream.py.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

SLO_MS = 3000.0  # the target: >= 4 concurrent streams at p99 commit latency <= 3 s
# the configurations a plain load run measures, in bench_stream.py's config tokens (read by
# bench_stream.serve_args); 'rN' runs N model replicas of one thread each (serve --replicas)
SERVER_CONFIGS = (
    "500:2:vad",
    "500:2:vad:r2",
    "1000:2:vad",
    "500:2:vad:cut160",
    "500:2:vad:cut160:r2",
    "500:2:vad:mw1.5",
    "500:2:vad:mw1.5:r2",
    "500:3:vad:mw2:r2",  # LA-3 with a 2 s bound: WER gap 1.49 over four shifts
    "500:3:vad:rx1.0:r2",  # LA-2 for words 1 s old: 8 streams on a Zen 4, WER gap 1.69
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"voxmeter serve exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("voxmeter serve did not start listening")


def capacity_of(name: str, args: list[str], duration: float, cache_dir: str | None) -> dict:
    from voxmeter.stream.load import LoadConfig, find_capacity

    port = free_port()
    cmd = [sys.executable, "-m", "voxmeter.cli", "serve", "--port", str(port), "--quiet"]
    cmd += ["--max-sessions", "16", *args]
    if cache_dir:
        cmd += ["--cache-dir", cache_dir]
    proc = subprocess.Popen(cmd)
    try:
        wait_listening(port, proc)
        cfg = LoadConfig(url=f"ws://127.0.0.1:{port}", duration_s=duration, slo_ms=SLO_MS)
        report = asyncio.run(find_capacity(cfg, max_streams=12))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    levels = [
        {
            "streams": r.config.streams,
            "p50_ms": r.latency["p50"],
            "p90_ms": r.latency["p90"],
            "p99_ms": r.latency["p99"],
            "held": r.held,
            "errors": r.errors,
            "server_compute_ratio": [s.rtf for s in r.streams],
        }
        for r in report.levels
    ]
    return {"config": name, "sustained": report.capacity, "slo_ms": SLO_MS, "levels": levels}


def capacity(duration: float, cache_dir: str | None, configs: dict[str, list[str]]) -> dict:
    """Capacity curves of each server configuration (name -> `voxmeter serve` arguments), in
    the report's --capacity format."""
    curves = []
    for name, args in configs.items():
        curve = capacity_of(name, args, duration, cache_dir)
        print("capacity", name, curve["sustained"], file=sys.stderr, flush=True)
        curves.append(curve)
    return {"capacity": curves}
