"""rundirs.py owns every name of the on-disk layout, and fsutil.py every write. Fast:
reads src/ only (the probe, which runs in the target's interpreter, aside)."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import tractor_tasks

SRC = Path(tractor_tasks.__file__).parent
RUNDIRS = SRC / "rundirs.py"
# code that runs inside the target's interpreter keeps its own literals (a test of the
# probe checks they are rundirs' names)
INSIDE_TARGET = ("probe", "recorder")
# file names that are not ours: pip's record of where a package was installed from
NOT_OURS = {"direct_url.json"}
FILEISH = re.compile(r"[\w*-]\.(json|jsonl|xml|sqlite|txt|log)\b")
PATH_CALLS = {"glob", "rglob", "with_name", "joinpath", "join"}   # and Path(...)


def _layout_names() -> set[str]:
    """Every string rundirs.py assigns at module or class level (the layout's names)."""
    names = set()
    tree = ast.parse(RUNDIRS.read_text())
    bodies = [tree.body] + [n.body for n in tree.body if isinstance(n, ast.ClassDef)]
    for body in bodies:
        for node in body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                for c in ast.walk(node.value):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str) and \
                            "\n" not in c.value:
                        names.add(c.value)
    return names


def _sources():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in INSIDE_TARGET or path == SRC / RUNDIRS.name:
            continue
        yield rel, ast.parse(path.read_text(), str(path))


def _docstrings(tree) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and node.body and \
                isinstance(node.body[0], ast.Expr) and \
                isinstance(node.body[0].value, ast.Constant):
            out.add(id(node.body[0].value))
    return out


def _in_path_context(node, parents) -> bool:
    up = parents.get(node)
    if isinstance(up, ast.JoinedStr):
        up = parents.get(up)
    if isinstance(up, ast.BinOp) and isinstance(up.op, ast.Div):
        return True
    if not isinstance(up, ast.Call):
        return False
    f = up.func
    return (isinstance(f, ast.Attribute) and f.attr in PATH_CALLS) or \
        (isinstance(f, ast.Name) and f.id in ("Path", "PurePath"))


def file_name_literals() -> list[str]:
    names = _layout_names()
    # a name with a dot or a dash is found anywhere (a message too); a plain word
    # ("runs", "last", "cache") only where it makes a path
    marked = [n for n in names if re.search(r"[.\-]", n) and len(n) > 2]
    tokens = [re.compile(r"(?<![\w.-])" + re.escape(n) + r"(?![\w])") for n in marked]
    found = []
    for rel, tree in _sources():
        skip = _docstrings(tree)
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or \
                    id(node) in skip:
                continue
            text, where = node.value, f"{rel}:{node.lineno}"
            hit = next((m.pattern for m in tokens if m.search(text)), None)
            if hit is None:
                fileish = [m.group(0) for m in re.finditer(r"[\w*.-]+", text)
                           if FILEISH.search(m.group(0)) and m.group(0) not in NOT_OURS]
                hit = fileish[0] if fileish else None
            # (an absolute path is the system's: /tmp, /proc)
            if hit is None and _in_path_context(node, parents) and \
                    not text.startswith("/") and any(part in names for part in text.split("/")):
                hit = text
            if hit is not None:
                found.append((str(rel), node.lineno, f"{where}: {text!r}"))
    return [f for *_, f in sorted(found)]


def test_no_file_name_of_the_layout_is_spelled_outside_rundirs():
    """Every name of the state dir, the run dir and the pass dir (and the tool's other
    files) is spelled in rundirs.py only: the rest use its constants and properties."""
    assert file_name_literals() == []


def test_the_name_guard_sees_a_literal_outside_rundirs(tmp_path, monkeypatch):
    """The guard above can fail: a module that spells run.json, a made-up file name or
    a path word of the layout is caught; one in a docstring or the probe is not."""
    (tmp_path / "rundirs.py").write_text(RUNDIRS.read_text())
    (tmp_path / "rogue.py").write_text(
        '"""reads run.json"""\n'
        'def f(d):\n'
        '    a = d / "runs"\n'
        '    b = d.glob(f"x/{d}/run.json")\n'
        '    c = "see notes.txt"\n'
        '    e = Path(d, "cells")\n'
        '    return a, b, c, e, d.runs, "runs are kept"\n')
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "p.py").write_text('X = "session.json"\n')
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "RUNDIRS", tmp_path / "rundirs.py")
    assert file_name_literals() == ["rogue.py:3: 'runs'", "rogue.py:4: '/run.json'",
                                    "rogue.py:5: 'see notes.txt'", "rogue.py:6: 'cells'"]
    assert "rundirs.py" not in str(file_name_literals())


# -- writes ---------------------------------------------------------------------------

def _mode(call: ast.Call, index: int) -> str:
    args = list(call.args)
    arg = args[index] if len(args) > index else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "r"


def writes_outside_fsutil() -> list[str]:
    """Calls that write a file: write_text/write_bytes, json.dump, open/fdopen for
    writing (open of an fd number, a std stream re-opened, aside)."""
    found = []
    for rel, tree in _sources():
        if rel.name == "fsutil.py":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            bad = name in ("write_text", "write_bytes") or (
                name == "dump" and isinstance(f, ast.Attribute)
                and getattr(f.value, "id", "") == "json")
            if name in ("open", "fdopen") and set(_mode(node, 1)) & set("wax+"):
                first = node.args[0] if node.args else None
                fd = isinstance(first, ast.Constant) and isinstance(first.value, int)
                own = isinstance(first, ast.Call) and getattr(first.func, "id", "") == "open_own"
                bad = bad or not (fd or own)
            if bad:
                found.append(f"{rel}:{node.lineno}: {name}")
    return found


def test_every_write_goes_through_fsutil():
    """The tool's files are written by fsutil (atomic_write, write_json, open_own,
    open_lock, append_text) only."""
    assert writes_outside_fsutil() == []


def test_the_write_guard_sees_a_direct_write(tmp_path, monkeypatch):
    (tmp_path / "rundirs.py").write_text("")
    (tmp_path / "rogue.py").write_text(
        "import json, os\n"
        "def f(p, d):\n"
        "    p.write_text('x')\n"
        "    json.dump(d, open(p, 'w'))\n"
        "    open(1, 'w', closefd=False)\n"
        "    return open(p).read(), os.fdopen(p, mode='a')\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert writes_outside_fsutil() == ["rogue.py:3: write_text", "rogue.py:4: dump",
                                       "rogue.py:4: open", "rogue.py:6: fdopen"]
