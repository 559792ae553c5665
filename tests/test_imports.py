"""Data moves one way (DESIGN.md): no package of src/voxmeter imports another that imports it.

The walk reads every import statement, also those inside functions (a lazy import is still a
dependency), and maps each module to its top-level part of voxmeter (a subpackage such as
`engines`, or a top-level module such as `spec`).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "voxmeter"


def module_name(path: Path) -> tuple[str, bool]:
    """Dotted name of a source file, and whether it is a package's __init__."""
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imported(path: Path) -> set[str]:
    """Every voxmeter module a file imports, relative imports resolved."""
    return imports_of(path.read_text(), *module_name(path))


def imports_of(text: str, mod: str, is_pkg: bool) -> set[str]:
    """Every voxmeter module that source text of module `mod` imports, at any depth."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return {m for m in out if m == "voxmeter" or m.startswith("voxmeter.")}


def part_of(module: str) -> str | None:
    """The top-level part of voxmeter a module belongs to (None for the package root)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    head = parts[1]
    if (ROOT / head).is_dir() or (ROOT / f"{head}.py").is_file():
        return head
    return None


def package_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        src = part_of(module_name(path)[0])
        if src is None:  # voxmeter/__init__.py re-exports the public API: it sits above all
            continue
        for target in imported(path):
            dst = part_of(target)
            if dst is not None and dst != src:
                edges[src].add(dst)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more parts (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return groups


def test_walk_finds_a_made_up_cycle():
    """The checker itself: a two-part and a three-part loop are found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


def test_walk_sees_lazy_and_relative_imports():
    """An import inside a function counts (the three cycles issue 27 named were all lazy), and
    a relative import resolves against the module's own package."""
    text = "def f():\n    from voxmeter.stream.run import x\n    from ..compress import y\n"
    names = imports_of(text, "voxmeter.engines.hf_whisper", False)
    assert {"voxmeter.stream.run", "voxmeter.compress", "voxmeter.compress.y"} <= names
    assert {part_of(n) for n in names} == {"stream", "compress"}


def test_no_import_cycle_between_packages():
    found = cycles(package_graph())
    if found:
        edges = package_graph()
        detail = "; ".join(
            " <-> ".join(g)
            + " ("
            + ", ".join(f"{a}->{b}" for a in g for b in g if b in edges[a])
            + ")"
            for g in found
        )
        pytest.fail(f"import cycles between packages of src/voxmeter: {detail}")
