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

# Files made or moved outside fsutil on purpose, (module, function, call) -> why; an
# entry matching no write fails test_every_write_goes_through_fsutil (stale).
ALLOWED_WRITES = {
    ("history.py", "History._check_real", "os.open"):
        "makes the history's SQLite file empty (O_EXCL|O_NOFOLLOW) before sqlite opens "
        "it, so sqlite never follows a link planted there; sqlite writes the file",
    ("probelog.py", "_Stream.create", "os.open"):
        "makes the probe's results.jsonl empty (O_RDONLY|O_CREAT|O_EXCL|O_NOFOLLOW) and "
        "keeps the fd to read what the probe appends: the supervisor writes nothing",
    ("sharding.py", "ShardPlan.keep", "shutil.move"):
        "moves the collection pass's dir (its pass's files) into the run dir whole: a "
        "rename, no file written",
    ("supervise.py", "keep_tmp_writes", "shutil.move"):
        "moves what the contained run wrote to its private /tmp (the target's files) "
        "into the pass dir: no file of the tool's written",
}
OPENS_FOR_WRITING = {"O_CREAT", "O_WRONLY", "O_RDWR", "O_APPEND", "O_TRUNC"}
SHUTIL_WRITES = {"copyfile", "copy", "copy2", "copytree", "move"}
MODE = re.compile(r"([rwxabtU+]{1,4})([:|]\w*)?")   # tarfile's "w:gz", "r|" too


def _writes_for(call: ast.Call, method: bool) -> bool:
    """An open's mode writes: open(file, mode), os.fdopen(fd, mode), tarfile.open(...,
    mode=), and a Path's p.open(mode) (a method: its first argument). A mode it cannot
    read (a name) counts as writing."""
    at = 0 if method else 1
    modes = [k.value for k in call.keywords if k.arg == "mode"] + call.args[at:at + 1]
    for mode in modes:
        if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)):
            return True
        m = MODE.fullmatch(mode.value)
        if m is None or set(m.group(1)) & set("wax+"):
            return True
    return False


def _imports(tree) -> tuple[dict, dict]:
    """Local names of modules (`import shutil as sh`) and of names imported from one
    (`from shutil import copyfile as cf`)."""
    modules, names = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:   # `import os.path` binds os
                top = a.name.split(".")[0]
                modules[a.asname or top] = a.name if a.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = (node.module, a.name)
    return modules, names


def _module_constants(tree) -> dict:
    return {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def _flags_write(flags, constants: dict) -> bool:
    """os.open's flags name a flag that writes (os.O_CREAT, getattr(os, "O_TRUNC", 0));
    a module-level constant's name is looked up; flags it cannot read (a parameter, a
    local) count as writing."""
    if flags is None:
        return False
    if isinstance(flags, ast.Name) and flags.id in constants:
        flags = constants[flags.id]
    nodes = list(ast.walk(flags))
    used = {getattr(n, "attr", None) or getattr(n, "id", None) or getattr(n, "value", None)
            for n in nodes if isinstance(n, (ast.Attribute, ast.Name, ast.Constant))}
    unread = any(isinstance(n, ast.Name) and n.id not in ("os", "getattr") for n in nodes)
    return bool(used & OPENS_FOR_WRITING) or unread


def _write_kind(node: ast.Call, modules: dict, names: dict, constants: dict) -> str | None:
    """What a call writes with: write_text/write_bytes, json.dump, open/fdopen for
    writing (open of an fd number, a std stream re-opened, aside), a Path's open for
    writing, touch, os.open with a writing flag (on /dev/null aside), shutil's copies
    and move."""
    f = node.func
    if isinstance(f, ast.Attribute):
        owner = modules.get(getattr(f.value, "id", None))
        qual = f"{owner}.{f.attr}" if owner else None
        name, method = f.attr, owner is None
    else:
        name = getattr(f, "id", "")
        owner, orig = names.get(name, (None, name))
        qual = f"{owner}.{orig}" if owner else None
        method = False
    if qual == "os.open":
        first = node.args[0] if node.args else None
        devnull = isinstance(first, ast.Attribute) and first.attr == "devnull"
        flags = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "flags"), None)
        return qual if _flags_write(flags, constants) and not devnull else None
    if qual and qual.split(".")[0] == "shutil" and qual.split(".")[1] in SHUTIL_WRITES:
        return qual
    if name in ("write_text", "write_bytes") or (name == "touch" and method):
        return name
    if name == "dump" and qual == "json.dump":
        return name
    if name in ("open", "fdopen") and _writes_for(node, method):
        first = node.args[0] if node.args else None
        fd = isinstance(first, ast.Constant) and isinstance(first.value, int)
        own = isinstance(first, ast.Call) and getattr(first.func, "id", "") == "open_own"
        return None if fd or own else name
    return None


def _writes() -> list[tuple[str, int, str, str]]:
    """(module, line, call, enclosing function) of every write outside fsutil.py."""
    found = []
    for rel, tree in _sources():
        if rel.name == "fsutil.py":
            continue
        modules, names = _imports(tree)
        constants = _module_constants(tree)

        def visit(node, where):
            for child in ast.iter_child_nodes(node):
                inner = where
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    inner = f"{where}.{child.name}" if where else child.name
                if isinstance(child, ast.Call):
                    kind = _write_kind(child, modules, names, constants)
                    if kind:
                        found.append((str(rel), child.lineno, child.col_offset, kind, where))
                visit(child, inner)
        visit(tree, "")
    return [(rel, line, kind, where) for rel, line, _, kind, where in sorted(found)]


def writes_outside_fsutil() -> list[str]:
    """Writes outside fsutil.py that ALLOWED_WRITES does not name."""
    return [f"{rel}:{line}: {kind}" for rel, line, kind, where in _writes()
            if (rel, where, kind) not in ALLOWED_WRITES]


def allowed_writes_not_found() -> list[tuple[str, str, str]]:
    """ALLOWED_WRITES entries that match no write any more (a stale exemption)."""
    seen = {(rel, where, kind) for rel, _, kind, where in _writes()}
    return sorted(set(ALLOWED_WRITES) - seen)


def test_every_write_goes_through_fsutil():
    """The tool's files are written by fsutil (atomic_write, write_json, open_own,
    open_lock, append_text) only, but for the few ALLOWED_WRITES (each says why), and
    each of those is still there (a stale exemption is removed, not kept)."""
    assert writes_outside_fsutil() == []
    assert allowed_writes_not_found() == []


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


def test_the_write_guard_sees_path_open_os_open_and_shutil(tmp_path, monkeypatch):
    """Path.open for writing, os.open with a flag that writes, shutil's copies and move
    (by module, alias or imported name) and Path.touch are writes too; a read, /dev/null
    and an fd's reopen are not."""
    (tmp_path / "rundirs.py").write_text("")
    (tmp_path / "rogue.py").write_text(
        "import os, tarfile, shutil as sh\n"
        "from shutil import copyfile as cf\n"
        "READ = os.O_RDONLY | os.O_NOFOLLOW\n"
        "def f(p, q, flags):\n"
        "    p.open('w'), p.open(mode='a'), p.open('rb'), p.open()\n"
        "    os.open(p, os.O_WRONLY | os.O_CREAT, 0o644), os.open(p, READ)\n"
        "    os.open(os.devnull, os.O_WRONLY), os.open(p, flags=os.O_RDWR)\n"
        "    sh.copyfile(p, q), sh.copy(p, q), sh.copy2(p, q), sh.move(p, q)\n"
        "    cf(p, q), p.touch(), os.open(p, flags)\n"
        "    open(p, flags), open(p, 'rb'), p.open(flags), tarfile.open(p, 'w:gz')\n"
        "    tarfile.open(fileobj=q, mode='r|')\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert writes_outside_fsutil() == [
        "rogue.py:5: open", "rogue.py:5: open", "rogue.py:6: os.open", "rogue.py:7: os.open",
        "rogue.py:8: shutil.copyfile", "rogue.py:8: shutil.copy", "rogue.py:8: shutil.copy2",
        "rogue.py:8: shutil.move", "rogue.py:9: shutil.copyfile", "rogue.py:9: touch",
        "rogue.py:9: os.open", "rogue.py:10: open", "rogue.py:10: open",
        "rogue.py:10: open"]


def test_the_write_guard_allows_only_what_it_names(tmp_path, monkeypatch):
    """An exemption is one function's one kind of write: the same call elsewhere is
    caught, and an exemption that matches nothing is reported as stale."""
    (tmp_path / "rundirs.py").write_text("")
    (tmp_path / "rogue.py").write_text(
        "import os\n"
        "class _Stream:\n"
        "    def create(self, p):\n"
        "        return os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL)\n"
        "    def other(self, p):\n"
        "        return os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL)\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "ALLOWED_WRITES", {
        ("rogue.py", "_Stream.create", "os.open"): "made empty to read",
        ("rogue.py", "gone", "shutil.move"): "a move since removed"})
    assert writes_outside_fsutil() == ["rogue.py:6: os.open"]
    assert allowed_writes_not_found() == [("rogue.py", "gone", "shutil.move")]
