"""The package's import map: no cycles, and the lower layers never reach up.

Read from the source (every import, those inside functions too, except the ones only type
checkers see), so an import moved into a function to dodge a cycle is still caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# what each lower layer may import of the package's other parts
LOWER_LAYERS = {
    "etl.core.errors": set(),
    "etl.core.log": set(),
    "etl.core.memory": set(),
    "etl.core.tuning": set(),
    "etl.core.pool": {"etl.core.errors"},
    "etl.core.run.locks": {"etl.core.errors"},
    "etl.core.http": {"etl.core.errors", "etl.core.log"},
    "etl.core.mirror": {"etl.core.errors", "etl.core.log", "etl.core.tuning"},
    "etl.core.push": {"etl.core.mirror", "etl.core.errors", "etl.core.log", "etl.core.pool", "etl.core.tuning"},
    "etl.core.run.history": {"etl.config", "etl.core.mirror"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "etl").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if _type_checking_only(node):
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        todo.extend(ast.iter_child_nodes(node))
    return names


def import_map() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a package's own submodules and parents left out)."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {known(t) for t in _imports(ast.parse(path.read_text())) if t.startswith("etl")}
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle() -> None:
    assert _cycles(import_map()) == []


@pytest.mark.parametrize("layer", sorted(LOWER_LAYERS))
def test_a_lower_layer_imports_only_what_lies_below_it(layer: str) -> None:
    allowed = LOWER_LAYERS[layer]
    reaching_up = {
        (module, target)
        for module, targets in import_map().items() if module == layer or module.startswith(layer + ".")
        for target in targets
        if not target.startswith(layer) and not any(target == a or target.startswith(a + ".") for a in allowed)
    }
    assert reaching_up == set()


def _simulator(module: str) -> bool:
    return module.startswith("etl.core.simulators") or ".simulator" in module


def test_only_the_demo_and_the_command_line_start_simulators() -> None:
    users = {module for module, targets in import_map().items()
             if not _simulator(module) and any(_simulator(t) for t in targets)}
    assert users <= {"etl.cli", "etl.demo"}
