"""Data moves one way: engines load and run a model, compress builds one on top of them, so no
module of engines/ imports compress/ (not even inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import voxmeter

ENGINES = Path(voxmeter.__file__).parent / "engines"


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def test_no_engine_module_imports_compress():
    found = {
        f"{p.name}: {name}"
        for p in sorted(ENGINES.glob("*.py"))
        for name in _imports(p)
        if name == "voxmeter.compress" or name.startswith("voxmeter.compress.")
    }
    assert len(list(ENGINES.glob("*.py"))) > 5 and not found, sorted(found)


def test_what_compress_re_exports_is_the_engines_own():
    from voxmeter.compress import artifact, groups, lowrank, quantize
    from voxmeter.engines import groups as egroups
    from voxmeter.engines import hf_weights, int8
    from voxmeter.engines import quant as equant

    assert quantize.quantize is equant.quantize and quantize.weight_bytes is equant.weight_bytes
    assert quantize.Int8Projection is int8.Int8Projection
    assert (
        artifact.load_model is hf_weights.load_model and groups.layer_groups is egroups.layer_groups
    )
    assert lowrank.LowRankLinear is hf_weights.LowRankLinear
