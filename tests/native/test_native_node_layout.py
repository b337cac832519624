"""The node daemon and the head stay composed: no import circle, small modules and functions.

Every import counts, including those inside functions and under TYPE_CHECKING: a part that
imports daemon.py back (or any circle) is a seam that leaks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import unipar.native

ROOT = Path(unipar.native.__file__).parent
PACKAGES = ("node", "head")


def _modules() -> dict[str, Path]:
    return {f"{pkg}.{path.stem}": path for pkg in PACKAGES
            for path in sorted((ROOT / pkg).glob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    pkg = name.split(".")[0]
    found = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level == 1:
                base = f"{pkg}.{base}" if base else pkg
            elif n.level == 0:
                base = base.removeprefix("unipar.native.")
            found.update({base} | {f"{base}.{a.name}" for a in n.names})
        elif isinstance(n, ast.Import):
            found.update(a.name.removeprefix("unipar.native.") for a in n.names)
    return {m for m in found if m in known and m != name}


def test_no_import_circles_in_the_node_and_head():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for dep in graph[name]:
            if state.get(dep) == 1:
                circles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[name] = 2
    for name in graph:
        if name not in state:
            visit(name, [])
    assert circles == []
    # Only the entry points start the daemon; no part of it imports it back.
    users = {m for m in graph if "node.daemon" in graph[m]}
    assert users <= {"node.boot", "node.__main__"}


def test_modules_and_functions_stay_small():
    long = []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 600:
            long.append(f"{name}: {len(text.splitlines())} lines")
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = n.end_lineno - n.lineno + 1   # type: ignore[operator]
                if size > 50:
                    long.append(f"{name}.{n.name}: {size} lines")
    assert long == []
