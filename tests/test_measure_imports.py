"""measure/ holds instruments only: it imports nothing from the layers that use it.

Engines import measure's formulas (FLOPs shapes), so a measure module that loads an engine
(once measure/flopsreport.py) makes the two packages import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import voxmeter

ROOT = Path(voxmeter.__file__).parent
# packages that sit above measure/ in the flow of data (shared/DESIGN.md)
ABOVE = {"engines", "compress", "run", "stream", "sweep", "analysis", "report", "cli", "api"}


def voxmeter_imports(path: Path) -> set[str]:
    """Second-level voxmeter packages a file imports, at module level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out |= {n.split(".")[1] for n in names if n.startswith("voxmeter.")}
    return out


def test_measure_imports_no_layer_above_it():
    bad = {
        f.name: sorted(voxmeter_imports(f) & ABOVE)
        for f in sorted((ROOT / "measure").glob("*.py"))
        if voxmeter_imports(f) & ABOVE
    }
    assert bad == {}


def test_the_walker_sees_function_level_imports(tmp_path: Path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from voxmeter.engines import load_engine\n")
    assert voxmeter_imports(f) == {"engines"}
