"""A sensitivity map in the main report: its heat map, method and most sensitive groups, and
the one-line refusal of a file that is not a map."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest

from voxmeter.compress.sensitivity import ALL, PER_CHANNEL, PER_TENSOR, ranked
from voxmeter.errors import SpecError
from voxmeter.report.figures import sensitivity_figure
from voxmeter.report.html import read_sensitivity_map

GROUPS = ["conv", "enc.0", "dec.0", "proj"]
# (per-channel delta WER, per-channel KL, per-tensor delta WER, per-tensor KL) per group;
# dec.0 and proj tie on WER per channel, so the KL decides between them
FIGURES = {
    "conv": (0.0, 1e-4, 0.0, 2e-4),
    "enc.0": (0.18, 3e-4, 2.33, 4e-3),
    "dec.0": (0.36, 2e-3, 2.33, 5e-3),
    "proj": (0.36, 4e-3, 2.69, 8e-3),
    ALL: (0.54, 7e-3, 4.84, 2e-2),
}
METHOD = "each group's weights fake-quantized, one group at a time (test map)"


def make_map() -> dict:
    """A small map in compress/sensitivity.py's format, with the keys the report reads."""
    cells = {PER_CHANNEL: {}, PER_TENSOR: {}}
    for group, (pc_wer, pc_kl, pt_wer, pt_kl) in FIGURES.items():
        cells[PER_CHANNEL][group] = {"delta_wer": pc_wer, "kl": pc_kl}
        cells[PER_TENSOR][group] = {"delta_wer": pt_wer, "kl": pt_kl}
    return {
        "format": 1,
        "model": "tiny.en",
        "bits": 8,
        "data": {"name": "calib", "n_clips": 60},
        "baseline": {"wer": 10.93, "ref_words": 558},
        "method": METHOD,
        "groups": GROUPS,
        "granularities": [PER_CHANNEL, PER_TENSOR],
        "cells": cells,
    }


@pytest.fixture
def map_path(tmp_path):
    p = tmp_path / "map.json"
    p.write_text(json.dumps(make_map()))
    return p


def test_figure_draws_the_cells_in_group_order():
    smap = make_map()
    fig = sensitivity_figure(smap)
    (heat,) = fig.data
    rows = [*GROUPS, ALL]
    grans = [PER_CHANNEL, PER_TENSOR]
    assert list(heat.y) == rows and list(heat.x) == grans
    want_z = [[smap["cells"][g][grp]["delta_wer"] for g in grans] for grp in rows]
    want_kl = [[smap["cells"][g][grp]["kl"] for g in grans] for grp in rows]
    assert [list(r) for r in heat.z] == want_z
    assert [list(r) for r in heat.customdata] == want_kl
    title = fig.layout.title.text
    for part in ("tiny.en", "8-bit weights only", "calib", "60 clips", "fp32 WER 10.93"):
        assert part in title


def test_standalone_page_is_built_from_the_same_figure():
    from voxmeter.cli.compress import heatmap_html

    smap = make_map()
    page = heatmap_html(smap)
    assert page.startswith("<!doctype html>")
    assert json.dumps(sensitivity_figure(smap).layout.title.text)[1:-1] in page
    assert METHOD.replace("'", "&#x27;") in page


def test_report_shows_each_map(cli, store_path, map_path, tmp_path):
    out = tmp_path / "report.html"
    r = cli("report", "--store", store_path, "-o", out, "--sensitivity", map_path)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "Layer sensitivity: tiny.en, 8-bit weights" in text
    assert METHOD.replace("'", "&#x27;") in text
    top = ranked(make_map(), PER_CHANNEL)
    assert top[:2] == ["proj", "dec.0"]  # the KL breaks their WER tie
    line = re.search(r"Most sensitive groups \(per-channel, 8-bit weights only.*?</p>", text)
    assert line is not None
    assert line.group(0).index("proj") < line.group(0).index("dec.0")
    assert "proj (+0.36 points" in line.group(0)
    # the report's nine figures plus the heat map, plotly.js still inlined once
    assert text.count('class="plotly-graph-div"') == 10
    assert len(re.findall(r"plotly\.js v\d", text)) == 1

    # repeatable: a second map is a second section
    other = make_map() | {"model": "base", "measured": "int8-dynamic"}
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    r = cli(
        "report", "--store", store_path, "-o", out,
        "--sensitivity", map_path, "--sensitivity", other_path,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    text = out.read_text()
    # what each map measured is named: weight rounding, or the int8-dynamic scheme
    assert "Layer sensitivity: base, int8-dynamic (int8 weights and activations)" in text
    assert text.count('class="plotly-graph-div"') == 11

    # no map, no section
    r = cli("report", "--store", store_path, "-o", out)
    assert r.exit_code == 0, r.output
    assert "Layer sensitivity" not in out.read_text()


def _broken_maps():
    no_cells = make_map()
    del no_cells["cells"]
    lacks_group = make_map()
    del lacks_group["cells"][PER_TENSOR]["enc.0"]
    no_kl = copy.deepcopy(make_map())
    no_kl["cells"][PER_CHANNEL][ALL].pop("kl")
    return [
        ("[1, 2]", "an array, not an object"),
        ("{not json", "not JSON"),
        (json.dumps(no_cells), "no 'cells'"),
        (json.dumps(lacks_group), "'enc.0', per-tensor"),
        (json.dumps(no_kl), "'all', per-channel"),
        (json.dumps(make_map() | {"format": 99}), "format 99"),
    ]


@pytest.mark.parametrize(("text", "needle"), _broken_maps())
def test_a_file_that_is_not_a_map_is_refused_by_name(tmp_path, text, needle):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        read_sensitivity_map(p)
    msg = str(e.value)
    assert str(p) in msg and needle in msg and "\n" not in msg


def _voxmeter(*args):
    return subprocess.run(
        [sys.executable, "-m", "voxmeter.cli", *[str(a) for a in args]],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("kind", ["missing", "list"])
def test_bad_map_is_one_line_exit_2_before_any_report_work(tmp_path, kind):
    """Through voxmeter.cli's main, as a user runs it. The store does not exist: the map is
    checked first, so the error is the map's, and no report is written."""
    bad = tmp_path / "nope.json"
    if kind == "list":
        bad.write_text("[]")
    out = tmp_path / "report.html"
    p = _voxmeter("report", "--store", tmp_path / "none.sqlite", "-o", out, "--sensitivity", bad)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert str(bad) in lines[0] and "Traceback" not in p.stderr
    assert ("no such file" if kind == "missing" else "not a sensitivity map") in lines[0]
    assert not out.exists()
