"""A stream spec measured end to end (stream/run.py) on the real tiny.en: its memory figures
cover the model's load, and its reference word times come from one named aligner, so a
structurally compressed model without CTranslate2 weights streams too."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from voxmeter.spec import AxisSettings, RunSpec
from voxmeter.stream.align import REFERENCE_ALIGNER

MIB = 2**20
SPIKE_MB = 400
ONE_CLIP = dict(max_clips=1, repeats=1, warmup=0)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(key))
    return int(line.split()[1]) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_process_peak_includes_the_model_load(cache_dir, monkeypatch, short_clip):
    """A spike while the model loads (SPIKE_MB above anything this process reached before)
    is in process_peak_rss_mb, and not in the replay's own peak_rss_mb."""
    import voxmeter.engines
    from voxmeter.stream.run import run_stream_spec

    real = voxmeter.engines.load_engine
    before_mb = max(_status_mib("VmHWM:"), _status_mib("VmRSS:"))
    seen = {}

    def loud_load(*a, **k):
        engine = real(*a, **k)
        now_mb = _status_mib("VmRSS:")
        extra = max(before_mb, now_mb) + SPIKE_MB - now_mb
        buf = np.ones(int(extra * MIB) // 8)  # touched: resident
        seen["spike_mb"] = _status_mib("VmRSS:")
        del buf
        return engine

    monkeypatch.setattr(voxmeter.engines, "load_engine", loud_load)
    spec = RunSpec(engine="ct2", data=short_clip, **ONE_CLIP).with_(
        precision="int8", frames="fit", stream_chunk_ms=1000
    )
    (res,) = run_stream_spec(spec, [0], cache_dir=cache_dir, mode="isolated")
    m = res.metrics
    assert m["process_peak_rss_mb"] >= seen["spike_mb"] - 1  # VmHWM/VmRSS are in KiB
    assert m["peak_rss_mb"] < seen["spike_mb"] - SPIKE_MB / 2  # the replay's own, no load
    assert m["process_peak_rss_mb"] >= m["peak_rss_mb"]


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, cache_dir):
    """tiny.en with one attention head in six and a tenth of its FFN neurons pruned (scored
    on one calibration clip), saved as a transformers-only directory."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.compress import build
    from voxmeter.data.datasets import load_dataset
    from voxmeter.run.model import prepare_weights

    hf = prepare_weights(RunSpec(), resolve_model("tiny.en", cache_dir), cache_dir)[0]
    calib = load_dataset("calib")
    calib.clips = calib.clips[:1]
    out = tmp_path_factory.mktemp("pruned") / "tiny-pruned"
    return build(RunSpec().with_(prune_heads=0.17, prune_ffn=0.1).compression, hf, out, calib)


@pytest.mark.slow
def test_a_pruned_model_streams_on_the_reference_aligners_clock(pruned_dir, cache_dir):
    """A model without CTranslate2 weights streams (no ModelError from its own alignment),
    its result names the reference aligner, and its reference word times are the tiny.en
    aligner's (the same clock as any other model's stream of the same data). Words the
    pruned model commits are not checked: its hypotheses are not what this tests."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.run.harness import prepare_data
    from voxmeter.stream.align import Span, reference_aligner
    from voxmeter.stream.run import reference_words, run_stream_spec

    assert resolve_model(str(pruned_dir), cache_dir).ct2_dir is None
    spec = RunSpec(model=str(pruned_dir), engine="hf", **ONE_CLIP).with_(
        frames="fit", stream_chunk_ms=1000
    )
    (res,) = run_stream_spec(spec, [0], cache_dir=cache_dir)
    m = res.metrics
    assert REFERENCE_ALIGNER in m["reference_aligner"] and "tiny.en" in m["reference_aligner"]
    assert m["n_steps"] > 0 and m["words_matched_share"] is not None
    clip = prepare_data(spec).clips[0]
    words, _ = reference_words(reference_aligner(cache_dir), [Span(0.0, clip.audio, clip.text)])
    (utt,) = [u for u in res.clips if u.get("kind") == "utterance"]
    assert utt["ref_words"] == len(words) > 0


@pytest.mark.slow
def test_a_stream_spec_runs_isolated_through_streams_child(cache_dir, short_clip):
    """The sweep's runner sends a stream spec to stream/isolate.py's child: one Result, mode
    isolated, with the child's own process peak."""
    from voxmeter.stream.isolate import run_any_isolated

    spec = RunSpec(
        engine="ct2",
        data=short_clip,
        axes=AxisSettings(precision="int8", frames="fit"),
        **ONE_CLIP,
    ).with_(stream_chunk_ms=1000)
    (res,) = run_any_isolated(spec, [0], cache_dir=cache_dir)
    assert res.mode == "isolated" and res.spec_hash == spec.spec_hash
    assert res.metrics["process_peak_rss_mb"] >= res.metrics["peak_rss_mb"] > 0
    assert "tiny.en" in res.metrics["reference_aligner"]


PEAKS_CHILD = """
import sys
import numpy as np
from voxmeter.stream.run import ProcessPeaks

MIB, SPIKE_MB = 2**20, int(sys.argv[1])

def status_mib(key):
    with open("/proc/self/status") as f:
        return int(next(x for x in f if x.startswith(key)).split()[1]) / 1024

peaks = ProcessPeaks()
if peaks.hwm is None:
    print("skip")
    sys.exit(0)
buf = np.ones(SPIKE_MB * MIB // 8)  # touched: resident
spike_mb = status_mib("VmRSS:")
del buf
peaks.begin_replay()
replay_mb, process_mb = peaks.end_replay()
peaks.begin_replay()  # a second repeat keeps the first's figures in the process peak
again = peaks.end_replay()[1]
peaks.close()
print(spike_mb, replay_mb, process_mb, again)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's VmHWM")
def test_process_peaks_keep_what_came_before_the_replay():
    """ProcessPeaks: a spike before the replay (the model's load) stays in the process's
    peak, and the replay's own peak starts at the replay. In a fresh interpreter: the suite's
    own process, after hundreds of tests, need not hand a freed buffer back at once."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", PEAKS_CHILD, str(SPIKE_MB)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if out == ["skip"]:
        pytest.skip("/proc/self/clear_refs not usable here")
    spike_mb, replay_mb, process_mb, again = map(float, out)
    assert process_mb >= spike_mb - 1  # KiB rounding
    assert replay_mb < spike_mb - SPIKE_MB / 2
    assert again == process_mb
