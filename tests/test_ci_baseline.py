"""No change, no blame: a published tip's failures are pre-existing, anywhere else there is
a baseline; the no-baseline history rule's evidence (two runs, or the test's file
unchanged; this machine class; this environment); the verdict's progress lines; the
history merged from other histories (CI's). Pure decisions with git and the runner
faked (fast), then real clones and runs of the sample (slow)."""
from __future__ import annotations

import sqlite3

import pytest

from tractor_tasks import gitref, reruns, verdict
from tractor_tasks.errors import TaskError
from tractor_tasks.history import APPLICATION_ID, History, Past, RunRow, TestRow
from tractor_tasks.options import RunOptions
from tractor_tasks.passes import RunResult
from tractor_tasks.results import Results, TestResult
from tractor_tasks.status import RunStatus, TestOutcome as O, Verdict as V
from tractor_tasks.target import load_target

ID = "tests/test_core.py::test_x"
HEAD, A1, A2 = "h" * 40, "a" * 40, "b" * 40


@pytest.fixture
def target(tmp_path):
    root = tmp_path / "r"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "pkg"\n'
                                         '[tool.tractor-tasks]\npackage = "pkg"\n')
    return load_target(root)


class FakeAncestry:
    """git's answers at the process boundary: HEAD, and which commits are its ancestors."""
    def __init__(self, root, head=HEAD, ancestors=(HEAD, A1, A2)):
        self.root, self.head, self.anc = root, head, set(ancestors)

    def __call__(self, commit):
        return commit in self.anc


@pytest.fixture
def nogit(monkeypatch, target):
    """No git process: a clean checkout at HEAD whose ancestors are A1, A2; the test's
    file changed since A1 (unchanged_since answers from `same`)."""
    same = {A2}
    monkeypatch.setattr(gitref, "is_repo", lambda root: True)
    monkeypatch.setattr(gitref, "Ancestry", lambda root: FakeAncestry(root))
    monkeypatch.setattr(gitref, "edits", lambda root: [])
    monkeypatch.setattr(gitref, "changed_since", lambda root, c: [])
    monkeypatch.setattr(gitref, "unchanged_since", lambda root, c, path: c in same)
    monkeypatch.setattr(gitref, "export", lambda root, commit, dest: dest)  # no git archive
    monkeypatch.setattr(verdict, "environment", lambda t, m, env=None: "python=3.11.9;lock=L1")
    monkeypatch.setattr(verdict, "machine", lambda: "laptop")
    return same


class Plan:
    def __init__(self, target, strict=False):
        self.target, self.opts = target, RunOptions(exitfirst=False, strict=strict)
        self.minor, self.cell, self.tpt, self.spawn = "3.11", None, "tcp", "trio"


class Out(list):
    tty = False

    def __call__(self, line=""):
        self.append(line)


class Runner:
    """A lane gives each selected test the next outcome its script says."""
    def __init__(self, target, script, stop_after=None, strict=False):
        self.p = Plan(target, strict)
        self.script, self.lanes, self.out = script, [], Out()
        self.stop_after = stop_after
        self.run_dir = type("D", (), {"path": target.root / "run-1"})()

    def stopped(self):
        return self.stop_after is not None and len(self.lanes) >= self.stop_after

    def import_check(self, at, venv=None):
        return str(at)

    def lane(self, *, only, shard, echo, opts=None, phase=None, at=None, venv=None):
        self.lanes.append((phase, set(only)))
        r = Results(self.p.target)
        for nodeid in only:
            outcome = self.script[nodeid].pop(0)
            r.tests[nodeid] = TestResult(nodeid, outcome, message="AssertionError: boom"
                                         if outcome.bad else "")
        return RunResult(r)


class Hist:
    def __init__(self, rows):
        self.rows = rows

    def past(self, ids, **cell):
        return {i: self.rows[i] for i in ids if i in self.rows}

    def record(self, run, tests):
        pass


def row(outcome, commit, n=0, sig="AssertionError: boom", host="laptop", machine="laptop",
        environ="python=3.11.9;lock=L1"):
    return Past(outcome, sig if outcome != "passed" else "", commit, "", "cell", "", f"r{n}",
                1000.0 - n, host, environ, machine)


def judged(target, choice, rows=None, script=(O.FAILED,), **kw):
    r = Results(target)
    r.tests[ID] = TestResult(ID, O.FAILED, message="AssertionError: boom")
    runner = Runner(target, {ID: list(script)}, **{k: v for k, v in kw.items()
                                                  if k in ("stop_after", "strict")})
    j = verdict.judge(runner, r, history=Hist(rows or {}), choice=choice,
                      confirm=kw.get("confirm", 1))
    return r, j, runner


# -- no change, no blame ----------------------------------------------------------------------

def test_a_published_tip_calls_a_confirmed_failure_pre_existing_and_does_not_fail(target, nogit):
    r, j, runner = judged(target, gitref.Choice(None, published=True))
    t = r.tests[ID]
    assert t.verdict is V.PRE_EXISTING and "nothing changed to compare with" in t.why
    assert runner.lanes == [("confirm-1", {ID})] and verdict.failing(r) == []
    assert verdict.failing(r, strict=True) == [t]     # --strict still fails on it


def test_a_published_tip_failure_the_verdict_had_no_time_to_confirm_is_pre_existing(target,
                                                                                    nogit):
    r, j, runner = judged(target, gitref.Choice(None, published=True), stop_after=0)
    assert runner.lanes == [] and j.stopped
    assert r.tests[ID].verdict is V.PRE_EXISTING


def test_a_published_tip_with_no_confirm_calls_its_failures_pre_existing(target, nogit):
    """--no-confirm on a published tip (a recording run): nothing changed to blame, and
    nothing is re-run; the failures are pre-existing, not new, and the run passes."""
    r, j, runner = judged(target, gitref.Choice(None, published=True), confirm=0)
    t = r.tests[ID]
    assert runner.lanes == [] and t.verdict is V.PRE_EXISTING
    assert t.why.endswith("nothing changed to compare with (a published tip of the default "
                          "branch; not re-run: --no-confirm)")
    assert verdict.failing(r) == []
    r2, _, _ = judged(target, gitref.Choice(None), confirm=0)   # not a published tip
    assert r2.tests[ID].verdict is V.NEW


def test_without_a_published_tip_no_baseline_is_no_excuse(target, nogit):
    r, j, _ = judged(target, gitref.Choice(None))
    assert r.tests[ID].verdict is V.NEW and verdict.failing(r) == [r.tests[ID]]


def test_the_newest_ancestor_with_a_recorded_run_else_head_1():
    ancestors = ["c4", "c3", "c2", "c1"]      # HEAD~1 first (HEAD itself is never one)
    assert gitref.newest_recorded(ancestors, {"c1", "c3", "zz"}) == "c3"
    assert gitref.newest_recorded(ancestors, {"zz"}) is None


# -- the history rule without a baseline ------------------------------------------------------

def test_one_failed_run_is_evidence_only_while_the_tests_file_is_unchanged(target, nogit):
    # 1 of 1 failed at A1, and the test's file changed since A1: not pre-existing by the
    # history, so it is re-run alone (and then, on a published tip, pre-existing)
    rows = {ID: [row("failed", A1)]}
    r, _, runner = judged(target, gitref.Choice(None), rows)
    assert runner.lanes == [("confirm-1", {ID})] and r.tests[ID].verdict is V.NEW
    # 1 of 1 at A2, where the test's file is as it is now: pre-existing, no re-run
    rows = {ID: [row("failed", A2)]}
    r, _, runner = judged(target, gitref.Choice(None), rows)
    assert runner.lanes == [] and r.tests[ID].verdict is V.PRE_EXISTING
    # 2 of 2: pre-existing whatever changed
    rows = {ID: [row("failed", A1, 1), row("failed", A1, 2)]}
    r, _, runner = judged(target, gitref.Choice(None), rows)
    assert runner.lanes == [] and "2 of its last 2" in r.tests[ID].why


def test_the_history_rule_keys_on_the_machine_class_not_the_host(target, nogit, monkeypatch):
    monkeypatch.setattr(verdict, "machine", lambda: "ci:Linux/ubuntu24/20250105.1/4")
    same = [row("failed", A1, 1, host="fv-az1", machine="ci:Linux/ubuntu24/20250105.1/4"),
            row("failed", A1, 2, host="fv-az2", machine="ci:Linux/ubuntu24/20250105.1/4")]
    r, _, _ = judged(target, gitref.Choice(None), {ID: same})
    assert r.tests[ID].verdict is V.PRE_EXISTING
    other = [row("failed", A1, 1, host="fv-az1", machine="ci:macOS/macos15/20250105.1/3"),
             row("failed", A1, 2, host="fv-az2", machine="ci:macOS/macos15/20250105.1/3")]
    r, _, _ = judged(target, gitref.Choice(None), {ID: other})
    assert r.tests[ID].verdict is V.NEW


# -- environments -------------------------------------------------------------------------------

def test_env_diff_names_the_part_that_changed():
    now = "python=3.13.1;lock=L2;image=ubuntu24/2"
    assert verdict.env_diff("python=3.13.1;lock=L2;image=ubuntu24/2", now) == []
    assert verdict.env_diff("python=3.13.0;lock=L2", now) == \
        ["the interpreter (3.13.0, now 3.13.1)"]
    assert verdict.env_diff("python=3.13.1;lock=L1;image=ubuntu24/1", now) == \
        ["the lock file (a dependency)", "the runner image (ubuntu24/1, now ubuntu24/2)"]
    assert verdict.env_diff("", now) == []    # rows from before environments were kept


def test_baseline_rows_from_another_environment_are_not_evidence(target, nogit):
    base = gitref.Baseline(A1, "main", "test")
    rows = {ID: [row("failed", A1, 1, environ="python=3.11.9;lock=L0")]}
    r, j, runner = judged(target, gitref.Choice(base), rows,
                          script=(O.FAILED, O.PASSED, O.FAILED, O.PASSED))
    # the old lock's failure at main is not taken: the test ran at the baseline and passed
    # (and again, after it failed once more in a pytest of its own: the second opinion)
    assert [phase for phase, _ in runner.lanes] == ["confirm-1", "baseline", "alone-1",
                                                    "baseline-2"]
    assert r.tests[ID].verdict is V.REGRESSION and j.known_at_baseline == 0


def test_a_failure_at_an_unchanged_commit_that_passed_under_another_lock_is_the_lock(
        target, nogit):
    rows = {ID: [row("passed", HEAD, 1, environ="python=3.11.9;lock=L0")]}
    r, _, _ = judged(target, gitref.Choice(None, published=True), rows)
    t = r.tests[ID]
    assert t.verdict is V.REGRESSION and "the lock file (a dependency)" in t.why


# -- progress ---------------------------------------------------------------------------------

def test_the_verdict_passes_say_what_runs_how_many_are_left_and_the_time(target, nogit):
    r = Results(target)
    ids = ["tests/test_a.py::t1", "tests/test_a.py::t2", "tests/test_b.py::t1"]
    for i in ids:
        r.tests[i] = TestResult(i, O.FAILED, message="AssertionError: boom")
    # confirm fails, baseline passes; the second opinion: t1 of test_a passes alone, the
    # other two fail alone and pass at the baseline again
    runner = Runner(target, {i: [O.FAILED, O.PASSED, O.FAILED, O.PASSED] for i in ids})
    runner.script[ids[0]] = [O.FAILED, O.PASSED, O.PASSED]
    verdict.judge(runner, r, history=Hist({}), choice=gitref.Choice(
        gitref.Baseline(A1, "main", "test")))
    lines = [ln for ln in runner.out if ln.startswith("verdict: ")]
    assert lines[0].startswith("verdict: re-running failures alone: tests/test_a.py "
                               "(2 tests) · step 1 of 2 · 3 test run(s) left · ")
    assert lines[1].startswith("verdict: re-running failures alone: tests/test_b.py "
                               "(1 test) · step 2 of 2 · 1 test run(s) left · ")
    assert lines[2].startswith("verdict: at the baseline main (aaaaaaaaaa): 3 test(s) of 2 "
                               "module(s) in one pytest start · ")
    assert lines[3].startswith("verdict: a second opinion on 3 regression(s): "
                               "tests/test_a.py::t1 in a pytest of its own · 1 of 3 · ")
    assert lines[5].startswith("verdict: a second opinion on 3 regression(s): "
                               "tests/test_b.py::t1 in a pytest of its own · 3 of 3 · ")
    assert lines[6].startswith("verdict: at the baseline main (aaaaaaaaaa): 2 test(s) of 2 "
                               "module(s) in one pytest start · ")
    assert len(lines) == 7
    assert all(ln.rstrip().endswith("s") and ln.split(" · ")[-1][:-1].isdigit() for ln in lines)


# -- the history travels ----------------------------------------------------------------------

def _hist(path, runs):
    h = History(path)
    for run_id, host, outcome in runs:
        h.record(RunRow(run_id, 1.0, 2.0, "cell", minor="3.13", tpt="tcp", spawn="trio",
                        commit=A1, host=host, machine="ci:Linux/u/4"),
                 [TestRow(ID, outcome, 1.0, signature="AssertionError: boom"
                          if outcome == "failed" else "")])
    return h


def _count(path):
    with sqlite3.connect(path) as con:
        return (con.execute("SELECT count(*) FROM runs").fetchone()[0],
                con.execute("SELECT count(*) FROM results").fetchone()[0])


def test_merging_histories_is_by_run_and_idempotent(tmp_path):
    _hist(tmp_path / "job1" / "history.sqlite", [("j1", "fv-az1", "failed")])
    _hist(tmp_path / "job2" / "history.sqlite", [("j2", "fv-az2", "passed"),
                                                 ("j1", "fv-az1", "failed")])
    mine = _hist(tmp_path / "mine.sqlite", [("local", "laptop", "passed")])
    paths = [tmp_path / "job1" / "history.sqlite", tmp_path / "job2" / "history.sqlite"]
    assert mine.merge_from(paths) == (2, 1)     # j1 is in both: once
    assert _count(mine.path) == (3, 3)
    assert mine.merge_from(paths) == (0, 3) and _count(mine.path) == (3, 3)
    got = mine.past([ID], minor="3.13", tpt="tcp", spawn="trio")[ID]
    assert {(p.run_id, p.host, p.machine) for p in got} >= {("j1", "fv-az1", "ci:Linux/u/4")}
    # checkpointed: the database file alone holds every row (what a cache saves)
    wal = mine.path.with_name(mine.path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_an_old_history_merges_and_a_foreign_file_is_refused_whole(tmp_path):
    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, started REAL NOT NULL, finished "
                "REAL NOT NULL, kind TEXT NOT NULL, cell TEXT NOT NULL DEFAULT '', minor TEXT "
                "NOT NULL DEFAULT '', tpt TEXT NOT NULL DEFAULT '', spawn TEXT NOT NULL DEFAULT "
                "'', commit_sha TEXT, load REAL, host TEXT NOT NULL DEFAULT '')")
    con.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, nodeid "
                "TEXT NOT NULL, minor TEXT NOT NULL DEFAULT '', tpt TEXT NOT NULL DEFAULT '', "
                "spawn TEXT NOT NULL DEFAULT '', started REAL NOT NULL, outcome TEXT NOT NULL, "
                "duration REAL NOT NULL, flaky TEXT NOT NULL DEFAULT '', signature TEXT NOT "
                "NULL DEFAULT '')")
    con.execute("INSERT INTO runs VALUES ('v1', 1, 2, 'run', '', '3.13', 'tcp', 'trio', NULL, "
                "NULL, 'box')")
    con.execute(f"INSERT INTO results (run_id, nodeid, minor, tpt, spawn, started, outcome, "
                f"duration) VALUES ('v1', '{ID}', '3.13', 'tcp', 'trio', 1, 'passed', 1.5)")
    con.execute("PRAGMA user_version=1")
    con.execute(f"PRAGMA application_id={APPLICATION_ID}")
    con.commit()
    con.close()
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE runs (x)")
    mine = History(tmp_path / "mine.sqlite")
    assert mine.merge_from([old]) == (1, 0)
    assert mine.durations([ID]) == {ID: 1.5}
    with pytest.raises(TaskError) as err:
        mine.merge_from([foreign])
    assert "not a tractor-tasks history" in str(err.value) and _count(mine.path) == (1, 1)


@pytest.mark.slow
def test_invoke_history_import_merges_ci_histories_once(tmp_path):
    from helpers import copy_sample, invoke
    root = copy_sample(tmp_path / "repo")
    arts = tmp_path / "artifacts"
    _hist(arts / "history-tests-3.13-tcp-1" / "history.sqlite", [("j1", "fv-az1", "failed")])
    _hist(arts / "history-tests-3.13-tcp-2" / "history.sqlite", [("j2", "fv-az2", "passed")])
    first = invoke("history", "--import", str(arts), root=root)
    assert first.returncode == 0, first.stderr
    assert "merged 2 run(s) from 2 file(s)" in first.stdout
    again = invoke("history", "--import", str(arts), root=root)
    assert "merged 0 run(s) from 2 file(s); 2 already here" in again.stdout
    assert _count(root / ".tractor-tasks" / "history.sqlite") == (2, 2)
    shown = invoke("history", "test_x", root=root)
    assert "failed" in shown.stdout and "passed" in shown.stdout
    bad = invoke("history", "--import", str(tmp_path / "nowhere"), root=root)
    assert bad.returncode == 2 and "no such file or directory" in bad.stderr


def test_on_a_terminal_the_progress_line_is_redrawn_in_place_and_cleared():
    class Tty:
        tty = True

        def __init__(self):
            self.drawn, self.lines = [], []

        def status(self, lines):
            self.drawn.append(list(lines))

        def __call__(self, line=""):
            self.lines.append(line)
    out = Tty()
    p = reruns.Progress(out, "re-running failures alone")
    p.step("tests/test_a.py (1 test) · step 1 of 1 · 1 test run(s) left")
    p.close()
    assert out.lines == []      # nothing scrolls: the status block only
    assert out.drawn[0][0].startswith("verdict: re-running failures alone: tests/test_a.py")
    assert out.drawn[-1] == []  # cleared when the pass is over


def test_two_ci_jobs_started_in_one_second_by_one_pid_get_different_run_ids(tmp_path, monkeypatch):
    """A run's id in the history is its run dir's name, and the report job merges every
    job's history by run id: two runners that start a job in the same second with the
    same pid (containers start alike) must not make one job's rows vanish in the merge."""
    import time
    from types import SimpleNamespace
    from tractor_tasks.rundirs import State
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261206-060000")
    names = []
    for job in ("job1", "job2"):
        target = SimpleNamespace(root=tmp_path / job, state_dir=tmp_path / job / ".tractor-tasks")
        target.root.mkdir()
        run = State(target).new_run()
        names.append(run.path.name)
        run.close()
    assert names[0] != names[1]
