"""Adversarial recall checks for `invoke affected`'s change reading (fast: pure
functions on source text). Each case is a small, realistic edit that makes some code
behave differently (shown by running both versions here), and asserts that the rules
(codechange.module_change / reach, footprints._Names) see it: a change that runs
differently must never be read as "no change", and the names it rebinds must reach
the code that can observe them."""
from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from tractor_tasks import footprints
from tractor_tasks.codechange import module_change, reach, uses
from tractor_tasks.footprints import Footprint, Unit, _Names


def _run(src: str) -> dict:
    """Run a module's source as a module of its own (not inheriting this file's
    `from __future__` flags); its namespace."""
    mod = types.ModuleType("adv_mod")
    sys.modules["adv_mod"] = mod
    try:
        exec(compile(textwrap.dedent(src), "adv_mod.py", "exec", dont_inherit=True),
             mod.__dict__)
    finally:
        sys.modules.pop("adv_mod", None)
    return mod.__dict__


def _seen(ch) -> bool:
    return bool(ch.funcs or ch.classes or ch.names or ch.effects)


# -- the order of statements is code ---------------------------------------------------

FIELDS_OLD = """
from dataclasses import dataclass

@dataclass
class Spec:
    name: str
    uid: int = 0
"""
FIELDS_NEW = FIELDS_OLD.replace("    name: str\n    uid: int = 0\n",
                                "    uid: int = 0\n    name: str\n")


def test_moving_a_field_is_a_change_of_the_class():
    """Swapping two fields of a dataclass (a msgspec Struct alike) changes the class:
    here its import fails (a field without a default after one with it); with two
    plain fields, positional construction and `match` patterns change. The rules read
    it as "only layout; nothing to run" (and so never run the import check)."""
    assert _run(FIELDS_OLD)["Spec"]("a").name == "a"
    with pytest.raises(TypeError):
        _run(FIELDS_NEW)
    ch = module_change(textwrap.dedent(FIELDS_OLD), textwrap.dedent(FIELDS_NEW))
    assert "Spec" in ch.classes and "Spec" in ch.names


def test_moving_a_binding_below_its_use_is_a_change():
    old, new = "LIMIT = 4\nHALF = LIMIT // 2\n", "HALF = LIMIT // 2\nLIMIT = 4\n"
    assert _run(old)["HALF"] == 2
    with pytest.raises(NameError):
        _run(new)
    ch = module_change(old, new)
    assert _seen(ch) and ch.import_time


def test_moving_a_def_below_a_module_level_call_is_a_change():
    old = "def _default():\n    return 3\n\nTIMEOUT = _default()\n"
    new = "TIMEOUT = _default()\n\ndef _default():\n    return 3\n"
    with pytest.raises(NameError):
        _run(new)
    assert _seen(module_change(old, new))


def test_swapping_the_bodies_of_a_conditional_definition_is_a_change():
    old = textwrap.dedent("""
        import sys
        if sys.platform != "no-such-os":
            def backend():
                return "fork"
        else:
            def backend():
                return "spawn"
    """)
    new = old.replace('"fork"', '"TMP"').replace('"spawn"', '"fork"').replace('"TMP"', '"spawn"')
    assert _run(old)["backend"]() != _run(new)["backend"]()
    ch = module_change(old, new)
    assert "backend" in ch.funcs


def test_swapping_two_definitions_of_one_method_is_a_change():
    """The last `def` of a name wins: which one is last is code."""
    old = textwrap.dedent("""
        class Chan:
            def send(self):
                return "old"

            def send(self):
                return "new"
    """)
    new = old.replace('"old"', '"TMP"').replace('"new"', '"old"').replace('"TMP"', '"new"')
    assert _run(old)["Chan"]().send() != _run(new)["Chan"]().send()
    assert "Chan.send" in module_change(old, new).funcs


# -- a method added to a class changes what its instances do ---------------------------

def test_a_new_dunder_method_reaches_the_code_that_makes_instances():
    """A new `__post_init__` (or `__eq__`: instances no longer hashable) runs for every
    instance, called by no code that names it: the code that creates instances (by the
    class's name) is what can see it. Today only users of the name `__post_init__`
    are looked for."""
    old = textwrap.dedent("""
        from dataclasses import dataclass

        @dataclass
        class Addr:
            port: int
    """)
    new = old + "\n    def __post_init__(self):\n        assert self.port > 0\n"
    assert _run(old)["Addr"](0).port == 0
    with pytest.raises(AssertionError):
        _run(new)["Addr"](0)
    ch = module_change(old, new)
    files = {"pkg/addr.py": uses(new),
             "pkg/use.py": uses("from pkg.addr import Addr\n\n"
                                "def any_port():\n    return Addr(0)\n")}
    got = {(f, q) for f, q, _ in reach(ch.names, files).funcs}
    assert ("pkg/use.py", "any_port") in got


def test_a_new_eq_makes_instances_unhashable_and_reaches_their_makers():
    old = "class Aid:\n    def __init__(self, uid):\n        self.uid = uid\n"
    new = old + "\n    def __eq__(self, other):\n        return self.uid == other.uid\n"
    assert {_run(old)["Aid"](1)}
    with pytest.raises(TypeError):
        {_run(new)["Aid"](1)}
    ch = module_change(old, new)
    files = {"pkg/aid.py": uses(new),
             "pkg/reg.py": uses("from pkg.aid import Aid\n\n"
                                "def register(peers, uid):\n    peers.add(Aid(uid))\n")}
    got = {(f, q) for f, q, _ in reach(ch.names, files).funcs}
    assert ("pkg/reg.py", "register") in got


# -- a compiler flag changes every function of the module ------------------------------

def test_a_future_import_is_a_change_to_the_whole_module():
    """`from __future__ import annotations` turns every annotation of the module into a
    string (what `typing.get_type_hints`, `inspect.get_annotations(eval_str=True)` in
    tractor's `@context`, msgspec and dataclasses read). Today it is a binding of the
    name `annotations`, which no code uses: nothing is selected."""
    old = "import typing\n\ndef ep(ctx: typing.Any) -> int:\n    return 1\n"
    new = "from __future__ import annotations\n" + old
    assert _run(old)["ep"].__annotations__ != _run(new)["ep"].__annotations__
    ch = module_change(old, new)
    assert ch.effects or "ep" in ch.funcs


# -- tests' own helpers and module-level code ------------------------------------------

def _names_why(files: dict[str, str], units: list[Unit], nodeid: str) -> str | None:
    target = SimpleNamespace(tests_dir="tests", package="pkg")
    return _Names(target, units, lambda: files).why(nodeid, Footprint())


CHANGED = [Unit("pkg/consts.py", None, "names bound differently at import: REG_PORT",
                ("REG_PORT",))]


def test_a_conftest_fixture_that_uses_a_changed_name_selects_the_tests_under_it():
    """A fixture in tests/conftest.py reads a package constant (a default port, a
    path): the tests it serves run that code in pytest, which no footprint records
    (only the package's files are). Today only the test's own file is looked at."""
    files = {
        "pkg/consts.py": "REG_PORT = 1616\n",
        "tests/conftest.py": "import pytest\nfrom pkg.consts import REG_PORT\n\n"
                             "@pytest.fixture\ndef reg_addr():\n"
                             "    return ('127.0.0.1', REG_PORT)\n",
        "tests/test_discovery.py": "def test_find(reg_addr):\n    assert reg_addr\n",
    }
    assert _names_why(files, CHANGED, "tests/test_discovery.py::test_find")


def test_a_test_modules_own_module_level_use_of_a_changed_name_selects_its_tests():
    """`pytestmark = skipif(... pkg.HAS_UDS ...)` or a parametrize list built at the
    test module's top: the module-level statement of a test file runs at collection,
    which no footprint records."""
    files = {
        "pkg/consts.py": "REG_PORT = 1616\n",
        "tests/test_ports.py": "import pytest\nfrom pkg import consts\n\n"
                               "pytestmark = pytest.mark.skipif(consts.REG_PORT < 1024,"
                               " reason='privileged')\n\n"
                               "def test_bind():\n    pass\n",
    }
    assert _names_why(files, CHANGED, "tests/test_ports.py::test_bind")


def test_a_test_helper_that_does_not_parse_here_counts_as_using_every_name():
    """tractor's tests/devx/conftest.py uses a 3.12 `type` statement: below 3.12 it does
    not parse, and its uses were silently skipped."""
    files = {
        "pkg/consts.py": "REG_PORT = 1616\n",
        "tests/devx/conftest.py": "type Spawner = int\nfrom pkg.consts import REG_PORT\n"
                                  "def (:\n",
        "tests/devx/test_debugger.py": "def test_pause():\n    pass\n",
    }
    assert _names_why(files, CHANGED, "tests/devx/test_debugger.py::test_pause")
    assert not _names_why(files, CHANGED, "tests/test_other.py::test_x")


# -- and what stays unselected (the fixes above cost no precision here) -----------------

def test_functions_only_moved_are_no_change_unless_import_time_code_uses_them():
    a = "def helper():\n    return 1\n\n"
    b = "def api():\n    return helper()\n\n"
    assert not _seen(module_change(a + b, b + a))    # bodies read globals when called
    dec = "@helper\ndef api():\n    pass\n\n"         # a decorator runs at import
    assert "api" in module_change(a + dec, dec + a).funcs


def test_one_name_of_a_multi_name_import_reaches_only_its_own_binding():
    """`from ._trace import (_pause_msg as _pause_msg, pause as pause, ...)` in a package
    `__init__`: a changed `_pause_msg` is not a changed `pause` (on tractor the whole
    statement's names were followed, then everything that imports them: ~290 names)."""
    files = {
        "pkg/_trace.py": uses("_pause_msg = 'x'\n\ndef pause():\n    return 1\n"),
        "pkg/__init__.py": uses("from pkg._trace import (\n    _pause_msg as _pause_msg,\n"
                                "    pause as pause,\n)\n"),
        "pkg/user.py": uses("from pkg import pause\n\ndef run():\n    return pause()\n"),
    }
    r = reach({"_pause_msg"}, files)
    assert "pause" not in r.names
    assert not [q for _, q, _ in r.funcs if q == "run"]


# -- a name bound differently can break the import of another module -------------------

RENAMED = {
    "pkg/__init__.py": "",
    "pkg/a.py": "def open_new():\n    return 1\n",            # was: def open_old()
    "pkg/lazy.py": "from pkg.a import open_old\n\n"            # the importer left behind,
                   "def helper():\n    return 2\n\n"         # not imported by pkg/__init__
                   "def use():\n    return open_old()\n",
    "pkg/extra.py": "import not_installed_here\n",            # never imported here anyway
}


def test_a_module_whose_import_uses_a_renamed_name_is_import_checked():
    """Renaming `open_old` breaks `from pkg.a import open_old` in a module the package's
    `__init__` does not import (tractor's lazy submodules): a test that imports it and
    runs only `helper` fails with ImportError, and executed nothing that uses the name.
    Only the changed modules were imported to check."""
    units = [Unit("pkg/a.py", None, "names bound differently at import: open_new, open_old",
                  ("open_new", "open_old"))]
    target = SimpleNamespace(tests_dir="tests", package="pkg")
    names = _Names(target, units, lambda: RENAMED)
    assert "pkg/lazy.py" in names.imports and "pkg/extra.py" not in names.imports
    out = ("pkg.extra\tModuleNotFoundError: No module named 'not_installed_here'\n"
           "pkg.lazy\tImportError: cannot import name 'open_old' from 'pkg.a'\n")
    assert footprints._names_an_import_error(out, {"open_new", "open_old"}) == \
        "pkg.lazy: ImportError: cannot import name 'open_old' from 'pkg.a'"
    assert footprints._names_an_import_error(out.splitlines()[0], {"open_old"}) is None


@pytest.mark.slow
def test_the_import_check_imports_the_modules_that_use_a_changed_name(tmp_path):
    for rel, src in RENAMED.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(src)
    target = SimpleNamespace(root=tmp_path, package="pkg")
    assert footprints.import_check(target, Path(sys.executable), ["pkg/a.py"]) is None
    err = footprints.import_check(target, Path(sys.executable), ["pkg/a.py"],
                                  ["pkg/lazy.py", "pkg/extra.py"], {"open_old", "open_new"})
    assert err and err.startswith("pkg.lazy: ImportError") and "open_old" in err
    # a module that does not import here whatever changed is no verdict
    assert footprints.import_check(target, Path(sys.executable), ["pkg/a.py"],
                                   ["pkg/extra.py"], {"open_old"}) is None


# -- annotations that code reads -----------------------------------------------------------

ALIAS = [Unit("pkg/_multiaddr.py", None, "names bound differently at import: Multiaddr",
              ("Multiaddr",))]


def test_a_name_used_only_in_annotations_reaches_the_tests_that_introspect_them():
    """tractor's tests/test_lazy_imports.py asserts `get_type_hints(_multiaddr.mk_maddr)
    ['return'] is Any`: rebinding the `Multiaddr = Any` alias fails it, yet the test
    names only `mk_maddr`, and annotations were no use at all."""
    files = {
        "pkg/_multiaddr.py": "from typing import Any\nMultiaddr = str\n\n"
                             "def mk_maddr(addr) -> Multiaddr:\n    return addr\n",
        "tests/test_lazy.py": "from typing import Any, get_type_hints\n"
                              "from pkg import _multiaddr\n\n"
                              "def test_hints():\n    assert get_type_hints("
                              "_multiaddr.mk_maddr)['return'] is Any\n",
        "tests/test_other.py": "def test_x():\n    pass\n",
    }
    assert _names_why(files, ALIAS, "tests/test_lazy.py::test_hints")
    assert not _names_why(files, ALIAS, "tests/test_other.py::test_x")


def test_a_test_modules_context_endpoint_annotated_with_a_changed_name_selects_it():
    """`@tractor.context` evaluates its endpoint's annotations (inspect.get_annotations(
    eval_str=True)) at the test module's import, to find the `Context` parameter."""
    files = {
        "pkg/_multiaddr.py": "Multiaddr = str\n",
        "tests/test_ep.py": "import pkg\nfrom pkg import _multiaddr\n\n"
                            "@pkg.context\nasync def ep(ctx, addr: _multiaddr.Multiaddr):\n"
                            "    pass\n\ndef test_ep():\n    pass\n",
    }
    assert _names_why(files, ALIAS, "tests/test_ep.py::test_ep")


# -- files outside the package ---------------------------------------------------------

def test_a_requirements_file_is_not_documentation():
    """A `.txt` is read as documentation (selects no test unless a test names it); a
    requirements or constraints file pins what the tests run against."""
    target = SimpleNamespace(package="pkg", tests_dir="tests")
    for path in ("requirements.txt", "requirements-test.txt", "constraints.txt",
                 "requirements/dev.txt"):
        assert footprints._inert(target, path, lambda: {}) == "", path
    assert footprints._inert(target, "docs/requirements.txt", lambda: {})   # the docs'
    assert footprints._inert(target, "NOTES.txt", lambda: {})


def test_a_decorator_changed_on_a_def_inside_a_try_is_a_change_of_that_function():
    """A module-level `def` has its header compared (its callers executed it); one in
    an `if`/`try` fallback had only its name followed."""
    old = ("try:\n    from fastpath import encode\nexcept ImportError:\n"
           "    def encode(obj):\n        return repr(obj)\n")
    new = old.replace("    def encode", "    @staticmethod\n    def encode")
    assert "encode" in module_change(old, new).funcs
