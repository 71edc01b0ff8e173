"""The package's import map: no cycles, and the lower layers never reach up.

Read from the source (every import, those inside functions too, except the ones only type
checkers see), so an import moved into a function to dodge a cycle is still caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# what each lower layer of the core may import of the package's other parts
LOWER_LAYERS = {
    "etl.core.errors": set(),
    "etl.core.log": set(),
    "etl.core.memory": set(),
    "etl.core.tuning": set(),
    "etl.core.pool": {"etl.core.errors"},
    "etl.core.run.locks": {"etl.core.errors", "etl.core.log"},
    "etl.core.http": {"etl.core.errors", "etl.core.log"},
    "etl.core.mirror": {"etl.core.errors", "etl.core.log", "etl.core.tuning"},
    # pushing never reaches into pulling (nor pulling into pushing, below)
    "etl.core.push": {"etl.core.mirror", "etl.core.errors", "etl.core.log", "etl.core.pool", "etl.core.tuning",
                      "etl.core.connector", "etl.core.config", "etl.core.http"},
    "etl.core.run.tasks": {"etl.core.mirror"},
    "etl.core.run.history": {"etl.core.config", "etl.core.mirror", "etl.core.connector", "etl.core.errors",
                             "etl.core.log", "etl.core.run.tasks"},
}
APP = ("etl.cli", "etl.cli_support", "etl.cli_pipeline", "etl.cli_simulate", "etl.config", "etl.demo", "etl.console",
       "etl.metrics", "etl.health", "etl.progress")
CONNECTORS = "etl.connectors"
# a vendor's products share its folder's own modules (Udesk: signing, envelopes, settings)
VENDORS = ("etl.connectors.udesk",)


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
    assert users <= {"etl.cli_simulate", "etl.demo"}


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_core_imports_no_connector_and_not_the_application() -> None:
    reaching = {(module, target) for module, targets in import_map().items() if _within(module, "etl.core")
                for target in targets if _within(target, CONNECTORS, *APP)}
    assert reaching == set()


def test_pulling_does_not_import_pushing() -> None:
    reaching = {(module, target) for module, targets in import_map().items() if _within(module, "etl.core.pull")
                for target in targets if _within(target, "etl.core.push")}
    assert reaching == set()


def _system_of(module: str) -> str:
    """etl.connectors.eddydesk.client -> etl.connectors.eddydesk; Udesk's products one level down."""
    parts = module.split(".")
    depth = 4 if _within(module, *VENDORS) and len(parts) > 4 else 3
    return ".".join(parts[:depth])


def test_a_connector_imports_the_core_and_itself_only() -> None:
    reaching = set()
    for module, targets in import_map().items():
        if not _within(module, CONNECTORS) or module == CONNECTORS:
            continue
        own = _system_of(module)
        for target in targets:
            if _within(target, *APP) or _within(target, CONNECTORS) and not _within(target, own) and not (
                    target in VENDORS or (target.count(".") == 3 and _within(target, *VENDORS)
                                          and _within(module, *VENDORS))):
                reaching.add((module, target))
    assert reaching == set()
