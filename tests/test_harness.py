"""The harness end to end on two real clips: what a shortened input leaves unheard is counted."""

import pytest

from voxmeter.run.harness import run_spec
from voxmeter.spec import RunSpec


@pytest.mark.parametrize("frames", [200, "fit"])
def test_audio_past_the_input_is_counted_and_warned(frames, cache_dir):
    # ct2: the clips cut at 200 frames repeat themselves to the token limit, slower on hf
    spec = RunSpec(engine="ct2", max_clips=2, repeats=1, warmup=0).with_(frames=frames)
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir, instruments=False))
    durations = [c["duration_s"] for c in res.clips]
    if frames == "fit":  # every clip's input covers it, rounded up to the 1 s step
        assert all(d <= c["n_frames"] / 100 < d + 1.0 for d, c in zip(durations, res.clips))
        assert res.metrics["n_clips_cut"] == 0 and res.metrics["audio_cut_s"] == 0
        assert not any("never reached the encoder" in w for w in res.warnings)
    else:
        assert all(c["n_frames"] == 200 for c in res.clips)
        cut = [d for d in durations if d > 2.01]
        assert cut, "the first bundled clips are longer than 2 s"
        assert res.metrics["n_clips_cut"] == len(cut)
        assert res.metrics["audio_cut_s"] == pytest.approx(sum(d - 2.0 for d in cut))
        assert any("never reached the encoder" in w for w in res.warnings)


def test_run_never_imports_stream():
    """Data moves one way: stream imports run, so no module of run imports stream, even
    inside a function (a stream spec's callers choose stream/run.py themselves)."""
    import ast
    from pathlib import Path

    import voxmeter.run

    found = []
    for path in Path(voxmeter.run.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [f"{path.name}: {n}" for n in names if n.startswith("voxmeter.stream")]
    assert not found, found


def test_a_stream_spec_is_refused_by_the_harness():
    from voxmeter.run.isolate import run_spec_isolated

    spec = RunSpec().with_(stream_chunk_ms=500)
    with pytest.raises(ValueError, match="run_stream_spec"):
        next(run_spec(spec, [0]))
    with pytest.raises(ValueError, match="run_stream_spec_isolated"):
        next(run_spec_isolated(spec, [0]))


class _Opened(Exception):
    """Raised by the one open sequence's build step, to see who went through it."""


def test_every_caller_opens_the_model_through_run_model(cache_dir, monkeypatch):
    """The harness, the stream package and the isolated child's build step all open a
    model through run/model.py (one sequence: resolve, check, convert, compress, load)."""
    import voxmeter.run.model
    from voxmeter.run.isolate import _build
    from voxmeter.stream import open_engine

    def build_source(spec, source, cache, progress=None):
        raise _Opened(spec.engine)

    monkeypatch.setattr(voxmeter.run.model, "build_source", build_source)
    spec = RunSpec(engine="ct2", max_clips=1, repeats=1)
    with pytest.raises(_Opened):
        next(run_spec(spec, [0], cache_dir=cache_dir, instruments=False))
    with pytest.raises(_Opened):
        open_engine(spec.with_(stream_chunk_ms=500), cache_dir)
    with pytest.raises(_Opened):
        _build(spec, str(cache_dir))


def test_wall_clock_rtfx_counts_what_the_stages_leave_out(cache_dir):
    """rtfx counts the stages' own time; rtfx_wall the whole repeat, as a caller timing one
    transcribe call (faster-whisper's benchmark) does: never faster than the stages alone."""
    spec = RunSpec(max_clips=2, repeats=1, warmup=0).with_(frames="fit")
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir, instruments=False))
    m = res.metrics
    stages_s = sum(c["e2e_ms"] for c in res.clips) / 1e3
    assert m["wall_s"] >= stages_s
    assert m["rtfx_wall"] == pytest.approx(m["audio_s"] / m["wall_s"])
    assert m["rtfx_wall"] <= m["rtfx"]
