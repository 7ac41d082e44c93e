"""JUnit in and out (junit.py): the file we write keeps Maven Surefire 3.0's and Jenkins
junit-10's rules (tests/junit_rules.py encodes them; an XML Schema built from the same
rules is checked by a real validator when xmlschema is installed), junitparser reads the
flaky attempts with their traces and the verdict; our own and pytest's files import into
the history with stable ids and their costs, and the durations file from CI carries them.
Fast: no processes (but the pytest-made files of the slow import test)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import junit_rules as rules
from tractor_tasks.errors import TaskError
from tractor_tasks.durations import load_costs
from tractor_tasks.history import History
from tractor_tasks.junit import (COSTS, EXTRAS, ORDER, import_junit, junit_nodeid, signature,
                                 write_junit)
from tractor_tasks.results import Leaks, Results, TestResult
from tractor_tasks.status import TestOutcome as O, Verdict as V
from tractor_tasks.target import FlakyRule, load_target

EXTRA = frozenset(EXTRAS)
ADDR = "tests/test_s.py::test_rpc[f=<function simple_rpc at 0x7f66a1b2c3d0>]"
STABLE = "tests/test_s.py::test_rpc[f=<function simple_rpc>]"
TB = "def test_x():\n>       assert broken()\nE       AssertionError: assert False\n"


@pytest.fixture
def target(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'tractor'\n")
    (tmp_path / "tests").mkdir()
    return load_target(tmp_path)


def _r(nodeid, outcome, **kw):
    kw.setdefault("duration", 0.5)
    return TestResult(nodeid, outcome, **kw)


def run_results(target) -> Results:
    """A run with one of each: passed (with costs, an address in its id), a regression
    re-run twice, a flaky failure (passed alone), a hang that hung again, an error with a
    re-run that failed, a known-flaky one, skipped, xfailed."""
    r = Results(target)
    r.seconds = 12.3456
    reg = _r("tests/test_a.py::test_reg", O.FAILED, message="AssertionError: assert False",
             text=TB, cpu=1.5, rss=10_000_000, verdict=V.REGRESSION,
             why="failed again when re-run alone; passed at main",
             cause=["likely cause: pkg/mod.py (changed since main; imported by tests/test_a.py)"],
             where="pass 1")
    reg.reruns = [_r(reg.nodeid, O.FAILED, message="AssertionError: assert False", text=TB,
                     where="confirm-1 pass 1") for _ in range(2)]
    reg.baseline = _r(reg.nodeid, O.PASSED)
    flaky = _r("tests/test_a.py::TestC::test_flip", O.FAILED, message="trio.TooSlowError",
               text="E   trio.TooSlowError\nsome frames", verdict=V.FLAKY,
               why="passed when re-run alone", where="pass 1")
    flaky.reruns = [_r(flaky.nodeid, O.PASSED, where="confirm-1 pass 1")]
    hung = _r("tests/test_b.py::test_hang", O.HUNG, message="HUNG: no report for 30s",
              text="Thread 0x1 (most recent call first):\n  File x", dump=Path("/d/stacks.txt"),
              verdict=V.NEW, why="hung again alone")
    hung.reruns = [_r(hung.nodeid, O.HUNG, message="HUNG: no report for 30s",
                      text="Thread 0x2:\n  File y", dump=Path("/d/c/stacks.txt"))]
    err = _r("tests/test_b.py::test_err", O.ERROR, message="RuntimeError: no server",
             text="E   RuntimeError: no server", verdict=V.PRE_EXISTING, why="fails at main too")
    err.reruns = [_r(err.nodeid, O.FAILED, message="ValueError: x", text="E   ValueError: x")]
    known = _r("tests/test_b.py::test_known", O.FAILED, message="OSError: port",
               text="E   OSError: port", flaky=FlakyRule("test_b.py::test_known", "OSError",
                                                          "a known port race"))
    tests = [_r(ADDR, O.PASSED, cpu=0.25, rss=2048), reg, flaky, hung, err, known,
             _r("tests/test_c.py::test_skip", O.SKIPPED),
             _r("tests/test_c.py::test_xfail", O.XFAILED)]
    from tractor_tasks.results import stable_id
    r.tests = {stable_id(t.nodeid): t for t in tests}
    r.leaks = Leaks(processes=[(12, "_subactor[x]")])
    return r


def written(target, tmp_path) -> ET.Element:
    path = tmp_path / "junit.xml"
    write_junit(run_results(target), path, started=1_700_000_000.0, host="ci-runner-1")
    return ET.parse(path).getroot()


def case(suite, name) -> ET.Element:
    return next(c for c in suite.iter("testcase") if c.get("name").startswith(name))


# -- the rules ------------------------------------------------------------------------

def test_our_file_keeps_surefire_3_0_and_jenkins_junit_10_rules_but_the_named_extras(
        target, tmp_path):
    suite = written(target, tmp_path)
    assert rules.check(suite, rules.SUREFIRE, EXTRA) == []
    assert rules.check(suite, rules.JENKINS, EXTRA) == []
    # what is outside each schema is exactly the extras the README names, nothing else
    outside = {(m.group(2), m.group(1)) for e in rules.check(suite, rules.SUREFIRE)
               for m in [re.search(r"attribute '(\w+)' is not allowed on <(\w+)>", e)] if m}
    assert outside == set(EXTRAS) and len(rules.check(suite, rules.SUREFIRE)) >= 3
    assert {e.split(": ", 1)[1] for e in rules.check(suite, rules.JENKINS)} == \
        {"attribute 'file' is not allowed on <testcase>"}


OLD = """<testsuite name="pytest" tests="2" failures="1" errors="0" skipped="1" time="1.000">
<testcase classname="t" name="a" time="0.100">
  <failure message="boom">E boom</failure>
  <rerunFailure message="boom">E boom again</rerunFailure>
  <properties><property name="verdict" value="regression"/></properties>
</testcase>
<testcase classname="t" name="b" time="1.2345"><skipped type="pytest.skip"/></testcase>
</testsuite>"""


def test_the_rules_catch_what_the_old_writer_wrote():
    """The checker can fail: the shape the issue measured (no `type`, a re-run's trace as
    bare text, <properties> after <failure>, skipped with a type) breaks both schemas."""
    errors = "\n".join(rules.check(ET.fromstring(OLD), rules.SUREFIRE))
    for wanted in ("<failure> lacks the required attribute 'type'",
                   "<rerunFailure> lacks the required attribute 'type'",
                   "<rerunFailure> needs <stackTrace>",
                   "<rerunFailure> takes no text",
                   "<properties> is out of order or not allowed in <testcase>",
                   "attribute 'type' is not allowed on <skipped>",
                   "time='1.2345' does not match"):
        assert wanted in errors, errors
    errors = "\n".join(rules.check(ET.fromstring(OLD), rules.JENKINS))
    assert "<properties> is not allowed in <testcase>" in errors
    assert "<rerunFailure> lacks the required attribute 'type'" in errors


def test_an_xml_schema_built_from_the_rules_validates_our_file_and_rejects_the_old(
        target, tmp_path):
    xmlschema = pytest.importorskip("xmlschema")
    write_junit(run_results(target), tmp_path / "junit.xml", started=1.7e9, host="h")
    for schema in (rules.SUREFIRE, rules.JENKINS):
        with_extras = xmlschema.XMLSchema(rules.xsd(schema, EXTRA))
        with_extras.validate(str(tmp_path / "junit.xml"))   # raises on the first error
        assert not with_extras.is_valid(OLD)
        strict = xmlschema.XMLSchema(rules.xsd(schema))
        reasons = " ".join(str(e.reason) for e in strict.iter_errors(str(tmp_path / "junit.xml")))
        assert "file" in reasons and not strict.is_valid(str(tmp_path / "junit.xml"))


# -- what the file says ---------------------------------------------------------------

def test_each_attempt_has_type_message_trace_and_output_and_the_verdict_is_in_the_message(
        target, tmp_path):
    suite = written(target, tmp_path)
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time",
                                      "timestamp", "hostname")} == {
        "tests": "8", "failures": "2", "errors": "2", "skipped": "2", "time": "12.346",
        "timestamp": "2023-11-14T22:13:20+00:00", "hostname": "ci-runner-1"}
    assert all(c.find("properties") is None for c in suite.iter("testcase"))
    for c in suite.iter("testcase"):   # Surefire's sequence
        tags = [k.tag for k in c]
        assert tags == sorted(tags, key=ORDER.index), tags

    reg = case(suite, "test_reg")
    fail = reg.find("failure")
    assert fail.get("type") == "AssertionError"
    head, *said = fail.get("message").splitlines()
    assert head == "AssertionError: assert False"
    assert said == ["verdict: regression (failed again when re-run alone; passed at main)",
                    "likely cause: pkg/mod.py (changed since main; imported by tests/test_a.py)"]
    assert fail.text == "\n".join(said) + "\n\n" + TB   # GitLab shows this text only
    reruns = reg.findall("rerunFailure")
    assert len(reruns) == 2 and all(r.get("type") == "AssertionError" for r in reruns)
    assert [r.findtext("stackTrace") for r in reruns] == [TB, TB]
    assert reruns[1].findtext("system-out").startswith(
        "re-run 2 of 2, alone (confirm-1 pass 1): failed in 0.50s")
    out = reg.findtext("system-out")
    assert "verdict: regression" in out and "likely cause: pkg/mod.py" in out
    assert "at the baseline: passed" in out and "re-run alone: failed, failed" in out

    flip = case(suite, "test_flip")
    assert flip.get("classname") == "tests.test_a.TestC"
    assert flip.find("failure") is None and flip.find("rerunFailure") is None
    (first,) = flip.findall("flakyFailure")    # the run's attempt; the re-run passed
    assert first.get("type") == "trio.TooSlowError" and first.findtext("stackTrace")
    assert "verdict: flaky (passed when re-run alone)" in first.get("message")
    assert first.findtext("system-out").startswith("the run (pass 1): failed in 0.50s")

    hang = case(suite, "test_hang")
    assert hang.find("error").get("type") == "hung"
    assert "(full dump: /d/stacks.txt)" in hang.find("error").text
    (again,) = hang.findall("rerunError")
    assert again.get("type") == "hung" and again.findtext("stackTrace") == "Thread 0x2:\n  File y"
    assert again.findtext("system-err") == "full dump: /d/c/stacks.txt"

    err = case(suite, "test_err")
    assert [k.tag for k in err] == ["rerunFailure", "error", "system-out"]
    assert err.find("error").get("type") == "RuntimeError"
    assert err.find("rerunFailure").get("type") == "ValueError"

    known = case(suite, "test_known").find("failure")
    assert "known flaky: a known port race" in known.get("message")
    assert case(suite, "test_skip").find("skipped").attrib == {"message": "skipped"}
    assert case(suite, "test_xfail").find("skipped").attrib == {"message": "xfailed"}
    # ids as the history keys them: the address that differs in every process is masked
    assert case(suite, "test_rpc").get("name") == "test_rpc[f=<function simple_rpc>]"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["leaked"] == "1" and "_subactor[x]" in props["leaks"]
    assert json.loads(props[COSTS]) == {STABLE: [0.25, 2048],
                                        "tests/test_a.py::test_reg": [1.5, 10_000_000]}


def test_junitparser_reads_the_flaky_attempt_with_its_trace_and_the_verdict(target, tmp_path):
    from junitparser.xunit2 import JUnitXml
    path = tmp_path / "junit.xml"
    write_junit(run_results(target), path, started=1.7e9, host="h")
    (suite,) = JUnitXml.fromfile(str(path))     # our one <testsuite>
    cases = {c.name: c for c in suite}
    flip = cases["test_flip"]
    assert flip.is_flaky and not flip.result       # passed in the end, as Surefire says
    (attempt,) = flip.flaky_failures()
    assert attempt.stack_trace and "trio.TooSlowError" in attempt.stack_trace
    assert attempt.type == "trio.TooSlowError" and "verdict: flaky" in attempt.message
    assert attempt.system_out.startswith("the run (pass 1): failed")
    reg = cases["test_reg"]
    assert reg.is_rerun and reg.result[0].type == "AssertionError"
    assert "verdict: regression" in reg.result[0].message
    assert all(r.stack_trace == TB for r in reg.rerun_failures())
    assert "likely cause: pkg/mod.py" in reg.system_out
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (8, 2, 2, 2)



def test_odd_times_and_heads_still_keep_the_rules(target, tmp_path):
    """A duration that is not a number of seconds is written as 0 (both schemas' time
    pattern); a head that names no exception gives the outcome as `type`."""
    r = Results(target)
    r.seconds = -5.0
    r.tests = {"tests/test_a.py::t": _r("tests/test_a.py::t", O.FAILED, duration=float("nan"),
                                        message="assert 1 == 2", text="E   assert 1 == 2"),
               "tests/test_a.py::u": _r("tests/test_a.py::u", O.ERROR, duration=1e300)}
    write_junit(r, tmp_path / "j.xml")
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert rules.check(suite, rules.SUREFIRE, EXTRA) == []
    assert suite.get("time") == "0.000"
    assert [c.get("time") for c in suite.iter("testcase")] == ["0.000", "0.000"]
    assert suite.find("testcase/failure").get("type") == "failed"
    assert suite.find("testcase/error").attrib == {"message": "error", "type": "error"}

# -- in: our file, pytest's, and the durations from CI ----------------------------------

def test_our_file_imports_with_outcomes_signatures_verdicts_costs_and_stable_ids(
        target, tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(run_results(target), path, started=1.7e9, host="ci-runner-1")
    h = History(tmp_path / "h.sqlite")
    assert import_junit(h, path, minor="3.13", tpt="tcp", spawn="trio") == 8
    rows = {r["nodeid"]: r for r in h.recent(limit=100)}
    assert {k: (r["outcome"], r["signature"], r["verdict"]) for k, r in rows.items()} == {
        STABLE: ("passed", "", ""),
        "tests/test_a.py::test_reg": ("failed", "AssertionError: assert False", ""),
        "tests/test_a.py::TestC::test_flip": ("failed", "trio.TooSlowError", "flaky"),
        "tests/test_b.py::test_hang": ("hung", "HUNG", ""),
        "tests/test_b.py::test_err": ("error", "RuntimeError: no server", ""),
        "tests/test_b.py::test_known": ("failed", "OSError: port", ""),
        "tests/test_c.py::test_skip": ("skipped", "", ""),
        "tests/test_c.py::test_xfail": ("xfailed", "", "")}
    costs = h.test_costs()
    assert (costs[STABLE].cpu, costs[STABLE].rss) == (0.25, 2048)
    assert costs["tests/test_a.py::test_reg"].cpu == 1.5
    assert costs["tests/test_b.py::test_err"].cpu is None     # never measured: unknown
    run = h._read("SELECT host, started FROM runs")
    assert run == [("ci-runner-1", 1.7e9)]


def test_ci_report_durations_carry_costs_under_stable_ids(target, tmp_path):
    from tractor_tasks.ci import report_dir
    for shard in (1, 2):
        job = tmp_path / "arts" / f"shard-{shard}"
        job.mkdir(parents=True)
        (job / "outcome.json").write_text(json.dumps({
            "cell": "tests-3.13(tpt='tcp')", "minor": "3.13", "tpt": "tcp", "spawn": "trio",
            "status": "failed", "seconds": 1.0, "shard": f"{shard}/2",
            "summary": {"passed": 1, "new_failures": 1, "known_flaky": 0, "hung": 0,
                        "skipped": 0, "leaked": 0}}))
        write_junit(run_results(target), job / "junit.xml", started=1.7e9 + shard, host="h")
    out = tmp_path / "durations.json"
    report_dir(tmp_path / "arts", durations_out=out, warn=lambda line: None)
    doc = json.loads(out.read_text())
    assert "0x" not in out.read_text() and STABLE in doc["durations"]
    assert doc["costs"] == {STABLE: {"cpu": 0.25, "rss": 2048},
                            "tests/test_a.py::test_reg": {"cpu": 1.5, "rss": 10_000_000}}
    assert load_costs(out)[STABLE].cpu == 0.25


def test_rows_and_durations_files_with_addresses_count_under_the_stable_id(tmp_path):
    import sqlite3

    from tractor_tasks.history import RunRow, TestRow
    h = History(tmp_path / "h.sqlite")
    other = ADDR.replace("0x7f66a1b2c3d0", "0x7f0000000001")
    h.record(RunRow("new", 3.0, 4.0, "run", minor="3.13", tpt="tcp", spawn="trio"),
             [TestRow(other, "passed", 3.0, cpu=1.0, rss=5)])
    # a row stored before ids were normalized (record() masks them now)
    with sqlite3.connect(h.path) as con:
        con.execute("INSERT INTO runs (run_id, started, finished, kind, minor, tpt, spawn) "
                    "VALUES ('old', 1.0, 2.0, 'import', '3.13', 'tcp', 'trio')")
        con.execute("INSERT INTO results (run_id, nodeid, minor, tpt, spawn, started, "
                    "outcome, duration) VALUES ('old', ?, '3.13', 'tcp', 'trio', 1.0, "
                    "'failed', 1.0)", (ADDR,))
    assert h.durations() == {STABLE: 2.0}       # both rows, one test
    assert h.durations([ADDR]) == h.durations([STABLE]) == {STABLE: 2.0}
    assert set(h.test_costs()) == {STABLE}
    assert [(c.nodeid, c.runs, c.flips) for c in h.flaky(min_runs=2)] == [(STABLE, 2, 1)]
    h.export_durations(tmp_path / "d.json")
    assert load_costs(tmp_path / "d.json")[STABLE].cpu == 1.0
    (tmp_path / "old.json").write_text(json.dumps({"version": 1, "durations": {ADDR: 2.5}}))
    assert set(load_costs(tmp_path / "old.json")) == {STABLE}


# -- in: the JUnit reader (moved from test_history.py) ----------------------------------

@pytest.fixture
def hist(tmp_path):
    return History(tmp_path / "history.db")


@pytest.mark.parametrize("message, text, expected", [
    ("trio.TooSlowError", "", "trio.TooSlowError"),
    ("AssertionError: assert 1 == 2\n + where 1 = f()", "", "AssertionError: assert 1 == 2"),
    ('failed on setup with "RuntimeError: no server"', "", "RuntimeError: no server"),
    ("", "tb\nE   pexpect.exceptions.TIMEOUT: Timeout exceeded.\nE   more",
     "pexpect.exceptions.TIMEOUT: Timeout exceeded."),
    ("assert 1 == 2", "", "assert 1 == 2"),
    ("", "", ""),
])
def test_signature_is_the_first_line_of_the_message_else_of_the_traceback(message, text, expected):
    assert signature(message, text) == expected


# -- JUnit import ----------------------------------------------------------------------------

_TINY = textwrap.dedent("""
    import pytest

    @pytest.fixture
    def server():
        raise RuntimeError("no server")

    def test_pass():
        pass

    def test_fail():
        raise ValueError("boom 1\\nsecond line")

    @pytest.mark.parametrize("p", ["a-1", "b.2"])
    def test_param(p):
        pass

    def test_skip():
        pytest.skip("not here")

    @pytest.mark.xfail(reason="known")
    def test_xfail():
        assert 0

    def test_setup_error(server):
        pass

    class TestC:
        def test_m(self):
            pass
""")


@pytest.fixture(scope="module")
def junit_files(tmp_path_factory):
    """Real pytest JUnit files (default xunit2 without `file`, and xunit1 with it)."""
    root = tmp_path_factory.mktemp("proj")
    (root / "pytest.ini").write_text("[pytest]\n")  # pins the rootdir here
    (root / "tests" / "Sub").mkdir(parents=True)  # a Capitalised dir: only root= gets it
    (root / "tests" / "Sub" / "test_tiny.py").write_text(_TINY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    files = {}
    for family in ("xunit2", "xunit1"):
        files[family] = root / f"{family}.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-o", f"junit_family={family}", f"--junitxml={files[family]}",
                        "tests/Sub/test_tiny.py"],
                       cwd=root, env=env, capture_output=True, timeout=120)
    return root, files


EXPECTED = {
    "tests/Sub/test_tiny.py::test_pass": "passed",
    "tests/Sub/test_tiny.py::test_fail": "failed",
    "tests/Sub/test_tiny.py::test_param[a-1]": "passed",
    "tests/Sub/test_tiny.py::test_param[b.2]": "passed",
    "tests/Sub/test_tiny.py::test_skip": "skipped",
    "tests/Sub/test_tiny.py::test_xfail": "xfailed",
    "tests/Sub/test_tiny.py::test_setup_error": "error",
    "tests/Sub/test_tiny.py::TestC::test_m": "passed",
}


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
@pytest.mark.slow
def test_a_real_pytest_junit_file_imports_with_exact_ids(hist, junit_files, family):
    root, files = junit_files
    n = import_junit(hist, files[family], minor="3.11", tpt="uds", spawn="trio",
                          cell="tests-3.11(tpt='uds')", commit="c0ffee", root=root)
    assert n == len(EXPECTED)
    rows = {r["nodeid"]: r for r in hist.recent(limit=100)}
    assert {k: r["outcome"] for k, r in rows.items()} == EXPECTED
    assert rows["tests/Sub/test_tiny.py::test_fail"]["signature"] == "ValueError: boom 1"
    assert rows["tests/Sub/test_tiny.py::test_setup_error"]["signature"] == \
        "RuntimeError: no server"
    assert {(r["tpt"], r["cell"], r["commit"]) for r in rows.values()} == \
        {("uds", "tests-3.11(tpt='uds')", "c0ffee")}
    assert import_junit(hist, files[family], minor="3.11", tpt="uds", spawn="trio",
                             cell="tests-3.11(tpt='uds')", commit="c0ffee", root=root) == n
    assert len(hist.recent(limit=100)) == n  # the same file again replaces, not doubles


def test_junit_node_ids_without_root_or_file_guess_modules_by_case():
    assert junit_nodeid("tests.test_x.TestC", "test_y[p.q]") == \
        "tests/test_x.py::TestC::test_y[p.q]"
    assert junit_nodeid("tests.test_x", "test_y") == "tests/test_x.py::test_y"
    assert junit_nodeid("", "tests.test_broken") == "tests/test_broken.py"  # collection error


@pytest.mark.parametrize("content", [b"this is not xml", b"<html><body/></html>", None])
def test_a_bad_junit_file_is_one_line_and_records_nothing(hist, tmp_path, content):
    bad = tmp_path / "junit.xml"
    bad.mkdir() if content is None else bad.write_bytes(content)
    with pytest.raises(TaskError) as err:
        import_junit(hist, bad)
    assert err.value.code == 1 and "\n" not in str(err.value)
    assert hist.recent() == []


