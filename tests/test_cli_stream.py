"""The stream and serve command line: one default per spec field, and what the stream and load
views print (the legend, one line per commit when piped, word counts, one name per figure)."""

from __future__ import annotations

import io
import re
from dataclasses import fields
from types import SimpleNamespace

import pytest
import typer

from voxmeter.cli.common import parse_compress, parse_frames
from voxmeter.metrics import corpus_wer
from voxmeter.spec import (
    AxisSettings,
    RunSpec,
    StreamSettings,
    WorkloadSettings,
)
from voxmeter.stream.policy import Word

# what the live commands run unless told otherwise (cli/common.LIVE); every other default is
# the spec's own
LIVE_CHANGES = {"engine": "ct2", "precision": "int8", "frames": "fit", "stream_chunk_ms": 500}


def _command(name: str):
    from voxmeter.cli import app

    return typer.main.get_command(app).commands[name]


def _spec_default(name: str, spec: RunSpec, sections: tuple) -> tuple[bool, object]:
    """(whether option `name` is a spec field, that field's value in `spec`, as the option
    spells it)."""
    if name == "policy":
        return True, spec.stream.policy
    if name == "compress":
        return True, spec.compression
    top = {f.name for f in fields(RunSpec)} - {"axes", "compression", "workload", "stream"}
    if name in top:
        return True, getattr(spec, name)
    for section in sections:
        part = getattr(spec, section)
        if name in {f.name for f in fields(part)}:
            return True, getattr(part, name)
    return False, None


def _option_value(name: str, default: object) -> object:
    """An option's default as the command turns it into a spec value."""
    if name == "frames":
        return parse_frames(default)
    if name == "compress":
        return parse_compress(default)
    return default


@pytest.mark.parametrize(
    ("command", "spec", "sections"),
    [
        ("bench", RunSpec(), ("axes", "workload")),
        ("stream", RunSpec().with_(**LIVE_CHANGES), ("axes", "stream")),
        ("serve", RunSpec().with_(**LIVE_CHANGES), ("axes", "stream")),
    ],
)
def test_every_option_that_sets_a_spec_field_defaults_to_the_specs_value(command, spec, sections):
    """A command run with its defaults and a sweep cell with the spec's defaults measure one
    configuration (the stream commands: the live preset's four fields aside)."""
    checked = set()
    for param in _command(command).params:
        if param.param_type_name != "option":
            continue
        is_field, expected = _spec_default(param.name, spec, sections)
        if not is_field:
            continue
        assert _option_value(param.name, param.default) == expected, (command, param.name)
        checked.add(param.name)
    shared = {"model", "engine", "precision", "frames", "threads"}
    live = {"chunk_ms", "policy", "vad", "prompt", "final_pass", "step_pass", "relax_s"}
    assert shared | (live if command != "bench" else {"repeats", "frontend"}) <= checked


def test_the_live_preset_changes_only_its_four_fields():
    from voxmeter.cli.common import LIVE

    assert RunSpec().with_(**LIVE_CHANGES) == LIVE
    assert LIVE.validate() is LIVE


def test_the_prompt_default_keeps_every_stored_hash():
    """StreamSettings.prompt defaults to off (the README's stream figures ran unprompted). A
    spec that is not a stream keeps its hash whatever prompt it was stored with; a stream's
    hash holds the prompt it ran with, so a stored prompted stream stays prompted."""
    assert StreamSettings().prompt is False
    stored = RunSpec().to_dict()
    stored["stream"]["prompt"] = True  # a non-stream spec written under the old default
    back = RunSpec.from_dict(stored)
    assert back == RunSpec() and back.spec_hash == RunSpec().spec_hash
    assert RunSpec(stream=StreamSettings(prompt=True)).spec_hash == RunSpec().spec_hash
    prompted = RunSpec(stream=StreamSettings(chunk_ms=500, prompt=True))
    plain = RunSpec(stream=StreamSettings(chunk_ms=500))
    assert prompted.hash_dict()["stream"]["prompt"] is True
    assert prompted.spec_hash != plain.spec_hash
    assert RunSpec.from_dict(prompted.to_dict()) == prompted
    assert "+prompt" in prompted.label() and "prompt" not in plain.label()
    assert WorkloadSettings() == RunSpec().workload and AxisSettings() == RunSpec().axes


def _step(audio_s: float, committed: list[str], partial: list[str]) -> SimpleNamespace:
    words = [Word(audio_s - 0.5, audio_s - 0.1, t) for t in committed]
    return SimpleNamespace(
        audio_s=audio_s, committed=words, partial=[Word(0, 0, t) for t in partial]
    )


STEPS = [
    _step(0.5, [], ["hello"]),
    _step(1.0, ["hello"], ["wor"]),
    _step(1.5, [], ["world"]),
    _step(2.0, ["world", "[again]"], []),
]


@pytest.mark.parametrize("terminal", [True, False])
def test_the_live_view_has_a_legend_and_a_pipe_sees_every_commit(terminal):
    """On a terminal the line is redrawn (committed, then partial words in another style);
    piped, each commit is a line of its own as it happens, and bracketed words survive."""
    from rich.console import Console

    from voxmeter.stream_display import LIVE_LEGEND, PIPE_LEGEND, LiveText

    out = io.StringIO()
    view = LiveText(Console(file=out, force_terminal=terminal, width=120))
    assert view.piped is not terminal
    with view.running():
        for s in STEPS:
            view.on_step(s)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    if terminal:
        assert LIVE_LEGEND in text and PIPE_LEGEND not in text
        mid = LiveText(Console(file=io.StringIO(), force_terminal=True))
        for s in STEPS[:3]:
            mid.on_step(s)  # no Live running: only the words are kept
        line = mid.render(STEPS[2])
        assert line.plain == "[    1.5 s] hello world" and not line.style
        styles = {line.plain[sp.start : sp.end]: str(sp.style) for sp in line.spans}
        assert styles == {"[    1.5 s] ": "dim", " world": "italic yellow"}
    else:
        lines = text.splitlines()
        assert lines[0] == PIPE_LEGEND
        assert lines[1:] == ["[    1.0 s] hello", "[    2.0 s] world [again]"]


def test_cli_piped_stream_prints_each_commit_then_explains_its_figures(
    cli, cache_dir, default_clips, monkeypatch
):
    """`voxmeter stream FILE | cat`: a line per commit (the progress a pipe can see), then the
    summary, with compute/elapsed, compute-unaware and the loops explained where printed."""
    from voxmeter.stream_display import (
        COMPUTE_RATIO_NOTE,
        LOOPS_NOTE,
        PIPE_LEGEND,
        UNAWARE_NOTE,
    )

    monkeypatch.setenv("VOXMETER_CACHE", str(cache_dir))
    clip, _ = next((c, a) for c, a in default_clips if c.id.startswith("librivox"))
    r = cli("stream", clip.audio, "--ref", clip.text, "--chunk-ms", "1000", "--vad")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == PIPE_LEGEND
    commits = [m.groups() for x in lines if (m := re.fullmatch(r"\[ *([\d.]+) s\] (.+)", x))]
    assert len(commits) >= 2  # progress, not only the final line
    times = [float(t) for t, _ in commits]
    assert times == sorted(times)
    assert corpus_wer([clip.text], [" ".join(w for _, w in commits)]).wer < 40
    flat = " ".join(r.output.split())
    for note in (COMPUTE_RATIO_NOTE, UNAWARE_NOTE, LOOPS_NOTE):
        assert note in flat
    assert "compute / elapsed" not in flat  # one name per figure
    assert re.search(r"compute/elapsed \S ([\d.]+) ", flat)  # the summary's row


@pytest.mark.parametrize("command", ["stream", "serve"])
def test_a_live_command_with_its_defaults_builds_the_live_spec(command):
    """live_spec matches a command's options to spec fields by name: with every option at its
    default, the spec is LIVE itself (serve: real-time, as its clients are)."""
    from voxmeter.cli.common import LIVE, live_spec
    from voxmeter.errors import SpecError

    options = {p.name: p.default for p in _command(command).params}
    fixed = {"realtime": True} if command == "serve" else {}
    assert live_spec(options, **fixed) == LIVE.with_(
        repeats=1, **{f"stream_{k}": v for k, v in fixed.items()}
    )
    assert live_spec({**options, "prompt": True}).stream.prompt is True
    with pytest.raises(SpecError, match="--chunk-ms"):
        live_spec({**options, "chunk_ms": 0})


def test_load_report_counts_timed_words_and_names_compute_elapsed(capsys):
    """The pooled line says how many committed words have a latency and why not all; the
    per-stream figure is compute/elapsed, as `stream` calls it, and it is explained."""
    from voxmeter.cli.serve import _print_report
    from voxmeter.stream.load import LoadConfig, LoadReport, StreamResult
    from voxmeter.stream_display import COMPUTE_RATIO_NOTE

    def result(i: int, n_words: int, timed: list[float]) -> StreamResult:
        w = Word(0.0, 0.1, "w")
        return StreamResult(
            index=i,
            start_s=0.0,
            audio_s=10.0,
            latencies_ms=timed,
            commits=[(w, 1.0)] * n_words,
            final=True,
            server_compute_s=2.5,
        )

    streams = [result(0, 5, [100.0, 200.0, 300.0]), result(1, 4, [400.0, 500.0, 600.0])]
    _print_report(LoadReport(LoadConfig("ws://127.0.0.1:1"), streams, wall_s=12.0))
    out = " ".join(capsys.readouterr().out.split())
    assert "6 of 9 committed words timed" in out
    assert "only words matched to a reference word have a commit latency" in out
    assert "server RTF" not in out and "compute/elapsed" in out and COMPUTE_RATIO_NOTE in out
    assert "0.250" in out  # 2.5 s of compute over 10 s streamed


def test_compute_elapsed_has_one_name_in_every_view():
    """The stream summary, the load table, the HTML report and the metric's description call
    the figure by one name."""
    from voxmeter.report.html import STREAM_COLUMNS
    from voxmeter.result import METRIC_UNITS
    from voxmeter.stream_display import COMPUTE_RATIO, SUMMARY

    assert {k: h for k, h, _ in SUMMARY}["compute_ratio"] == COMPUTE_RATIO == "compute/elapsed"
    assert {k: h for k, h, _ in STREAM_COLUMNS}["compute_ratio"] == COMPUTE_RATIO
    for key in ("compute_ratio", "compute_ratio_worst_60s"):
        assert COMPUTE_RATIO in METRIC_UNITS[key][1]
