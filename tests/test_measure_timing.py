"""Stage timing windows: what they record, and what they refuse."""

from __future__ import annotations

import time

import pytest
import torch

from voxmeter.measure.timing import StageTimer, percentiles
from voxmeter.measure.windows import MeasureError


def test_window_lies_within_the_bracketing_clock_readings():
    timer = StageTimer()
    for _ in range(3):
        t0 = time.perf_counter_ns()
        with timer.window("enc"):
            sum(range(10_000))
        outer = time.perf_counter_ns() - t0
        assert 0 < timer.durations_ns["enc"][-1] <= outer
    assert len(timer.ms("enc")) == 3
    assert timer.total_s("enc") == pytest.approx(sum(timer.durations_ns["enc"]) / 1e9)


def test_begin_end_returns_the_duration_and_windows_nest():
    timer = StageTimer()
    timer.begin_window("clip")
    timer.begin_window("dec")
    time.sleep(0.002)  # sleep guarantees a lower bound, so this is not a speed target
    dec = timer.end_window("dec")
    clip = timer.end_window("clip")
    assert dec.ns >= 2_000_000 and clip.ns >= dec.ns
    assert dec.ms == dec.ns / 1e6 and dec.seconds == dec.ns / 1e9


def test_failed_stage_records_nothing_and_name_is_reusable():
    timer = StageTimer()
    with pytest.raises(ValueError), timer.window("dec"):
        raise ValueError("engine failed")
    assert "dec" not in timer.durations_ns
    with timer.window("dec"):
        pass
    assert len(timer.durations_ns["dec"]) == 1


def test_misuse_raises():
    timer = StageTimer()
    with pytest.raises(MeasureError, match="never begun"):
        timer.end_window("enc")
    timer.begin_window("enc")
    with pytest.raises(MeasureError, match="already open"):
        timer.begin_window("enc")
    with pytest.raises(MeasureError, match="no window named"):
        timer.ms("feat")


def test_percentiles_helper():
    timer = StageTimer(durations_ns={"e2e": [i * 1_000_000 for i in range(1, 11)]})
    p = timer.percentiles_ms("e2e")
    assert p[50] == 5.5 and p[90] == pytest.approx(9.1) and p[99] == pytest.approx(9.91)
    assert percentiles([3.0], (50,)) == {50: 3.0}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_window_waits_for_the_kernels():
    timer = StageTimer(device="cuda")
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    with timer.window("mm"):
        for _ in range(20):
            a = a @ a
            a = a / a.norm()
    # without the synchronise the window would close before the queued kernels ran
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a = a @ a
        a = a / a.norm()
    end.record()
    torch.cuda.synchronize()
    assert timer.ms("mm")[0] >= 0.5 * start.elapsed_time(end)
