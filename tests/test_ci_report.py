"""The CI report job's decisions (ci.py), on artifacts written here: a job of the matrix
that reported nothing, the failures named, run-level problems, the step summary's size,
and the jobs' histories merged into one. (Real jobs run in CI-shaped clones:
test_ci_workflow.py.)"""
from __future__ import annotations

import json
import sqlite3
import uuid

import pytest

from tractor_tasks.ci import NO_OUTCOME, STEP_SUMMARY_LIMIT, report_dir
from tractor_tasks.cells import table_markdown, table_text
from tractor_tasks.errors import TaskError
from tractor_tasks.history import History, RunRow, TestRow

TCP = "tests-3.13(tpt='tcp')"
UDS = "tests-3.13(tpt='uds')"


def _outcome(cell=TCP, status="passed", shard=None, failures=(), code=None, note="",
             not_run=(), **summary):
    s = {"passed": 10, "new_failures": 0, "known_flaky": 0, "hung": 0, "skipped": 0,
         "leaked": 0} | summary
    return {"cell": cell, "minor": "3.13", "tpt": "tcp", "spawn": "trio", "status": status,
            "code": code if code is not None else (0 if status in ("passed", "skipped") else 1),
            "seconds": 5.0, "shard": shard, "summary": s, "failures": list(failures),
            "note": note, "not_run": list(not_run)}


def _arts(tmp_path, outcomes, matrix=None):
    arts = tmp_path / "arts"
    for i, rec in enumerate(outcomes):
        d = arts / f"shard-{i}" / "cell"
        d.mkdir(parents=True)
        (d / "outcome.json").write_text(json.dumps(rec))
    arts.mkdir(exist_ok=True)
    if matrix is not None:
        (arts / "matrix").mkdir()
        (arts / "matrix" / "matrix.json").write_text(json.dumps({"include": matrix}))
    return arts


def _job(cell, shard=None, of=None):
    row = {"session": cell, "python": "3.13", "tpt": "tcp", "spawn": "trio"}
    return row | ({"shard": shard, "of": of} if shard else {})


def test_a_shard_the_matrix_has_and_no_artifact_has_is_red_and_named(tmp_path):
    arts = _arts(tmp_path, [_outcome(shard="1/4"), _outcome(shard="3/4"), _outcome(shard="4/4")],
                 matrix=[_job(TCP, k, 4) for k in range(1, 5)] + [_job(UDS)])
    rep = report_dir(arts, warn=lambda line: None)
    assert rep.red
    assert [j.label for j in rep.missing] == [f"{TCP} shard 2/4", UDS]
    md = rep.markdown(table_markdown(rep.rows))
    assert f"{TCP} shard 2/4: {NO_OUTCOME}" in md and f"{UDS}: {NO_OUTCOME}" in md
    assert md.startswith("## tractor-tasks: FAILED") and "3 of 5 jobs reported" in md
    # never read as passed: the partial cell says what is missing, the absent one has no status
    table = table_text(rep.rows)
    tcp = next(line for line in table.splitlines() if line.startswith(TCP))
    uds = next(line for line in table.splitlines() if line.startswith(UDS))
    assert "passed +1 no outcome" in tcp and "no outcome" in uds and "passed" not in uds


def test_every_job_reported_and_passed_is_green(tmp_path):
    arts = _arts(tmp_path, [_outcome(shard="1/2"), _outcome(shard="2/2", pre_existing=2)],
                 matrix=[_job(TCP, 1, 2), _job(TCP, 2, 2)])
    rep = report_dir(arts, warn=lambda line: None)
    assert not rep.red and not rep.missing and not rep.failures
    assert rep.headline().startswith("passed: 0 regression(s) · 0 new · 2 pre-existing")


def test_without_a_matrix_a_sharded_cells_missing_shard_is_still_red(tmp_path):
    arts = _arts(tmp_path, [_outcome(shard="1/2")])
    rep = report_dir(arts, warn=lambda line: None)
    assert rep.red and [j.label for j in rep.missing] == [f"{TCP} shard 2/2"]
    assert any("no matrix.json" in n for n in rep.notes)


def test_regressions_and_new_failures_are_named_with_job_class_reason_and_cause(tmp_path):
    fails = [
        {"nodeid": "tests/test_a.py::test_pre", "outcome": "failed", "verdict": "pre-existing",
         "why": "fails at main too", "cause": []},
        {"nodeid": "tests/test_a.py::test_new", "outcome": "failed", "verdict": "new",
         "why": "no baseline", "cause": []},
        {"nodeid": "tests/test_b.py::test_broke", "outcome": "failed", "verdict": "regression",
         "why": "fails alone again; passed at abc1234", "cause": ["changed: src/b.py", "x"]},
    ]
    arts = _arts(tmp_path, [_outcome(status="failed", shard="2/2", failures=fails,
                                     new_failures=2, regressions=1, pre_existing=1),
                            _outcome(shard="1/2")],
                 matrix=[_job(TCP, 1, 2), _job(TCP, 2, 2)])
    rep = report_dir(arts, warn=lambda line: None)
    assert rep.red and not rep.missing and not rep.problems
    assert [(f.tag, f.nodeid) for f in rep.failures] == [
        ("REGRESSION", "tests/test_b.py::test_broke"), ("NEW", "tests/test_a.py::test_new")]
    md = rep.markdown(table_markdown(rep.rows))
    head, rest = md.split("\n", 1)
    assert "1 regression(s) · 1 new · 1 pre-existing" in head
    line = next(ln for ln in md.splitlines() if "test_broke" in ln)
    assert f"{TCP} shard 2/2" in line and "**REGRESSION**" in line
    assert "passed at abc1234" in line and "likely cause: changed: src/b.py" in line
    assert "test_pre" not in md  # explained: counted, not listed
    assert md.index("test_broke") < md.index("| cell |")  # names before the table
    header = next(ln for ln in md.splitlines() if ln.startswith("| cell |"))
    assert "| regressions | new |" in header


def test_the_likely_cause_is_said_once_as_the_verdict_writes_it(tmp_path):
    # verdict.py stores each cause as "likely cause: FILE:FUNC (...)"; the report adds
    # its own label, so a real outcome read "likely cause: likely cause: ..."
    fails = [{"nodeid": "tests/test_b.py::test_broke", "outcome": "failed",
              "verdict": "regression", "why": "fails alone again",
              "cause": ["likely cause: pkg/b.py:f (the test executed it in pytest; "
                        "changed since main)"]}]
    arts = _arts(tmp_path, [_outcome(status="failed", shard="1/1", failures=fails,
                                     new_failures=1, regressions=1)],
                 matrix=[_job(TCP, 1, 1)])
    rep = report_dir(arts, warn=lambda line: None)
    md = rep.markdown(table_markdown(rep.rows))
    line = next(ln for ln in md.splitlines() if "test_broke" in ln)
    assert line.count("likely cause") == 1 and "likely cause: pkg/b.py:f (the test" in line
    text = next(ln for ln in rep.lines() if "test_broke" in ln)
    assert text.count("likely cause") == 1 and "likely cause: pkg/b.py:f" in text


def test_a_job_reported_twice_counts_once_in_the_table_as_in_the_verdict(tmp_path):
    # the same shard uploaded twice (a re-run): the later outcome is the job's, for the
    # headline and for the table alike (the table once summed both)
    early = _outcome(shard="1/2", pre_existing=7, flaky=11) | {"finished": 100.0}
    late = _outcome(shard="1/2", passed=12, pre_existing=1, flaky=2) | {"finished": 200.0}
    other = _outcome(shard="2/2", passed=20, pre_existing=2) | {"finished": 150.0}
    arts = _arts(tmp_path, [late, early, other], matrix=[_job(TCP, 1, 2), _job(TCP, 2, 2)])
    rep = report_dir(arts, warn=lambda line: None)
    assert any("reported twice" in n for n in rep.notes)
    assert rep.totals["pre_existing"] == 3 and rep.totals["flaky"] == 2
    (row,) = rep.rows
    assert (row.passed, row.pre_existing, row.flaky, row.reported) == (32, 3, 2, 2)
    assert len(rep.kept) == 2


@pytest.mark.parametrize("rec, words", [
    (_outcome(status="timeout", code=124), "timed out"),
    (_outcome(status="error", code=2, note="no python3.13 here"), "error: no python3.13 here"),
    (_outcome(status="failed", not_run=["tests/test_a.py::t"]), "1 selected test(s) never ran"),
    (_outcome(status="interrupted", code=130), "interrupted"),
])
def test_a_problem_of_the_run_itself_is_red_and_said(tmp_path, rec, words):
    rep = report_dir(_arts(tmp_path, [rec], matrix=[_job(TCP)]), warn=lambda line: None)
    assert rep.red and any(words in p for p in rep.problems), rep.problems


def test_a_skipped_cell_is_a_note_not_red(tmp_path):
    rep = report_dir(_arts(tmp_path, [_outcome(status="skipped", note="no 3.14 here")],
                           matrix=[_job(TCP)]), warn=lambda line: None)
    assert not rep.red and any("skipped: no 3.14 here" in n for n in rep.notes)


def test_the_step_summary_stays_under_githubs_limit_and_says_how_many_more(tmp_path):
    n = 3000  # each listed line ~1 KB: 3 MB in all
    fails = [{"nodeid": f"tests/test_a.py::test_{i}[{'x' * 400}]", "outcome": "failed",
              "verdict": "new", "why": "w" * 300, "cause": ["c" * 300]} for i in range(n)]
    arts = _arts(tmp_path, [_outcome(status="failed", failures=fails, new_failures=n)],
                 matrix=[_job(TCP), _job(UDS)])
    rep = report_dir(arts, warn=lambda line: None)
    md = rep.markdown(table_markdown(rep.rows))
    assert len(md.encode()) < STEP_SUMMARY_LIMIT
    listed = md.count("**NEW**")
    assert 500 < listed < n and f"... and {n - listed} more" in md
    assert f"{UDS}: {NO_OUTCOME}" in md and "| cell |" in md  # never cut


def test_markup_in_a_test_id_or_message_stays_text(tmp_path):
    fails = [{"nodeid": "tests/test_a.py::test_x[`a`|<b>]", "outcome": "failed",
              "verdict": "new", "why": "<img src=x> | \x1b[31m", "cause": []}]
    rep = report_dir(_arts(tmp_path, [_outcome(status="failed", failures=fails,
                                               new_failures=1)], matrix=[_job(TCP)]),
                     warn=lambda line: None)
    md = rep.markdown(table_markdown(rep.rows))
    assert "<img" not in md and "&lt;img src=x&gt; \\|" in md and "\x1b" not in md


def test_a_bad_matrix_is_one_line_exit_2(tmp_path):
    arts = _arts(tmp_path, [_outcome()])
    (arts / "matrix.json").write_text('{"include": [{"session": 3}]}')
    with pytest.raises(TaskError) as err:
        report_dir(arts, warn=lambda line: None)
    assert err.value.code == 2 and "not a CI matrix" in str(err.value)
    assert "\n" not in str(err.value)
    # a job twice: two artifacts under one name, not what `invoke ci-matrix` prints
    row = {"session": TCP, "shard": 1, "of": 2}
    (arts / "matrix.json").write_text(json.dumps({"include": [row, dict(row)]}))
    with pytest.raises(TaskError) as err:
        report_dir(arts, warn=lambda line: None)
    assert err.value.code == 2 and str(err.value).endswith(
        f"is not a CI matrix ({TCP} shard 1/2 is in it twice); pass the output of "
        "`invoke ci-matrix` (the matrix job's) with --matrix"), str(err.value)


def _hist(path, cell, t, nodeid="tests/test_a.py::t", run_id=None):
    h = History(path)
    h.record(RunRow(run_id or uuid.uuid4().hex, t, t + 1, "cell", cell=cell),
             [TestRow(nodeid, "failed", 1.0, signature="E"), TestRow(nodeid + "2", "passed", 1.0)])
    return h


def _runs(path):
    with sqlite3.connect(path) as con:
        return sorted(con.execute("SELECT run_id, cell FROM runs"))


def test_the_report_merges_the_histories_it_finds_in_the_artifacts(tmp_path):
    arts = _arts(tmp_path, [_outcome(shard="1/2"), _outcome(shard="2/2")],
                 matrix=[_job(TCP, 1, 2), _job(TCP, 2, 2)])
    _hist(arts / "shard-0" / "history.sqlite", TCP, 100.0)
    _hist(arts / "shard-1" / "history.sqlite", TCP, 200.0)
    (arts / "shard-1" / "junk").mkdir()
    (arts / "shard-1" / "junk" / "history.sqlite").write_bytes(b"not a database" * 100)
    lines: list[str] = []
    into = tmp_path / "cache" / "history.sqlite"
    report_dir(arts, warn=lines.append, history=into)
    assert len(_runs(into)) == 2  # a bad artifact costs its own rows only
    assert any("junk/history.sqlite" in line and line.startswith("skipped:") for line in lines)
    assert any("merged 2 new run(s) from 3 job(s)" in line for line in lines), lines
    report_dir(arts, warn=lines.append, history=into)   # again: nothing doubled
    assert len(_runs(into)) == 2 and "(2 already there)" in lines[-1]


def test_the_merged_history_keeps_each_jobs_footprints(tmp_path):
    # the merged file is what the cache saves for the next run: on tractor it held the
    # runs and results but no footprints table, so the next run's jobs (and `invoke
    # affected` on a downloaded history) had none
    from tractor_tasks.footprints import Footprint
    arts = _arts(tmp_path, [_outcome(shard="1/2"), _outcome(shard="2/2")],
                 matrix=[_job(TCP, 1, 2), _job(TCP, 2, 2)])
    for i, (f, q) in enumerate([("p/reg.py", "Registrar.find"), ("p/rt.py", "Actor.run")]):
        h = _hist(arts / f"shard-{i}" / "history.sqlite", TCP, 100.0 * (i + 1),
                  nodeid=f"tests/test_{i}.py::t", run_id=f"run{i}")
        fp = Footprint()
        fp.add(f, q, 3, "subactor 'reg'")
        h.record_footprints(f"run{i}", "abc123", TCP, {f"tests/test_{i}.py::t": fp})
    into = tmp_path / "cache" / "history.sqlite"
    report_dir(arts, warn=lambda line: None, history=into)
    got = {n: (sha, sorted(fp.funcs)) for n, _, sha, fp in History(into).latest_footprints()}
    assert got == {"tests/test_0.py::t": ("abc123", [("p/reg.py", "Registrar.find")]),
                   "tests/test_1.py::t": ("abc123", [("p/rt.py", "Actor.run")])}
    report_dir(arts, warn=lambda line: None, history=into)   # again: nothing doubled
    with sqlite3.connect(into) as con:
        assert con.execute("SELECT count(*) FROM footprints").fetchone() == (2,)


def test_a_matrix_whose_jobs_all_vanished_is_red_with_each_named(tmp_path):
    rep = report_dir(_arts(tmp_path, [], matrix=[_job(TCP, 1, 2), _job(TCP, 2, 2)]),
                     warn=lambda line: None)
    assert rep.red and [j.label for j in rep.missing] == [f"{TCP} shard 1/2", f"{TCP} shard 2/2"]
    assert [r.status_text for r in rep.rows] == ["no outcome"]


def test_a_history_destination_that_is_a_directory_is_refused_before_anything(tmp_path):
    arts = _arts(tmp_path, [_outcome()], matrix=[_job(TCP)])
    (tmp_path / "h").mkdir()
    lines: list[str] = []
    with pytest.raises(TaskError) as err:
        report_dir(arts, warn=lines.append, history=tmp_path / "h",
                   durations_out=tmp_path / "d.json")
    assert err.value.code == 2 and "not a regular file" in str(err.value)
    assert not lines and not (tmp_path / "d.json").exists() and not any((tmp_path / "h").iterdir())
