"""The import architecture of ``app/`` and ``ctxstore/``: no import cycle, no upward import.

Run it (from the repository root)::

    PYTHONPATH=$PWD python -m pytest -q tests/test_architecture.py
    PYTHONPATH=$PWD python tests/test_architecture.py      # prints every cycle and upward import

The graph is read from the source with ``ast`` (nothing is imported). Every ``import`` and
``from ... import`` counts wherever it stands: at module level, inside a function (a lazy
import is still a dependency, only a hidden one) and under ``if TYPE_CHECKING:``. Type-only
imports count for both rules: a module that needs a name from a higher layer to state its own
types depends on that layer, and a type-level cycle ties two modules just as a runtime one
does (it turns into a runtime cycle the day the name is needed at run time); a lower module
that must name a higher one's type should depend on a Protocol declared low instead.

Layers, lowest first: ``app.core`` → ``app.formats`` → ``app.backends`` → ``app.managers`` →
``app.surfaces``. A module may import its own layer and the ones below. Above them stand the
top-level modules ``app`` (``app/__init__.py``), ``app.service``, ``app.protocols`` and
``app.__main__``, which may import anything; above those ``ctxstore``, which may import ``app``.
``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of
``pkg``; importing ``a.b.c`` counts as an edge to ``a.b.c`` only (not to the packages
``a`` and ``a.b`` that Python also initialises), so a package ``__init__`` re-exporting its
submodules is no cycle, while a submodule importing from its own package ``__init__`` is one.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "ctxstore")

LAYERS = ("core", "formats", "backends", "managers", "surfaces")
TOP = len(LAYERS)  # app, app.service, app.protocols, app.__main__
PUBLIC = TOP + 1  # ctxstore


class Edge(NamedTuple):
    importer: str
    target: str
    line: int
    kind: str  # "module", "function" or "type-checking"

    def __str__(self) -> str:
        return f"{self.importer} -> {self.target} (line {self.line}, {self.kind})"


def module_files(repo: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``app`` and ``ctxstore``."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((repo / package).rglob("*.py")):
            parts = list(path.relative_to(repo).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, kind: str = "module") -> Iterator[tuple[ast.stmt, str]]:
    """Every import statement under ``tree`` with its kind (the innermost that applies)."""
    for node in ast.iter_child_nodes(tree):
        inner = kind
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inner = "function" if kind == "module" else kind
        if isinstance(node, ast.If) and _is_type_checking(node):
            for stmt in node.body:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
            for stmt in node.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), kind)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, inner
        yield from _imports(node, inner)


def edges_of(module: str, source: str, modules: set[str], is_package: bool) -> list[Edge]:
    """The imports of one module that land on a module of ``modules``."""
    out: list[Edge] = []
    for node, kind in _imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            assert isinstance(node, ast.ImportFrom)
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                pkg = ".".join([*base, node.module] if node.module else base)
            else:
                pkg = node.module or ""
            targets = [
                f"{pkg}.{alias.name}" if f"{pkg}.{alias.name}" in modules else pkg
                for alias in node.names
            ]
        for target in dict.fromkeys(targets):
            if target in modules and target != module:
                out.append(Edge(module, target, node.lineno, kind))
    return out


def import_graph(repo: Path = REPO) -> list[Edge]:
    files = module_files(repo)
    names = set(files)
    edges: list[Edge] = []
    for module, path in files.items():
        edges += edges_of(module, path.read_text(), names, path.name == "__init__.py")
    return edges


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "ctxstore":
        return PUBLIC
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return TOP


def layer_name(level: int) -> str:
    return LAYERS[level] if level < TOP else ("top-level app" if level == TOP else "ctxstore")


class Cycle(NamedTuple):
    members: list[str]  # a strongly connected component: every member reaches every other
    example: list[str]  # one concrete cycle through its first member: [a, b, ..., a]


def cycles(edges: list[Edge]) -> list[Cycle]:
    """Every group of modules that import each other (directly or not), with an example."""
    graph: dict[str, list[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, [])
        graph.setdefault(e.target, [])
        if e.target not in graph[e.importer]:
            graph[e.importer].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [Cycle(comp, _cycle_in(graph, comp)) for comp in sorted(components)]


def _cycle_in(graph: dict[str, list[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in graph[v]:
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w in members and w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle in component {component}")  # pragma: no cover


def describe_cycle(cycle: Cycle, edges: list[Edge]) -> str:
    lines = [f"cycle among {len(cycle.members)} modules: {', '.join(cycle.members)}"]
    lines.append("  for example " + " -> ".join(cycle.example))
    for a, b in zip(cycle.example, cycle.example[1:], strict=False):
        lines.append(f"    {next(e for e in edges if e.importer == a and e.target == b)}")
    return "\n".join(lines)


def upward(edges: list[Edge], level: int | None = None) -> list[Edge]:
    """Imports from a module into a higher layer (only importers of ``level`` if given)."""
    return [
        e
        for e in edges
        if layer_of(e.target) > layer_of(e.importer)
        and (level is None or layer_of(e.importer) == level)
    ]


# -- the checker checks what it should -------------------------------------------------------

_SAMPLE = """
from __future__ import annotations
from typing import TYPE_CHECKING
import app.core.errors
from app.formats import npz, missing_name
from . import sibling
from .. import layout

if TYPE_CHECKING:
    from app.managers.store import Store

def lazy() -> None:
    from app.surfaces.http import create_app
"""


def test_checker_sees_every_kind_of_import() -> None:
    modules = {
        "app.core.errors",
        "app.formats",
        "app.formats.npz",
        "app.formats.sibling",
        "app.formats.layout",
        "app.managers.store",
        "app.surfaces.http",
        "app.formats.sub.mod",
        "app.formats.sub.sibling",
    }
    got = {(e.target, e.kind) for e in edges_of("app.formats.sub.mod", _SAMPLE, modules, False)}
    assert got == {
        ("app.core.errors", "module"),
        ("app.formats.npz", "module"),
        ("app.formats", "module"),  # ``missing_name`` is a name of the package, not a module
        ("app.formats.sub.sibling", "module"),
        ("app.formats.layout", "module"),
        ("app.managers.store", "type-checking"),
        ("app.surfaces.http", "function"),
    }
    found = upward(edges_of("app.formats.sub.mod", _SAMPLE, modules, False))
    assert {e.target for e in found} == {"app.managers.store", "app.surfaces.http"}


def test_checker_finds_and_names_a_cycle() -> None:
    edges = [
        Edge("a", "b", 1, "module"),
        Edge("b", "c", 1, "function"),
        Edge("c", "a", 1, "type-checking"),
        Edge("c", "d", 1, "module"),
    ]
    assert cycles(edges) == [Cycle(["a", "b", "c"], ["a", "b", "c", "a"])]
    assert "c -> a (line 1, type-checking)" in describe_cycle(cycles(edges)[0], edges)


def test_graph_covers_the_package() -> None:
    edges = import_graph()
    importers = {e.importer for e in edges}
    assert {"app", "ctxstore"} <= importers
    for layer in ("core", "formats", "backends", "managers", "surfaces"):
        assert any(m.startswith(f"app.{layer}.") for m in importers), layer
    assert len(module_files()) > 40


# -- the rules ---------------------------------------------------------------------------------


def test_no_import_cycle() -> None:
    edges = import_graph()
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(describe_cycle(c, edges) for c in found)


@pytest.mark.parametrize("layer", [*LAYERS, layer_name(TOP)])
def test_no_upward_import(layer: str) -> None:
    """Each layer imports only itself and below; the top-level modules never import ctxstore."""
    level = LAYERS.index(layer) if layer in LAYERS else TOP
    found = upward(import_graph(), level)
    assert not found, f"{layer} imports from above:\n" + "\n".join(
        f"  {e}  [{layer_name(layer_of(e.target))}]" for e in found
    )


def main() -> int:
    edges = import_graph()
    problems = [describe_cycle(c, edges) for c in cycles(edges)]
    problems += [f"upward: {e}  [{layer_name(layer_of(e.target))}]" for e in upward(edges)]
    print("\n".join(problems) or f"{len(module_files())} modules: no cycle, no upward import")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
