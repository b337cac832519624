"""The package layout stays as designed: no import circles in unipar/, the engine knows no backend.

The module graph is read from source with ``ast`` (nothing is imported). Every import counts:
module level, inside functions, and under ``if TYPE_CHECKING:`` (a file that names another's types
still knows it). ``from pkg import name`` is an import of ``pkg.name`` when that is a module, else
of ``pkg``. Importing a submodule also runs its package's ``__init__``, but that edge is not
counted: a package that re-exports its children (``unipar/__init__.py``) would otherwise make
every module a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "unipar"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The unipar modules ``module`` imports anywhere in its source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in known else target)
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    """unipar module -> the unipar modules it imports."""
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A concrete path a -> b -> ... -> a inside one strongly connected component."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to start
        nxt = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start] + path[::-1][1:] + [start] if node != start else [start, start]
                if succ not in parents:
                    parents[succ] = node
                    nxt.append(succ)
        frontier = nxt
    return sorted(component)


def test_graph_reader_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "unipar.api" in graph["unipar"]                      # from .api import ...
    assert "unipar.backends.base" in graph["unipar._state"]     # from .backends.base import ...
    assert "unipar._state" in graph["unipar.api"]               # from . import _state
    assert "unipar.options" in graph["unipar.backends.base"]    # from ..options import ...


def test_cycle_finder_reports_the_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    lines = []
    for cycle in cycles:
        lines.append(" -> ".join(cycle))
        lines.extend(f"    {a} imports {b}" for a, b in zip(cycle, cycle[1:]))
    assert not cycles, "import circles in unipar/ (one path each):\n" + "\n".join(lines)


def test_native_engine_never_imports_backends() -> None:
    bad = sorted(f"{mod} imports {dep}" for mod, deps in import_graph().items()
                 if mod.startswith("unipar.native") for dep in deps
                 if dep == "unipar.backends" or dep.startswith("unipar.backends."))
    assert not bad, "the native engine must not know unipar.backends:\n" + "\n".join(bad)


# -- environment variables ------------------------------------------------------------------------

def _settings() -> set[str]:
    """The variables users set: every upper-case string constant in unipar/config.py."""
    tree = ast.parse((ROOT / "config.py").read_text())
    return {node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str) and node.value.value.isupper()
            and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)}


def _environment_reads(tree: ast.AST) -> set[str]:
    """Names read with ``os.environ.get("X")``, ``os.getenv("X")`` or ``os.environ["X"]``."""
    found = set()
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in (
                "os.environ.get", "os.getenv", "environ.get", "getenv"):
            key = node.args[0]
        elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
              and ast.unparse(node.value) in ("os.environ", "environ")):
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.add(key.value)
    return found


def test_user_settings_are_read_only_in_config() -> None:
    # CUDA_VISIBLE_DEVICES is CUDA's: the native worker also reads and sets it per task.
    settings = {var for var in _settings() if var.startswith("UNIPAR_")}
    assert {"UNIPAR_BACKEND", "UNIPAR_ADDRESS", "UNIPAR_STATE_DIR"} <= settings
    elsewhere = sorted(f"{name} reads ${var}" for name, path in _modules().items()
                       if name != "unipar.config"
                       for var in _environment_reads(ast.parse(path.read_text()))
                       if var in settings or (var.startswith("UNIPAR_") and not _internal(var)))
    assert not elsewhere, ("user settings are read in unipar/config.py only:\n"
                           + "\n".join(elsewhere))


def _internal(var: str) -> bool:
    """A hand-off between our own processes, listed as such in config.py's docstring."""
    doc = ast.get_docstring(ast.parse((ROOT / "config.py").read_text())) or ""
    return f"``{var}``" in doc.split("Not settings", 1)[-1]


def test_every_setting_is_in_the_table_of_docs_api_md() -> None:
    doc = (ROOT.parent / "docs" / "api.md").read_text()
    table = doc.split("## Environment variables", 1)[-1]
    missing = sorted(var for var in _settings() if f"| `{var}` |" not in table)
    assert not missing, f"docs/api.md's table of environment variables lacks {missing}"


def test_test_modules_have_unique_names() -> None:
    # pytest imports test files by their base name (no packages under tests/): two files with
    # one name stop the whole run at collection, so a new test file must pick a unique name.
    tests = ROOT.parent / "tests"
    by_name: dict[str, list[str]] = {}
    for path in tests.rglob("*.py"):
        if path.name != "conftest.py":
            by_name.setdefault(path.name, []).append(str(path.relative_to(tests)))
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"test modules share a name: {clashes}"
