"""Bad inputs and faults (issue 17 item 5): each is one line, the right exit code and
nothing changed outside what the tool owns. Fast tests use the modules directly; the
end-to-end ones (`slow`) run invoke as a user would."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from helpers import copy_sample, invoke
from tractor_tasks.errors import TaskError
from tractor_tasks.rundirs import KEEP_RUNS, State
from tractor_tasks.target import load_target


@pytest.fixture
def target(tmp_path):
    root = tmp_path / "repo"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'tractor'\n"
                                         "[tool.tractor-tasks]\npythons = ['3.11']\n")
    return load_target(root)


def _unrelated(base, n=25):
    """Dirs that are not ours, some named like run dirs, some with a lock file."""
    base.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        d = base / (f"20260101-0000{i:02d}-1-0" if i % 2 else f"photos-{i:02d}")
        d.mkdir()
        (d / "keep.txt").write_text("precious")
        if i % 3 == 0:
            (d / "lock").write_text("")
        made.append(d)
    return made


# -- HIGH: never write or delete through a link in the state dir ---------------------

@pytest.mark.parametrize("linked", [".tractor-tasks", ".tractor-tasks/runs",
                                    ".tractor-tasks/baseline",
                                    ".tractor-tasks/cells", "cell"])
def test_a_symlinked_state_dir_is_refused_and_nothing_is_written(target, tmp_path, linked):
    elsewhere = tmp_path / "elsewhere"
    made = _unrelated(elsewhere)
    state = State(target)
    slug = "tests-3.11-trio-tcp"
    if linked == ".tractor-tasks":
        state.path.symlink_to(elsewhere)
    else:
        state.ensure()
        link = state.cell_dir(slug) if linked == "cell" else target.root / linked
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(TaskError) as err:
        state.new_run(slug)
    assert "is a symlink" in str(err.value) and "\n" not in str(err.value)
    assert err.value.code == 1
    assert sorted(p.name for p in elsewhere.iterdir()) == before
    assert all((d / "keep.txt").read_text() == "precious" for d in made)


def test_prune_removes_only_provable_run_dirs(target, tmp_path):
    state = State(target)
    state.ensure()
    state.runs.mkdir()
    foreign = _unrelated(state.runs)  # not ours: no run.json, some without a lock
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (state.runs / "20250101-000000-1-0").symlink_to(outside)  # a link named like a run
    ours = []
    for i in range(KEEP_RUNS + 5):  # one second, one pid: -10 sorts after -9
        d = state.runs / f"20261201-000000-7-{i}"
        d.mkdir()
        (d / "run.json").write_text("{}")
        ours.append(d)
    provable = {d for d in foreign if not d.name.startswith("photos") and (d / "lock").exists()}
    state.prune()
    left = [p for p in ours if p.exists()]
    assert left == ours[-KEEP_RUNS:]
    # named like a run and with a run's lock file: provably a run dir, old, pruned;
    # every other name, and a run-like name with none of a run's files, stays
    for d in foreign:
        assert d.exists() == (d not in provable), d
    assert (outside / "keep.txt").read_text() == "precious"
    assert (state.runs / "20250101-000000-1-0").is_symlink()


def test_a_last_replaced_by_a_directory_is_named(target):
    state = State(target)
    state.ensure()
    state.last_link().mkdir()
    with pytest.raises(TaskError) as err:
        state.new_run()
    assert str(state.last_link()) in str(err.value) and "runs" not in str(err.value)
    assert not state.runs.exists() or not any(state.runs.iterdir())


@pytest.mark.slow
def test_invoke_test_refuses_a_symlinked_state_dir(tmp_path):
    root = copy_sample(tmp_path / "sample")
    elsewhere = tmp_path / "elsewhere"
    made = _unrelated(elsewhere)
    (root / ".tractor-tasks").symlink_to(elsewhere)
    r = invoke("test", root=root)
    assert r.returncode == 1, r.stdout + r.stderr
    err = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and ".tractor-tasks is a symlink" in err[0], r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(elsewhere.iterdir()) == sorted(made)
    assert not list(root.glob("py3*"))  # nothing made, not even the venv


# -- HIGH: a destination that is not a regular file is refused, never replaced ----------

def _specials(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to("/proc/self/fd/1")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    d = tmp_path / "adir"
    d.mkdir()
    return {"fifo": fifo, "symlink": link, "dangling symlink": dangling, "dir": d,
            "char device": "/dev/null"}


def test_atomic_write_refuses_what_is_not_a_regular_file(tmp_path):
    from tractor_tasks.fsutil import atomic_write
    for what, path in _specials(tmp_path).items():
        path = Path(path)
        before = os.lstat(path)
        with pytest.raises(TaskError) as err:
            atomic_write(path, "{}")
        assert err.value.code == 2 and str(path) in str(err.value), what
        after = os.lstat(path)
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), what
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    ok = tmp_path / "ok.json"
    atomic_write(ok, "{}")
    atomic_write(ok, '{"a": 1}')
    assert json.loads(ok.read_text()) == {"a": 1}
    assert oct(ok.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_durations_refuses_a_fifo_or_link(tmp_path):
    from tractor_tasks.history import History
    h = History(tmp_path / "h.sqlite")
    for what, path in _specials(tmp_path).items():
        before = os.lstat(path)
        with pytest.raises(TaskError) as err:
            h.export_durations(Path(path))
        assert err.value.code == 2, what
        assert os.lstat(path).st_ino == before.st_ino, what


@pytest.mark.slow
def test_durations_out_and_ci_report_durations_out_never_replace_a_fifo(tmp_path, target):
    from tractor_tasks.history import History
    History(State(target).history)  # an empty history: `invoke durations` has one to read
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "out-link"
    link.symlink_to("/proc/self/fd/1")
    for dest in (fifo, link):
        r = invoke("durations", "--out", str(dest), root=target.root)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.strip().count("\n") == 0 and str(dest) in r.stderr
        assert os.lstat(dest).st_mode == os.lstat(dest).st_mode and \
            (dest.is_symlink() if dest == link else stat.S_ISFIFO(os.lstat(dest).st_mode))
    arts = tmp_path / "arts"
    (arts / "job1").mkdir(parents=True)
    (arts / "job1" / "outcome.json").write_text(json.dumps(_outcome()))
    r = invoke("ci-report", str(arts), "--durations-out", str(fifo), root=target.root)
    assert r.returncode == 2 and "FIFO" in r.stderr, r.stdout + r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def _outcome(cell="tests-3.11(tpt='tcp')", status="passed", **kw):
    return {"cell": cell, "minor": "3.11", "tpt": "tcp", "spawn": "trio", "status": status,
            "seconds": 1.0, "summary": {"passed": 1, "new_failures": 0, "known_flaky": 0,
                                        "hung": 0, "skipped": 0, "leaked": 0}, **kw}


# -- HIGH: an artifact that is a FIFO, a device or a link is never waited on or followed ---

def _finishes(fn, *args, **kw):
    """fn's result; a hang guard (a FIFO read blocks forever when the fix is broken)."""
    import threading
    out = {}

    def go():
        try:
            out["value"] = fn(*args, **kw)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out["error"] = err
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), f"{fn.__name__} never returned (blocked on a FIFO?)"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_read_bounded_refuses_fifo_device_link_and_big_files(tmp_path):
    from tractor_tasks.fsutil import NotRegular, read_bounded
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    for path in (fifo, zero, Path("/dev/zero")):
        with pytest.raises(NotRegular):
            _finishes(read_bounded, path)
    with pytest.raises(NotRegular, match="symlink"):
        read_bounded(zero)
    with pytest.raises(NotRegular, match="1 MiB|over"):
        read_bounded(big, limit=1024)
    assert read_bounded(big) == b"x" * 2048


def test_ci_report_skips_a_fifo_and_a_dev_zero_outcome_and_reports_the_rest(tmp_path):
    from tractor_tasks.ci import report_dir
    arts = tmp_path / "arts"
    for job in ("good", "fifo", "zero", "link"):
        (arts / job).mkdir(parents=True)
    (arts / "good" / "outcome.json").write_text(json.dumps(_outcome()))
    os.mkfifo(arts / "fifo" / "outcome.json")
    (arts / "zero" / "outcome.json").symlink_to("/dev/zero")
    (arts / "link" / "outcome.json").symlink_to(arts / "good" / "outcome.json")
    os.mkfifo(arts / "good" / "junit.xml")
    lines = []
    rows = _finishes(report_dir, arts, durations_out=tmp_path / "d.json", warn=lines.append).rows
    assert [r.cell for r in rows] == ["tests-3.11(tpt='tcp')"] and rows[0].passed == 1
    text = "\n".join(lines)
    assert "fifo/outcome.json" in text and "FIFO" in text
    assert "zero/outcome.json" in text and "link/outcome.json" in text and "symlink" in text
    assert "skipped: JUnit file" in text and "junit.xml" in text
    assert json.loads((tmp_path / "d.json").read_text())["durations"] == {}


def test_invoke_report_never_blocks_on_a_fifo_outcome_nor_follows_last_outside(target, tmp_path):
    from tractor_tasks.cells import read_rows
    state = State(target)
    good = state.new_run("tests-3.11-trio-tcp")
    (good.path / "outcome.json").write_text(json.dumps(_outcome()))
    good.close()
    bad = state.new_run("tests-3.11-trio-uds")
    os.mkfifo(bad.path / "outcome.json")
    bad.close()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "outcome.json").write_text(json.dumps(_outcome(cell="tests-3.11(tpt='x')")))
    (state.path / "cells" / "smoke-3.11").mkdir()
    (state.path / "cells" / "smoke-3.11" / "last").symlink_to(outside)
    warns = []
    rows = _finishes(read_rows, target, warn=warns.append)
    assert [r.cell for r in rows] == ["tests-3.11(tpt='tcp')"]
    assert any("FIFO" in w for w in warns) and any("smoke-3.11" in w for w in warns), warns


_JUNIT = ('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="1">'
          '<testcase classname="tests.test_a" name="test_x" time="{t}"/></testsuite></testsuites>')


@pytest.mark.slow
def test_ci_report_with_a_truncated_junit_still_gives_table_durations_and_summary(tmp_path):
    arts = tmp_path / "arts"
    for i, cell in enumerate(("tests-3.11(tpt='tcp')", "tests-3.11(tpt='uds')")):
        (arts / f"job{i}").mkdir(parents=True)
        (arts / f"job{i}" / "outcome.json").write_text(json.dumps(_outcome(cell=cell)))
        (arts / f"job{i}" / "junit.xml").write_text(_JUNIT.format(t="1.5"))
    (arts / "job1" / "junit.xml").write_text(_JUNIT.format(t="1.5")[:70])  # cut short
    summary = tmp_path / "summary.md"
    out = tmp_path / "durations.json"
    r = invoke("ci-report", str(arts), "--durations-out", str(out),
               env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 0, r.stdout + r.stderr   # both cells passed
    assert "skipped:" in r.stdout and "job1/junit.xml" in r.stdout
    assert "tests-3.11(tpt='uds')" in r.stdout and "Traceback" not in r.stderr
    assert json.loads(out.read_text())["durations"] == {"tests/test_a.py::test_x": 1.5}
    assert "tests-3.11(tpt='tcp')" in summary.read_text()
    # a bad outcome.json: its cell's result is unknown, so the report fails (rule in README)
    (arts / "job1" / "outcome.json").write_text('{"cell": "x", "minor": ["list"]}')
    r = invoke("ci-report", str(arts), "--durations-out", str(out))
    assert r.returncode == 1 and "job1/outcome.json" in r.stdout and "minor" in r.stdout
    assert "damaged" not in r.stdout + r.stderr and "tests-3.11(tpt='tcp')" in r.stdout


# -- control characters from a test's id or message ------------------------------------

NASTY = "\x1b[2J\x07\x00\x08\u202e"  # screen clear, BEL, NUL, backspace, RTL override
RAW = "\x1b\x07\x00\x08\u202e"


def _nasty_results(target):
    from tractor_tasks.results import Results, TestResult
    from tractor_tasks.status import TestOutcome as O
    r = Results(target)
    nodeid = f"tests/test_a.py::test_x[{NASTY}]"
    r.tests[nodeid] = TestResult(nodeid, O.FAILED, 1.0, message=f"AssertionError: {NASTY}",
                                 text=f"E   AssertionError: {NASTY}\nline two")
    r.collected = [nodeid]
    return r, nodeid


def test_junit_is_well_formed_whatever_a_test_id_or_message_holds(target, tmp_path):
    import xml.etree.ElementTree as ET
    r, nodeid = _nasty_results(target)
    from tractor_tasks.junit import import_junit, write_junit
    path = tmp_path / "junit.xml"
    write_junit(r, path)
    case = ET.parse(path).getroot().find("testcase")  # raised ParseError before the fix
    assert "\\x1b[2J\\x07\\x00\\x08" in case.get("name")
    assert "\\x1b" in case.find("failure").get("message") and "line two" in case.find(
        "failure").text
    from tractor_tasks.history import History
    h = History(tmp_path / "h.sqlite")
    assert import_junit(h, path) == 1  # what flaky --junit and ci-report read


def test_the_summary_and_history_show_control_characters_escaped(target, tmp_path, capsys):
    from types import SimpleNamespace

    from tractor_tasks import report
    from tractor_tasks.history import History, RunRow, TestRow
    from tractor_tasks.history_view import show_history
    from tractor_tasks.options import RunOptions
    from tractor_tasks.passes import RunResult
    from tractor_tasks.status import Ending, RunStatus
    r, nodeid = _nasty_results(target)
    result = RunResult(r, ending=Ending(RunStatus.FAILED, 1))
    text = "\n".join(report.render(SimpleNamespace(opts=RunOptions()), result))
    assert "test_x[\\x1b[2J\\x07\\x00\\x08\\u202e]" in text
    assert not any(c in text for c in RAW)
    h = History(State(target).history)
    h.record(RunRow("r1", 1.0, 2.0, "run", minor="3.11", tpt="tcp", spawn="trio"),
             [TestRow(nodeid, "failed", 1.0, signature=f"Boom: {NASTY}")])
    show_history(target, None, 10)
    out = capsys.readouterr().out
    assert "\\x1b[2J" in out and "\\u202e" in out and not any(c in out for c in RAW)


def test_shown_and_xml_text_keep_tab_and_newline():
    from tractor_tasks.fsutil import shown, xml_text
    assert shown("a\tb\nc\x1bd\x9be") == "a\tb\nc\\x1bd\\x9be"
    assert xml_text("a\tb\r\nc\x01\ufffe") == "a\tb\r\nc\\x01\\ufffe"
    assert xml_text("ok \u202e é 𝄞") == "ok \u202e é 𝄞"  # allowed in XML: kept


# -- JUnit import, the history view ---------------------------------------------------

def test_junit_import_skips_nameless_cases_and_absurd_times_and_readers_survive_old_rows(
        target, tmp_path, capsys):
    from tractor_tasks.durations import load_durations
    from tractor_tasks.history import History, RunRow, TestRow
    from tractor_tasks.history_view import show_history
    from tractor_tasks.junit import import_junit
    junit = tmp_path / "j.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest" tests="3" time="1e300">'
        '<testcase classname="" name=""/>'
        '<testcase classname="tests.test_a" name="big" time="1e20"/>'
        '<testcase classname="tests.test_a" name="huge" time="1e300"/>'
        '<testcase classname="tests.test_a" name="ok" time="2.5"/></testsuite></testsuites>')
    notes = []
    h = History(State(target).history, warn=notes.append)
    assert import_junit(h, junit, root=target.root) == 3  # ValueError before the fix
    assert any("no classname and no name" in n for n in notes)
    assert any("counted as 0" in n for n in notes)
    # a row stored before imports were checked
    h.record(RunRow("old", -1e20, 1.0, "import"), [TestRow("tests/test_a.py::old", "passed", 1e300)])
    show_history(target, None, 10)  # OverflowError before the fix
    assert "tests/test_a.py::old" in capsys.readouterr().out
    out = tmp_path / "d.json"
    h.export_durations(out)
    # the old row's 1e300 is clamped on write (issue 26), as an import's absurd time is
    assert load_durations(out) == {"tests/test_a.py::ok": 2.5, "tests/test_a.py::big": 0.0,
                                   "tests/test_a.py::huge": 0.0, "tests/test_a.py::old": 0.0}


def test_history_limit_is_rows_per_test_and_a_bare_name_is_a_substring(target, capsys):
    from tractor_tasks.history import History, RunRow, TestRow
    from tractor_tasks.history_view import show_history
    h = History(State(target).history)
    busy = [f"tests/test_many.py::test_{i:02d}" for i in range(48)]
    for run in range(8):  # 48 tests x 8 runs, then one test with 4 older runs
        h.record(RunRow(f"r{run}", 100.0 + run, 101.0 + run, "run"),
                 [TestRow(n, "passed", 0.1) for n in busy])
    for run in range(4):
        h.record(RunRow(f"o{run}", 10.0 + run, 11.0 + run, "run"),
                 [TestRow("tests/test_cancellation.py::test_parent_cancels[tcp]", "failed", 1.0)])
    show_history(target, None, 3)
    out = capsys.readouterr().out
    heads = [ln for ln in out.splitlines() if not ln.startswith("  ")]
    assert len(heads) == 49
    per_test = {}
    current = None
    for ln in out.splitlines():
        if ln.startswith("  "):
            per_test[current] += 1
        else:
            current = ln.split()[0]
            per_test[current] = 0
    assert set(per_test.values()) == {3}, per_test
    show_history(target, "test_parent_cancels", 10)
    out = capsys.readouterr().out
    assert "test_parent_cancels[tcp]" in out and out.count("failed") == 4
    show_history(target, "test_parent", 10)  # a part of a name too
    assert "test_parent_cancels[tcp]" in capsys.readouterr().out


# -- a closed stdout --------------------------------------------------------------------

def test_a_closed_fd_1_gets_dev_null_here_before_anything_is_opened(monkeypatch):
    """The front end's guard in this process, fd 1 closed for the while (the decision; the
    child with `>&-` is the slow twin below)."""
    import io
    import sys
    from tractor_tasks.output import Output, guard_std_fds
    monkeypatch.setattr(sys, "stdout", sys.stdout)   # the guard replaces them: put back
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    saved = os.dup(1)
    try:
        os.close(1)
        guard_std_fds()
        on_1 = os.fstat(1)
        with open(os.devnull) as f:
            fd = f.fileno()
        Output()("hello")
        print("x")
        sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert os.path.samestat(on_1, os.stat(os.devnull))
    note = err.getvalue().strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: stdout is closed") and fd > 2


@pytest.mark.slow
def test_a_closed_stdout_gets_dev_null_before_anything_is_opened(tmp_path):
    """The front end's guard, in a child whose fd 1 is closed (as `>&-` leaves it)."""
    import subprocess
    import sys
    code = ("import os, sys; from tractor_tasks.output import guard_std_fds, Output; "
            "guard_std_fds(); f = open(os.devnull); "
            "Output()('hello'); print('x'); print(f.fileno(), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=False,
                       stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    assert r.returncode == 0, r.stderr
    note, fd = r.stderr.strip().splitlines()
    assert note.startswith("note: stdout is closed") and int(fd) > 2


@pytest.mark.slow
def test_invoke_test_with_stdout_closed_runs_whole_and_says_so_once(sample_repo):
    import subprocess
    import sys

    from helpers import REPO, last_run
    before = last_run(sample_repo)
    r = subprocess.run([sys.executable, "-m", "invoke", "test", "test_local.py", "--root",
                        str(sample_repo)], cwd=REPO, stderr=subprocess.PIPE, text=True,
                       preexec_fn=lambda: os.close(1), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("stdout is closed") == 1, r.stderr
    run = last_run(sample_repo)
    assert run != before and (run / "outcome.json").is_file() and (run / "junit.xml").is_file()
    assert json.loads((run / "outcome.json").read_text())["status"] == "passed"


@pytest.mark.slow
@pytest.mark.parametrize("value", ["../../..", "/etc"])
def test_doctor_with_a_path_for_bindspace_is_the_one_line_config_error(tmp_path, value):
    root = copy_sample(tmp_path / "s", config=f'[tool.tractor-tasks]\nbindspace = "{value}"\n')
    r = invoke("doctor", root=root)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stderr.strip().startswith("error: [tool.tractor-tasks] bindspace") and \
        r.stderr.strip().count("\n") == 0, r.stderr


# -- flaky --junit --cell: a cell of the matrix only -----------------------------------------

@pytest.mark.parametrize("name", ["tests-3.11(tpt='bogus')", "tests-3.99(tpt='tcp')",
                                  "backends-3.11(spawn='../../x', tpt='tcp')",
                                  "smoke-3.11(tpt='uds')", "backends-3.11(spawn='trio', tpt='tcp')",
                                  "tests-3.11(tpt='tcp', spawn='mp_spawn')"])
def test_flaky_junit_refuses_a_cell_not_in_the_matrix(target, tmp_path, name):
    from tractor_tasks.history_view import show_flaky
    junit = tmp_path / "j.xml"
    junit.write_text(_JUNIT.format(t="1"))
    with pytest.raises(TaskError) as err:
        show_flaky(target, 3, str(junit), name)
    assert err.value.code == 2 and "not a cell of this target's matrix" in str(err.value)
    assert not State(target).history.exists()  # nothing recorded


def test_the_matrix_cells_are_accepted(target):
    from tractor_tasks.cells import Cell, matrix_cells
    for cell in matrix_cells(target):
        assert Cell.of_matrix(cell.name, target) == cell
    assert Cell.of_matrix("smoke-3.11", target).tpt == target.transports[0]


def test_a_foreign_or_newer_history_says_what_can_be_done(tmp_path):
    import sqlite3

    from tractor_tasks.history import APPLICATION_ID, History
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE t (x)")
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as con:
        con.execute("CREATE TABLE t (x)")
        con.execute(f"PRAGMA application_id={APPLICATION_ID}")
        con.execute("PRAGMA user_version=99")
    d = tmp_path / "dir.sqlite"
    d.mkdir()
    for path in (foreign, newer, d):
        with pytest.raises(TaskError) as err:
            History(path)
        assert "move it aside" in str(err.value) and "elsewhere" not in str(err.value)


# -- ci-matrix: GitHub's 256-job limit ------------------------------------------------------

def test_ci_matrix_past_githubs_job_limit_is_refused_with_what_fits(monkeypatch, tmp_path):
    """nox --list is stood in for by a fixed session list (the slow test below asks nox)."""
    from tractor_tasks import ci
    root = copy_sample(tmp_path / "s")
    sessions = [{"session": f"tests-3.11(tpt='{t}')"} for t in ("tcp", "uds")] + \
        [{"session": "smoke-3.11"}]
    monkeypatch.setattr(ci, "nox_sessions", lambda shim, root=None: sessions)
    assert len(ci.matrix(root, str(root), shards=128)["include"]) == 256
    with pytest.raises(TaskError) as err:
        ci.matrix(root, str(root), shards=129)
    assert err.value.code == 2 and "258 jobs" in str(err.value) and "256" in str(err.value)
    assert "--shards 128" in str(err.value)
    with pytest.raises(TaskError) as err:
        ci.matrix(root, str(root), smoke=True, shards=128)  # the smoke cell is one more job
    assert "--shards 127" in str(err.value)


@pytest.mark.slow
def test_invoke_ci_matrix_with_256_shards_is_one_line_exit_2():
    r = invoke("ci-matrix", "--shards", "256")
    assert r.returncode == 2 and not r.stdout.strip(), r.stdout + r.stderr
    assert r.stderr.strip().count("\n") == 0 and "limit of 256 jobs" in r.stderr, r.stderr


# -- output.log cap -------------------------------------------------------------------------

def test_output_log_keeps_head_and_tail_past_its_cap_and_says_what_was_cut(tmp_path):
    from tractor_tasks.output import Tee
    r, w = os.pipe()
    log = tmp_path / "output.log"
    seen = []
    out = type("Out", (), {"raw": lambda self, b: seen.append(b)})()
    tee = Tee(r, log, out, max_bytes=1000)
    tee.start()
    data = b"".join(b"%06d\n" % i for i in range(20000))  # 140 kB, in many reads
    for i in range(0, len(data), 4096):
        os.write(w, data[i:i + 4096])
    os.close(w)
    tee.join(60)
    text = log.read_bytes()
    head, _, rest = text.partition(b"\n[tractor-tasks: ")
    note, _, tail = rest.partition(b"]\n")
    assert head == data[:500] and tail == data[-500:]
    assert note.startswith(b"%d bytes of output cut here" % (len(data) - 1000))
    assert b"".join(seen) == data  # the user's copy is whole
    r, w = os.pipe()  # under the cap: the log is the output, no note
    small = tmp_path / "small.log"
    tee = Tee(r, small, None, max_bytes=1000)
    tee.start()
    os.write(w, data[:999])
    os.close(w)
    tee.join(60)
    assert small.read_bytes() == data[:999]


def test_output_log_max_mb_is_a_config_key(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.tractor-tasks]\noutput_log_max_mb = 5\n")
    assert load_target(root).output_log_max_mb == 5
    (root / "pyproject.toml").write_text("[tool.tractor-tasks]\noutput_log_max_mb = 0\n")
    with pytest.raises(TaskError, match="output_log_max_mb"):
        load_target(root)


def test_outcome_fields_of_the_wrong_type_name_the_file_as_malformed(tmp_path):
    from tractor_tasks.cells import read_outcome
    from tractor_tasks.ci import read_outcomes
    bad = tmp_path / "a" / "outcome.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(_outcome(minor=["list"])))
    good = tmp_path / "b" / "outcome.json"
    good.parent.mkdir()
    good.write_text(json.dumps(_outcome()))
    with pytest.raises(TaskError, match="minor is \\['list'\\], not a string"):
        read_outcome(bad)
    warns = []
    assert [p for p, _ in read_outcomes([bad, good], warns.append)] == [good]
    assert len(warns) == 1 and str(bad) in warns[0] and "damaged" not in warns[0]


def test_a_durations_file_that_is_a_fifo_is_one_line_not_a_hang(tmp_path):
    from tractor_tasks.durations import load_durations
    fifo = tmp_path / "d.json"
    os.mkfifo(fifo)
    with pytest.raises(TaskError, match="FIFO"):
        _finishes(load_durations, fifo)
