"""probelog.py, the one reader of the probe's log: its events read incrementally from
real files, what a hostile test can put in reach (a link to /dev/zero, a FIFO, bytes
that are not UTF-8, a removed probe dir, a planted junit.xml link) never crashing,
hanging or blinding the run, and no other module parsing the log."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading

import pytest

from helpers import REPO, copy_sample
from tractor_tasks import probelog
from tractor_tasks.probelog import (Collected, Costs, Finished, ProbeLog, Report, Session,
                                    TestStart, read_json)
from tractor_tasks.status import TestOutcome as O


def _line(rec) -> bytes:
    return (json.dumps(rec) + "\n").encode()


def _report(nodeid, when="call", outcome="passed", at=1.0, **kw):
    return {"nodeid": nodeid, "when": when, "outcome": outcome, "duration": 0.1, "at": at, **kw}


def _bounded(fn, seconds=10.0):
    """`fn()` in a daemon thread: a regression that blocks (a FIFO's open()) fails the
    test instead of hanging the suite."""
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("v", fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the reader blocked"
    return got.get("v")


# -- fast: the reader's parsing, on bytes written here ------------------------------

def test_poll_gives_only_what_is_new_and_holds_a_half_written_line(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ProbeLog(tmp_path)
    assert log.poll() == [] and log.collected is None
    first = _line({"event": "session", "pid": 7, "rootdir": "/r", "cachedir": "/c",
                   "lastfailed_before": {"t.py::x": True}, "started": 5.0})
    first += _line({"event": "collected", "ids": ["t.py::a", "t.py::b"]})
    first += _line({"event": "start", "nodeid": "t.py::a", "at": 6.0})
    half = _line(_report("t.py::a", "setup", at=6.1))
    path.write_bytes(first + half[:10])
    got = log.poll()
    assert got == [Session(7, "/r", "/c", {"t.py::x": True}, 5.0),
                   Collected(("t.py::a", "t.py::b")), TestStart("t.py::a", 6.0)]
    assert log.current == ("t.py::a", 6.0) and log.reports == {}
    with open(path, "ab") as f:
        f.write(half[10:] + _line(_report("t.py::a", at=6.2))
                + _line({"event": "costs", "nodeid": "t.py::a", "start": 6.0, "stop": 6.3,
                         "cpu": 0.2, "rss": 4096, "load": 0.5}))
    got = log.poll()
    assert [type(e) for e in got] == [Report, Report, Costs]
    assert log.current == (None, None)              # between tests after its logfinish
    assert log.outcomes() == {"t.py::a": (O.PASSED, None)}
    with open(path, "ab") as f:
        f.write(_line({"event": "finished", "exitstatus": 0}))
    assert log.poll() == [Finished(0)] and log.poll() == []
    assert log.finish().exitstatus == 0 and log.problems() == []


def test_bad_lines_are_skipped_and_counted_never_raised(tmp_path):
    (tmp_path / "results.jsonl").write_bytes(
        _line(_report("t.py::a")) + b"\xff\xfe{\"nodeid\": \"x\"}\n" + b"not json\n"
        + b"[" * 100000 + b"\n"                                        # too deep for json
        + _line({"nodeid": 3, "when": "call", "outcome": "passed"})   # wrong types: dropped
        + _line({"event": "start", "nodeid": "t.py::b", "at": float("nan")})
        + _line(_report("t.py::b", outcome="failed", longrepr="E   boom"))
        + b'{"nodeid": "t.py::c", "when": "ca')                       # cut by a kill
    log = ProbeLog(tmp_path).finish()
    assert set(log.outcomes()) == {"t.py::a", "t.py::b"}
    assert log.outcomes()["t.py::b"][0] is O.FAILED
    assert log.problems() == ["1 line(s) of results.jsonl not UTF-8: skipped",
                              "2 line(s) of results.jsonl not JSON records: skipped",
                              "2 record(s) of results.jsonl not the probe's: skipped"]


def test_absurd_numbers_and_texts_are_clamped_as_they_are_read(tmp_path):
    (tmp_path / "results.jsonl").write_bytes(
        _line(_report("t.py::a", "call", "failed", longrepr="x" * 200000, duration=1e308))
        + _line({"event": "costs", "nodeid": "t.py::a", "start": 5.0, "stop": 1.0,
                 "cpu": -3, "rss": -1})
        + _line(_report("t.py::b", duration=-2.0, cpu=float("inf")))
        + b'{"nodeid": "t.py::c", "when": "call", "outcome": "passed", "duration": NaN}\n')
    log = ProbeLog(tmp_path).finish()
    [a] = log.reports["t.py::a"]
    assert a.duration == probelog.MAX_SECONDS and len(a.longrepr) == probelog.MAX_LONGREPR
    assert log.costs["t.py::a"] == Costs("t.py::a", 5.0, 5.0, 0.0, None, None)
    [b] = log.reports["t.py::b"]
    assert b.duration == 0.0 and b.cpu is None
    assert log.reports["t.py::c"][0].duration == 0.0


def test_past_the_cap_the_rest_is_not_read_and_said(tmp_path, monkeypatch):
    monkeypatch.setattr(probelog, "MAX_LOG", 1000)
    monkeypatch.setattr(probelog, "_CHUNK", 300)
    lines = [_line(_report(f"t.py::t{i:03}")) for i in range(40)]
    (tmp_path / "results.jsonl").write_bytes(b"".join(lines))
    log = ProbeLog(tmp_path)
    log.poll()
    whole = 1000 // len(lines[0])
    assert log.over and len(log.reports) in (whole, whole + 1)   # + the cut one if it parses
    assert log.poll() == []                                        # nothing more, ever
    assert log.finish().over


def test_a_link_a_fifo_and_dev_zero_are_never_followed_nor_blocked_on(tmp_path):
    (tmp_path / "results.jsonl").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "current")
    os.mkfifo(tmp_path / "collected.json")
    (tmp_path / "session.json").symlink_to("/dev/zero")
    log = ProbeLog(tmp_path)
    assert _bounded(log.poll) == []
    assert _bounded(lambda: log.current) == (None, None)
    _bounded(log.finish)
    assert log.collected is None and log.session is None
    assert log.problems() == ["results.jsonl is a link (not followed): not read "
                              "(a test replaced it?)"]
    fifo = tmp_path / "x.json"
    os.mkfifo(fifo)
    assert _bounded(lambda: read_json(fifo, "default")) == "default"
    assert _bounded(lambda: probelog.read_text(tmp_path / "session.json")) == ""


def test_the_kept_log_outlives_its_dir_and_a_swap_for_a_link(tmp_path):
    """The supervisor makes the file and keeps it open, as the probe keeps its own fd:
    removing the dir, or putting a /dev/zero link at the name, loses nothing written."""
    pass_dir = tmp_path / "pass-1"
    pass_dir.mkdir()
    log = ProbeLog(pass_dir, create=True)
    fd = os.open(pass_dir / "results.jsonl", os.O_WRONLY | os.O_APPEND)   # the probe's
    os.write(fd, _line({"event": "collected", "ids": ["t.py::a", "t.py::b"]})
             + _line(_report("t.py::a")))
    assert len(log.poll()) == 2
    os.unlink(pass_dir / "results.jsonl")
    os.symlink("/dev/zero", pass_dir / "results.jsonl")
    os.write(fd, _line(_report("t.py::b")))
    shutil.rmtree(pass_dir)
    os.write(fd, _line({"event": "finished", "exitstatus": 0}))
    os.close(fd)
    _bounded(log.finish)
    assert set(log.outcomes()) == {"t.py::a", "t.py::b"} and log.exitstatus == 0
    assert log.problems() == ["results.jsonl was removed or replaced during the pass (a "
                              "test's doing?): what the probe wrote was read from the file "
                              "both kept open"]


def test_a_reader_by_name_keeps_what_it_read_when_the_file_is_swapped(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(_line(_report("t.py::a")))
    log = ProbeLog(tmp_path)
    log.poll()
    (tmp_path / "new").write_bytes(_line(_report("t.py::forged")))
    os.replace(tmp_path / "new", path)     # another file at the name (another inode)
    log.poll()
    assert set(log.finish().outcomes()) == {"t.py::a"} and log.moved


def test_an_older_pass_dir_is_read_from_its_snapshot_files(tmp_path):
    """A pass dir from before the stream carried everything: session.json,
    collected.json, finished.json, current and costs.jsonl stand in."""
    (tmp_path / "results.jsonl").write_bytes(_line(_report("t.py::a", "setup")))
    (tmp_path / "collected.json").write_text('["t.py::a"]')
    (tmp_path / "session.json").write_text('{"cachedir": "/c", "pid": 3}')
    (tmp_path / "finished.json").write_text('{"exitstatus": 1}')
    (tmp_path / "current").write_text('{"nodeid": "t.py::a", "since": 4.5}')
    (tmp_path / "costs.jsonl").write_text(
        '{"nodeid": "t.py::a", "start": 1, "stop": 2, "cpu": 0.5, "rss": 10}\n')
    log = ProbeLog(tmp_path).finish()
    assert log.collected == ("t.py::a",) and log.session.cachedir == "/c"
    assert log.exitstatus == 1 and log.current == ("t.py::a", 4.5)
    assert log.costs["t.py::a"] == Costs("t.py::a", 1.0, 2.0, 0.5, 10, None)
    assert log.outcomes() == {}   # only a setup: cut off


# -- fast: one reader -----------------------------------------------------------------

_PROBE_FILES = ("results", "costs", "collected", "session", "scopes", "finished", "current")
_NAMES = re.compile(
    r"(results\.jsonl|costs\.jsonl|collected\.json|session\.json|scopes\.json|finished\.json)"
    r"|PassDir\.(RESULTS|COSTS|COLLECTED|SESSION|SCOPES|FINISHED|CURRENT)\b"
    rf"|PassDir\([^()]*\)\.({'|'.join(_PROBE_FILES)})\b")


def _readers(sources: dict[str, str]) -> list[str]:
    return sorted(f"{name}:{n}" for name, src in sources.items()
                  for n, line in enumerate(src.splitlines(), 1) if _NAMES.search(line))


def test_no_module_but_probelog_names_the_probes_files():
    """The one-reader claim, by grep: outside probelog.py (the reader), rundirs.py (where
    the names are spelled) and the probe (the writer), no module of src/ names a file
    the probe writes, so none can open and parse one. The check itself catches one."""
    src = REPO / "src" / "tractor_tasks"
    sources = {str(p.relative_to(src)): p.read_text() for p in src.rglob("*.py")
               if p.name not in ("probelog.py", "rundirs.py") and p.parent.name != "probe"}
    assert len(sources) > 30
    assert _readers(sources) == []
    planted = {"x.py": 'lines = PassDir(d).results.read_text().splitlines()\n'
                       'n = json.loads(open(p / "collected.json").read())\n'}
    assert _readers(planted) == ["x.py:1", "x.py:2"]


def test_the_result_model_is_not_imported_by_the_supervisor():
    src = (REPO / "src" / "tractor_tasks" / "supervise.py").read_text()
    assert "from .results" not in src and "import results" not in src


# -- slow: real runs of the sample, a hostile test in them -----------------------------

_HOSTILE = '''
import os
import shutil


def test_a():
    pass


def test_b():
    d = os.environ["TRACTOR_TASKS_PROBE_DIR"]
    log = os.path.join(d, "results.jsonl")
    how = os.environ["HOSTILE"]
    if how == "devzero":
        os.unlink(log)
        os.symlink("/dev/zero", log)
        os.unlink(os.path.join(d, "current"))
        os.symlink("/dev/zero", os.path.join(d, "current"))
    elif how == "fifo":
        os.unlink(log)
        os.mkfifo(log)
        os.mkfifo(os.path.join(d, "tree-costs.json"))
    elif how == "not_utf8":
        with open(log, "ab") as f:
            f.write(b"\\xff\\xfe\\x00 not text\\n")
    elif how == "flood":  # 70 MiB of records that are not the probe's, then the rest
        with open(log, "a") as f:
            for _ in range(70 * 1024):
                f.write('{"forged": "' + "x" * 1000 + '"}\\n')
    elif how == "rmdir":  # contained, the dir is a mount point: what is in it goes
        shutil.rmtree(d, ignore_errors=True)
        assert not os.path.exists(log)
    elif how == "junit_link":
        run = os.path.dirname(d)
        os.symlink(os.environ["HOSTILE_OUTSIDE"], os.path.join(run, "junit.xml"))
        os.mkfifo(os.path.join(run, "outcome.json"))


def test_c():
    pass
'''

LIMIT = 3 * 2**30   # address space of the run and all it starts: a regression that reads
                    # /dev/zero ends in a MemoryError here, not in the machine's OOM killer


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


@pytest.fixture(scope="module")
def hostile_repo(tmp_path_factory):
    from tractor_tasks.pipeline import prepare_venv
    from tractor_tasks.target import load_target
    repo = copy_sample(tmp_path_factory.mktemp("hostile") / "sample-actors", git=True)
    (repo / "tests" / "test_hostile.py").write_text(_HOSTILE)
    prepare_venv(load_target(repo), "3.11", out=lambda line: None)
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("how, warning", [
    ("devzero", "results.jsonl was removed or replaced during the pass"),
    ("fifo", "results.jsonl was removed or replaced during the pass"),
    ("not_utf8", "1 line(s) of results.jsonl not UTF-8: skipped"),
    ("rmdir", "results.jsonl was removed or replaced during the pass"),
    ("junit_link", None),
])
def test_a_hostile_test_costs_the_run_none_of_its_results(hostile_repo, tmp_path, how,
                                                          warning):
    """A test that swaps its probe's log for a /dev/zero link or a FIFO, writes bytes
    that are not UTF-8 into it, removes its whole probe dir, or plants a junit.xml link
    and an outcome.json FIFO in the run dir: the run (under a memory limit and a kill
    timeout) ends with its outcome, every test counted as it ended, a warning saying
    what was found, and nothing outside written through."""
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched\n")
    env = {**os.environ, "HOSTILE": how, "HOSTILE_OUTSIDE": str(outside)}
    out = subprocess.run(
        [sys.executable, "-m", "invoke", "test", "tests/test_hostile.py", "--no-confirm",
         "--root", str(hostile_repo)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=240, preexec_fn=_limited)
    said = out.stdout + out.stderr
    assert out.returncode == 0, said
    assert "results: 3 passed" in out.stdout, said
    warnings = [ln for ln in out.stdout.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == (1 if warning else 0), said
    assert not warning or warnings[0].startswith(f"warning: pass 1: {warning}"), said
    run = hostile_repo / ".tractor-tasks" / "last"
    outcome = json.loads((run / "outcome.json").read_text())
    assert outcome["status"] == "passed" and outcome["not_run"] == []
    assert outcome["summary"]["passed"] == 3
    junit = run / "junit.xml"
    assert junit.is_file() and not junit.is_symlink()
    assert 'tests="3"' in junit.read_text()
    assert outside.read_text() == "untouched\n"


@pytest.mark.slow
def test_a_log_flooded_past_the_cap_names_the_pass_and_what_did_not_run(hostile_repo):
    """A test that writes 70 MiB into its probe's log: the supervisor reads 64 MiB of it
    (under a memory limit), the run ends with its outcome, the pass named in a NOT RUN
    line and the tests whose reports came after the cap (the flooder's own call and
    the next test) listed as never run."""
    env = {**os.environ, "HOSTILE": "flood"}
    out = subprocess.run(
        [sys.executable, "-m", "invoke", "test", "tests/test_hostile.py", "--no-confirm",
         "--root", str(hostile_repo)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=240, preexec_fn=_limited)
    said = out.stdout + out.stderr
    assert out.returncode == 1, said
    assert "NOT RUN: pass 1: its probe log passed 64 MiB; the rest of it was not read" \
        in out.stdout, said
    assert "NOT RUN: 2 selected test(s) never ran and nothing accounts for it: " \
        "tests/test_hostile.py::test_b, tests/test_hostile.py::test_c" in out.stdout, said
    assert "warning: pass 1: " in out.stdout and "not the probe's: skipped" in out.stdout
    outcome = json.loads((hostile_repo / ".tractor-tasks" / "last" / "outcome.json")
                         .read_text())
    assert outcome["status"] == "failed" and outcome["not_run"] == [
        "tests/test_hostile.py::test_b", "tests/test_hostile.py::test_c"]
    assert outcome["summary"]["passed"] == 1
