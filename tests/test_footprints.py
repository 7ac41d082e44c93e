"""Footprints (issue 24): recorded by real runs of the sample, in pytest and in every
process a test starts, then `invoke affected` selects from them.

The slow tests share one copy of the sample (with its py311 venv: the settrace
recorder) that gets a module only subactors import (`sample_actors/_work.py`) and a
test file of processes footprints must see: a subactor, a child killed with SIGKILL,
a fork, and one they cannot see (python -I).
"""
from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from helpers import copy_sample, invoke

WORK = textwrap.dedent('''\
    """Imported only inside child processes of the footprint tests."""
    LIMIT = 10


    def crunch(n):
        return helper(n) + 1


    def helper(n):
        assert n < LIMIT
        return n * 2


    def spare(n):
        return n
''')

REMOTE = textwrap.dedent('''\
    """What the footprint tests run inside subactors: imports _work lazily."""


    def crunch(n):
        from sample_actors import _work
        return _work.crunch(n)


    def add(a, b):
        return a + b
''')

TESTS = textwrap.dedent('''\
    import os
    import subprocess
    import sys

    import sample_actors as sa
    from sample_actors._testing import sample_test

    from . import _fpremote as remote


    @sample_test
    async def test_sub_crunch():
        async with sa.open_nursery() as an:
            portal = await an.start_actor('cruncher')
            assert await portal.run(remote.crunch, n=2) == 5


    @sample_test
    async def test_no_crunch():
        async with sa.open_nursery() as an:
            portal = await an.start_actor('idle')
            assert await portal.run(remote.add, a=1, b=2) == 3


    def test_killed_child():
        code = ("import sample_actors._work as w, time; w.spare(1); "
                "print('ok', flush=True); time.sleep(60)")
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ok"
        p.kill()
        p.wait()


    def test_forked():
        pid = os.fork()
        if pid == 0:
            import sample_actors._work as w
            w.helper(1)
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0


    def test_isolated():
        subprocess.run([sys.executable, "-I", "-c", "import time; time.sleep(1.5)"],
                       check=True)


    def test_plain():
        assert sa.parse_maddr
''')

FP_TESTS = "tests/test_fp.py"


def _git(root, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=root, check=True, capture_output=True, text=True).stdout


def _selected(out: str) -> dict[str, str]:
    """`invoke affected --list`'s "  nodeid: why" lines."""
    got = {}
    for line in out.splitlines():
        if line.startswith("  tests/") and ": " in line:
            nodeid, _, why = line.strip().partition(": ")
            got[nodeid.split("::")[-1]] = why
    return got


@pytest.fixture(scope="module", autouse=True)
def record_on_py311():
    """The sample's venv is py311, where recording (settrace) is asked for by name."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TRACTOR_TASKS_FOOTPRINTS", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The sample plus the footprint tests, committed, and one recorded run of them."""
    from tractor_tasks.pipeline import prepare_venv
    from tractor_tasks.target import load_target
    root = copy_sample(tmp_path_factory.mktemp("fp") / "sample-actors", git=True)
    (root / "sample_actors" / "_work.py").write_text(WORK)
    (root / "tests" / "_fpremote.py").write_text(REMOTE)
    (root / FP_TESTS).write_text(TESTS)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "footprint tests")
    prepare_venv(load_target(root), "3.11", out=lambda line: None)
    run = invoke("test", FP_TESTS, "--no-x", root=root, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return root


def _affected(root, *args):
    out = invoke("affected", "--list", *args, root=root, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _edit(root, rel, old, new):
    path = root / rel
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _reset(root):
    _git(root, "checkout", "-q", "--", ".")
    _git(root, "clean", "-qfd", "--", "sample_actors", "tests")


@pytest.mark.slow
def test_recorded_in_every_process(recorded):
    """The footprint files: the subactor, the SIGKILLed child and the fork each left
    theirs; the -I process is in the process list and none of its records exist."""
    runs = sorted((recorded / ".tractor-tasks").rglob("footprints"))
    assert runs, "no footprint dir in the run"
    files = [f.read_text() for d in runs for f in d.glob("*.fp")]
    heads = [json.loads(t.splitlines()[0].split("\t", 1)[1]) for t in files]
    assert any("cruncher" in h["argv"] for h in heads)
    killed = [t for t in files if "w.spare(1)" in t.splitlines()[0]]
    assert killed and "\tsample_actors/_work.py\t" in killed[0] and "\nX\t" not in killed[0]
    forked = [t for t, h in zip(files, heads) if h["forked"]]
    assert any("\tsample_actors/_work.py\t" in t and "\thelper\t" in t for t in forked)
    procs = [e for d in runs for e in json.loads((d / "procs.json").read_text())]
    assert any(e.get("flags") == "-I" for e in procs)


@pytest.mark.slow
def test_subactor_function_selects_only_its_tests(recorded):
    """A function of a module only a subactor imports: the test that spawned it is
    selected (its module imports nothing of that file), the others are not; the
    process nothing could record keeps its test selected; the answer is the same twice."""
    _edit(recorded, "sample_actors/_work.py", "return n * 2", "return n * 2 + 0")
    try:
        out = _affected(recorded)
        assert _affected(recorded) == out          # deterministic
    finally:
        _reset(recorded)
    got = _selected(out)
    assert got["test_sub_crunch"] == ("executed sample_actors/_work.py:helper in "
                                      "subactor 'cruncher'"), out
    assert "in a child forked from pid" in got["test_forked"]
    assert got["test_isolated"].startswith("always:") and "-I" in got["test_isolated"]
    assert set(got) == {"test_sub_crunch", "test_forked", "test_isolated"}, out
    assert "share of the suite's recorded time" in out


@pytest.mark.slow
def test_killed_process_and_module_level_change(recorded):
    """spare() ran only in a child killed with SIGKILL: its change still selects that
    test. A module-level name bound differently selects the tests that executed a
    function using it; a module-level effect, every test that touched the file."""
    _edit(recorded, "sample_actors/_work.py", "    return n\n", "    return n + 0\n")
    try:
        got = _selected(_affected(recorded))
    finally:
        _reset(recorded)
    assert set(got) == {"test_killed_child", "test_isolated"}
    assert "executed sample_actors/_work.py:spare in process" in got["test_killed_child"]
    # a module-level name bound differently: the tests that executed a function that
    # uses it (helper, in a subactor and in a fork), not every test that imported it
    _edit(recorded, "sample_actors/_work.py", "LIMIT = 10", "LIMIT = 11")
    try:
        got = _selected(_affected(recorded))
    finally:
        _reset(recorded)
    assert set(got) == {"test_sub_crunch", "test_forked", "test_isolated"}
    assert got["test_sub_crunch"].startswith("executed sample_actors/_work.py:helper in ")
    assert got["test_sub_crunch"].endswith(", which uses LIMIT (bound differently at import "
                                           "in sample_actors/_work.py)")
    # a statement with effects at import: every test that ran code of the file
    _edit(recorded, "sample_actors/_work.py", "LIMIT = 10\n", "LIMIT = 10\nprint(end='')\n")
    try:
        got = _selected(_affected(recorded))
    finally:
        _reset(recorded)
    assert set(got) == {"test_sub_crunch", "test_killed_child", "test_forked",
                        "test_isolated"}
    assert got["test_sub_crunch"].startswith("ran code of sample_actors/_work.py (line 3: "
                                             "a statement with effects at import")
    # a comment and a docstring: no code runs differently, nothing runs
    _edit(recorded, "sample_actors/_work.py", "LIMIT = 10", "LIMIT = 10  # a cap")
    _edit(recorded, "sample_actors/_work.py", '"""Imported only', '"""Only imported')
    try:
        out = _affected(recorded)
    finally:
        _reset(recorded)
    assert set(_selected(out)) == set() and out.rstrip().endswith(
        "): sample_actors/_work.py: only comments, docstrings or layout (no code runs "
        "differently); nothing to run"), out


@pytest.mark.slow
def test_new_file_and_conftest_fall_back(recorded):
    """A new module: what it binds reaches only code that uses those names (nothing
    imports it yet: what will changes too). A new file of another kind no footprint
    touched: the change map's tests for it, else the whole suite; a new conftest: the
    change map (its dir)."""
    (recorded / "sample_actors" / "discovery" / "_new.py").write_text("NEWTHING = 1\n")
    try:
        out = _affected(recorded)
    finally:
        _reset(recorded)
    assert "  sample_actors/discovery/_new.py (names bound differently at import: " \
           "NEWTHING)" in out.splitlines(), out
    assert set(_selected(out)) == {"test_isolated"}, out   # the -I one: always
    assert "the whole suite runs" not in out
    (recorded / "sample_actors" / "discovery" / "table.json").write_text("{}\n")
    try:
        out = _affected(recorded)
    finally:
        _reset(recorded)
    assert "the change map gives discovery/ test_local.py" in out
    assert "tests/discovery/" in out.splitlines() and "tests/test_local.py" in out.splitlines()
    (recorded / "sample_actors" / "_brand_new.json").write_text("{}\n")
    try:
        out = _affected(recorded)
    finally:
        _reset(recorded)
    assert "the whole suite runs: sample_actors/_brand_new.json (a new file)" in out
    assert out.splitlines()[-1] == "tests/"
    (recorded / "tests" / "ipc" / "conftest.py").write_text("X = 1\n")
    try:
        out = _affected(recorded)
    finally:
        _reset(recorded)
    assert "tests/ipc/conftest.py (a new file): no footprint touched it; the change map " \
           "gives ipc/" in out


@pytest.mark.slow
def test_footprint_from_an_older_commit_is_not_used_for_code_changed_since(recorded):
    """Recorded at C1; C2 makes crunch call spare; now spare changes. The footprint of
    test_sub_crunch (at C1) never ran spare, but it ran crunch, changed since: selected."""
    head = _git(recorded, "rev-parse", "HEAD").strip()
    _edit(recorded, "sample_actors/_work.py", "return helper(n) + 1",
          "return helper(n) + spare(1)")
    _git(recorded, "commit", "-qam", "crunch calls spare")
    try:
        _edit(recorded, "sample_actors/_work.py", "    return n\n", "    return n + 0\n")
        got = _selected(_affected(recorded))
    finally:
        _reset(recorded)
        _git(recorded, "reset", "-q", "--hard", head)
    assert got["test_sub_crunch"] == (f"its footprint (at {head[:10]}) executed "
                                      "sample_actors/_work.py:crunch, changed since")
    assert "test_killed_child" in got and "test_no_crunch" not in got
    # C2' binds LIMIT differently (module level); now spare changes: the footprints at
    # C1 count only where LIMIT is not used (spare's test), not for helper's users
    _edit(recorded, "sample_actors/_work.py", "LIMIT = 10", "LIMIT = 12")
    _git(recorded, "commit", "-qam", "a new limit")
    try:
        _edit(recorded, "sample_actors/_work.py", "    return n\n", "    return n + 0\n")
        got = _selected(_affected(recorded))
    finally:
        _reset(recorded)
        _git(recorded, "reset", "-q", "--hard", head)
    assert got["test_sub_crunch"].startswith(f"its footprint (at {head[:10]}) predates a "
                                             "change: executed sample_actors/_work.py:helper")
    assert set(got) == {"test_sub_crunch", "test_forked", "test_killed_child",
                        "test_isolated"}, got


@pytest.mark.slow
def test_history_rule_counts_only_runs_whose_footprint_is_unchanged(recorded):
    """The verdict without a baseline reads a test's past runs: after a commit changes
    helper(), the runs of test_sub_crunch (which executed it) no longer count; those of
    test_plain (which did not) still do."""
    from tractor_tasks.footprints import unchanged_since
    from tractor_tasks.history import History
    from tractor_tasks.rundirs import State
    from tractor_tasks.target import load_target
    target = load_target(recorded)
    history = History(State(target).history)
    ids = [f"{FP_TESTS}::test_sub_crunch", f"{FP_TESTS}::test_plain"]
    import sqlite3
    with sqlite3.connect(State(target).history) as con:
        minor, tpt, spawn = con.execute("SELECT minor, tpt, spawn FROM results WHERE "
                                        "nodeid = ?", (ids[0],)).fetchone()
    rows = {n: history.past([n], minor=minor, tpt=tpt, spawn=spawn).get(n, []) for n in ids}
    assert all(rows.values()), rows
    assert unchanged_since(target, history, ids[0], rows[ids[0]]) == rows[ids[0]]
    head = _git(recorded, "rev-parse", "HEAD").strip()
    _edit(recorded, "sample_actors/_work.py", "return n * 2", "return n * 2 + 0")
    _git(recorded, "commit", "-qam", "helper changed")
    try:
        assert unchanged_since(target, history, ids[0], rows[ids[0]]) == []
        assert unchanged_since(target, history, ids[1], rows[ids[1]]) == rows[ids[1]]
    finally:
        _git(recorded, "reset", "-q", "--hard", head)


@pytest.mark.slow
def test_forkserver_child_is_recorded(recorded):
    """With mp_forkserver the subactor is a fork of the fork server (stale environment,
    events already disabled): it re-arms after the fork and its records count for the
    test that ran then. (Last here: it adds a cell to the history.)"""
    run = invoke("test", f"{FP_TESTS}::test_sub_crunch", "--spawn", "mp_forkserver",
                 root=recorded, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    _edit(recorded, "sample_actors/_work.py", "return n * 2", "return n * 2 + 0")
    try:
        out = _affected(recorded)
    finally:
        _reset(recorded)
    assert "tests/test_fp.py::test_sub_crunch: executed sample_actors/_work.py:helper in " \
           "a child forked from pid" in out


@pytest.mark.slow
def test_likely_cause_names_the_changed_function_the_test_executed(recorded):
    """A commit breaks helper(), which only the subactor runs: the regression's likely
    cause is that function, in that process. (Last: it records a run at the bug.)"""
    head = _git(recorded, "rev-parse", "HEAD").strip()
    _edit(recorded, "sample_actors/_work.py", "return n * 2", "return n * 3")
    _git(recorded, "commit", "-qam", "a bug in helper")
    try:
        run = invoke("test", f"{FP_TESTS}::test_sub_crunch", "--baseline", head,
                     root=recorded, timeout=300)
    finally:
        _git(recorded, "reset", "-q", "--hard", head)
    assert run.returncode == 1, run.stdout + run.stderr
    cause = [ln.strip() for ln in run.stdout.splitlines() if "likely cause:" in ln]
    assert cause and cause[0].startswith(
        "likely cause: sample_actors/_work.py:helper (the test executed it in subactor "
        "'cruncher'; changed since"), run.stdout


def _python312():
    import shutil
    for name in ("python3.13", "python3.12"):
        found = shutil.which(name)
        if found and subprocess.run([found, "-c", "import sys"], capture_output=True
                                    ).returncode == 0:
            return found
    for v in sorted(Path("/root/.pyenv/versions").glob("3.1[2-9]*"), reverse=True):
        if (v / "bin" / "python3").exists():
            return str(v / "bin" / "python3")
    return None


def _recorder_run(tmp_path, python, script, extra_path=()):
    from tractor_tasks.footprints import ENV_DIR, ENV_ROOTS, RECORDER_DIR
    out = tmp_path / "fp"
    out.mkdir(exist_ok=True)
    pkg = tmp_path / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("def f():\n    return 1\n")
    env = {"PATH": "/usr/bin:/bin", ENV_DIR: str(out), ENV_ROOTS: f"{tmp_path}={pkg}",
           "PYTHONPATH": ":".join([str(RECORDER_DIR), *map(str, extra_path)])}
    run = subprocess.run([python, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    return run, [f.read_text() for f in sorted(out.glob("*.fp"))]


@pytest.mark.slow
def test_recorder_chains_to_the_sitecustomize_it_hides(tmp_path):
    """Another sitecustomize later on the path still runs, after ours recorded."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.CHAINED = 42\n")
    import sys
    run, files = _recorder_run(tmp_path, sys.executable,
                               "import pkg, builtins; pkg.f(); print(builtins.CHAINED)",
                               extra_path=[other])
    assert run.returncode == 0 and run.stdout.strip() == "42", run.stderr
    assert len(files) == 1 and "\tpkg/__init__.py\t1\tf\t" in files[0]


@pytest.mark.slow
def test_monitoring_tool_id_taken_records_nothing_and_says_so(tmp_path):
    """Python 3.12+: sys.monitoring; when the tool id is another tool's, the process
    says so in its file and records nothing (the other tool keeps working)."""
    python = _python312()
    if python is None:
        pytest.skip("no Python 3.12+ here")
    run, files = _recorder_run(tmp_path, python, "import pkg; pkg.f()")
    assert run.returncode == 0, run.stderr
    assert '"how": "monitoring"' in files[0] and "\tf\t" in files[0]
    for f in (tmp_path / "fp").glob("*.fp"):
        f.unlink()
    # a sitecustomize that runs before ours takes tool id 4 (it is first on the path,
    # then chains to ours by hand)
    first = tmp_path / "first"
    first.mkdir()
    from tractor_tasks.footprints import RECORDER_DIR
    (first / "sitecustomize.py").write_text(
        "import sys\nif 'sc_done' not in sys.modules:\n"
        "    sys.modules['sc_done'] = sys\n"
        "    sys.monitoring.use_tool_id(4, 'other-tool')\n"
        "    import importlib.util as u\n"
        f"    s = u.spec_from_file_location('sc', {str(RECORDER_DIR / 'sitecustomize.py')!r})\n"
        "    s.loader.exec_module(u.module_from_spec(s))\n")
    from tractor_tasks.footprints import ENV_DIR, ENV_ROOTS
    env = {"PATH": "/usr/bin:/bin", ENV_DIR: str(tmp_path / "fp"),
           ENV_ROOTS: f"{tmp_path}={tmp_path / 'pkg'}", "PYTHONPATH": str(first)}
    run = subprocess.run([python, "-c", "import sys, pkg; pkg.f(); "
                          "print(sys.monitoring.get_tool(4))"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "other-tool", run.stderr
    assert run.stderr == ""
    text = "".join(f.read_text() for f in (tmp_path / "fp").glob("*.fp"))
    assert "tool id 4 is taken by 'other-tool'" in text and "\nC\t" not in text


@pytest.mark.slow
def test_a_test_with_no_footprint_is_left_to_the_change_map(recorded):
    """test_local.py ran without recording (TRACTOR_TASKS_FOOTPRINTS=0): a change the
    map sends to test_local.py selects its tests, by the map. (Last: it adds them to
    the history.)"""
    run = invoke("test", "tests/test_local.py", root=recorded, timeout=300,
                 env={"TRACTOR_TASKS_FOOTPRINTS": "0"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "footprints:" not in run.stdout
    _edit(recorded, "sample_actors/discovery/_registry.py", "return self._table.get(name)",
          "return self._table.get(name, None)")
    try:
        out = _affected(recorded)
    finally:
        _reset(recorded)
    local = [ln.strip() for ln in out.splitlines() if ln.startswith("  tests/test_local.py::")]
    assert local and all(ln.endswith(": no footprint yet; the change map maps "
                                     "sample_actors/discovery/_registry.py to it")
                         for ln in local), out


@pytest.mark.slow
def test_affected_runs_its_selection_with_base_as_the_baseline(recorded):
    """`invoke affected --base REF` runs what it selected and judges the failures
    against REF: the broken subactor function's test is a regression there."""
    head = _git(recorded, "rev-parse", "HEAD").strip()
    _edit(recorded, "sample_actors/_work.py", "return n * 2", "return n * 3")
    _git(recorded, "commit", "-qam", "a bug in helper")
    try:
        run = invoke("affected", "--base", head, "--no-x", root=recorded, timeout=600)
    finally:
        _git(recorded, "reset", "-q", "--hard", head)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "  tests/test_fp.py::test_sub_crunch: executed sample_actors/_work.py:helper" \
        in run.stdout
    outcome = json.loads((recorded / ".tractor-tasks" / "last" / "outcome.json").read_text())
    assert {f["nodeid"]: f["verdict"] for f in outcome["failures"]} == {
        "tests/test_fp.py::test_sub_crunch": "regression"}
    assert outcome["verdict"]["baseline"]["commit"] == head


@pytest.mark.slow
def test_footprints_of_another_branch_do_not_stand_in_for_the_base(recorded):
    """A run on branch `other` (helper changed there) recorded newer footprints; on a
    branch off the base, a change to spare() is judged with the base's own footprints:
    test_sub_crunch (which never ran spare) is not selected for other's helper change."""
    head = _git(recorded, "rev-parse", "HEAD").strip()
    branch = _git(recorded, "rev-parse", "--abbrev-ref", "HEAD").strip()
    _git(recorded, "checkout", "-q", "-b", "other")
    try:
        _edit(recorded, "sample_actors/_work.py", "return n * 2", "return n * 2 + 0")
        _git(recorded, "commit", "-qam", "helper, elsewhere")
        run = invoke("test", FP_TESTS, "--no-x", root=recorded, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        _git(recorded, "checkout", "-q", "-b", "mine", head)
        _edit(recorded, "sample_actors/_work.py", "    return n\n", "    return n + 0\n")
        got = _selected(_affected(recorded, "--base", head))
    finally:
        _reset(recorded)
        _git(recorded, "checkout", "-q", branch)
        _git(recorded, "branch", "-q", "-D", "other", "mine")
    assert set(got) == {"test_killed_child", "test_isolated"}, got
