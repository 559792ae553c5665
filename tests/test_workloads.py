"""Workloads end to end: a batch with a bad clip and clips of very different lengths, and
an hour-long recording streamed through the VAD-batched long-form path in bounded memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from test_frontend_parity import ONE_GREEDY_PASS
from test_stream_audio import write_in_blocks

from voxmeter.audio.features import frames_for
from voxmeter.audio.io import load_audio
from voxmeter.data.datasets import SAMPLE_DIR, load_dataset
from voxmeter.metrics import normalize
from voxmeter.run.harness import prepare_data, run_spec
from voxmeter.spec import RunSpec


def _refs() -> dict[str, str]:
    return {c.id: c.text for c in load_dataset("default").clips}


def test_a_bad_clip_is_skipped_and_the_batch_runs_with_the_rest(tmp_path, cache_dir):
    refs = _refs()
    ids = ["goforward", "librivox-0870", "cards-005"]  # about 2, 10 and 4 s: unequal
    lines = [{"audio": str(SAMPLE_DIR / f"{i}.flac"), "text": refs[i], "id": i} for i in ids]
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not audio")
    lines.insert(1, {"audio": "broken.wav", "text": "x", "id": "broken"})
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    spec = RunSpec(data=str(m), batch_size=4, repeats=1, warmup=0).with_(frames="fit")
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir, instruments=False))
    assert res.metrics["n_clips"] == 3 and res.metrics["n_skipped"] == 1
    assert [s["id"] for s in res.skipped] == ["broken"]
    assert res.metrics["n_batches"] == 1 and {c["batch_size"] for c in res.clips} == {3}
    # the batch ran at its longest clip's fitted input; what that added is the padding
    own = [frames_for(len(load_audio(SAMPLE_DIR / f"{i}.flac").samples)) for i in ids]
    share = 1 - sum(own) / (max(own) * len(own))
    assert res.metrics["padding_share"] == pytest.approx(100 * share)
    assert {c["n_frames"] for c in res.clips} == {max(own)}
    assert res.metrics["wer"] < 20  # three real clips, transcribed
    assert "WER is partial" in " ".join(res.warnings) or res.metrics.get("wer_scope")


@pytest.mark.slow
def test_an_hour_long_recording_streams_through_batched_long_form(tmp_path, cache_dir):
    """An hour of silence with three real clips, decoded with VAD chunks: the clips' words
    come back, and the process's peak RSS grows far less than holding the recording would
    take. (An hour, not two: Silero's pass over the silence is most of the cost, 17 s of 26 s
    at 2 h, and an hour decoded is already 220 MiB against the streamed path's few.)"""
    from voxmeter.run.isolate import run_spec_isolated

    refs = _refs()
    names = ("librivox-0870", "cards-005", "goforward")
    rate = 16000
    peaks = {}
    long_h = 1.0
    for hours in (2 / 60, long_h):  # two minutes, then an hour, same clips
        total = round(hours * 3600 * rate)
        clips = {}
        for k, name in enumerate(names):
            x = load_audio(SAMPLE_DIR / f"{name}.flac").samples
            x = np.round(np.clip(x, -1, 1 - 2**-15) * 32768).astype(np.int16)
            at = (rate * 5, total // 2, total - len(x) - rate * 5)[k]
            clips[name] = (at, x)
        path = tmp_path / f"rec-{hours:.3f}h.flac"
        write_in_blocks(path, rate, 1, total, clips)
        assert sf.info(str(path)).duration == pytest.approx(hours * 3600)
        m = tmp_path / f"m-{hours:.3f}.jsonl"
        ref = " ".join(refs[n] for n in names)
        m.write_text(json.dumps({"audio": path.name, "text": ref, "id": "rec"}) + "\n")
        spec = RunSpec(engine="ct2", data=str(m), batch_size=8, repeats=1, warmup=0)
        spec = spec.with_(precision="int8", longform="batched")
        assert prepare_data(spec).clips[0].audio is None  # streamed, not loaded
        (res,) = list(run_spec_isolated(spec, [0], cache_dir=cache_dir))
        (rec,) = res.clips
        hyp = set(normalize(rec["hyp"]).split())
        for n in names:
            words = set(normalize(refs[n]).split())
            assert len(words & hyp) >= 0.6 * len(words), (n, rec["hyp"])
        peaks[hours] = res.metrics["process_peak_rss_mb"]
    decoded_mb = long_h * 3600 * rate * 4 / 2**20  # float32 at 16 kHz: 220 MiB
    assert peaks[long_h] - peaks[2 / 60] < decoded_mb / 4, peaks


@pytest.mark.slow
def test_batched_long_form_gives_faster_whispers_batched_text(tmp_path, cache_dir):
    """VAD-batched long-form, ct2 fp32 with the features front end, against faster-whisper's
    own BatchedInferencePipeline (batch 8, its Silero VAD and its chunk collection) reduced to
    one greedy pass: the same text on bundled long-form recordings 03-05, or the assertion
    names the recording with both texts. Recordings 01-02 are test_frontend_parity.py's
    sequential long-form parity test's: each recording plays the same 11 real clips in its
    own order, and the two tests together hold all five to faster-whisper's long-form text,
    each recording through one of the two paths."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from voxmeter.assets.bundled import resolve_model
    from voxmeter.data.datasets import bundled_manifest

    lines = [json.loads(x) for x in bundled_manifest("longform").read_text().splitlines()]
    assert [x["id"] for x in lines] == [f"longform-0{i}" for i in range(1, 6)]
    m = tmp_path / "longform-03-05.jsonl"
    m.write_text(
        "".join(json.dumps({**x, "audio": str(SAMPLE_DIR / x["audio"])}) + "\n" for x in lines[2:])
    )
    spec = RunSpec(engine="ct2", data=str(m), repeats=1, warmup=0, batch_size=8)
    spec = spec.with_(frontend="features", longform="batched")
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir, instruments=False))
    ours = {c["id"]: c["hyp"] for c in res.clips}
    assert sorted(ours) == ["longform-03", "longform-04", "longform-05"]
    fw = WhisperModel(
        str(resolve_model("tiny.en", cache_dir).ct2_dir), compute_type="float32", cpu_threads=2
    )
    pipe = BatchedInferencePipeline(fw)
    differ = []
    for clip in prepare_data(spec).clips:
        with clip.stream() as s:
            audio = s.read(0, s.n_samples)
        # the parity tests' one greedy pass, with the VAD the batched pipeline is built on
        opts = {**ONE_GREEDY_PASS, "vad_filter": True}
        segs, _ = pipe.transcribe(audio, batch_size=8, **opts)
        theirs = " ".join(s.text.strip() for s in segs)
        if theirs != ours[clip.id]:
            differ.append(f"{clip.id}:\n  faster-whisper: {theirs}\n  voxmeter: {ours[clip.id]}")
    assert not differ, "batched long-form texts differ:\n" + "\n".join(differ)
