"""Environment records and the CPU monitor's warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from voxmeter.measure.envinfo import (
    CpuMonitor,
    collect_env,
    cpu_warnings,
    git_state,
    package_version,
    parse_cpuinfo,
)
from voxmeter.measure.windows import MeasureError

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes asimddp sve i8mm bf16
CPU implementer\t: 0x41
"""


def test_parse_cpuinfo_x86_and_arm():
    model, flags = parse_cpuinfo(X86)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx2", "avx512_vnni", "amx_int8"} <= flags  # first CPU's flags
    model, flags = parse_cpuinfo(ARM)
    assert model is None and {"asimddp", "i8mm", "sve"} <= flags


def test_collect_env_records_what_a_comparison_needs():
    env = collect_env(threads=2, seed=7, device="cpu")
    for key in ("voxmeter_version", "git_commit", "python", "cpu_model", "cpu_flags",
                "cpu_logical", "torch_threads", "os", "hostname", "time_utc", "gpu"):  # fmt: skip
        assert key in env
    assert (env["threads"], env["seed"], env["device"]) == (2, 7, "cpu")
    assert env["versions"]["numpy"] == np.__version__
    assert set(env["versions"]) == {
        "torch", "transformers", "ctranslate2", "faster_whisper", "numpy", "jiwer"
    }  # fmt: skip
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["time_utc"].endswith("+00:00")
    assert package_version("surely-not-an-installed-package-x") is None


def test_git_state_of_a_checkout_and_of_no_checkout(tmp_path: Path):
    assert git_state(tmp_path) == (None, None)
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    (repo / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert git_state(repo) == (head, False)
    (repo / "a.txt").write_text("2")
    assert git_state(repo) == (head, True)
    (repo / "untracked.txt").write_text("x")  # untracked files do not make a run dirty
    git("checkout", "-q", "a.txt")
    assert git_state(repo) == (head, False)


def test_warning_texts():
    w = cpu_warnings(mhz_start=3000, mhz_min=2500, other_pct=25.0)
    assert w == [
        "CPU frequency dropped to 2500 MHz (17% below start): possible throttling",
        "other processes used 25% CPU during the run: figures may be inflated",
    ]
    assert cpu_warnings(3000, 2900, 5.0) == []  # within 10% and under 10%: no noise
    assert cpu_warnings(None, None, None) == []


def test_monitor_sees_own_and_other_processes():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 5: pass\n"
    with CpuMonitor(interval_s=0.05) as mon:
        mon.begin_window("quiet")
        t0 = time.process_time()
        while time.process_time() - t0 < 0.2:
            pass
        quiet = mon.end_window("quiet")
        child = subprocess.Popen([sys.executable, "-c", burn])
        try:
            time.sleep(0.3)  # let it start
            mon.begin_window("busy")
            time.sleep(0.6)
            busy = mon.end_window("busy")
        finally:
            child.kill()
            child.wait()
    assert quiet.own_cpu_pct > 0
    # the child was still running at end_window, so its CPU counts as another process's:
    # at least a third of one core over the 0.6 s window, whatever else the machine was doing
    other_cpu_s = busy.other_cpu_pct / 100 * busy.seconds * (os.cpu_count() or 1)
    assert other_cpu_s > 0.2
    assert busy.mhz_mean is None or busy.mhz_min <= busy.mhz_mean
    assert busy.figures().keys() == {"cpu_mhz_mean", "cpu_mhz_min", "other_cpu_pct"}
    assert busy.freq_source in ("scaling_cur_freq", "/proc/cpuinfo (may be static in a VM)",
                                "unavailable")  # fmt: skip


def test_monitor_start_stop_reports_the_span():
    mon = CpuMonitor(interval_s=0.02)
    with pytest.raises(MeasureError):
        mon.stop()
    mon.start()
    time.sleep(0.1)
    report = mon.stop()
    assert report.name == "run" and report.seconds >= 0.1
    if report.freq_source != "unavailable":
        assert report.mhz_min > 0
    with pytest.raises(MeasureError):
        mon.end_window("never")
