"""The model card of a compressed directory: what made it and what the store measured for it,
never a figure that was not measured; and the compress commands' one-line errors."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pytest

from voxmeter.spec import RunSpec


@pytest.fixture(scope="module")
def hf_source(cache_dir):
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.run.harness import prepare_weights

    return prepare_weights(RunSpec(), resolve_model("tiny.en", cache_dir), cache_dir)[0]


@pytest.fixture(scope="module")
def shallow_dir(tmp_path_factory, hf_source):
    """tiny.en with 2 of its 4 decoder layers (depth needs no calibration pass)."""
    from voxmeter.compress import build
    from voxmeter.data.datasets import load_dataset

    calib = load_dataset("calib")
    calib.clips = calib.clips[:3]
    out = tmp_path_factory.mktemp("card") / "tiny-dec2"
    return build(RunSpec().with_(decoder_layers=2).compression, hf_source, out, calib)


@pytest.fixture(scope="module")
def stored(tmp_path_factory, shallow_dir, cache_dir):
    """A store holding one real bench result of the directory (2 clips, 1 repeat)."""
    from voxmeter.run.harness import run_spec
    from voxmeter.store import ResultStore

    spec = RunSpec(model=str(shallow_dir), max_clips=2, repeats=1, threads=1)
    (result,) = run_spec(spec, [0], cache_dir=cache_dir)
    path = tmp_path_factory.mktemp("store") / "s.sqlite"
    with ResultStore(path) as store:
        store.add(result)
    return path, result


def test_the_card_names_the_methods_and_prints_the_stored_figures(shallow_dir, stored, cache_dir):
    from voxmeter.compress.card import model_card

    path, result = stored
    text = model_card(shallow_dir, path, cache_dir=cache_dir)
    assert "Source model: tiny.en" in text
    assert "depth: 2 decoder layers kept" in text
    assert "37,760,256 -> " in text  # tiny.en's parameters before
    wer = result.metrics["wer"]
    lo, hi = result.metrics["wer_ci_lo"], result.metrics["wer_ci_hi"]
    assert f"{wer:.2f} [{lo:.2f}, {hi:.2f}]" in text and "bootstrap over clips" in text
    assert f"{result.metrics['rtfx']:,.2f}" in text
    assert result.metrics["energy_method"].startswith("estimated")
    assert "(estimated)" in text and result.metrics["energy_method"] in text
    assert result.env["git_commit"] in text and result.env["cpu_model"] in text
    assert "Data set `default`" in text
    assert "None measured" not in text
    assert "Layer sensitivity: not measured" in text


def test_without_results_the_card_says_so_and_gives_the_command(shallow_dir, tmp_path, cache_dir):
    from voxmeter.compress.card import model_card

    store = tmp_path / "none.sqlite"
    text = model_card(shallow_dir, store, cache_dir=cache_dir)
    assert "None measured" in text
    assert f"voxmeter bench --model {shallow_dir.resolve()} --store {store}" in text
    assert "WER" not in text.split("## Known failure modes")[0].split("None measured")[1]
    assert "Flagged clips: none known (nothing measured)" in text
    assert not store.exists()  # reading a card never creates a store


def test_results_of_other_weights_at_the_same_path_are_left_out(
    shallow_dir, stored, tmp_path, cache_dir
):
    from voxmeter.compress.card import model_card
    from voxmeter.store import ResultStore

    _, result = stored
    with ResultStore(tmp_path / "s.sqlite") as store:
        store.add(replace(result, weights_digest="0" * 16))
        other = replace(result, spec=dict(result.spec, model="tiny.en"), spec_hash="x" * 16)
        store.add(other)
    text = model_card(shallow_dir, tmp_path / "s.sqlite", cache_dir=cache_dir)
    assert "None measured" in text and "1 stored repeat(s) measured other weights" in text


def test_the_sensitivity_maps_worst_groups_are_listed(shallow_dir, stored, tmp_path, cache_dir):
    from voxmeter.compress.card import model_card

    cells = {g: {"wer": 1.0, "delta_wer": 0.0, "kl": 0.001} for g in ("conv", "enc.0", "dec.1")}
    cells["dec.1"] = {"wer": 9.0, "delta_wer": 8.0, "kl": 0.01}
    cells["all"] = {"wer": 9.0, "delta_wer": 8.0, "kl": 0.02}
    smap = {
        "groups": ["conv", "enc.0", "dec.1"],
        "granularities": ["per-channel"],
        "cells": {"per-channel": cells},
        "bits": 8,
        "data": {"name": "calib", "n_clips": 60},
        "baseline": {"wer": 1.0},
    }
    f = tmp_path / "map.json"
    f.write_text(json.dumps(smap))
    text = model_card(shallow_dir, stored[0], sensitivity=f, cache_dir=cache_dir)
    worst = text.split("Most int8-sensitive")[1]
    assert worst.index("dec.1: WER +8.00") < worst.index("conv")


def _one_line_exit_2(capsys, argv, *needles):
    from voxmeter.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    for n in needles:
        assert n in err[0], err[0]


def test_card_cli_writes_the_readme_and_refuses_a_plain_directory(
    shallow_dir, stored, tmp_path, capsys, cache_dir
):
    from voxmeter.cli import main

    out = tmp_path / "card.md"
    argv = ["card", str(shallow_dir), "--store", str(stored[0]), "-o", str(out)]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--cache-dir", str(cache_dir)])
    assert e.value.code == 0 and out.read_text().startswith("# tiny-dec2")
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would leave it
    plain = tmp_path / "plain"
    plain.mkdir()
    _one_line_exit_2(capsys, ["card", str(plain)], "voxmeter.json", str(plain))


def test_compress_cli_refuses_what_has_nothing_to_build(tmp_path, capsys):
    _one_line_exit_2(capsys, ["compress", "-o", str(tmp_path / "m")], "nothing to build", "quant")
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("not a model")
    argv = ["compress", "--compress", "decoder_layers=2", "-o", str(keep)]
    _one_line_exit_2(capsys, argv, "not a voxmeter model")
    assert (keep / "notes.txt").read_text() == "not a model"


def test_compress_cli_builds_and_needs_force_to_replace(shallow_dir, tmp_path, capsys, cache_dir):
    from voxmeter.cli import main

    out = tmp_path / "dec2"
    shutil.copytree(shallow_dir, out)  # as if built before: replacing it needs --force
    argv = ["compress", "--compress", "decoder_layers=2", "-o", str(out)]
    argv += ["--cache-dir", str(cache_dir), "--quiet"]
    _one_line_exit_2(capsys, argv, "--force")
    with pytest.raises(SystemExit) as e:
        main([*argv, "--force"])
    assert e.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "37,760,256 -> 33,028,608 parameters" in printed
    assert f"voxmeter bench --model {out.resolve()}" in printed


def test_a_card_written_to_a_link_goes_through_it(tmp_path):
    from voxmeter.compress.card import write_atomic

    target = tmp_path / "real.md"
    target.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    write_atomic("# new\n", link)
    assert link.is_symlink() and target.read_text() == "# new\n"
    write_atomic("# fresh\n", tmp_path / "fresh.md")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.md", "link.md", "real.md"]


def test_card_to_a_path_that_cannot_be_written_is_one_line_and_exit_2(
    shallow_dir, tmp_path, capsys
):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    argv = ["card", str(shallow_dir), "--store", str(tmp_path / "none.sqlite")]
    _one_line_exit_2(capsys, [*argv, "-o", str(folder)], "card -o", "is a folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        _one_line_exit_2(capsys, [*argv, "-o", str(locked / "card.md")], "not writable")
    finally:
        locked.chmod(0o700)


@pytest.fixture(scope="module")
def with_base(tmp_path_factory, stored, cache_dir):
    """The store of `stored`, plus tiny.en itself measured with the same settings."""
    from voxmeter.run.harness import run_spec
    from voxmeter.store import ResultStore

    path = tmp_path_factory.mktemp("store-base") / "s.sqlite"
    shutil.copyfile(stored[0], path)
    spec = RunSpec(model="tiny.en", max_clips=2, repeats=1, threads=1)
    (base,) = run_spec(spec, [0], cache_dir=cache_dir)
    with ResultStore(path) as store:
        store.add(base)
    return path, base


def test_the_card_compares_with_the_base_model_measured_alike(
    shallow_dir, stored, with_base, cache_dir
):
    from voxmeter.compress.card import model_card
    from voxmeter.metrics import wer_gap_ci

    mine, base = stored[1], with_base[1]
    text = model_card(shallow_dir, with_base[0], cache_dir=cache_dir)
    by_id = {c["id"]: c for c in base.clips}
    ids = [c["id"] for c in mine.clips]
    refs = [c["ref"] for c in mine.clips]
    gap, lo, hi = wer_gap_ci(
        refs, [[c["hyp"] for c in mine.clips]], [[by_id[i]["hyp"] for i in ids]]
    )
    assert f"| {gap:+.2f} [{lo:+.2f}, {hi:+.2f}] |" in text
    assert "| base: tiny.en" in text and "(the base model)" in text
    assert "paired percentile bootstrap over clips" in text
    # without the base in the store, the card says so rather than leaving the column blank
    alone = model_card(shallow_dir, stored[0], cache_dir=cache_dir)
    assert "| not measured |" in alone and "no base result to compare with" in alone


def test_each_configurations_precision_is_its_own():
    from voxmeter.compress.card import _method_lines

    same = _method_lines({"precision": {"a": "torch fp32", "b": "torch fp32"}})
    assert same == ["- precision: torch fp32"]
    mixed = _method_lines({"precision": {"fp32": "torch fp32", "int8": "torch.ao dynamic int8"}})
    assert mixed == [
        "- precision, per configuration:",
        "    - fp32: torch fp32",
        "    - int8: torch.ao dynamic int8",
    ]
    assert _method_lines({"energy": {"a": "", "b": ""}}) == []
