"""Small modules with one job, short functions: the limits the connectors issue set, held by a test.

A function's length is its own lines: a handler nested in a route table (the simulators' and the
console's `build_app`) is a function of its own and is measured as one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 60
# the simulators' generated data: tables of names, texts and weights, not logic
DATA_TABLES = {"etl/connectors/eddydesk/simulator/data.py"}


def _sources() -> list[Path]:
    return sorted((ROOT / "etl").rglob("*.py"))


def _span(node: ast.AST) -> int:
    return int(getattr(node, "end_lineno", 0)) - int(getattr(node, "lineno", 0)) + 1


def _nested_functions(node: ast.AST) -> list[ast.AST]:
    """The functions directly inside `node` (not those inside them)."""
    found: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(child)
        else:
            found += _nested_functions(child)
    return found


def _own_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return _span(node) - sum(_span(child) for child in _nested_functions(node))


def test_no_module_is_long() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
            and str(p.relative_to(ROOT)) not in DATA_TABLES}
    assert long == {}


def test_no_function_is_long() -> None:
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _own_lines(node) > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(ROOT)}:{node.name}"] = _own_lines(node)
    assert long == {}
