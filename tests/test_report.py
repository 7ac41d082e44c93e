"""The summary renderer, the CI merge and the doctor's fix policy, as pure logic on
constructed results: fast, no processes. Their real-process tests: test_run.py (the
summary of real runs), test_shards_run.py::test_ci_jobs_split_a_cell_and_the_report_adds_them_up
(the merge over real jobs' artifacts), test_doctor.py (`invoke doctor --fix`)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tractor_tasks import ci, doctor, pipeline, report
from tractor_tasks.options import RunOptions
from tractor_tasks.passes import RunResult
from tractor_tasks.leaks import Leaks
from tractor_tasks.results import Results, TestResult
from tractor_tasks.status import Check as S, Ending, RunStatus, Stop, TestOutcome as O
from tractor_tasks.supervise import PassOutcome
from tractor_tasks.target import FlakyRule, load_target


@pytest.fixture
def target(tmp_path):
    root = tmp_path / "t"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 't'\n")
    return load_target(root)


# -- the summary -------------------------------------------------------------------

def results_of(target, *tests: TestResult, collected=()) -> Results:
    r = Results(target)
    for t in tests:
        r.tests[t.nodeid] = t
    r.collected = [t.nodeid for t in tests] + list(collected)
    r.seconds = 12.34
    return r


def render(result, **opts):
    return report.render(SimpleNamespace(opts=RunOptions(**opts)), result)


def test_the_summary_of_a_resumed_run_with_a_hang_a_failure_and_a_leak(target):
    flaky = FlakyRule("test_k.py::*", "Timeout", "slow CI")
    r = results_of(target,
                   TestResult("tests/test_a.py::test_ok", O.PASSED),
                   TestResult("tests/test_a.py::test_bad", O.FAILED, message="AssertionError",
                              text="\n".join(f"line {i}" for i in range(20))),
                   TestResult("tests/test_a.py::test_hang", O.HUNG,
                              message="HUNG: no report for 5s (the per-test bound)",
                              text="Thread 1\n\n  frame\n", dump=Path("/run/pass-1/stacks.txt")),
                   TestResult("tests/test_k.py::test_flaky", O.FAILED, message="Timeout",
                              flaky=flaky),
                   collected=["tests/test_z.py::test_never"])
    r.leaks.merge(Leaks(processes=[(42, "_subactor[x@1]")]))
    passes = [PassOutcome(1, Path("/run/pass-1"), Stop.HUNG, -9, 1.0,
                          teardown=["ended 2 process(es)"]),
              PassOutcome(2, Path("/run/pass-2"), Stop.FINISHED, 1, 1.0)]
    result = RunResult(r, ending=Ending(RunStatus.FAILED, 1), run_dir=Path("/run"), passes=passes,
                       notes=["a note"], cut="--max-hangs")
    lines = render(result)
    assert lines[0] == "teardown (pass 1): ended 2 process(es)"
    assert lines[1] == ("results: 1 passed, 2 failed, 1 hung in 12.3s (2 passes)")
    i = lines.index("  FAILED tests/test_a.py::test_bad  [NEW]")
    assert lines[i + 1:i + 13] == [f"      line {n}" for n in range(8, 20)]  # the last 12
    j = lines.index("  HUNG   tests/test_a.py::test_hang  [NEW]")
    assert lines[j + 1] == ("      HUNG: no report for 5s (the per-test bound); dump: "
                            "/run/pass-1/stacks.txt")
    assert lines[j + 2:j + 4] == ["      Thread 1", "        frame"]
    assert "  FAILED tests/test_k.py::test_flaky  [known flaky (slow CI)]" in lines
    assert "not run: 1 of 5 collected test(s)" in lines
    assert ("LEAK: 1 process(es): _subactor[x@1]  (--fail-on-leak makes this fail)"
            in lines)
    assert lines[-2:] == ["a note", "files: /run"]


def test_the_summary_of_stops_and_a_killed_pytest(target):
    r = results_of(target, TestResult("tests/test_a.py::test_t", O.TIMEOUT))
    passes = [PassOutcome(1, Path("/p1"), Stop.TIMEOUT, None, 1.0, running=None,
                          stacks=Path("/p1/stacks.txt")),
              PassOutcome(2, Path("/p2"), Stop.INTERRUPTED, None, 1.0, running="tests/x"),
              PassOutcome(3, Path("/p3"), Stop.FINISHED, -9, 1.0, running="tests/y")]
    lines = render(RunResult(r, ending=Ending(RunStatus.TIMEOUT, 124), passes=passes, shards=2))
    assert lines[:3] == ["TIMEOUT: no test was running (collection or session setup/teardown); "
                         "stacks in /p1/stacks.txt",
                         "INTERRUPTED during tests/x",
                         "pytest was killed by signal 9 during tests/y"]
    assert lines[3] == "results: 1 timeout in 12.3s (2 shards)"
    assert "  TIMEOUT tests/test_a.py::test_t  (running when the run stopped)" in lines
    assert not any(line.startswith("files:") for line in lines)


def test_tests_that_never_ran_unaccounted_are_named(target):
    r = results_of(target, TestResult("tests/test_a.py::test_ok", O.PASSED),
                   collected=["tests/test_a.py::test_never"])
    lines = render(RunResult(r, ending=Ending(RunStatus.FAILED, 1), passes=[],
                             broken=["pass 1: pytest ended (exit status 0) without finishing "
                                     "its session, during tests/test_a.py::test_exit"]))
    assert "NOT RUN: pass 1: pytest ended (exit status 0) without finishing its session, " \
           "during tests/test_a.py::test_exit" in lines
    assert "NOT RUN: 1 selected test(s) never ran and nothing accounts for it: " \
           "tests/test_a.py::test_never" in lines


def test_a_pytest_that_ended_after_its_last_test_is_named_unfinished(target):
    """Every test ran (the last one cut by its own os._exit): no NOT RUN line, but the
    unfinished pass is named, and the cut test ran when pytest ended, not at a stop."""
    r = results_of(target, TestResult("tests/test_a.py::test_ok", O.PASSED),
                   TestResult("tests/test_a.py::test_exit", O.INTERRUPTED))
    why = ("shard 2: pass 1: pytest ended (exit status 0) without finishing its session, "
           "during tests/test_a.py::test_exit")
    lines = render(RunResult(r, ending=Ending(RunStatus.FAILED, 1), unfinished=[why],
                             passes=[PassOutcome(1, Path("/p1"), Stop.FINISHED, 0, 1.0)]))
    assert f"UNFINISHED: {why}" in lines
    assert "  INTERRUPTED tests/test_a.py::test_exit  (running when pytest ended)" in lines
    assert not any(line.startswith(("NOT RUN", "INTERRUPTED")) for line in lines)


def test_the_runs_own_stop_is_said_once(target):
    """A stop between passes has no pass to say it: the summary does, once."""
    r = results_of(target, TestResult("tests/test_a.py::test_ok", O.PASSED))
    hung = PassOutcome(1, Path("/p1"), Stop.HUNG, -9, 1.0)
    lines = render(RunResult(r, ending=Ending(RunStatus.TIMEOUT, 124), passes=[hung],
                             stop=Stop.TIMEOUT))
    assert lines[0] == "TIMEOUT: the whole-run bound expired between passes"
    lines = render(RunResult(r, ending=Ending(RunStatus.INTERRUPTED, 130), passes=[hung],
                             stop=Stop.INTERRUPTED))
    assert lines[0] == "INTERRUPTED between passes"
    stopped = PassOutcome(2, Path("/p2"), Stop.INTERRUPTED, 2, 1.0, running="tests/x")
    lines = render(RunResult(r, ending=Ending(RunStatus.INTERRUPTED, 130),
                             passes=[hung, stopped], stop=Stop.INTERRUPTED))
    assert [ln for ln in lines if "INTERRUPTED" in ln] == ["INTERRUPTED during tests/x"]


def test_the_summary_says_when_x_cut_a_known_flaky_run_short(target):
    t = TestResult("tests/test_k.py::test_f", O.FAILED, message="Timeout",
                   flaky=FlakyRule("test_k.py::*", "Timeout", ""))
    r = results_of(target, t, collected=["tests/test_k.py::test_later"])
    lines = render(RunResult(r, ending=Ending(RunStatus.FAILED, 1), passes=[], cut="-x"), exitfirst=True)
    assert lines[-1].startswith("only explained failures, but -x stopped the run at one")
    assert "  FAILED tests/test_k.py::test_f  [known flaky (Timeout)]" in lines
    lines = render(RunResult(r, ending=Ending(RunStatus.PASSED, 0), passes=[]), exitfirst=False,
                   fail_on_leak=True)
    assert not any("-x stopped" in line for line in lines)


# -- the CI merge --------------------------------------------------------------------

def outcome(path: Path, cell: str, status: str, seconds: float, **summary) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    full = {"passed": 0, "new_failures": 0, "known_flaky": 0, "hung": 0, "skipped": 0,
            "leaked": 0, **summary}
    (path / "outcome.json").write_text(json.dumps({"cell": cell, "status": status,
                                                   "seconds": seconds, "summary": full}))
    return path / "outcome.json"


def test_the_ci_merge_adds_a_cells_shards_up(tmp_path):
    tcp, uds = "tests-3.13(tpt='tcp')", "tests-3.13(tpt='uds')"
    paths = [outcome(tmp_path / "a1", tcp, "passed", 30.0, passed=10, skipped=1),
             outcome(tmp_path / "a2", tcp, "failed", 45.5, passed=7, new_failures=2, hung=1,
                     leaked=3),
             outcome(tmp_path / "a3", tcp, "passed", 20.0, passed=5, known_flaky=1),
             outcome(tmp_path / "b1", uds, "interrupted", 5.0, passed=1)]
    bad = tmp_path / "c1" / "outcome.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    warned = []
    rows = {r.cell: r for r in ci.merge_outcomes([*paths, bad], warn=warned.append)}
    assert set(rows) == {tcp, uds}
    t = rows[tcp]
    assert (t.status, t.passed, t.failed, t.known_flaky, t.hung, t.skipped, t.leaked,
            t.seconds) == (RunStatus.FAILED, 22, 2, 1, 1, 1, 3, 45.5)
    assert rows[uds].status is RunStatus.INTERRUPTED
    assert len(warned) == 1 and "not a cell outcome" in warned[0] and str(bad) in warned[0]


# -- the doctor's fix policy -----------------------------------------------------------

def check(name, status, fix=""):
    return doctor.Check(name, status, "detail", fix)


@pytest.mark.parametrize("checks, todo", [
    ([check("python", S.OK), check("venv", S.OK)], set()),
    ([check("venv", S.FAIL)], {"venv"}),
    ([check("venv", S.WARN)], {"venv"}),
    ([check("import", S.FAIL)], {"venv"}),
    ([check("collection", S.FAIL)], {"venv"}),
    ([check("active venv (B)", S.WARN)], {"venv"}),
    ([check("processes", S.FAIL)], {"sweep"}),
    ([check("sockets", S.FAIL)], {"sweep"}),
    ([check("registry", S.FAIL, "invoke clean")], {"sweep"}),
    # a holder outside this checkout, or a live session: never swept
    ([check("registry", S.FAIL, "outside this checkout: stop pid 7 yourself")], set()),
    ([check("registry", S.FAIL, "stop the session, or `invoke clean --parent 7`")], set()),
    ([check("python", S.FAIL), check("containment", S.WARN), check("sigint", S.WARN)], set()),
    ([check("venv", S.FAIL), check("processes", S.FAIL)], {"venv", "sweep"}),
])
def test_the_doctors_fix_policy(checks, todo):
    assert doctor.needs(checks) == todo


def test_fix_does_what_the_policy_says_and_nothing_else(target, monkeypatch):
    """`prepare_venv` and `sweep` are faked: they stand in for `uv sync` and for ending
    processes (the process boundary); test_doctor.py runs both for real."""
    calls = []
    monkeypatch.setattr(pipeline, "prepare_venv",
                        lambda t, minor, out: calls.append(("venv", minor)))

    class Swept:
        def __init__(self, t, venv=None):
            calls.append(("sweep", venv))

        def lines(self):
            return ["ended pid 7"]
    monkeypatch.setattr(doctor, "sweep", Swept)
    out = []
    doctor.fix(target, "3.13", [check("registry", S.FAIL, "outside this checkout")], out.append)
    assert calls == [] and out == []
    doctor.fix(target, "3.13", [check("venv", S.FAIL), check("processes", S.FAIL)], out.append)
    assert calls == [("venv", "3.13"), ("sweep", None)]  # no venv dir yet: none passed
    assert out == ["fix: ended pid 7"]
