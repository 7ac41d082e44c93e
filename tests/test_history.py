"""The results history: round trips, medians per cell, globs over [param] ids, several real
writer processes at once, damaged files moved aside (never lost), flip ranking, pasteable
flaky rules, and a real pytest JUnit file imported."""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import tomllib
import uuid

import pytest

from helpers import wait_for
from tractor_tasks.errors import TaskError
from tractor_tasks.durations import load_durations
from tractor_tasks.history import (
    OUTCOMES, SCHEMA_VERSION, FlakyCandidate, History, RunRow, TestRow, flaky_toml)
from tractor_tasks.target import id_glob as glob_to_regex
from tractor_tasks.target import load_target

TCP = "tests-3.13(tpt='tcp')"
UDS = "tests-3.13(tpt='uds')"


@pytest.fixture
def hist(tmp_path):
    return History(tmp_path / "history.db")


def _run(t: float, *, tpt: str = "tcp", minor: str = "3.13", spawn: str = "trio",
         run_id: str | None = None, **kw) -> RunRow:
    cell = f"tests-{minor}(tpt='{tpt}')"
    return RunRow(run_id or uuid.uuid4().hex, t, t + 10, "cell", cell=cell, minor=minor,
                  tpt=tpt, spawn=spawn, **kw)


def _count(path) -> int:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT count(*) FROM results").fetchone()[0]


# -- round trip, durations, recent ------------------------------------------------------

def test_record_then_read_back_every_field(hist):
    run = _run(1000.0, commit="abc123", load=0.42, host="box")
    hist.record(run, [
        TestRow("tests/test_a.py::test_ok", "passed", 1.5),
        TestRow("tests/test_a.py::test_bad[tcp]", "failed", 2.5, flaky="known",
                signature="TooSlowError: deadline exceeded", verdict="known-flaky"),
    ])
    rows = hist.recent()
    assert [r["nodeid"] for r in rows] == ["tests/test_a.py::test_bad[tcp]",
                                           "tests/test_a.py::test_ok"]  # newest, then last in
    bad = rows[0]
    assert bad | {"run_id": None} == {
        "nodeid": "tests/test_a.py::test_bad[tcp]", "cell": TCP, "minor": "3.13", "tpt": "tcp",
        "spawn": "trio", "outcome": "failed", "duration": 2.5, "flaky": "known",
        "signature": "TooSlowError: deadline exceeded", "commit": "abc123", "time": 1000.0,
        "verdict": "known-flaky", "kind": run.kind,
        "run_id": None}
    assert hist.durations() == {"tests/test_a.py::test_ok": 1.5,
                                "tests/test_a.py::test_bad[tcp]": 2.5}


def test_recording_a_run_again_replaces_it_and_bad_outcomes_record_nothing(hist):
    run = _run(1.0)
    hist.record(run, [TestRow("tests/test_a.py::t", "passed", 1.0)])
    hist.record(run, (TestRow(f"tests/test_a.py::t{k}", "passed", 1.0) for k in range(3)))
    assert len(hist.recent(limit=100)) == 3
    with pytest.raises(ValueError, match="outcome"):
        hist.record(_run(2.0), [TestRow("tests/test_a.py::u", "passed", 1.0),
                                TestRow("tests/test_a.py::v", "exploded", 1.0)])
    assert len(hist.recent(limit=100)) == 3
    assert set(OUTCOMES) >= {"hung", "timeout", "interrupted"}


def test_durations_median_of_the_last_runs_in_the_cell_else_any_cell(hist):
    nodeid = "tests/test_a.py::t"
    hist.record(_run(0.0, tpt="uds"), [TestRow(nodeid, "passed", 10.0)])
    for k, seconds in enumerate([100, 100, 1, 2, 3, 4, 5], 1):
        outcome = ("passed", "failed", "error")[k % 3]
        hist.record(_run(float(k)), [TestRow(nodeid, outcome, float(seconds))])
    hist.record(_run(50.0), [TestRow(nodeid, "skipped", 0.0)])      # not timed
    hist.record(_run(60.0), [TestRow(nodeid, "interrupted", 0.1)])  # not timed
    assert hist.durations(tpt="tcp") == {nodeid: 3.0}      # median of 1..5: the 100s aged out
    assert hist.durations(tpt="tcp", last=3) == {nodeid: 4.0}
    assert hist.durations(tpt="uds") == {nodeid: 10.0}     # its own cell, though older
    assert hist.durations(minor="3.12") == {nodeid: 3.0}   # no such cell: any cell's last 5
    assert hist.durations([nodeid, "tests/test_a.py::never"], tpt="uds") == {nodeid: 10.0}


def test_recent_globs_over_ids_with_params_newest_first(hist):
    ids = ["tests/test_a.py::test_p[tcp-1]", "tests/test_a.py::test_p[uds-1]",
           "tests/test_a.py::test_q", "tests/sub/test_b.py::test_p[tcp-1]"]
    for k in range(3):
        hist.record(_run(float(k)), [TestRow(i, "passed", 1.0) for i in ids])

    def found(pattern, limit=100):
        return [(r["nodeid"], r["time"]) for r in hist.recent(pattern, limit)]

    # [tcp-1] is literal: as a character class it would match nothing here
    assert found("test_a.py::test_p[tcp-1]") == [(ids[0], t) for t in (2.0, 1.0, 0.0)]
    assert found("tests/test_a.py::test_p[*", limit=3) == [(ids[1], 2.0), (ids[0], 2.0),
                                                           (ids[1], 1.0)]
    assert {n for n, _ in found("*::test_p[?cp-1]")} == {ids[0], ids[3]}
    assert {n for n, _ in found("test_b.py::*")} == {ids[3]}  # a tail after a "/"
    assert found("ests/test_a.py::test_p") == []              # not a tail after a "/"
    # a bare name (no * ?, no :: or /) is found anywhere in an id
    assert {n for n, _ in found("test_p[tcp-1]")} == {ids[0], ids[3]}
    assert {n for n, _ in found("test_q")} == {ids[2]}
    assert found("tests/test_a.py::test_[pq]") == []


# -- several writers ------------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys, time, uuid
    from pathlib import Path
    from tractor_tasks import history
    path, tmp, who, busy = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    history.BUSY_SECONDS = float(busy)
    h = history.History(path)
    (tmp / f"ready-{who}").touch()
    while not (tmp / "go").exists():
        time.sleep(0.002)
    for k in range(25):
        run = history.RunRow(uuid.uuid4().hex, time.time(), time.time(), "shard", tpt=who)
        h.record(run, [history.TestRow(f"tests/test_{who}.py::t{k}_{j}", "passed", 0.1)
                       for j in range(20)])
""")


@pytest.mark.parametrize("busy", [10.0, 0.001], ids=["busy-timeout", "retries"])
@pytest.mark.slow
def test_several_processes_write_at_once_and_no_row_is_lost(tmp_path, busy):
    """Four writers race the schema, then 25 transactions each, all at once. With sqlite's
    own busy wait cut to 1 ms, "database is locked" reaches our retry loop instead."""
    path = tmp_path / "history.db"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(tmp_path),
                               f"w{i}", str(busy)], stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    try:
        wait_for(lambda: all((tmp_path / f"ready-w{i}").exists() or procs[i].poll() is not None
                             for i in range(4)), timeout=60, what="writers ready")
        (tmp_path / "go").touch()
        errors = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert _count(path) == 4 * 25 * 20
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 100
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- damaged, foreign, misplaced files --------------------------------------------------

def test_a_garbage_file_is_moved_aside_with_one_warning_and_a_fresh_one_works(tmp_path):
    path = tmp_path / "history.db"
    garbage = b"\x00not sqlite\xff" + os.urandom(8192)
    path.write_bytes(garbage)
    (tmp_path / "unrelated.txt").write_text("keep me")
    warnings = []
    h = History(path, warn=warnings.append)
    assert len(warnings) == 1 and "moved it aside" in warnings[0]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("history.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert aside[0].name in warnings[0]
    h.record(_run(1.0), [TestRow("tests/test_a.py::t", "passed", 1.0)])
    assert [r["nodeid"] for r in History(path, warn=warnings.append).recent()] == \
        ["tests/test_a.py::t"]
    assert len(warnings) == 1 and (tmp_path / "unrelated.txt").read_text() == "keep me"


def test_a_truncated_history_is_moved_aside_too(tmp_path):
    path = tmp_path / "history.db"
    h = History(path)
    for k in range(20):
        h.record(_run(float(k)), [TestRow(f"tests/test_a.py::t{j}" + "x" * 200, "passed", 1.0)
                                  for j in range(100)])
    assert not os.path.exists(f"{path}-wal")  # the last close checkpointed it
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    warnings = []
    assert History(path, warn=warnings.append).recent() == []
    assert len(warnings) == 1
    assert len([p for p in tmp_path.iterdir() if ".corrupt-" in p.name]) == 1


def test_a_directory_in_place_of_the_file_is_refused(tmp_path):
    (tmp_path / "history.db").mkdir()
    with pytest.raises(TaskError) as err:
        History(tmp_path / "history.db")
    assert err.value.code == 1 and "directory" in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "history.db").is_dir() and len(list(tmp_path.iterdir())) == 1


def test_a_newer_schema_or_a_foreign_database_is_refused_untouched(tmp_path):
    newer = tmp_path / "newer.db"
    History(newer)
    with sqlite3.connect(newer) as con:
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(TaskError, match="newer") as err:
        History(newer)
    assert err.value.code == 1
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE mine (x)")
    before = foreign.read_bytes()
    with pytest.raises(TaskError, match="not a tractor-tasks history"):
        History(foreign)
    assert foreign.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]


# -- flaky ------------------------------------------------------------------------------------

A = "tests/test_peer.py::test_spawns[tcp-1]"
A2 = "tests/test_peer.py::test_spawns[tcp-2]"
B = "tests/test_peer.py::test_always_broken"
C = "tests/test_peer.py::test_broke_once"
D = "tests/test_peer.py::test_too_new"
SLOW = "trio.TooSlowError: deadline exceeded after {}s"


def _flip_history(hist):
    """A alternates in tcp and always passes in uds; B always fails; C broke once and stayed
    broken; D flipped but ran only twice."""
    for k in range(8):
        a = ("passed", "failed")[k % 2]
        hist.record(_run(100.0 + k, tpt="tcp"), [
            TestRow(A, a, 1.0, signature=SLOW.format(k) if a == "failed" else ""),
            TestRow(A2, "hung" if k == 5 else "passed", 1.0, signature="HUNG" * (k == 5)),
            TestRow(B, "failed", 1.0, signature="AssertionError: assert 1 == 2"),
            TestRow(C, "passed" if k < 4 else "error", 1.0, signature="OSError: boom" * (k >= 4)),
            *([TestRow(D, ("passed", "failed")[k % 2], 1.0, signature="X")] if k >= 6 else []),
        ])
        hist.record(_run(100.0 + k, tpt="uds"), [TestRow(A, "passed", 1.0)])


def test_flaky_ranks_by_flip_rate_per_cell(hist):
    _flip_history(hist)
    got = [(c.nodeid, c.tpt, c.flips, c.runs) for c in hist.flaky()]
    # not A in uds (always passed), not B (always failed), not D (two runs only)
    assert got == [(A, "tcp", 7, 8), (A2, "tcp", 2, 8), (C, "tcp", 1, 8)]
    top = hist.flaky()[0]
    assert top.cell == TCP and top.rate == 1.0
    assert top.signature == SLOW.format(7)  # all distinct: the newest wins the tie
    assert len(top.signatures) == 4
    assert [c.nodeid for c in hist.flaky(min_runs=2)] == [A, D, A2, C]  # D: 1 flip in 1 pair
    assert [c.nodeid for c in hist.flaky(last=4)] == [A, A2]  # C's flip is older than 4 runs


def test_flaky_toml_pastes_into_pyproject_and_classifies_the_flaky_test_only(hist, tmp_path):
    _flip_history(hist)
    hist.record(_run(200.0, tpt="uds"), [TestRow(A2, "passed", 1.0)])
    for k in range(3):  # A2 flips in uds too: one entry, both cells in its note
        hist.record(_run(201.0 + k, tpt="uds"), [
            TestRow(A2, ("failed", "passed")[k % 2], 1.0,
                    signature=SLOW.format(k) if k % 2 == 0 else "")])
    text = flaky_toml(hist.flaky())
    entries = tomllib.loads(text)["tool"]["tractor-tasks"]["flaky"]
    assert [(e["test"], e["error"]) for e in entries] == [
        ("test_peer.py::test_spawns*", "TooSlowError: deadline exceeded after"),  # stable head
        ("test_peer.py::test_spawns*", "HUNG"),             # A2 also hung once in tcp
        ("test_peer.py::test_broke_once", "OSError: boom")]  # the same message every time
    a = entries[0]
    assert a["note"] == (f"flips 7 of 8 runs in {TCP}; flips 3 of 4 runs in {UDS}")
    assert glob_to_regex(a["test"]).match(A.removeprefix("tests/"))
    assert glob_to_regex(a["test"]).match(A2.removeprefix("tests/"))
    assert not glob_to_regex(a["test"]).match(B.removeprefix("tests/"))
    assert entries[1]["note"] == f"flips 2 of 8 runs in {TCP}"

    (tmp_path / "tests").mkdir()
    (tmp_path / "pyproject.toml").write_text("[tool.tractor-tasks]\n" + text)
    rules = load_target(tmp_path).flaky  # the project's own validation accepts them

    def known(nodeid, haystack):  # classify()'s rule: the id glob AND the error regex
        rel = nodeid.removeprefix("tests/")
        return any(glob_to_regex(r.test).match(rel) and re.search(r.error, haystack)
                   for r in rules)

    slow = "trio.TooSlowError: deadline exceeded after 12s"
    assert known(A, slow) and known(A2, f"E   {slow}")
    assert not known(A, "AssertionError: assert 1 == 2")
    assert not known(A, "trio.TooSlowError: something else")
    assert not known(B, slow)
    assert known(A2, "HUNG") and not known(C, "HUNG")  # a hang's signature, as results has it


def test_flaky_toml_without_a_signature_comments_instead_of_matching_everything():
    c = FlakyCandidate(A, TCP, "3.13", "tcp", "trio", 2, 5, "")
    text = flaky_toml([c])
    assert text.startswith("#") and tomllib.loads(text) == {}
    assert flaky_toml([]) == ""


# -- the committed durations file --------------------------------------------------------

def test_export_then_load_durations_and_a_bad_file_is_one_line(hist, tmp_path):
    hist.record(_run(1.0, tpt="tcp"), [TestRow("tests/test_a.py::t[1]", "passed", 1.23456)])
    hist.record(_run(2.0, tpt="uds"), [TestRow("tests/test_a.py::t[1]", "passed", 9.0)])
    out = tmp_path / "durations.json"
    assert hist.export_durations(out, tpt="tcp") == 1
    assert load_durations(out) == {"tests/test_a.py::t[1]": 1.235}
    for text in ("{", '{"version": 3, "durations": {}}', '{"version": 1, "durations": {"a": "x"}}',
                 "[]"):
        out.write_text(text)
        with pytest.raises(TaskError) as err:
            load_durations(out)
        assert err.value.code == 1 and "\n" not in str(err.value)
    with pytest.raises(TaskError):
        load_durations(tmp_path / "missing.json")
