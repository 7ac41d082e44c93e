"""The shape of src/tractor_tasks: no import cycle (module-level and function-level
imports alike), no function over 12 parameters. Fast: reads src/ only."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import tractor_tasks

SRC = Path(tractor_tasks.__file__).parent
PACKAGE = "tractor_tasks"
MAX_PARAMS = 12


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in it (at module level, in
    a function, under a condition): `from . import x`, `from .x import y`, `import
    tractor_tasks.x` alike."""
    paths = {_module(p): p for p in sorted(SRC.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                for alias in node.names:
                    full = f"{origin}.{alias.name}"
                    deps.add(full if full in paths else origin)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycle_in_the_package():
    """The layers import only downwards: the shared data types sit below the modules
    that use them, so no module imports one that imports it back (even in a function)."""
    graph = import_graph()
    assert len(graph) > 40 and graph[f"{PACKAGE}.verdict"]   # the whole package was read
    assert cycles(graph) == []


def test_the_cycle_guard_sees_a_cycle_through_a_function_import(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n    return c\n")
    (pkg / "c.py").write_text("import tractor_tasks.a\n")
    (pkg / "d.py").write_text("from . import a\n")   # imports into the cycle: not in it
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    graph = import_graph()
    assert graph["tractor_tasks.c"] == {"tractor_tasks.a"}
    assert cycles(graph) == [["tractor_tasks.a", "tractor_tasks.b", "tractor_tasks.c"]]


def too_many_parameters() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + \
                    (a.vararg is not None) + (a.kwarg is not None)
                if n > MAX_PARAMS:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} "
                                 f"{getattr(node, 'name', 'lambda')}: {n}")
    return found


def test_no_function_takes_more_than_12_parameters():
    """A function that needs more takes a context object (supervise.PassStart, Watch)."""
    assert too_many_parameters() == []


def test_the_parameter_guard_counts_every_kind(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text(
        "def ok(a, b, c, d, e, f, g, h, i, j, k, l):\n    pass\n\n\n"
        "class C:\n    def wide(self, a, /, b, *args, c, d, e, f, g, h, i, j, **kw):\n"
        "        pass\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert too_many_parameters() == ["m.py:6 wide: 13"]
