"""The app's top-level modules import each other in one direction only: no cycles.

A cycle (even one hidden behind `if TYPE_CHECKING:`) means two modules are one idea
split in two, and each can only be read with the other open. Imports inside functions
count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import {{ cookiecutter.project_slug }}

PACKAGE = Path({{ cookiecutter.project_slug }}.__file__).parent


def _local_imports(path: Path) -> set[str]:
    """The top-level modules of the package that `path` imports (`from .x import y`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_top_level_modules_have_no_import_cycle():
    graph = {path.stem: _local_imports(path) for path in PACKAGE.glob("*.py")}
    cycles: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                cycles.add(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported in graph:
                visit(imported, [*path, imported])

    for module in graph:
        visit(module, [module])
    assert not cycles, sorted(cycles)
