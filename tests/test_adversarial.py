"""What the adversarial pass over 0.4 found, each a test that failed before its fix:
files a test or a CI runner can put where we read or append (a FIFO, /dev/zero, a
link) are never waited on or read without end; outcome fields nothing checked; a second
opinion cut short is said. Fast: real files and FIFOs, no process."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tractor_tasks.errors import TaskError


def _returns(fn, seconds: float = 10.0):
    """fn() in a thread: its result, or a failure (not a hang) when it blocks."""
    box = {}

    def run():
        try:
            box["r"] = fn()
        except BaseException as err:  # noqa: BLE001 - raised again below, in the test
            box["e"] = err
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(seconds)
    assert not th.is_alive(), f"{fn} blocked"
    if "e" in box:
        raise box["e"]
    return box.get("r")


def test_a_fifo_or_a_link_among_a_pass_footprints_is_not_read(tmp_path):
    from tractor_tasks.footprints import read_dir
    fp = tmp_path / "footprints"
    fp.mkdir()
    os.mkfifo(fp / "fifo.fp")
    (fp / "zero.fp").symlink_to("/dev/zero")
    (fp / "ok.fp").write_text('P\t{"pid": 7, "start": 1.0, "argv": ["python"]}\n')
    recs = _returns(lambda: read_dir(fp))
    assert [r.head.get("pid") for r in recs] == [7]


def test_a_fifo_or_dev_zero_as_the_event_file_is_no_event_not_a_hang(tmp_path):
    from tractor_tasks.ci_event import read_event
    os.mkfifo(tmp_path / "event.json")
    assert _returns(lambda: read_event({"GITHUB_EVENT_PATH": str(tmp_path / "event.json")})) == {}
    assert _returns(lambda: read_event({"GITHUB_EVENT_PATH": "/dev/zero"})) == {}


def test_a_fifo_as_the_step_summary_is_refused_not_waited_on(tmp_path):
    from tractor_tasks.fsutil import append_text
    os.mkfifo(tmp_path / "summary")
    with pytest.raises(OSError):
        _returns(lambda: append_text(tmp_path / "summary", "x"))
    (tmp_path / "real").write_text("a")
    append_text(tmp_path / "real", "b")
    assert (tmp_path / "real").read_text() == "ab"
    append_text(tmp_path / "new", "c")   # a summary file not made yet is made, as "a" did
    assert (tmp_path / "new").read_text() == "c"


@pytest.mark.parametrize("field,value", [("shard", [1, 2]), ("shard", 3), ("shard", "1/x"),
                                         ("shard", "1/100000000"), ("shard", "2/1"),
                                         ("shard", "1/0"), ("finished", "x"), ("not_run", 5)])
def test_an_outcome_field_nothing_checked_is_a_bad_outcome_line(tmp_path, field, value):
    from tractor_tasks.cells import read_outcome
    path = tmp_path / "outcome.json"
    path.write_text(json.dumps({"cell": "tests-3.13(tpt='tcp')", "status": "passed",
                                field: value}))
    with pytest.raises(TaskError) as err:
        read_outcome(path)
    assert "is not a cell outcome" in str(err.value) and field in str(err.value)
    path.write_text(json.dumps({"cell": "c", "status": "passed", "shard": "2/4",
                                "finished": 3.5, "not_run": []}))
    assert read_outcome(path)["shard"] == "2/4"


def test_a_payload_field_of_another_type_is_no_field(tmp_path):
    from tractor_tasks.ci_event import _get
    assert _get({"merge_group": {"base_sha": 123456789012345}}, "merge_group", "base_sha") is None
    assert _get({"merge_group": {"base_sha": {"a": 1}}}, "merge_group", "base_sha") is None
    assert _get({"merge_group": {"base_sha": "abc"}}, "merge_group", "base_sha") == "abc"


def test_a_second_opinion_cut_short_says_so_in_the_reason(tmp_path, monkeypatch):
    """A regression whose run alone was interrupted (or ran out of the verdict's time)
    keeps its class, and its reason says the second opinion is missing."""
    from types import SimpleNamespace
    from tractor_tasks import verdict
    from tractor_tasks.results import TestResult
    from tractor_tasks.status import TestOutcome as O, Verdict as V
    t = TestResult("tests/test_x.py::t", O.FAILED, message="AssertionError: boom")
    t.verdict, t.why = V.REGRESSION, "failed again when re-run alone; passes at main"
    t.baseline = TestResult(t.nodeid, O.PASSED)
    monkeypatch.setattr(verdict.reruns, "alone", lambda runner, tests, what: (
        {"tests/test_x.py::t": TestResult(t.nodeid, O.INTERRUPTED)},
        verdict.Phase()))
    runner = SimpleNamespace(stopped=lambda: True)
    j = verdict.Judgement()
    verdict._second_opinion(runner, [t], SimpleNamespace(name="main"), j, None, "")
    assert t.verdict is V.REGRESSION
    assert t.why.endswith("(no second opinion: its run alone was interrupted)")


@pytest.mark.parametrize("key,value", [("passed", 1e308), ("new_failures", 10**12),
                                       ("seconds", 1e300)])
def test_an_absurd_count_in_an_outcome_is_refused_not_added_up(tmp_path, key, value):
    """issue 26 LOW 13: ci-report took summary.passed=1e308 without a word."""
    from tractor_tasks.cells import _row
    rec = {"cell": "c", "status": "passed", "seconds": 1.0, "summary": {"passed": 3}}
    if key == "seconds":
        rec["seconds"] = value
    else:
        rec["summary"][key] = value
    path = tmp_path / "outcome.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(TaskError) as err:
        _row(path)
    assert f"{key} is" in str(err.value) and "past any real run" in str(err.value)
    rec["summary"][key if key != "seconds" else "passed"] = 3
    rec["seconds"] = 1.0
    path.write_text(json.dumps(rec))
    assert _row(path).passed == 3
