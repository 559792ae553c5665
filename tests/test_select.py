"""Which stored rows an analysis puts side by side: a sweep's isolated cells, or one data set."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_store import TEST_IDENT, make_result

from voxmeter.analysis.select import select
from voxmeter.errors import StoreError
from voxmeter.spec import RunSpec
from voxmeter.store import aggregate_results

SWEEP = '[sweep]\nmodels = ["tiny.en"]\nrepeats = 1\n[axes]\nstride = [1, 2]\n'


def test_a_sweep_takes_only_its_isolated_cells(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(SWEEP)
    cells = [RunSpec(repeats=1).with_(stride=k) for k in (1, 2)]
    bench = make_result(cells[0], 0, wer=5.0)
    bench.mode = "inprocess"  # `make demo`'s bench row of the same spec
    rows = aggregate_results(
        [bench, make_result(cells[0], 0, wer=5.0), make_result(RunSpec(model="base"), 0, wer=3.0)]
    )
    sel = select(rows, f, "store")
    assert [(r.spec_hash, r.mode) for r in sel.rows] == [(cells[0].spec_hash, "isolated")]
    assert "1 of 2 cell(s) measured" in sel.notes[0]
    only_bench = aggregate_results([bench])
    with pytest.raises(StoreError, match="no isolated results of the sweep"):
        select(only_bench, f, "store")


def test_without_a_sweep_rows_are_grouped_by_data_set():
    a, b = RunSpec(), RunSpec(data="noisy")
    other_clips = replace(TEST_IDENT, data_digest="edited-set")
    rows = aggregate_results(
        [
            make_result(a, 0, wer=5.0),
            make_result(b, 0, wer=9.0),
            make_result(a.with_(stride=2), 0, wer=6.0),
            make_result(a.with_(stride=4), 0, wer=7.0).with_identity(other_clips),
        ]
    )
    sel = select(rows, None, "store")
    sizes = sorted(len(rs) for _, rs in sel.groups)
    assert sizes == [1, 1, 2]  # default (2 rows), noisy, and default with other clips
    assert any("3 data sets" in n for n in sel.notes)
    for _, rs in sel.groups:
        assert len({r.data_key for r in rs}) == 1  # never two clip sets in one analysis
        assert all("data=" not in r.label for r in rs)  # within a group nothing to tell apart
