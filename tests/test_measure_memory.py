"""RSS sampling windows: real allocations seen by the real sampler, and the arithmetic."""

from __future__ import annotations

import mmap
import time

import numpy as np
import psutil
import pytest
import torch

from voxmeter.measure.energy import nvml_init
from voxmeter.measure.memory import (
    MIB,
    NVML_PROCESS_METHOD,
    HighWaterMark,
    RssReader,
    RssSampler,
    nvml_process_gpu_mb,
    ru_maxrss_mb,
)
from voxmeter.measure.windows import MeasureError


def test_reader_agrees_with_psutil():
    read = RssReader()
    try:
        assert abs(read() - psutil.Process().memory_info().rss) < 4 * MIB
    finally:
        read.close()
    assert ru_maxrss_mb() >= psutil.Process().memory_info().rss / MIB - 4


def _wait_for_samples(sampler: RssSampler, n: int = 3) -> None:
    start = sampler.n_samples
    deadline = time.monotonic() + 5
    while sampler.n_samples < start + n and time.monotonic() < deadline:
        time.sleep(sampler.interval_s)
    assert sampler.n_samples >= start + n, "sampler thread took no samples"


def _touched(mib: int) -> mmap.mmap:
    """`mib` MiB of fresh anonymous pages, every page written.

    Straight from the kernel rather than through malloc: an allocator that keeps freed memory
    (a raised mmap threshold, jemalloc, a long test session's heap) would hand back pages
    that are already resident, and RSS would rightly not move. Close it to give them back.
    """
    m = mmap.mmap(-1, mib * MIB)
    np.frombuffer(m, dtype=np.uint8)[:: mmap.PAGESIZE] = 1
    return m


def _rss_counts_fresh_pages() -> bool:
    """Whether this kernel shows 32 MiB of freshly touched pages in RSS (psutil, not our code).

    Where it does not (some sandboxes account memory lazily), no RSS reader could see a spike,
    and the tests below would measure the sandbox instead of voxmeter.
    """
    before = psutil.Process().memory_info().rss
    m = _touched(32)
    grew = psutil.Process().memory_info().rss - before
    m.close()
    return grew > 24 * MIB


RSS_SEES_PAGES = pytest.mark.skipif(
    not _rss_counts_fresh_pages(), reason="this kernel does not count touched pages in RSS"
)


def _has_hwm() -> bool:
    hwm, _ = HighWaterMark.open()
    if hwm is not None:
        hwm.close()
    return hwm is not None


@RSS_SEES_PAGES
def test_thread_sampler_sees_a_transient_allocation():
    with RssSampler(interval_s=0.002, mode="thread") as s:
        assert s.mode == "thread" and "sampled every 2 ms" in s.method
        s.begin_window("enc")
        buf = _touched(64)
        _wait_for_samples(s)
        buf.close()
        w = s.end_window("enc")
    assert w.transient_mb > 48  # allocator and page-size slack aside, the 64 MiB was seen
    assert w.peak_mb - w.rss_after_mb > 48  # and it was returned
    assert w.n_samples >= 4
    assert s.max_transient_mb("enc") == w.transient_mb
    assert s.peak_rss().span_mb >= w.peak_mb


@RSS_SEES_PAGES
@pytest.mark.skipif(not _has_hwm(), reason="/proc/self/clear_refs not writable here")
def test_kernel_mark_catches_a_spike_no_thread_could_and_keeps_nesting_exact():
    with RssSampler(mode="hwm") as s:
        assert s.mode == "hwm" and s._thread is None
        s.begin_window("clip")
        s.begin_window("enc")
        _touched(96).close()  # mapped, touched and unmapped between two readings
        enc = s.end_window("enc")
        s.begin_window("dec")  # resets the mark: the clip must still remember the 96 MiB
        _touched(48).close()
        dec = s.end_window("dec")
        clip = s.end_window("clip")
    assert enc.n_samples == 2  # begin and end only, yet the spike is there
    assert 90 < enc.transient_mb < 110
    assert 44 < dec.transient_mb < 56
    assert clip.peak_mb >= enc.peak_mb and clip.transient_mb > 90
    peak = s.peak_rss()
    assert peak.span_mb >= enc.peak_mb and peak.lifetime_mb >= peak.span_mb


@RSS_SEES_PAGES
@pytest.mark.skipif(not _has_hwm(), reason="/proc/self/clear_refs not writable here")
def test_lifetime_peak_survives_the_resets_that_lower_ru_maxrss():
    _touched(160).close()  # a loading-time spike before the sampler exists
    before = ru_maxrss_mb()
    with RssSampler(mode="hwm") as s:
        s.begin_window("enc")
        s.end_window("enc")
        s.reset_peak()
        peak = s.peak_rss()
    assert peak.lifetime_mb >= before  # the spike is kept
    assert peak.span_mb < before - 100  # the span starts after it


class Scripted:
    """RSS readings given in MiB, one per call: makes the arithmetic checkable by hand."""

    def __init__(self, *mib: float) -> None:
        self.values = [int(v * MIB) for v in mib]

    def __call__(self) -> int:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def test_window_arithmetic_and_per_name_maximum():
    s = RssSampler(reader=Scripted(100, 100, 130, 110, 105, 120, 104))
    assert s.mode == "thread"  # a scripted reader implies the sampling path
    s.begin_window("dec")  # 100
    s.begin_window("clip")  # 100
    w = s.end_window("dec")  # 130
    assert (w.rss_before_mb, w.peak_mb, w.rss_after_mb, w.transient_mb) == (100, 130, 130, 30)
    s.begin_window("dec")  # 110
    w2 = s.end_window("dec")  # 105
    assert (w2.peak_mb, w2.transient_mb) == (110, 0)
    clip = s.end_window("clip")  # 120: the enclosing window saw every reading
    assert (clip.peak_mb, clip.transient_mb) == (130, 30)
    assert s.max_transient_mb("dec") == 30 and s.max_transient_mb("feat") is None
    assert s.peak_mb() == 130
    s.reset_peak()  # 104
    assert s.peak_mb() == 104 and s.max_transient_mb("dec") is None


def test_misuse_raises():
    s = RssSampler(reader=Scripted(1))
    with pytest.raises(MeasureError, match="never begun"):
        s.end_window("enc")
    with pytest.raises(MeasureError):
        RssSampler(interval_s=0)
    with pytest.raises(MeasureError):
        RssSampler(mode="guess")
    s.start()
    with pytest.raises(MeasureError, match="already started"):
        s.start()
    s.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_per_window():
    with RssSampler(device="cuda") as s:
        s.begin_window("enc")
        x = torch.empty(256 * MIB // 4, device="cuda")
        del x
        w = s.end_window("enc")
        s.begin_window("dec")
        w2 = s.end_window("dec")
    assert w.cuda_peak_mb >= 256 and w2.cuda_peak_mb < 256


# -- GPU memory of the process, from NVML -------------------------------------------------------
def _nvml_works() -> bool:
    pynvml, _ = nvml_init()
    if pynvml is not None:
        pynvml.nvmlShutdown()
    return pynvml is not None


def test_gpu_process_memory_on_a_cpu_run_is_none_with_a_method():
    assert nvml_process_gpu_mb("cpu") == (None, "no GPU memory: cpu run")


@pytest.mark.skipif(_nvml_works(), reason="checks the answer where NVML is absent")
def test_gpu_process_memory_without_nvml_says_why():
    mb, why = nvml_process_gpu_mb("cuda:0")
    assert mb is None and why.startswith("GPU process memory not measured (NVML: ")


def test_gpu_process_memory_without_pynvml_says_why(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    mb, why = nvml_process_gpu_mb("cuda")
    assert mb is None and "pynvml (nvidia-ml-py) not installed" in why


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_process_memory_sees_this_process_allocate():
    x = torch.empty(512 * MIB // 4, device="cuda")
    torch.cuda.synchronize()
    mb, method = nvml_process_gpu_mb("cuda")
    if mb is None and "lists no compute process" in method:
        pytest.skip(method)  # a container whose NVML lists host PIDs
    assert method == NVML_PROCESS_METHOD
    assert mb >= 512  # the tensor, plus the CUDA context and torch's cache
    del x


@pytest.mark.skipif(not _has_hwm(), reason="/proc/self/clear_refs not writable here")
def test_a_childs_lifetime_peak_is_its_own_not_its_parents():
    """Linux carries a forking parent's high-water mark into the child's ru_maxrss across
    fork and exec; an isolated child must report its own peak, from VmHWM."""
    import subprocess
    import sys

    big = _touched(400)  # the parent's resident set, high when it forks
    code = (
        "from voxmeter.measure.memory import RssSampler, ru_maxrss_mb\n"
        "with RssSampler(mode='hwm') as s:\n"
        "    p = s.peak_rss()\n"
        "print(p.lifetime_mb, ru_maxrss_mb())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    big.close()
    lifetime, ru = (float(x) for x in out.stdout.split())
    assert lifetime < 300, (lifetime, ru)  # a bare interpreter and numpy: far below 400 MiB
