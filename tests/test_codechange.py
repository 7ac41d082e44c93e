"""codechange: what a change to a module does, from its two syntax trees (fast: pure
functions on source text), and where a name bound differently reaches; and the rules
for files outside the package (footprints._inert, _mentioned_by)."""
from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from tractor_tasks import footprints
from tractor_tasks.codechange import module_change, reach, uses

OLD = textwrap.dedent('''\
    """The module."""
    import os
    try:
        import fastjson as json
    except ImportError:
        json = None
    X = 1


    class C:
        """A class."""
        a = 1
        b: int = 2

        def m(self, k=1):
            # a comment
            return self.a + X


    def f():
        """Its doc."""
        def g():
            return 2
        return g() + X
''')


@pytest.mark.parametrize("edit, funcs, names, effects", [
    (("# a comment", "# another comment"), set(), set(), 0),
    (('"""Its doc."""', '"""Another doc."""'), set(), set(), 0),
    (("return g() + X", "return (g()\n            + X)"), set(), set(), 0),   # layout
    (("return 2", "return 3"), {"f.<locals>.g"}, set(), 0),      # the nested one only
    (("return g() + X", "return g() - X"), {"f"}, set(), 0),
    (("X = 1", "X = 2"), set(), {"X"}, 0),
    (("    a = 1", "    a = 5"), {"C"}, {"a", "C"}, 0),      # the class is another
    (("b: int = 2", "b: str = 2"), {"C"}, {"b", "C"}, 0),    # a field's type (msgspec)
    (("k=1", "k=2"), {"C.m"}, set(), 0),                    # a header: its callers ran it
    (("json = None", "json = False"), set(), {"json"}, 0),  # a try/except of bindings
    (("X = 1", "X = 1\nos.environ.setdefault('A', '1')"), set(), set(), 1),
    (("import os", "import os, sys"), set(), {"os", "sys"}, 0),
])
def test_a_change_is_read_from_the_syntax_trees(edit, funcs, names, effects):
    new = OLD.replace(*edit)
    assert new != OLD
    ch = module_change(OLD, new)
    assert ch.funcs | ch.classes == funcs
    assert ch.names == names
    assert len(ch.effects) == effects


def test_a_new_and_a_deleted_function():
    new = OLD.replace("def f():", "def h():")
    ch = module_change(OLD, new)
    assert {"f", "f.<locals>.g", "h", "h.<locals>.g"} <= ch.funcs
    assert ch.gone == {"f", "f.<locals>.g"}
    assert module_change(None, "Y = 1\ndef k():\n    return Y\n").names == {"Y", "k"}


def test_a_name_reaches_the_functions_that_use_it_through_module_level_bindings():
    files = {
        "pkg/a.py": uses("X = 1\n"),
        "pkg/b.py": uses("from pkg.a import X\nY = X + 1\nclass S:\n    f: 'T' = Y\n"
                         "REG = {}\nREG.update(k=Y)\nprint(Y)\n"),
        "pkg/c.py": uses("from pkg.b import Y, S\n\ndef uses_y():\n    return Y\n\n"
                         "def uses_s(m: X):\n    return S()\n\n"
                         "def by_string(o):\n    return getattr(o, 'Y')\n\n"
                         "def only_annotated(v: X) -> X:\n    z: X = 1\n    return z\n"
                         "def by_default(v=[Y]):\n    return v\n"),
    }
    r = reach({"X"}, files)
    assert {"X", "Y", "S", "f"} <= r.names
    got = {q for _, q, _ in r.funcs}
    assert {"uses_y", "uses_s", "by_string", "by_default"} <= got
    assert "only_annotated" not in got        # annotations in a function are not run
    assert "REG" in r.names                   # REG.update(k=Y): REG holds another
    assert r.effects == [("pkg/b.py", "Y")]   # print(Y): an effect at import


def test_files_outside_the_package():
    target = SimpleNamespace(package="pkg", tests_dir="tests")
    srcs = {"tests/test_docs.py": "import os\nD = os.path.join('examples', 'x')\n"
                                  "def test_readme():\n    open('README.md')\n",
            "tests/test_other.py": "def test_x():\n    pass\n",
            "pkg/core.py": "X = 1\n"}
    def sources():
        return srcs
    assert footprints._inert(target, "docs/guide.rst", sources).startswith("documentation")
    assert footprints._inert(target, ".github/workflows/ci.yml", sources).startswith(
        "the CI's configuration")
    assert footprints._inert(target, "README.md", sources) == ""     # a test reads it
    assert footprints._inert(target, "pyproject.toml", sources) == ""
    assert footprints._inert(target, "pkg/notes.md", sources) == ""  # in the package
    assert footprints._mentioned_by(target, "examples/a/b.py", sources) == ["test_docs.py"]
    assert footprints._mentioned_by(target, "README.md", sources) == ["test_docs.py"]
    assert footprints._mentioned_by(target, "setup.cfg", sources) == []


def test_a_file_outside_the_package_named_by_a_package_function():
    """tractor's tests reach examples/ through the package: `_testing.examples_dir()`
    holds the string 'examples'. The tests that executed it are what an example's change
    can break; a function that does not name it is not one."""
    target = SimpleNamespace(package="pkg", tests_dir="tests")
    srcs = {"pkg/_testing.py": "def examples_dir():\n    return root() / 'examples'\n\n"
                               "def other():\n    return 'exampl'\n",
            "pkg/conf.py": "def cfg():\n    return open('settings.toml')\n"}
    got = footprints._named_in_package(target, "examples/debugging/x.py", lambda: srcs)
    assert got == [("pkg/_testing.py", "examples_dir", "examples")]
    assert footprints._named_in_package(target, "settings.toml", lambda: srcs) == [
        ("pkg/conf.py", "cfg", "settings.toml")]
    assert footprints._named_in_package(target, "pkg/x.py", lambda: srcs) == []


@pytest.mark.parametrize("nodeid, run", [
    ("tests/test_rpc.py::test_rpc_errors[this_mod]", "tests/test_rpc.py::test_rpc_errors[this_mod]"),
    ("tests/a.py::test_s[start_method=trio-stream_func=<function async_gen_stream>]",
     "tests/a.py::test_s"),
    ("tests/a.py::TestX::test_y[x=<object>-1]", "tests/a.py::TestX::test_y"),
    ("tests/a.py::test_plain", "tests/a.py::test_plain"),
])
def test_affected_runs_a_recorded_id_or_its_function_when_the_history_masked_it(nodeid, run):
    """tractor's `test_stream_from_single_subactor[...stream_func=<function ... at 0x7f..>]`
    is kept without its address: pytest knows no such id (it ran nothing, exit 2, on
    tractor), so such a test runs as its function; any other id runs as recorded."""
    assert footprints._runnable(nodeid) == run


def test_a_change_to_all_binds_the_names_it_lists():
    """`from pkg.mod import *` binds what __all__ lists: a name added or dropped there
    is bound differently in every star importer."""
    ch = module_change("__all__ = ['a']\n", "__all__ = ['a', 'b']\n")
    assert {"__all__", "a", "b"} <= ch.names


@pytest.mark.slow
def test_a_module_that_is_not_utf8_is_a_change_of_the_file_not_a_traceback(tmp_path):
    import subprocess
    root = tmp_path / "r"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "m.py").write_bytes(b"# -*- coding: latin-1 -*-\nX = '\xe9'\n")
    for cmd in (["init", "-q"], ["add", "-A"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m"]):
        subprocess.run(["git", *cmd], cwd=root, check=True, capture_output=True)
    (root / "pkg" / "m.py").write_bytes(b"# -*- coding: latin-1 -*-\nX = '\xe8'\n")
    units = footprints.diff_units(root, "HEAD", "pkg")
    assert [(u.file, u.qual, u.why) for u in units] == [
        ("pkg/m.py", None, "a change (the file does not parse)")]


@pytest.mark.slow
def test_a_file_this_python_cannot_parse_is_read_by_the_targets_interpreter():
    """tractor's tests/devx/conftest.py has a 3.12 `type` statement; this tool may run
    on 3.11. Read by the target's own interpreter it uses what it uses, not every name
    (which selected every devx test for any module-level change)."""
    import sys
    from tractor_tasks.footprints import Unit, _reach
    from tractor_tasks.interpreters import find_python
    newer = find_python("3.13") or find_python("3.12")
    assert newer is not None, "this machine has pyenv's 3.12 and 3.13"
    target = SimpleNamespace(package="pkg", tests_dir="tests")
    srcs = {"pkg/a.py": "LIMIT = 1\nOTHER = 2\n",
            "tests/devx/conftest.py": "type Pair = tuple[int, int]\n\n"
                                      "def fixture_a():\n    from pkg.a import OTHER\n"
                                      "    return OTHER\n"}
    units = [Unit("pkg/a.py", None, "names", ("LIMIT",))]
    here = _reach(target, units, srcs)
    if sys.version_info < (3, 12):      # this Python cannot parse it: every name
        assert ("tests/devx/conftest.py", "any name (it does not parse here)") in here.effects
    there = _reach(target, units, srcs, python=newer.path)
    assert there.effects == [] and not any(f == "tests/devx/conftest.py"
                                           for f, _, _ in there.funcs), there
    used = _reach(target, [Unit("pkg/a.py", None, "names", ("OTHER",))], srcs,
                  python=newer.path)
    assert ("tests/devx/conftest.py", "fixture_a", "OTHER") in used.funcs


def test_a_local_name_is_not_the_modules_name():
    """Python's rule: a name bound in a function is local throughout it. tractor's
    tractor/__init__.py binds `_` at module level; `for _ in range(3)` in a test is not
    a use of it (it selected 215 tests through one conftest function)."""
    u = uses("def f(a, b=X):\n    x = 2\n    for _ in range(3):\n        pass\n"
             "    return a + x + X + obj.x\n"
             "def g():\n    global X\n    X = 5\n    return X\n"
             "def h():\n    _ = X\n    def inner():\n        return _ + Y\n    return inner\n")
    assert u.funcs["f"] == {"X", "obj", "range", "x"}   # `.x`, an attribute, still counts
    assert u.funcs["g"] == {"X"}                         # global: the module's X
    assert u.funcs["h"] == {"X"} and u.funcs["h.<locals>.inner"] == {"Y"}   # a closure
    r = reach({"_"}, {"pkg/a.py": u})
    assert r.funcs == []


def test_a_container_changed_in_place_at_import_is_that_names_change():
    """`if HAS_UDS: _address_protos.append(UDSAddress)` (tractor/discovery/_addr.py):
    what the list holds changed, and the dict built from it; not every test that
    imported the module."""
    old = "HAS = True\nP = [1]\nif HAS:\n    P.append(2)\nT = {p: p for p in P}\n"
    ch = module_change(old, old.replace("P.append(2)", "P.append(3)"))
    assert ch.names == {"P"} and ch.effects == []
    files = {"pkg/a.py": uses(old), "pkg/b.py": uses("from pkg.a import T\n\n"
                                                    "def get(k):\n    return T[k]\n")}
    assert ("pkg/b.py", "get", "T") in reach({"P"}, files).funcs
    call = module_change(old, old.replace("P.append(2)", "print(2)"))
    assert len(call.effects) == 1   # any other call at import stays an effect


def test_comprehension_targets_and_all_strings():
    """tractor/__init__.py: `__all__ = tuple(name for name in globals() if not
    name.startswith('_')) + ('to_asyncio',)` lists 'to_asyncio', not '_'; and
    `[f() for _ in range(n)]` reads no module-level `_`."""
    old = "__all__ = tuple(n for n in globals() if not n.startswith('_')) + ('a',)\n"
    ch = module_change(old, old.replace("('a',)", "('a', 'b')"))
    assert ch.names == {"__all__", "a", "b"}
    u = uses("def f(n):\n    return [g() for _ in range(n)]\n")
    assert u.funcs["f"] == {"g", "range"}
