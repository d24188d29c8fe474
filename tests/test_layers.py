"""The package's layers, as the tree shows them: a module imports only its own layer and the layers below it,
and importing any module runs no import cycle.

Read from the source (every ``import`` statement, also inside functions and ``if TYPE_CHECKING``), so a
dependency hidden in a function body counts as much as one at the top. A layer is a list of packages; the
lowest comes first. A module that belongs to no layer fails too: a new top-level module or package is placed
here, deliberately.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "meetingtasks"

#: Lowest first. Within a layer, modules import each other freely (without cycles at import time).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core: settings, errors, priorities, the registry, the message format; no Redis", ("meetingtasks.core",)),
    ("store: Redis connections, keys, scripts and every record", ("meetingtasks.store", "meetingtasks.lua")),
    ("enqueue: the one way tasks are dispatched", ("meetingtasks.enqueue",)),
    ("events: channels, publishing, subscriptions, the bridge", ("meetingtasks.events",)),
    ("metrics: heartbeats, the status feed, the exporter", ("meetingtasks.metrics",)),
    ("worker: the Celery app, the task base, the fetch, the loops", ("meetingtasks.worker",)),
    ("parts: beat, the gateway, the console",
     ("meetingtasks.scheduler", "meetingtasks.gateway", "meetingtasks.console")),
    ("the public API: meetingtasks/__init__.py", ("meetingtasks.__init__",)),
    ("applications: the meeting system", ("meetingtasks.services",)),
    ("operations: up's embedded Redis, the supervisor, the demo, Flower", ("meetingtasks.operations",)),
    ("entry points: the CLI", ("meetingtasks.cli", "meetingtasks.__main__")),
]


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    at_import_time: bool  # at module level and not only for type checking


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest package prefix of ``module`` (the package itself: its __init__)."""
    name = "meetingtasks.__init__" if module == "meetingtasks" else module
    best = (-1, -1)
    for index, (_, packages) in enumerate(LAYERS):
        for package in packages:
            if (name == package or name.startswith(package + ".")) and len(package) > best[1]:
                best = (index, len(package))
    return best[0]


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name.startswith("meetingtasks"))
        return
    base = node.module or ""
    if node.level:  # relative: resolve against the importer's package
        package = importer if MODULES[importer].name == "__init__.py" else importer.rsplit(".", 1)[0]
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parent, base] if base else parent)
    if not base.startswith("meetingtasks"):
        return
    for alias in node.names:  # ``from meetingtasks.store import status`` names the module status
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def imports_of(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))

    def walk(node: ast.AST, at_import_time: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(child, module):
                    yield Import(module, target, child.lineno, at_import_time)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for part in child.body:
                    yield from walk(ast.Module(body=[part], type_ignores=[]), False)
                for part in child.orelse:
                    yield from walk(ast.Module(body=[part], type_ignores=[]), at_import_time)
            else:
                yield from walk(child, at_import_time)

    yield from walk(tree, True)


ALL_IMPORTS = [imp for module in sorted(MODULES) for imp in imports_of(module)]


def where(imp: Import) -> str:
    return f"{MODULES[imp.importer].relative_to(PACKAGE.parent)}:{imp.line}"


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if layer_of(m) < 0)
    assert not unplaced, f"modules in no layer (add their package to LAYERS in {Path(__file__).name}): {unplaced}"


def test_a_lower_layer_never_imports_a_higher_one() -> None:
    upward = [
        f"{where(imp)}: {imp.importer} ({LAYERS[layer_of(imp.importer)][0].split(':')[0]}) imports {imp.imported} "
        f"({LAYERS[layer_of(imp.imported)][0].split(':')[0]})"
        for imp in ALL_IMPORTS
        if layer_of(imp.imported) > layer_of(imp.importer)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``edges`` (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_importing_a_module_runs_no_import_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for imp in ALL_IMPORTS:
        if imp.at_import_time and imp.imported != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.imported)
    cycle = _cycle(edges)
    assert cycle is None, "import cycle at module import time: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("importer, imported, expected", [
    ("meetingtasks.core.settings", "meetingtasks.store.keys", False),
    ("meetingtasks.worker.task", "meetingtasks.enqueue.dispatcher", True),
    ("meetingtasks.store.status", "meetingtasks.lua", True),
])
def test_the_rule_itself(importer: str, imported: str, expected: bool) -> None:
    # The check above can fail: a core module importing the store is refused, the reverse is allowed.
    assert (layer_of(imported) <= layer_of(importer)) is expected


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
