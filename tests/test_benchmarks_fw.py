"""The faster-whisper comparison's measurement (benchmarks/fw_run.py, fresh.py, common.py).

fw_run's peak RSS must be its own process's, not a mark inherited from the process that
started it: Linux carries a parent's high-water mark across fork and exec into the child's
ru_maxrss, which is what fw_run once reported.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the benchmarks import each other as scripts do

import common
import fresh

MIB = 1024 * 1024
BALLAST_MIB = 512


# A parent holding BALLAST_MIB resident starts fw_run as bench_longform does; run in a process
# of its own, so the ballast never raises this pytest process's own high-water mark.
PARENT = """
import json, sys
from pathlib import Path
sys.path.insert(0, {bench!r})
import fresh
ballast = b"\\x01" * ({mib} * 1024 * 1024)  # every page written: resident
row = fresh.run_json(fresh.python_script({fw!r}, "--no-model"))
status = Path("/proc/self/status").read_text()
parent = int(status.split("VmHWM:")[1].split("kB")[0]) / 1024
print(json.dumps(dict(row, parent_peak_mb=parent, ballast=len(ballast))))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_fw_run_peak_is_not_inherited_from_a_big_parent():
    code = PARENT.format(bench=str(BENCH), fw=str(BENCH / "fw_run.py"), mib=BALLAST_MIB)
    row = fresh.run_json([sys.executable, "-c", code])
    assert row["ballast"] == BALLAST_MIB * MIB
    parent, child = row["parent_peak_mb"], row["process_peak_rss_mb"]
    assert parent > BALLAST_MIB
    # a bare interpreter with voxmeter's memory module: tens of MiB, never the parent's mark
    assert 0 < child < 150, (child, parent)
    assert child < parent - 0.8 * BALLAST_MIB
    assert row["peak_rss_definition"] == fresh.PEAK_RSS_DEFINITION
    assert row["warmup_definition"] == fresh.WARMUP_DEFINITION


def test_run_json_reports_the_childs_error():
    with pytest.raises(RuntimeError, match="boom"):
        fresh.run_json([sys.executable, "-c", "import sys; sys.exit('boom')"])


@pytest.mark.parametrize(
    ("model", "flags", "slug"),
    [
        ("AMD EPYC", ["avx", "avx2"], "amd-epyc-avx2"),
        ("AMD EPYC 9R14 96-Core Processor", ["avx2", "avx512f", "avx512_vnni"],
         "amd-epyc-9r14-avx512vnni"),
        ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", ["avx512f"],
         "intel-xeon-platinum-8375c-avx512"),
        (None, [], "unknown-cpu"),
    ],
)  # fmt: skip
def test_cpu_slug(model, flags, slug):
    assert common.cpu_slug(model, flags) == slug


def test_result_path_names_benchmark_date_and_cpu():
    env = {"cpu_model": "AMD EPYC", "cpu_flags": ["avx2"], "device": "cpu"}
    path = common.result_path("bench_longform", env, dt.date(2026, 12, 7))
    assert path == common.RESULTS / "bench_longform-2026-12-07-amd-epyc-avx2.json"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ("longform", "bench_longform"),
        ("real-longform", "bench_longform-real-longform"),
        ("/cache/bench_compress/real-test-spread100.jsonl", "bench_longform-real-test-spread100"),
    ],
)
def test_a_run_on_another_set_gets_its_own_result_name(data, name):
    """A run on another data set never overwrites the default set's committed JSON."""
    assert common.named("bench_longform", data, "longform") == name


def test_results_are_not_ignored_by_git():
    import subprocess

    root = BENCH.parent
    probe = "benchmarks/results/bench_longform-2026-12-07-amd-epyc-avx2.json"
    out = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "-q", probe], capture_output=True, check=False
    )
    if out.returncode == 128:
        pytest.skip("not a git checkout")
    assert out.returncode == 1, "benchmarks/results/*.json is ignored: results cannot be committed"


def test_bench_longform_readme_configs_are_the_readmes_comparison():
    import bench_longform

    from voxmeter.spec import RunSpec

    base = RunSpec(engine="ct2", data="longform", repeats=1)
    keys = [k for k, _ in bench_longform.plan(base, "readme")]
    assert keys == ["fw-seq-int8", "fw-batched8-int8", "ct2-int8-batched-pooled16-enc1-fit-k2avg"]
    full = [k for k, _ in bench_longform.plan(base, "full")]
    assert set(keys) < set(full) and len(full) == len(set(full)) == 44
