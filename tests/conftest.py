"""Shared fixtures: one conversion cache per test session, the bundled tiny.en model, clips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Conversions are cached per session (or in VOXMETER_TEST_CACHE to reuse across runs)."""
    keep = os.environ.get("VOXMETER_TEST_CACHE")
    return Path(keep) if keep else tmp_path_factory.mktemp("vxcache")


@pytest.fixture(scope="session")
def tiny_source(cache_dir):
    from voxmeter.assets.bundled import resolve_model

    return resolve_model("tiny.en", cache_dir)


@pytest.fixture(scope="session")
def default_clips():
    """The bundled default set's clips as (Clip, LoadedAudio)."""
    from voxmeter.data.datasets import iter_audio, load_dataset

    return [(c, a) for c, a in iter_audio(load_dataset("default")) if not isinstance(a, Exception)]


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory) -> str:
    """A manifest of the default set's shortest clip ("go forward", 2.8 s; the set's first is
    7.1 s), for end-to-end runs whose checks do not grow with the audio but whose cost does."""
    import json

    from voxmeter.data.datasets import SAMPLE_DIR, load_dataset

    (clip,) = [c for c in load_dataset("default").clips if c.id == "goforward"]
    line = {"id": clip.id, "audio": str(SAMPLE_DIR / "goforward.flac"), "text": clip.text}
    m = tmp_path_factory.mktemp("short") / "short.jsonl"
    m.write_text(json.dumps(line) + "\n")
    return str(m)


@pytest.fixture
def store_path(tmp_path):
    """A results store holding test_store's sample results."""
    from test_store import sample_results

    from voxmeter.store import ResultStore

    p = tmp_path / "r.sqlite"
    with ResultStore(p) as s:
        for r in sample_results():
            s.add(r)
    return p


@pytest.fixture
def cli():
    """The voxmeter command line, in this process (typer's CliRunner)."""
    from typer.testing import CliRunner

    from voxmeter.cli import app

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke
