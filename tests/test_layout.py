"""The layout's rules (HACKING.md), checked on the source: what imports what, where SQL
lives, how long a module may grow, and that every module and class says its role."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "mountfs", "drivers")
MAX_LINES = 600
SQL = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|WITH RECURSIVE)\s")


@cache
def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text())


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The product modules an import statement (anywhere in a module) refers to."""
    mods = modules()
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = name.split(".")
            is_package = mods[name].name == "__init__.py"
            parent = here if is_package else here[:-1]
            parent = parent[: len(parent) - (node.level - 1)]
            base = ".".join([*parent, base] if base else parent)
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    for t in targets:
        while t and t not in mods:
            t = t.rpartition(".")[0]
        if t and t != name:
            yield t


@cache
def graph() -> dict[str, frozenset[str]]:
    """module -> the product modules it imports: top-level, lazy and TYPE_CHECKING alike."""
    return {
        name: frozenset(
            t
            for node in ast.walk(tree(name))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for t in _imported(name, node)
        )
        for name in modules()
    }


def cycles(edges: dict[str, set[str]] | dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    """`backend.catalog.files` -> `backend.catalog`; `mountfs.cli.main` -> `mountfs`."""
    parts = module.split(".")
    if parts[0] == "backend" and len(parts) > 1 and (REPO / "backend" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module if parts[0] == "backend" else parts[0]


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(graph()) == []


def test_no_package_imports_itself_through_others() -> None:
    edges: dict[str, set[str]] = {}
    for m, targets in graph().items():
        for t in targets:
            if package_of(m) != package_of(t):
                edges.setdefault(package_of(m), set()).add(package_of(t))
    assert cycles(edges) == []


def test_the_graph_finds_cycles() -> None:
    # the check above must be able to fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("drivers", ("backend", "mountfs")), ("backend", ("mountfs",)), ("mountfs", ("drivers",))],
)
def test_dependencies_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in graph().items()
        if m.split(".")[0] == package
        for t in targets
        if t.split(".")[0] in forbidden
    )
    assert wrong == []


def test_sql_lives_only_in_the_catalog() -> None:
    outside = sorted(
        f"{modules()[m].relative_to(REPO)}:{node.lineno}"
        for m in modules()
        if not m.startswith("backend.catalog")
        for node in ast.walk(tree(m))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value)
    )
    assert outside == []


def test_no_module_is_over_the_limit() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_module_and_class_says_its_role() -> None:
    silent = sorted(
        f"{modules()[m].relative_to(REPO)}: {what}"
        for m in modules()
        for what in (
            ["module"] * (ast.get_docstring(tree(m)) is None and modules()[m].stat().st_size > 0)
            + [
                f"class {node.name}"
                for node in ast.walk(tree(m))
                if isinstance(node, ast.ClassDef) and ast.get_docstring(node) is None
            ]
        )
    )
    assert silent == []
