"""Recordings pooled into shared batches, and the encoder run in parts of a batch
(spec.workload.pool_recordings / encoder_batch): the bookkeeping with a recording engine, then
the real engines against their own batch-1 and per-recording results."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from voxmeter.engines.base import DecodeOutput, Encoded
from voxmeter.engines.common import encode_batch
from voxmeter.engines.longform import ArrayAudio, transcribe_pooled
from voxmeter.errors import SpecError
from voxmeter.spec import RunSpec

RATE = 16000


@dataclass(frozen=True)
class FakeChunk:
    start: int
    n: int

    @property
    def start_s(self) -> float:
        return self.start / RATE

    @property
    def end_s(self) -> float:
        return (self.start + self.n) / RATE

    def read(self, audio):
        return audio.read(self.start, self.n)


class RecordingEngine:
    """Stages that note what they were given; a piece decodes to its first sample's value."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.features_calls: list[tuple[int, int]] = []  # (items, frames)
        self.decoded: list[int] = []  # batch sizes the decoder saw

    def n_frames(self, n_samples: int) -> int:
        from voxmeter.audio.features import batch_frames

        return batch_frames([n_samples], self.spec.axes.frames, self.spec.axes.fit_step_s)

    def features(self, audios, n_frames):
        self.features_calls.append((len(audios), n_frames))
        x = np.zeros((len(audios), 80, n_frames), np.float32)
        x[:, 0, 0] = [a[0] for a in audios]
        return x

    def encode(self, feats):
        return Encoded(feats[:, 0, :1], feats.shape[-1] // 2, 1500, feats.shape[-1] // 2)

    def join(self, parts):
        from voxmeter.engines.base import joined

        return joined(parts, np.concatenate([p.states for p in parts]))

    def decode(self, enc):
        self.decoded.append(len(enc.states))
        return [DecodeOutput([1], f"w{int(v)}") for v in enc.states[:, 0]]


def _stage(key, rec):
    from contextlib import nullcontext

    rec[f"{key}_ms"] = rec.get(f"{key}_ms", 0.0) + 1.0
    return nullcontext()


def _recording(value: int, n_chunks: int) -> tuple[ArrayAudio, list[FakeChunk]]:
    """A recording whose k-th chunk holds the sample value `value * 10 + k`."""
    x = np.zeros(n_chunks * RATE * 2, np.float32)
    chunks = []
    for k in range(n_chunks):
        x[k * RATE * 2 : k * RATE * 2 + RATE] = value * 10 + k
        chunks.append(FakeChunk(k * RATE * 2, RATE))
    return ArrayAudio(x), chunks


def test_pooled_batches_span_recordings_and_each_batch_is_counted_once():
    spec = RunSpec(batch_size=4).with_(longform="batched", pool_recordings=True)
    eng = RecordingEngine(spec)
    recs = [_recording(v, n) for v, n in ((1, 3), (2, 2), (3, 1), (4, 3))]  # 9 chunks
    by_audio = {id(a): c for a, c in recs}
    opened = []

    def audios():
        for a, _ in recs:
            opened.append(id(a))
            yield a

    outs = transcribe_pooled(eng, audios(), _stage, lambda a: by_audio[id(a)], 4)
    assert eng.decoded == [4, 4, 1]  # batches of 4 across recordings, then the rest
    # every recording's text, in its own chunk order, whatever batch its chunks went into
    assert [o.text for o in outs] == ["w10 w11 w12", "w20 w21", "w30", "w40 w41 w42"]
    batches = [[w for w in o.windows if "batch" in w] for o in outs]
    # a batch's record sits in the recording of its first piece, once
    assert [len(b) for b in batches] == [1, 1, 0, 1]
    assert batches[0][0]["pooled"] == {"0": 3, "1": 1}
    assert batches[1][0]["pooled"] == {"0": 1, "1": 1, "2": 2}
    assert "pooled" not in batches[3][0]  # one recording's piece alone
    assert sum(w["batch"] for b in batches for w in b) == 9
    assert all(sum(1 for w in o.windows if w.get("kind") == "vad") == 1 for o in outs)
    assert opened == [id(a) for a, _ in recs]


def test_one_recording_pooled_is_the_batched_path():
    from voxmeter.engines.longform import transcribe_batched

    spec = RunSpec(batch_size=2).with_(longform="batched")
    audio, chunks = _recording(5, 3)
    a = transcribe_batched(RecordingEngine(spec), audio, _stage, lambda _: chunks, 2)
    (b,) = transcribe_pooled(RecordingEngine(spec), [audio], _stage, lambda _: chunks, 2)
    assert a.text == b.text == "w50 w51 w52"
    assert a.windows == b.windows


@pytest.mark.parametrize("frames", ["fit", 3000])
def test_encoder_parts_run_at_their_own_length_only_when_fitted(frames):
    from voxmeter.audio.features import frames_for

    spec = RunSpec(batch_size=3).with_(frames=frames, encoder_batch=2)
    eng = RecordingEngine(spec)
    lengths = (RATE, RATE, 5 * RATE)
    audios = [np.full(n, i + 1, np.float32) for i, n in enumerate(lengths)]
    n_frames = max(eng.n_frames(len(a)) for a in audios)
    # fitted: the first part (two 1 s items) at 1 s's frames, the 5 s item at its own
    expected = [frames_for(n) for n in lengths] if frames == "fit" else [3000] * 3
    assert frames != "fit" or expected[0] < expected[2]
    rec: dict = {}
    item_frames, enc = encode_batch(eng, audios, n_frames, _stage, rec)
    assert eng.features_calls == [(2, expected[0]), (1, expected[2])]
    assert item_frames == expected
    assert enc.computed_positions == max(expected) // 2 and enc.decoder_positions == 1500
    assert [int(v) for v in enc.states[:, 0]] == [1, 2, 3]  # the batch's order kept
    assert rec["feat_ms"] == rec["enc_ms"] == 1.0  # each stage timed once over its parts


def test_spec_checks_and_labels_the_new_workload_fields():
    with pytest.raises(SpecError, match="^pool_recordings: only batched long-form"):
        RunSpec().with_(pool_recordings=True).validate()
    with pytest.raises(SpecError, match="^encoder_batch: expected an integer >= 0"):
        RunSpec().with_(encoder_batch=-1).validate()
    spec = RunSpec(batch_size=16).with_(longform="batched", pool_recordings=True, encoder_batch=1)
    assert spec.validate().label().endswith("b=16 long=batched pooled enc-b=1")
    # a stored batched spec keeps its hash: the later fields at their defaults leave it alone
    old = RunSpec(batch_size=8).with_(longform="batched")
    assert "pool_recordings" not in old.hash_dict()["workload"]
    assert spec.spec_hash != old.spec_hash


def test_cli_refuses_bad_pooling_settings_in_one_line(tmp_path):
    from test_cli import assert_one_line_error, voxmeter

    store = str(tmp_path / "s.sqlite")
    assert_one_line_error(
        voxmeter("bench", "--encoder-batch", "-1", "--store", store), "encoder_batch:"
    )
    p = voxmeter("bench", "--pool-recordings", "--store", store)
    assert_one_line_error(p, "pool_recordings: only batched long-form")


@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_encoder_parts_reproduce_each_clip_run_alone(engine, cache_dir):
    """A batch of 4 clips with the encoder in parts of one, under frames=fit: every clip runs
    at its own input length, as at batch 1, and gets the same text and FLOPs."""
    from voxmeter.run.harness import run_spec

    base = RunSpec(engine=engine, max_clips=4, repeats=1, warmup=0).with_(frames="fit")
    alone, parts = (
        next(run_spec(s, [0], cache_dir=cache_dir, instruments=False))
        for s in (base, base.with_(batch_size=4, encoder_batch=1))
    )
    assert {c["batch_size"] for c in parts.clips} == {4}
    assert [c["hyp"] for c in parts.clips] == [c["hyp"] for c in alone.clips]
    assert [c["n_frames"] for c in parts.clips] == [c["n_frames"] for c in alone.clips]
    assert len({c["n_frames"] for c in parts.clips}) > 1  # the clips differ in length
    assert parts.metrics["gflops_analytic_enc"] == pytest.approx(
        alone.metrics["gflops_analytic_enc"]
    )
    assert parts.metrics["padding_share"] == pytest.approx(0.0)


@pytest.mark.slow
def test_pooled_recordings_keep_each_recordings_text(cache_dir):
    """ct2 fp32 at full frames on two of the bundled long-form recordings (more than one
    recording is all pooling needs): pooling the recordings' chunks into shared batches
    changes the batches, not any recording's text."""
    from voxmeter.run.harness import run_spec

    base = RunSpec(engine="ct2", data="longform", max_clips=2, batch_size=8, repeats=1, warmup=0)
    base = base.with_(longform="batched")
    alone, pooled = (
        next(run_spec(s, [0], cache_dir=cache_dir, instruments=False))
        for s in (base, base.with_(pool_recordings=True))
    )
    assert [c["hyp"] for c in pooled.clips] == [c["hyp"] for c in alone.clips]
    assert pooled.metrics["n_windows"] < alone.metrics["n_windows"]
    n_chunks = sum(w["n_chunks"] for c in pooled.clips for w in c["windows"] if "n_chunks" in w)
    batches = [w for c in pooled.clips for w in c["windows"] if "batch" in w]
    assert sum(w["batch"] for w in batches) == n_chunks
    assert any("pooled" in w for w in batches)
    assert pooled.metrics["gflops_analytic_total"] == pytest.approx(
        alone.metrics["gflops_analytic_total"], rel=0.02
    )
