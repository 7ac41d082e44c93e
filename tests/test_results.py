"""Results: the probe's log -> one outcome per test, merged over passes; flaky classes,
JUnit, lastfailed and exit codes. Fast: no processes."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tractor_tasks.options import RunOptions
from tractor_tasks.results import Results, TestResult, classify, read_pass
from tractor_tasks.junit import write_junit
from tractor_tasks.passes import RunResult
from tractor_tasks.status import RunStatus, TestOutcome as O, Verdict as V
from tractor_tasks.supervise import PassOutcome, Stop
from tractor_tasks.target import FlakyRule, load_target


@pytest.fixture
def target(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'tractor'\n")
    (tmp_path / "tests").mkdir()
    return load_target(tmp_path)


def write_pass(d, records, *, current=None, collected=None, finished=None, session=None):
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records)
                                     + '\n{"nodeid": "cut sho')
    if current is not None:
        (d / "current").write_text(json.dumps(current))
    if collected is not None:
        (d / "collected.json").write_text(json.dumps(collected))
    if finished is not None:
        (d / "finished.json").write_text(json.dumps({"exitstatus": finished}))
    if session is not None:
        (d / "session.json").write_text(json.dumps(session))
    return d


def rec(nodeid, when, outcome, **kw):
    return {"nodeid": nodeid, "when": when, "outcome": outcome, "duration": 0.5, **kw}


def test_flaky_rules_need_the_id_and_the_error_and_keep_brackets_literal(target):
    docs = "tests/test_docs_examples.py::test_example[we_are_processes.py]"
    assert classify(target, TestResult(docs, O.FAILED, message="assert None == 0"))
    assert not classify(target, TestResult(docs.replace("we_are", "xe_are"), O.FAILED,
                                           message="assert None == 0"))  # [..] is literal
    peer = "tests/test_inter_peer_cancellation.py::test_peer_spawns_and_cancels_service_subactor[x]"
    assert classify(target, TestResult(peer, O.FAILED, text="E   trio.TooSlowError"))
    assert not classify(target, TestResult(peer, O.FAILED, text="E   AssertionError"))


def test_a_known_hanger_is_classified_by_an_error_hung_entry(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tractor-tasks]\n[[tool.tractor-tasks.flaky]]\n'
        'test = "discovery/test_multi_program.py::test_dup_name*"\nerror = "HUNG"\n')
    t = load_target(tmp_path)
    hung = TestResult("tests/discovery/test_multi_program.py::test_dup_name_x[n=4]", O.HUNG,
                      message="HUNG: no report for 30s")
    assert classify(t, hung) is not None
    assert classify(t, TestResult(hung.nodeid, O.FAILED, message="AssertionError")) is None


def test_each_test_gets_one_outcome_and_the_running_one_never_passes(target, tmp_path):
    d = write_pass(tmp_path / "pass-1", [
        rec("tests/test_a.py::ok", "setup", "passed"), rec("tests/test_a.py::ok", "call", "passed"),
        rec("tests/test_a.py::ok", "teardown", "passed"),
        rec("tests/test_a.py::bad", "call", "failed", longrepr="tb\nE   trio.TooSlowError"),
        rec("tests/test_a.py::tdown", "call", "passed"),
        rec("tests/test_a.py::tdown", "teardown", "failed", longrepr="E   OSError: boom"),
        rec("tests/test_a.py::skip", "setup", "skipped"),
        rec("tests/test_a.py::xf", "call", "skipped", xfail=True),
        rec("tests/test_a.py::xp", "call", "passed", xfail=True),
        rec("tests/test_b.py", "collect", "failed", longrepr="E   ImportError: nope"),
        # started, setup passed, then the pass was stopped: pytest would write an
        # empty (passing) testcase for it
        rec("tests/test_a.py::running", "setup", "passed"),
    ], current={"nodeid": "tests/test_a.py::running", "since": 1.0},
        collected=["tests/test_a.py::ok", "tests/test_a.py::bad", "tests/test_a.py::running",
                   "tests/test_a.py::never"])
    log = read_pass(d)
    assert log.running == "tests/test_a.py::running"
    assert "tests/test_a.py::running" not in log.tests
    assert {k: t.outcome for k, t in log.tests.items()} == {
        "tests/test_a.py::ok": O.PASSED, "tests/test_a.py::bad": O.FAILED,
        "tests/test_a.py::tdown": O.ERROR, "tests/test_a.py::skip": O.SKIPPED,
        "tests/test_a.py::xf": O.XFAILED, "tests/test_a.py::xp": O.XPASSED,
        "tests/test_b.py": O.ERROR}
    assert log.tests["tests/test_a.py::bad"].message == "trio.TooSlowError"
    for stop in (O.INTERRUPTED, O.TIMEOUT, O.HUNG):
        r = Results(target)
        r.add(read_pass(d), stopped=stop, bound=5)
        assert r.tests["tests/test_a.py::running"].outcome is stop
        assert r.counts()[O.PASSED] == 1
        assert r.not_run() == ["tests/test_a.py::never"]


def test_passes_merge_into_one_result_junit_and_lastfailed(target, tmp_path):
    cache = tmp_path / "cache"
    first = write_pass(tmp_path / "pass-1", [
        rec("tests/test_a.py::t1", "call", "passed"),
        rec("tests/test_a.py::t2", "setup", "passed")],
        current={"nodeid": "tests/test_a.py::t2", "since": 1.0},
        collected=["tests/test_a.py::t1", "tests/test_a.py::t2", "tests/test_a.py::t3"],
        session={"cachedir": str(cache),
                 "lastfailed_before": {"tests/test_a.py::t1": True, "tests/old.py::x": True}})
    second = write_pass(tmp_path / "pass-2", [
        rec("tests/test_a.py::t3", "call", "failed", longrepr="E   AssertionError: no")],
        collected=["tests/test_a.py::t3"], finished=1,
        session={"cachedir": str(cache), "lastfailed_before": {}})
    r = Results(target)
    r.add(read_pass(first), stopped=O.HUNG, dump_text="Thread 0x1:\n  File x", bound=30)
    r.add(read_pass(second))
    assert [t.outcome for t in r.tests.values()] == [O.PASSED, O.HUNG, O.FAILED]
    assert r.collected == ["tests/test_a.py::t1", "tests/test_a.py::t2", "tests/test_a.py::t3"]
    assert r.not_run() == []

    junit = tmp_path / "junit.xml"
    write_junit(r, junit)
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    hung = next(c for c in suite.iter("testcase") if c.get("name") == "t2")
    assert hung.find("error").get("type") == "hung" and "Thread 0x1" in hung.find("error").text
    assert hung.get("classname") == "tests.test_a" and hung.get("file") == "tests/test_a.py"

    from tractor_tasks import lastfailed
    path = lastfailed.write(r)
    # pytest's rules over every pass: passed out, failed and hung in, others kept
    assert json.loads(path.read_text()) == {"tests/old.py::x": True, "tests/test_a.py::t2": True,
                                           "tests/test_a.py::t3": True}


def outcome(stop=Stop.FINISHED, rc=1):
    return PassOutcome(1, None, stop, rc, 1.0)


def results_with(target, *kinds):
    r = Results(target)
    for i, kind in enumerate(kinds):
        o = O.HUNG if kind.startswith("hung") else O.FAILED
        t = TestResult(f"tests/test_x.py::t{i}", o)
        t.flaky = FlakyRule("*", "x") if kind.endswith("-flaky") or kind == "flaky" else None
        verdicts = {"regression": V.REGRESSION, "new-verdict": V.NEW,
                    "pre-existing": V.PRE_EXISTING, "flaky-verdict": V.FLAKY,
                    "load-sensitive": V.LOAD_SENSITIVE, "quarantined": V.QUARANTINED}
        t.verdict = verdicts.get(kind)
        r.tests[t.nodeid] = t
    return r


def run_of(passes, results, *, cut=None, broken=(), unfinished=()):
    return RunResult(results, passes=list(passes), cut=cut, broken=list(broken),
                     unfinished=list(unfinished))


def exit_code(run, opts):
    """The run's exit code, as its end decides it (status.conclude)."""
    return run.end(opts).code


@pytest.mark.parametrize("passes, kinds, opts, code", [
    ([outcome()], ("new", "flaky"), {"exitfirst": False}, 1),
    ([outcome()], ("flaky",), {"exitfirst": False}, 0),
    ([outcome()], (), {"exitfirst": False}, 1),               # failed, recorded nowhere
    ([outcome(rc=0)], (), {}, 0),
    ([outcome(rc=5)], (), {}, 2),             # no test matches the selection: bad usage
    ([outcome(rc=4)], (), {}, 2),                             # pytest usage error
    ([outcome(rc=-9)], (), {}, 1),                            # killed from elsewhere
    ([outcome(Stop.TIMEOUT, None)], ("flaky",), {}, 124),
    ([outcome(Stop.INTERRUPTED, 2)], (), {}, 130),
    ([outcome(Stop.HUNG, None), outcome(rc=0)], ("hung",), {"exitfirst": False}, 1),
    ([outcome(Stop.HUNG, None), outcome(rc=0)], ("hung-flaky",), {"exitfirst": False}, 0),
    ([outcome(Stop.HUNG, None), outcome(Stop.TIMEOUT, None)], ("hung",), {}, 124),
    ([outcome(Stop.HUNG, None), outcome(Stop.INTERRUPTED, 2)], ("hung",), {}, 130),
    # a hang's teardown SIGINTs pytest (exit 2): that is not an interrupt of the run
    ([outcome(Stop.HUNG, 2)], ("hung-flaky",), {"exitfirst": False}, 0),
    ([outcome(Stop.HUNG, 2)], ("hung",), {"exitfirst": False}, 1),
    ([outcome(Stop.HUNG, -9)], ("hung-flaky",), {"exitfirst": False}, 0),
    # the verdict decides: only regressions and new failures fail the run
    ([outcome()], ("regression",), {"exitfirst": False}, 1),
    ([outcome()], ("new-verdict",), {"exitfirst": False}, 1),
    ([outcome()], ("pre-existing", "flaky-verdict", "load-sensitive", "quarantined"),
     {"exitfirst": False}, 0),
    ([outcome()], ("pre-existing",), {"exitfirst": False, "strict": True}, 1),
    ([outcome()], ("quarantined",), {"exitfirst": False, "strict": True}, 1),
    ([outcome(rc=0)], (), {"strict": True}, 0),
])
def test_exit_codes(target, passes, kinds, opts, code):
    assert exit_code(run_of(passes, results_with(target, *kinds)), RunOptions(**opts)) == code


def test_an_explained_failure_that_x_stopped_at_fails_the_run(target):
    """-x stopped the run at a known-flaky failure: the rest never ran, so it fails."""
    r = results_with(target, "flaky")
    r.collected = [*r.tests, "tests/test_x.py::later"]
    assert exit_code(run_of([outcome()], r, cut="-x"), RunOptions(exitfirst=True)) == 1
    r.collected = list(r.tests)  # it was the last test: nothing was cut
    assert exit_code(run_of([outcome()], r, cut="-x"), RunOptions(exitfirst=True)) == 0


def test_tests_that_never_ran_fail_the_run_unless_accounted_for(target):
    """A pass that ended early unasked (os._exit(0) in a test) leaves tests that never
    ran: the run fails and names them; -x or the hang limit account for them."""
    r = results_with(target)
    r.tests["tests/test_x.py::a"] = TestResult("tests/test_x.py::a", O.PASSED)
    r.collected = ["tests/test_x.py::a", "tests/test_x.py::b"]
    run = run_of([outcome(rc=0)], r, broken=["pass 1: pytest ended (exit status 0) without "
                                             "finishing its session"])
    assert run.unaccounted() == ["tests/test_x.py::b"]
    assert exit_code(run, RunOptions()) == 1
    assert exit_code(run_of([outcome(rc=0)], r), RunOptions()) == 1   # not run, no reason
    assert exit_code(run_of([outcome(rc=0)], r, cut="--max-hangs"), RunOptions()) == 0


def test_pytest_ending_without_its_session_finish_is_never_a_pass(target):
    """Issue 26 HIGH 1: the last test called os._exit(0): every test is accounted for
    and pytest's status is 0, yet the run failed, whatever the verdict says of the
    failures before it; the reason is the pass that ended early."""
    why = "pass 1: pytest ended (exit status 0) without finishing its session, during x"
    for kinds in ((), ("pre-existing",), ("quarantined", "flaky-verdict")):
        r = results_with(target, *kinds)
        r.collected = list(r.tests)
        run = run_of([outcome(rc=0)], r, unfinished=[why])
        ending = run.end(RunOptions(exitfirst=False))
        assert (ending.status, ending.code, ending.why) == (RunStatus.FAILED, 1, why)
        assert (run.status, run.code) == (RunStatus.FAILED, 1)
    # a usage error or an interrupt still says what it is
    assert exit_code(run_of([outcome(Stop.INTERRUPTED, None)], r, unfinished=[why]),
                     RunOptions()) == 130
    assert exit_code(run_of([outcome(rc=4)], Results(target), unfinished=[why]),
                     RunOptions()) == 2
    # ...but a test's own os._exit(4) is no usage error
    assert exit_code(run_of([outcome(rc=4)], r, unfinished=[why]), RunOptions()) == 1


def test_a_run_level_stop_decides_like_a_stopped_pass(target):
    """The run's own stop (a stop request between passes, the bound after a hang) is no
    fake pass: it decides the status and code as a pass's stop does, interrupt first."""
    r = results_with(target, "hung")
    run = run_of([outcome(Stop.HUNG, None)], r)
    run.stop = Stop.TIMEOUT
    assert (run.end(RunOptions()).status, run.code) == (RunStatus.TIMEOUT, 124)
    run.stop = Stop.INTERRUPTED
    assert (run.end(RunOptions()).status, run.code) == (RunStatus.INTERRUPTED, 130)
    run = run_of([outcome(Stop.TIMEOUT, None)], results_with(target))
    run.stop = Stop.INTERRUPTED
    assert (run.end(RunOptions()).status, run.code) == (RunStatus.INTERRUPTED, 130)


def test_statuses_side_by_side_combine_to_the_worst():
    from tractor_tasks.status import worst
    order = ["interrupted", "timeout", "error", "failed", "skipped", "passed"]
    for k, status in enumerate(order):
        assert worst(order[k:]) is RunStatus(status)
        assert worst(reversed(order[k:])) is RunStatus(status)
    assert worst([RunStatus.PASSED]) is RunStatus.PASSED


def test_a_leak_fails_the_run_only_with_fail_on_leak(target):
    r = results_with(target)
    r.leaks.processes.append((123, "_subactor[x@123]"))
    assert exit_code(run_of([outcome(rc=0)], r), RunOptions()) == 0
    assert exit_code(run_of([outcome(rc=0)], r), RunOptions(fail_on_leak=True)) == 1
    assert r.leaks.line() == "1 process(es): _subactor[x@123]"


def test_the_probes_file_names_are_the_pass_dirs():
    """The probe keeps its own literals (it is loaded into the target's pytest, without
    this package): they are the names PassDir owns."""
    from tractor_tasks.command import PROBE_DIR
    from tractor_tasks.rundirs import PassDir
    src = (PROBE_DIR / "_tractor_tasks_probe.py").read_text()
    for name in (PassDir.SESSION, PassDir.COLLECTED, PassDir.SCOPES, PassDir.RESULTS,
                 PassDir.CURRENT, PassDir.FINISHED):
        assert f'"{name}"' in src, name
    assert 'f"stacks-{os.getpid()}.txt"' in src and PassDir.PROBE_STACKS == "stacks-*.txt"


def test_an_exception_groups_head_is_its_exception_not_the_rule_under_it():
    """pytest renders an ExceptionGroup with `| ` margins and `+----` rules and no `E `
    line: the head (the history's signature) is the last line that says something."""
    from tractor_tasks.results import _head
    text = ("  + Exception Group Traceback (most recent call last):\n"
            "  |   File \"t.py\", line 1, in f\n"
            "  | ExceptionGroup: one (1 sub-exception)\n"
            "  +-+---------------- 1 ----------------\n"
            "    | Traceback (most recent call last):\n"
            "    | trio.TooSlowError\n"
            "    +------------------------------------")
    assert _head(text) == "trio.TooSlowError"
    # tractor's own notes after the group: the exception is still the head
    assert _head(text + "\n  ( ^^^ this exc was collapsed from a group ^^^ )\n  |\n") == \
        "trio.TooSlowError"
    assert _head("t.py:3: in f\nE   KeyError: 'k'\nmore") == "KeyError: 'k'"
    assert _head("+-----\n") == "+-----" and _head("") == ""
