"""A batch is timed once and counted once: figures built from per-clip records at batch > 1.

Every clip of a batch carries its batch's stage times (what it waited for). A figure that sums
stage times over clips would count a batch of B B times: the encoder's GFLOP/s and share of
peak, RTFx, throughput, per-token decoder time. Each is checked against a hand computation
from the records: at batch 4 on a real model, and on hand-made records that mix a batch with
encoder parts (workload.encoder_batch) and a pooled long recording whose batched windows
span two recordings.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from voxmeter.assets.dims import dims_for
from voxmeter.engines.base import ASR_STAGES
from voxmeter.measure.flops import analytic_encoder_flops
from voxmeter.measure.peak import PeakResult
from voxmeter.run.harness import run_spec
from voxmeter.run.summary import summarize_repeat
from voxmeter.spec import RunSpec

DIMS = dims_for("tiny.en")


def _batch_times(clips: list[dict], key: str) -> float:
    """Seconds of stage `key` with each batch once (the first clip of each batch)."""
    first = {}
    for c in clips:
        first.setdefault(c["batch"], c[f"{key}_ms"])
    return sum(first.values()) / 1e3


@pytest.mark.slow
def test_batch_of_four_counts_each_batch_time_once(cache_dir):
    spec = RunSpec(batch_size=4, repeats=1, warmup=0, max_clips=5).with_(frames="fit")
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir, instruments=False))
    clips, m = res.clips, res.metrics
    assert sorted({c["batch"] for c in clips}) == [0, 1]  # 4 clips, then 1
    assert [c["batch_size"] for c in clips] == [4, 4, 4, 4, 1]
    enc_flops = sum(c["gflops_analytic_enc"] for c in clips)  # GFLOPs, each clip once
    assert m["enc_gflops_per_s"] == pytest.approx(enc_flops / _batch_times(clips, "enc"))
    audio_s = sum(c["duration_s"] for c in clips)
    proc_s = _batch_times(clips, "e2e")
    assert m["rtfx"] == pytest.approx(audio_s / proc_s)
    assert m["throughput_clips_s"] == pytest.approx(5 / proc_s)
    # decoder per step after the prefill: one loop per batch, run for its longest item
    by_batch = {}
    for c in clips:
        b = by_batch.setdefault(c["batch"], dict(c, n_steps=0))
        b["n_steps"] = max(b["n_steps"], c["n_steps"])
    steps = sum(b["n_steps"] - 1 for b in by_batch.values())
    spent = sum(b["dec_ms"] - b["prefill_ms"] for b in by_batch.values())
    assert m["dec_ms_per_token"] == pytest.approx(spent / steps)


class _Engine:
    """What summarize_repeat reads of an engine, for hand-made records."""

    name, stages, shape, prompt = "hf", ASR_STAGES, None, [1, 2, 3]
    tokenizer = SimpleNamespace(available=False)

    def param_count(self) -> int:
        return 1

    def weight_bytes(self) -> int:
        return 4


def _clip(i: int, batch: int, frames: int, enc_ms: float) -> dict:
    return dict(
        id=f"c{i}", duration_s=frames / 100, ref="a b", hyp="a b", hit_max_length=False,
        n_frames=frames, n_steps=3, decoder_positions=1500, kv_projected=frames // 2,
        batch=batch, batch_size=3, batch_padding_share=0.0, feat_ms=1.0, enc_ms=enc_ms,
        dec_ms=9.0, e2e_ms=10.0 + enc_ms,
    )  # fmt: skip


def _window(frames: list[int], enc_ms: float, **extra) -> dict:
    w = dict(n_frames=max(frames), batch=len(frames), enc_ms=enc_ms, feat_ms=1.0, dec_ms=5.0)
    w.update(n_steps=4, decoder_positions=1500, kv_projected=max(frames) // 2, **extra)
    if len(set(frames)) > 1:
        w["item_frames"] = frames
    return w


def _recording(i: int, windows: list[dict]) -> dict:
    return dict(
        id=f"r{i}", duration_s=60.0, ref="a b", hyp="a b", hit_max_length=False,
        longform="batched", decoding="test", windows=windows,
        enc_ms=sum(w["enc_ms"] for w in windows), e2e_ms=sum(
            w["enc_ms"] + w["feat_ms"] + w["dec_ms"] for w in windows
        ),
    )  # fmt: skip


def test_batches_encoder_parts_and_pooled_windows_count_each_run_once():
    # one batch of 3 whose encoder ran in parts (two at 1000 frames, one at 600), then two
    # pooled recordings: the first begins a window that holds a piece of the second
    recs = [_clip(0, 0, 1000, 40.0), _clip(1, 0, 1000, 40.0), _clip(2, 0, 600, 40.0)]
    recs += [
        _recording(0, [_window([3000, 3000], 70.0), _window([3000, 1200], 50.0, pooled={})]),
        _recording(1, [_window([800], 20.0)]),
    ]
    frames = [1000, 1000, 600, 3000, 3000, 3000, 1200, 800]  # each item once
    enc_gflops = sum(analytic_encoder_flops(DIMS, f).total for f in frames) / 1e9
    enc_s = (40.0 + 70.0 + 50.0 + 20.0) / 1e3  # the batch once, every window once
    window = SimpleNamespace(metrics={}, warnings=[], peaks={}, peak_gflops=None)
    source = SimpleNamespace(dims=DIMS, has_weights=False)
    data = SimpleNamespace(skipped=[])
    m, _ = summarize_repeat(RunSpec(), _Engine(), source, data, recs, window, None)
    assert m["enc_gflops_per_s"] == pytest.approx(enc_gflops / enc_s)
    proc_s = (50.0 + (71 + 5 + 51 + 5) + (21 + 5)) / 1e3
    assert m["rtfx"] == pytest.approx((10 + 10 + 6 + 60 + 60) / proc_s)
    # and the share of peak divides that same rate by the peak, counted once
    fp32 = PeakResult(100.0, 1024, "float32", "cpu", 2, "cpu", "t", 1.0, "now")
    window.peaks, window.peak_gflops = {"fp32": fp32}, 100.0
    m, _ = summarize_repeat(RunSpec(), _Engine(), source, data, recs, window, None)
    assert m["enc_peak_share"] == pytest.approx(100 * enc_gflops / enc_s / 100.0)
