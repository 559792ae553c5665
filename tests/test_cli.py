"""The command line as a user meets it: one-line errors with exit 2, results in the store."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf


def voxmeter(*args, cwd=None, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "voxmeter.cli", *args],
        capture_output=True,
        check=False,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_model(tmp_path):
    p = voxmeter("bench", "--model", "huge", "--store", str(tmp_path / "s.sqlite"))
    assert_one_line_error(p, "huge")


def test_bad_axis_value(tmp_path):
    p = voxmeter("bench", "--frames", "3001", "--store", str(tmp_path / "s.sqlite"))
    assert_one_line_error(p, "frames")


def test_missing_manifest(tmp_path):
    p = voxmeter("bench", "--data", str(tmp_path / "nope.jsonl"), "--store", str(tmp_path / "s"))
    assert_one_line_error(p, "nope.jsonl")


def test_corrupt_model_dir(tmp_path, tiny_source):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "model.bin").write_bytes(b"\x06\x00\x00\x00" + b"\x05\x00abc")
    p = voxmeter("bench", "--model", str(d), "--store", str(tmp_path / "s.sqlite"))
    assert_one_line_error(p, "model.bin")


def _manifest(tmp_path, default_clips, bad: bool):
    """Two short real clips, 2.8 and 3.0 s (one resampled to 44.1 kHz stereo) plus,
    optionally, broken files."""
    import soxr

    lines = []
    picked = [(c, a) for c, a in default_clips if c.id in ("goforward", "librivox-0880")]
    for i, (clip, audio) in enumerate(picked):
        path = tmp_path / f"c{i}.wav"
        if i == 1:
            x = soxr.resample(audio.samples, 16000, 44100)
            sf.write(path, np.stack([x, x], axis=1), 44100)
        else:
            sf.write(path, audio.samples, 16000)
        lines.append({"audio": path.name, "text": clip.text, "id": f"c{i}"})
    if bad:
        (tmp_path / "empty.wav").write_bytes(b"")
        (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
        nan = tmp_path / "nan.wav"
        sf.write(nan, np.full(8000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
        for name in ("empty.wav", "junk.wav", "nan.wav"):
            lines.append({"audio": name, "text": "x", "id": name})
    m = tmp_path / "set.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return m


@pytest.mark.slow
def test_bench_json_store_and_skip(tmp_path, default_clips, cache_dir, cli, monkeypatch):
    m = _manifest(tmp_path, default_clips, bad=True)
    store = tmp_path / "r.sqlite"
    env = {"VOXMETER_CACHE": str(cache_dir)}
    args = ["bench", "--data", str(m), "--repeats", "2", "--warmup", "0", "--store", str(store)]
    # both runs below print JSON; the clips' own length, not 30 s, is input enough for what
    # is checked here (the hf engine's timed and FLOP-counted passes cost a third as much)
    args += ["--json", "--frames", "fit"]
    p = voxmeter(*args, env_extra=env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    reps = doc["repeats"]
    assert len(reps) == 2
    met = reps[0]["metrics"]
    assert met["n_clips"] == 2 and met["n_skipped"] == 3
    assert met["wer"] is not None and met["wer"] < 50
    assert met["gflops_counted_enc"] == pytest.approx(met["gflops_analytic_enc"], rel=0.01)
    assert met["rtfx"] > 0 and met["peak_rss_mb"] > 100 and met["weight_bytes"] > 1e8
    assert met["energy_method"]
    # the resampled clip says so
    assert any("resampled" in " ".join(c.get("notes", [])) for c in reps[0]["clips"])
    # a second run skips the finished spec: it measures nothing, so it runs in this process
    monkeypatch.setenv("VOXMETER_CACHE", str(cache_dir))
    p2 = cli(*args)
    assert p2.exit_code == 0, p2.output
    assert "already" in json.loads(p2.stdout)["note"]
    assert len(json.loads(p2.stdout)["repeats"]) == 2


# -- bracketed text is text, not rich markup -------------------------------------------------
def _bench_output(monkeypatch, spec, results, note: str = "") -> str:
    """What `bench` prints for `result`, rendered wide and without colour."""
    import io

    from rich.console import Console

    from voxmeter import display

    con = Console(width=400, file=io.StringIO(), color_system=None)
    monkeypatch.setattr(display, "console", con)
    display.print_bench(spec, results, note)
    return con.file.getvalue()


def test_bench_prints_bracketed_hash_ids_and_reasons_literally(monkeypatch):
    """rich read "[db01…]" (a spec hash that starts with a letter) as a markup tag and
    dropped it from the title; clip ids, hypotheses, reasons and notes hold brackets too."""
    from test_store import make_result

    from voxmeter.spec import RunSpec

    spec = next(s for s in (RunSpec(seed=i) for i in range(100)) if s.spec_hash[0].isalpha())
    r = make_result(spec, 0, wer=5.0, cer=2.0, e2e_ms_p50=10.0, n_clips=1, audio_s=3.0)
    r.clips = [{"id": "[b]clip[/b]", "e2e_ms": 1.0, "flags": ["loop"], "hyp": "[red] x"}]
    r.skipped = [{"id": "[gone]", "reason": "[take 2]/y.wav: no such audio file"}]
    r.warnings = ["[warn] w"]
    out = _bench_output(monkeypatch, spec, [r], note="[note] n")
    assert f"[{spec.spec_hash}]" in out.splitlines()[0]
    for text in ("[b]clip[/b]", "'[red] x'", "[gone]", "[take 2]/y.wav", "[warn] w", "[note] n"):
        assert text in out, text
    assert "bootstrap over clips [n/a, n/a]" in out  # an interval cell, not a tag


def _commands(cmd, path=()):
    yield list(path), cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def test_help_texts_keep_their_brackets():
    """typer renders help as rich markup, which ate "[constraints]" from `report --help`:
    every bracketed phrase of every command's and option's help must be shown."""
    import re

    import typer
    from typer.testing import CliRunner

    from voxmeter.cli import app

    runner = CliRunner()
    checked = 0
    for path, cmd in _commands(typer.main.get_command(app)):
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        phrases = {m for t in texts for m in re.findall(r"\[[^\]\n]*\]", t)}
        if not phrases:
            continue
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
        flat = re.sub(r"[\s│╭╮╰╯─]+", "", out)
        for phrase in phrases:
            assert re.sub(r"\s+", "", phrase) in flat, (path, phrase)
            checked += 1
    assert checked >= 4  # sweep's [axes]; recommend's, report's and fit's [constraints]
    out = runner.invoke(app, ["report", "--help"], env={"COLUMNS": "200"}).output
    assert "its [constraints] (options override)" in out


def _clips(e2e: list[float], frames: int = 3000, tokens: tuple[int, ...] = (20,)) -> list[dict]:
    return [
        {"id": f"c{i}", "e2e_ms": v, "n_frames": frames, "n_tokens": tokens[i % len(tokens)]}
        for i, v in enumerate(e2e)
    ]


def test_bench_latency_rows_print_each_percentiles_interval(monkeypatch):
    """The rows named a CI method ("bootstrap over clip runs") but printed no interval."""
    from test_store import make_result

    from voxmeter.display import bench_row
    from voxmeter.spec import RunSpec

    spec = RunSpec(repeats=2)
    rs = [make_result(spec, rep, wer=5.0, e2e_ms_p50=1.0) for rep in range(2)]
    rs[0].clips = _clips([100.0, 120.0, 180.0, 90.0])
    rs[1].clips = _clips([110.0, 125.0, 170.0, 95.0])
    row = bench_row(rs)
    out = " ".join(_bench_output(monkeypatch, spec, rs).split())
    aggs = [row.metrics[f"e2e_ms_p{q}"] for q in (50, 90, 99)]
    assert all(a.ci_lo is not None and a.ci_lo <= a.mean <= a.ci_hi for a in aggs)
    want = f"95% CI ({aggs[0].ci_method}): " + ", ".join(
        f"{n} [{a.ci_lo:.1f}, {a.ci_hi:.1f}]" for n, a in zip(("p50", "p90", "p99"), aggs)
    )
    assert want in out, out


@pytest.mark.parametrize(
    ("stride", "frames", "analytic", "paper", "enc_tokens"),
    [(1, 3000, 41.7, 128.8, 1500), (2, 1000, 10.0, 31.0, 750)],
)
def test_bench_says_why_the_paper_figure_differs(
    monkeypatch, stride, frames, analytic, paper, enc_tokens
):
    """`GFLOPs total 41.70 | paper 128.80` did not say why the paper's is three times
    larger: the ratio and the shapes behind each column, taken from the run."""
    from test_store import make_result

    from voxmeter.spec import RunSpec

    spec = RunSpec(repeats=1).with_(stride=stride)
    r = make_result(spec, 0, gflops_analytic_total=analytic, gflops_paper_total=paper)
    r.clips = _clips([10.0, 11.0], frames=frames, tokens=(10, 14))
    out = " ".join(_bench_output(monkeypatch, spec, [r]).split())
    row = out.split("│ paper / analytic")[1].split("│ encoder achieved")[0]
    assert f"{paper / analytic:.2f}x" in row
    assert f"3000-frame input ({enc_tokens} encoder tokens at k={stride}) and 20 output" in row
    assert f"{frames:,} input frames and 12.0 output tokens per clip" in row


def test_bench_options_make_the_spec_they_name(cli, monkeypatch, tmp_path):
    """bench's body is split (spec, input checks, measurement, printing): every option still
    lands in its RunSpec field, and --memory-budget still takes the budget path."""
    from voxmeter.cli import measure
    from voxmeter.spec import AxisSettings, CompressionSettings, RunSpec, WorkloadSettings

    seen = []

    def fake_measure(spec, store, cache_dir, force, isolated, memory_budget, show):
        seen.append((spec, store, cache_dir, force, isolated, memory_budget, show))
        return spec, [], "note"

    monkeypatch.setattr(measure, "_measure", fake_measure)
    monkeypatch.setattr(measure, "_check_inputs", lambda spec, cache_dir: None)
    args = "--model base --engine hf --data noisy --repeats 2 --threads 3 --precision int8 "
    args += "--frames fit --pad none --stride 2 --pool avg --max-clips 4 --batch-size 2 "
    args += "--frontend features --longform batched --condition-on-previous-text "
    args += "--vad-threshold 0.4 --vad-min-silence-ms 200 --max-segment-s 20 "
    args += "--pool-recordings --encoder-batch 1 --seed 7 --warmup 0 --force --isolated "
    args += "--memory-budget 900 --quiet"
    r = cli("bench", *args.split(), "--store", tmp_path / "s.sqlite", "--cache-dir", tmp_path)
    assert r.exit_code == 0, r.output
    want = RunSpec(
        model="base",
        engine="hf",
        data="noisy",
        device="cpu",
        threads=3,
        seed=7,
        max_clips=4,
        batch_size=2,
        repeats=2,
        warmup=0,
        axes=AxisSettings(frames="fit", pad="none", stride=2, pool="avg", precision="int8"),
        workload=WorkloadSettings(
            frontend="features",
            longform="batched",
            condition_on_previous_text=True,
            vad_threshold=0.4,
            vad_min_silence_ms=200,
            max_segment_s=20.0,
            pool_recordings=True,
            encoder_batch=1,
        ),
        compression=CompressionSettings(),
    )
    ((spec, store, cache_dir, force, isolated, budget, show),) = seen
    assert spec == want and spec.spec_hash == want.spec_hash
    assert (store, cache_dir) == (tmp_path / "s.sqlite", tmp_path)
    assert (force, isolated, budget, show) == (True, True, 900.0, False)
