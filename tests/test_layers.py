"""The package's layers: no import cycle, no import against the layer order, the simulator apart.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``. The order,
bottom to top (ARCHITECTURE.md draws it):

- the kernel: the modules directly in ``bulkretry/`` (errors, settings, values, the one retry
  decision, the one text sanitiser), which import only each other;
- the wings ``_io``, ``_http``, ``_pace``, ``_ledger``: the kernel and their own folder;
- ``_engine`` and ``_listing``: the kernel, the wings and their own folder, not each other;
- the faces ``_api`` and ``_cli``: anything below, not each other; ``__init__`` and
  ``__main__`` above them;
- ``_simulator``: nothing of bulkretry, and only ``_cli`` imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bulkretry"
WINGS = frozenset({"_io", "_http", "_pace", "_ledger"})
MIDDLE = frozenset({"_engine", "_listing"})
FACES = frozenset({"_api", "_cli", "__init__", "__main__"})
SIMULATOR = "_simulator"


def module_name(path: Path) -> str:
    """Return ``bulkretry.x.y`` for a file of the package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: frozenset[str], name: str | None = None) -> Iterator[str]:
    """Yield the package modules that the file at ``path`` imports, wherever the import is."""
    name = name or module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if path.name == "__init__.py" and name == "bulkretry.__init__":
        package = ["bulkretry"]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join([*base, *([node.module] if node.module else [])])
            else:
                stem = node.module or ""
            names = [f"{stem}.{alias.name}" for alias in node.names]
            # `from pkg import module` imports the module; `from pkg import name`, the package.
            targets = [target for target in names if target in modules] or [stem]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def package_graph() -> dict[str, set[str]]:
    """Return every module of the package and the package modules it imports."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = frozenset(paths)
    return {name: set(imports_of(path, modules)) for name, path in paths.items()}


def room(module: str) -> str:
    """Return the room of a module: its folder under bulkretry/, or itself at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def rank(room_name: str) -> int:
    if room_name in ("__init__", "__main__"):
        return 4
    if room_name in FACES:
        return 3
    if room_name in MIDDLE:
        return 2
    if room_name in WINGS:
        return 1
    return 0


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Return every breach of the layer rules in ``graph``, one line each."""
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for module, imported in sorted(graph.items()):
        here = room(module)
        for other in sorted(imported):
            there = room(other)
            if there == here or other == "bulkretry.__init__":
                continue
            if there == SIMULATOR or here == SIMULATOR:
                if here != "_cli":
                    problems.append(f"{module} imports {other}: the simulator stands apart")
                continue
            if rank(there) > rank(here) or (rank(there) == rank(here) and rank(here) > 0):
                problems.append(f"{module} imports {other}, against the layer order")
    return problems


def test_the_package_has_no_cycle_and_keeps_its_layer_order() -> None:
    """Every import in the package goes down the layers (or stays in its own room)."""
    graph = package_graph()
    assert len(graph) > 40, "the walk found too few modules"
    assert violations(graph) == []


def test_the_simulator_is_imported_only_by_the_cli() -> None:
    """Only the command line's simulate and demo start the simulator."""
    importers = {
        module
        for module, imported in package_graph().items()
        if room(module) != SIMULATOR and any(room(o) == SIMULATOR for o in imported)
    }
    assert importers
    assert {room(module) for module in importers} == {"_cli"}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (
            {
                "bulkretry._engine.a": {"bulkretry._engine.b"},
                "bulkretry._engine.b": {"bulkretry._engine.a"},
            },
            "import cycle",
        ),
        (
            {"bulkretry._config": {"bulkretry._pace.halt"}, "bulkretry._pace.halt": set()},
            "layer order",
        ),
        (
            {"bulkretry._io.sink": {"bulkretry._http.client"}, "bulkretry._http.client": set()},
            "layer order",
        ),
        (
            {"bulkretry._engine.e": {"bulkretry._listing.l"}, "bulkretry._listing.l": set()},
            "layer order",
        ),
        (
            {"bulkretry._engine.e": {"bulkretry._cli.run"}, "bulkretry._cli.run": set()},
            "layer order",
        ),
        ({"bulkretry._api": {"bulkretry._cli.main"}, "bulkretry._cli.main": set()}, "layer order"),
        ({"bulkretry._api": {"bulkretry._simulator"}, "bulkretry._simulator": set()}, "simulator"),
        (
            {"bulkretry._simulator._app": {"bulkretry._model"}, "bulkretry._model": set()},
            "simulator",
        ),
    ],
)
def test_each_kind_of_breach_is_caught(graph: dict[str, set[str]], expected: str) -> None:
    """The rules bite: a cycle, an upward or sideways import, the simulator out of its wing."""
    problems = violations(graph)
    assert len(problems) == 1
    assert expected in problems[0]


def test_function_level_and_type_checking_imports_count(tmp_path: Path) -> None:
    """An import hidden in a function or under TYPE_CHECKING is an import all the same."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from bulkretry._cli import run\n"
        "def f():\n"
        "    from bulkretry._http import client\n"
    )
    found = set(
        imports_of(
            source, frozenset({"bulkretry._cli.run", "bulkretry._http.client"}), "bulkretry._x"
        )
    )
    assert found == {"bulkretry._cli.run", "bulkretry._http.client"}
