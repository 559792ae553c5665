"""WER on clips without a reference: refused in one line before any model work (bench, stream,
sweep); a --cost-only run on such clips measures cost and reports no WER."""

import json
import shutil

import pytest
from test_cli import assert_one_line_error, voxmeter

from voxmeter.data.datasets import load_dataset
from voxmeter.data.manifest import Clip, Dataset, load_manifest, write_manifest
from voxmeter.errors import DataError
from voxmeter.run.references import check_references, check_specs, unreferenced
from voxmeter.spec import RunSpec


def no_text_manifest(tmp_path, referenced: int = 0, n: int = 3):
    """`n` short bundled clips copied beside a manifest; the first `referenced` keep their
    text, the rest are written as real-train writes them ("" and has_text false)."""
    clips = sorted(load_dataset("default").clips, key=lambda c: c.duration_s or 99)[:n]
    lines = []
    for i, c in enumerate(clips):
        shutil.copy(c.audio, tmp_path / c.audio.name)
        rec = {"id": c.id, "audio": c.audio.name, "text": c.text, "duration_s": c.duration_s}
        if i >= referenced:
            rec.update(text="", has_text=False)
        lines.append(json.dumps(rec))
    path = tmp_path / "notext.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_manifest_reads_has_text_and_null_text(tmp_path):
    path = no_text_manifest(tmp_path, referenced=1)
    with path.open("a") as f:
        f.write(json.dumps({"id": "z", "audio": "z.flac", "text": None}) + "\n")
    ds = load_manifest(path)
    assert [c.has_text for c in ds.clips] == [True, False, False, False]
    assert ds.clips[-1].text == "" and "has_text" not in ds.clips[1].extra
    assert unreferenced(ds) == [c.id for c in ds.clips[1:]]


@pytest.mark.parametrize(
    "rec, needle",
    [
        ({"audio": "a.flac", "text": "", "has_text": "no"}, "'has_text' must be true or false"),
        ({"audio": "a.flac", "text": None, "has_text": True}, "'text' is null"),
    ],
)
def test_manifest_rejects_bad_has_text(tmp_path, rec, needle):
    (tmp_path / "m.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=needle):
        load_manifest(tmp_path / "m.jsonl")


def test_has_text_round_trips(tmp_path):
    clips = [Clip("a", tmp_path / "a.flac", ""), Clip("b", tmp_path / "b.flac", "B.")]
    clips[0].has_text = False
    for c in clips:
        shutil.copy(load_dataset("default").clips[0].audio, c.audio)
    write_manifest(Dataset("d", clips, tmp_path), tmp_path / "d.jsonl")
    assert load_manifest(tmp_path / "d.jsonl").clips == clips


def test_rule_refuses_wer_counts_clips_and_lets_cost_only_through(tmp_path):
    ds = load_manifest(no_text_manifest(tmp_path))
    spec = RunSpec(data="mine.jsonl")
    with pytest.raises(DataError) as e:
        check_references(spec, ds)
    msg = str(e.value)
    assert "'mine.jsonl'" in msg and "none of its 3 clips" in msg and "--cost-only" in msg
    assert "\n" not in msg
    assert check_references(RunSpec(data="mine.jsonl", cost_only=True), ds) == 3
    assert check_references(spec, load_dataset("default")) == 0


def test_partly_referenced_set_is_refused_with_its_count(tmp_path):
    ds = load_manifest(no_text_manifest(tmp_path, referenced=2))
    with pytest.raises(DataError, match=r"1 of its 3 clips have no reference text \(first: "):
        check_references(RunSpec(data="x"), ds)


def test_sweep_check_stops_on_the_first_unscorable_spec(tmp_path):
    path = str(no_text_manifest(tmp_path))
    good = RunSpec(data="default")
    check_specs([good, RunSpec(data=path, cost_only=True), RunSpec(data="nope.jsonl")])
    with pytest.raises(DataError, match="none of its 3 clips"):
        check_specs([good, RunSpec(data=path)])


def test_bench_refuses_wer_before_any_model_work(tmp_path):
    store = tmp_path / "s.sqlite"
    p = voxmeter("bench", "--data", no_text_manifest(tmp_path), "--store", store)
    assert_one_line_error(p, "notext.jsonl", "none of its 3 clips", "--cost-only")
    assert not store.exists()  # nothing was opened, digested or measured


def test_stream_and_sweep_refuse_wer_too(tmp_path):
    path = no_text_manifest(tmp_path, referenced=1)
    store = tmp_path / "s.sqlite"
    p = voxmeter("stream", "--data", path, "--store", store)
    assert_one_line_error(p, "2 of its 3 clips have no reference")
    sweep = tmp_path / "sw.toml"
    sweep.write_text(f'[sweep]\nmodels = ["tiny.en"]\ndata = "{path}"\nrepeats = 1\n')
    p = voxmeter("sweep", sweep, "--store", store)
    assert_one_line_error(p, "2 of its 3 clips have no reference")
    assert not store.exists()


def test_cost_only_run_measures_cost_without_wer(tmp_path, cache_dir):
    from voxmeter.run.harness import run_spec

    spec = RunSpec(data=str(no_text_manifest(tmp_path, n=2)), cost_only=True, repeats=1)
    (res,) = list(run_spec(spec.with_(frames="fit"), [0], cache_dir=cache_dir, instruments=False))
    assert res.metrics["wer"] is None and res.metrics["cer"] is None
    assert "2 of 2 clips" in res.metrics["accuracy_note"]
    assert len(res.clips) == 2 and all(c["hyp"].strip() for c in res.clips)  # it did decode
    assert res.metrics["rtfx"] > 0
