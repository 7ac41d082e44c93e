"""Footprints' pure decisions (fast: no process, no git): a diff's hunks mapped to
the functions they touch, a pass's record files attributed to tests, the flags that
hide a process from the recorder."""
from __future__ import annotations

import json
import textwrap

from tractor_tasks.footprints import (Footprint, Unit, _hiding_flags, _hunk_lines,
                                      _units_of_lines, attribute, scopes)

SRC = textwrap.dedent('''\
    X = 1


    class Registrar:
        LIMIT = 3

        @staticmethod
        def find_actor(name,
                       default=None):
            def inner():
                return [n for n in name]
            return inner()


    async def top():
        return X
''')


def test_hunks_map_to_the_innermost_function_else_the_file():
    found = scopes(SRC)
    assert [(s.qual, s.start, s.body, s.end) for s in found] == [
        ("Registrar.find_actor", 7, 10, 12),
        ("Registrar.find_actor.<locals>.inner", 10, 11, 11),
        ("top", 15, 16, 16)]

    def units(*lines):
        return sorted(_units_of_lines("f.py", set(lines), found, ""), key=Unit.key)
    assert units(12) == [Unit("f.py", "Registrar.find_actor")]
    assert units(11) == [Unit("f.py", "Registrar.find_actor.<locals>.inner")]
    assert units(16) == [Unit("f.py", "top")]
    # module level and a class body: the file
    assert [u.qual for u in units(1)] == [None]
    assert [u.qual for u in units(5)] == [None]
    # a decorator or signature runs in the enclosing scope too (here the class body)
    assert [u.qual for u in units(9)] == [None, "Registrar.find_actor"]
    # a nested def's line runs in the function that defines it
    assert [u.qual for u in units(10)] == ["Registrar.find_actor",
                                           "Registrar.find_actor.<locals>.inner"]


def test_hunk_header_lines_old_and_new():
    diff = "@@ -3,2 +3 @@\n-a\n-b\n+c\n@@ -10,0 +9,2 @@\n+d\n+e\n@@ -20 +21,0 @@\n-f\n"
    old, new = _hunk_lines(diff)
    assert old == {3, 4, 10, 20}     # a pure insertion marks the old line it follows
    assert new == {3, 9, 10}


def test_executed_matches_the_function_or_code_nested_in_it():
    fp = Footprint()
    fp.add("p/a.py", "Registrar.find_actor.<locals>.<listcomp>", 11, "subactor 'r'")
    fp.add("p/a.py", "top", 15, "pytest")
    fp.add("p/a.py", "top", 15, "subactor 'r'")
    assert fp.executed("p/a.py", "Registrar.find_actor") == (
        "Registrar.find_actor.<locals>.<listcomp>", ["subactor 'r'"])
    assert fp.executed("p/a.py", "top") == ("top", ["pytest", "subactor 'r'"])
    assert fp.executed("p/a.py", "Registrar") is not None   # a prefix by qualname parts
    assert fp.executed("p/a.py", "to") is None
    assert fp.executed("p/b.py", "top") is None
    back = Footprint.from_blob(fp.to_blob())
    assert back.funcs == fp.funcs and back.files == {"p/a.py"}


def test_flags_that_keep_the_recorder_out():
    assert _hiding_flags(["python", "-I", "-c", "x"]) == "-I"
    assert _hiding_flags(["python", "-BE", "x.py"]) == "-BE"
    assert _hiding_flags(["python", "-S", "-m", "m"]) == "-S"
    assert _hiding_flags(["python", "-B", "-c", "from x import main"]) == ""
    assert _hiding_flags(["python", "-m", "pytest", "-I"]) == ""
    assert _hiding_flags(["python", "script.py", "-E"]) == ""


def _proc(d, name, head, lines):
    (d / name).write_text("P\t" + json.dumps(head) + "\nN\t{\"how\": \"settrace\"}\n"
                          + "".join("\t".join(map(str, ln)) + "\n" for ln in lines))


def test_records_are_attributed_by_test_phase_and_lifetime(tmp_path):
    """pytest: before the first test -> every test; a session fixture -> every later
    test, a module fixture -> the later ones of its module, a function fixture or a
    call -> that test. A subactor -> every test it lived through;
    a process the supervisor saw without records -> its tests are blind."""
    _proc(tmp_path, "100-1.fp", {"pid": 1, "tick": 100, "start": 10.0, "argv": ["pytest"]}, [
        ("C", 10.5, "p/a.py", 1, "<module>", "-"),
        ("T", 11.0, "tests/test_a.py::t1"),
        ("C", 11.1, "p/a.py", 3, "fixture_code", "setup:module"),
        ("C", 11.15, "p/a.py", 4, "session_code", "setup:session"),
        ("C", 11.17, "p/a.py", 6, "per_test_code", "setup:function"),
        ("H", 11.2, "call"),
        ("C", 11.3, "p/a.py", 5, "only_t1", "call"),
        ("T", 12.0, "tests/test_a.py::t2"),
        ("T", 13.0, "tests/test_b.py::t3"),
        ("T", 14.0, "tests/test_b.py::t4"),
    ])
    # a subactor started in t2 that lived into t3 (the supervisor saw it at 13.5)
    _proc(tmp_path, "200-7.fp", {"pid": 7, "tick": 200, "start": 12.5, "argv":
                                 ["python", "-m", "x._child", "--uid", "reg"],
                                 "test": "tests/test_a.py::t2 (call)"}, [
        ("C", 12.6, "p/b.py", 9, "Registrar.find", "-")])
    # a process killed in t4 (no exit record, never seen by the supervisor)
    _proc(tmp_path, "300-8.fp", {"pid": 8, "tick": 300, "start": 14.2, "argv": ["python"],
                                 "test": "tests/test_b.py::t4 (call)"}, [
        ("C", 14.3, "p/c.py", 2, "spare", "-")])
    (tmp_path / "procs.json").write_text(json.dumps([
        {"pid": 70, "tick": 200, "first": 12.5, "last": 13.5, "cmd": "_subactor[reg]",
         "python": True, "flags": "", "env": True},
        {"pid": 90, "tick": 400, "first": 14.5, "last": 14.6, "cmd": "python -I -c x",
         "python": True, "flags": "-I", "env": True},
        {"pid": 91, "tick": 401, "first": 11.5, "last": 11.6, "cmd": "sh", "python": False}]))
    got = attribute(tmp_path)
    assert list(got) == ["tests/test_a.py::t1", "tests/test_a.py::t2", "tests/test_b.py::t3",
                         "tests/test_b.py::t4"]
    funcs = {n: sorted(q for _, q in fp.funcs) for n, fp in got.items()}
    assert funcs["tests/test_a.py::t1"] == ["<module>", "fixture_code", "only_t1",
                                            "per_test_code", "session_code"]
    assert funcs["tests/test_a.py::t2"] == ["<module>", "Registrar.find", "fixture_code",
                                            "session_code"]
    assert funcs["tests/test_b.py::t3"] == ["<module>", "Registrar.find", "session_code"]
    assert funcs["tests/test_b.py::t4"] == ["<module>", "session_code", "spare"]
    assert got["tests/test_a.py::t2"].funcs[("p/b.py", "Registrar.find")] == \
        (9, ["subactor 'reg'"])
    assert [bool(fp.blind) for fp in got.values()] == [False, False, False, True]
    assert "started with -I" in got["tests/test_b.py::t4"].blind[0]


def test_the_history_keeps_each_tests_newest_footprints_per_cell(tmp_path):
    from tractor_tasks.history import FOOTPRINTS_KEPT, History
    h = History(tmp_path / "h.sqlite")
    for i in range(FOOTPRINTS_KEPT + 3):
        fp = Footprint()
        fp.add("p/a.py", f"f{i}", 1, "pytest")
        h.record_footprints(f"run{i}", f"c{i}", "3.11/tcp/trio", {"t::a": fp, "t::b": fp})
    other = Footprint()
    other.add("p/a.py", "g", 1, "pytest")
    h.record_footprints("uds", "c0", "3.11/uds/trio", {"t::a": other})
    latest = h.latest_footprints()
    assert [(n, c, sha, sorted(q for _, q in fp.funcs)) for n, c, sha, fp in latest] == [
        ("t::a", "3.11/tcp/trio", f"c{FOOTPRINTS_KEPT + 2}", [f"f{FOOTPRINTS_KEPT + 2}"]),
        ("t::a", "3.11/uds/trio", "c0", ["g"]),
        ("t::b", "3.11/tcp/trio", f"c{FOOTPRINTS_KEPT + 2}", [f"f{FOOTPRINTS_KEPT + 2}"])]
    kept = h.footprints_of("t::a", [f"run{i}" for i in range(FOOTPRINTS_KEPT + 3)])
    assert sorted(kept) == [f"run{i}" for i in range(3, FOOTPRINTS_KEPT + 3)]


def test_below_3_12_recording_is_asked_for_by_name_and_off_by_zero_everywhere(tmp_path):
    """settrace (the only recorder below 3.12) costs about 45% CPU: not paid unless asked;
    3.12+ records unless told 0; the env a pass gets follows."""
    from types import SimpleNamespace
    from tractor_tasks.footprints import ENV_DIR, off_why, recorder_env
    assert "TRACTOR_TASKS_FOOTPRINTS=1" in off_why("3.11", {})
    assert off_why("3.11", {"TRACTOR_TASKS_FOOTPRINTS": "1"}) is None
    assert off_why("3.13", {}) is None
    assert off_why("3.13", {"TRACTOR_TASKS_FOOTPRINTS": "0"}) == "TRACTOR_TASKS_FOOTPRINTS=0"
    (tmp_path / "pkg").mkdir()
    target = SimpleNamespace(root=tmp_path, package="pkg")
    (tmp_path / "pass-1").mkdir()
    assert recorder_env(target, tmp_path / "pass-1", base={}, minor="3.11") == {}
    assert ENV_DIR in recorder_env(target, tmp_path / "pass-1", base={}, minor="3.13")


def test_a_test_file_none_of_whose_tests_has_a_footprint_is_unknown_and_runs_whole(tmp_path):
    """Footprints from one CI shard cover that shard's tests only: a file none of whose
    tests ran in a recorded run executes unknown code, so `affected` runs it whole
    (on tractor, test_rpc.py's broken test sat in a shard nobody recorded)."""
    from types import SimpleNamespace
    from tractor_tasks.footprints import unrecorded_files
    for rel in ("tests/test_a.py", "tests/sub/test_b.py", "tests/c_test.py",
                "tests/conftest.py", "tests/helpers.py", "tests/.hidden/test_h.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    target = SimpleNamespace(root=tmp_path, tests_path=tmp_path / "tests")
    known = ["tests/test_a.py::test_one", "tests/test_a.py::test_two[x]"]
    assert unrecorded_files(target, known) == ["tests/c_test.py", "tests/sub/test_b.py"]
    assert unrecorded_files(target, known + ["tests/sub/test_b.py::t",
                                             "tests/c_test.py::t"]) == []
