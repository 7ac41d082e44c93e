"""The pass runner's decisions (resume after a hang, stop between passes, the hang limit,
-x) and the shard merge, as pure logic: fast, no processes.

The one fake is `FakePytest`, at the process boundary: it stands in for one contained
pytest start (`supervise.run_pass`: unshare, the probe, the watchdog). It reads the
select.json the pass runner wrote, "runs" the selected tests in order and writes
what the probe would (collected.json, results.jsonl, current, finished.json); a
hanging test leaves `current` pointing at it and the pass ends HUNG, as the per-test
bound ends it. The real-process tests of the same behaviour are in test_run.py
(resume, hang limit, -x, stop between passes) and test_shards_run.py (the merge).
"""
from __future__ import annotations

import json
import time

import pytest

from tractor_tasks import contain, passes
from tractor_tasks.options import RunOptions
from tractor_tasks.passes import PassRunner, RunResult
from tractor_tasks.pipeline import Plan
from tractor_tasks.results import Results, TestResult
from tractor_tasks.rundirs import State
from tractor_tasks.status import Stop, TestOutcome as O
from tractor_tasks.supervise import PassOutcome, Signals
from tractor_tasks.target import load_target

TESTS = [f"tests/test_m.py::test_{c}" for c in "abcdef"]


@pytest.fixture
def target(tmp_path):
    root = tmp_path / "t"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 't'\nrequires-python = '>=3.11'\n"
                                         "[tool.tractor-tasks]\npackage = 't'\n")
    return load_target(root)


class FakePytest:
    """Stands in for `supervise.run_pass` (one contained pytest start): see the module
    docstring. `hang` are tests that never report; `fail` report a failure;
    `on_hang` runs when a pass hangs (a signal arriving, the clock moving on)."""

    def __init__(self, tests, *, hang=(), fail=(), killed=(), exits=(), on_hang=None):
        self.tests, self.hang, self.fail, self.killed = list(tests), set(hang), set(fail), \
            set(killed)
        self.exits = set(exits)   # call os._exit(0): pytest ends, no finished.json
        self.on_hang = on_hang
        self.starts: list[dict] = []   # each start's select.json (None: no selection)

    def __call__(self, start):
        number, pass_dir, env = start.number, start.pass_dir, start.env
        select = env.get("TRACTOR_TASKS_SELECT")
        sel = json.loads(open(select).read()) if select else None
        self.starts.append(sel)
        only = set(sel["only"]) if sel and sel["only"] is not None else None
        skip = set(sel["skip"]) if sel else set()
        chosen = [t for t in self.tests if t not in skip and (only is None or t in only)]
        (pass_dir / "collected.json").write_text(json.dumps(chosen))
        with open(pass_dir / "results.jsonl", "a") as log:
            for nodeid in chosen:
                (pass_dir / "current").write_text(json.dumps({"nodeid": nodeid,
                                                              "since": time.time()}))
                log.write(json.dumps({"nodeid": nodeid, "when": "setup",
                                      "outcome": "passed", "duration": 0.01}) + "\n")
                if nodeid in self.hang:
                    if self.on_hang:
                        self.on_hang()
                    return PassOutcome(number, pass_dir, Stop.HUNG, -9, 1.0, running=nodeid,
                                       bound=5.0, dump_text=f"stack of {nodeid}")
                if nodeid in self.killed:  # pytest killed from elsewhere: no finished.json
                    return PassOutcome(number, pass_dir, Stop.FINISHED, -9, 1.0)
                if nodeid in self.exits:   # the test called os._exit(0)
                    return PassOutcome(number, pass_dir, Stop.FINISHED, 0, 1.0)
                bad = nodeid in self.fail
                log.write(json.dumps({"nodeid": nodeid, "when": "call",
                                      "outcome": "failed" if bad else "passed",
                                      "duration": 0.1,
                                      **({"longrepr": "E   AssertionError: no"} if bad else {})})
                          + "\n")
                (pass_dir / "current").write_text(json.dumps({"after": nodeid}))
        (pass_dir / "finished.json").write_text(json.dumps({"exitstatus": 1 if self.fail & set(
            chosen) else 0}))
        return PassOutcome(number, pass_dir, Stop.FINISHED, 1 if self.fail & set(chosen) else 0,
                           1.0)


class NoSweep:
    """Stands in for `sweep.sweep` (a scan of the machine's processes and sockets): the
    fake pytest leaves nothing."""
    acted = False

    def __init__(self, *a, **kw):
        pass

    def lines(self):
        return []


def runner(target, monkeypatch, fake, *, no_x=True, max_hangs=None, deadline=None,
           signals=None):
    monkeypatch.setattr(passes, "run_pass", fake)
    monkeypatch.setattr(passes, "sweep", NoSweep)
    opts = RunOptions.parse({"no_x": no_x, "max_hangs": max_hangs})
    plan = Plan(target, ["tests"], opts, "3.11", contain.detect("off"), 60.0)
    run_dir = State(target).new_run()
    signals = signals or Signals()
    return PassRunner(plan, run_dir, signals, deadline or time.monotonic() + 600,
                      lambda line: None)


def outcomes(result: RunResult) -> dict[str, O]:
    return {k.rsplit("_", 1)[1]: t.outcome for k, t in result.results.tests.items()}


def test_a_hang_resumes_the_rest_in_a_fresh_pass_without_the_done_or_hung(target,
                                                                          monkeypatch):
    fake = FakePytest(TESTS, hang=[TESTS[1]], fail=[TESTS[4]])
    result = runner(target, monkeypatch, fake).lane(only=None, shard=None, echo=None)
    assert [o.stop for o in result.passes] == [Stop.HUNG, Stop.FINISHED]
    assert fake.starts[0] is None  # the first pass runs the selection as it is
    assert fake.starts[1] == {"only": None, "skip": sorted(TESTS[:2])}
    assert outcomes(result) == {"a": O.PASSED, "b": O.HUNG, "c": O.PASSED, "d": O.PASSED,
                                "e": O.FAILED, "f": O.PASSED}
    hung = result.results.tests[TESTS[1]]
    assert hung.where == "pass 1" and "5s" in hung.message and hung.text == f"stack of {TESTS[1]}"
    assert result.results.tests[TESTS[2]].where == "pass 2"
    assert result.results.not_run() == [] and result.notes == []
    assert (result.passes[1].dir / "select.json").is_file()


def test_the_pass_runner_is_the_runner_the_verdict_declares(target, monkeypatch):
    from tractor_tasks.runner import Runner
    assert isinstance(runner(target, monkeypatch, FakePytest(TESTS)), Runner)


def test_resume_keeps_a_shards_only_set(target, monkeypatch):
    fake = FakePytest(TESTS, hang=[TESTS[2]])
    group = set(TESTS[1:5])
    result = runner(target, monkeypatch, fake).lane(only=group, shard=2, echo=None)
    assert fake.starts == [{"only": sorted(group), "skip": []},
                           {"only": sorted(group), "skip": sorted(TESTS[1:3])}]
    assert set(outcomes(result)) == set("bcde")
    assert result.results.tests[TESTS[3]].where == "shard 2: pass 2"
    assert all("shard-2" in str(o.dir) for o in result.passes)


def test_x_stops_at_the_hung_test(target, monkeypatch):
    fake = FakePytest(TESTS, hang=[TESTS[1]])
    result = runner(target, monkeypatch, fake, no_x=False).lane(only=None, shard=None,
                                                                echo=None)
    assert len(fake.starts) == 1
    assert result.notes == ["-x: the run stops at the hung test (--no-x resumes after it)"]
    assert result.results.not_run() == TESTS[2:]


def test_the_hang_limit_stops_resuming_and_says_how_many_did_not_run(target, monkeypatch):
    fake = FakePytest(TESTS, hang=[TESTS[1], TESTS[3]])
    result = runner(target, monkeypatch, fake, max_hangs=2).lane(only=None, shard=None,
                                                                 echo=None)
    assert len(fake.starts) == 2
    assert result.notes == ["hang limit reached (2, --max-hangs): 2 test(s) did not run"]
    assert result.results.not_run() == TESTS[4:]
    assert [t.nodeid for t in result.results.hung] == [TESTS[1], TESTS[3]]


def test_a_hang_on_the_last_test_starts_no_empty_pass(target, monkeypatch):
    fake = FakePytest(TESTS, hang=[TESTS[-1]])
    result = runner(target, monkeypatch, fake).lane(only=None, shard=None, echo=None)
    assert len(fake.starts) == 1 and result.notes == []


def test_a_signal_during_a_hang_starts_no_more_passes(target, monkeypatch):
    signals = Signals()
    fake = FakePytest(TESTS, hang=[TESTS[1]], on_hang=lambda: setattr(signals, "count", 1))
    result = runner(target, monkeypatch, fake, signals=signals).lane(only=None, shard=None,
                                                                     echo=None)
    assert len(fake.starts) == 1  # the second pass was not started
    assert [o.stop for o in result.passes] == [Stop.HUNG]   # the stop is the run's own
    assert result.stop is Stop.INTERRUPTED and result.stopped() is Stop.INTERRUPTED
    assert result.results.not_run() == TESTS[2:]


def test_the_whole_run_bound_expiring_during_a_hang_ends_the_lane(target, monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr(passes.time, "monotonic", lambda: clock["now"])
    fake = FakePytest(TESTS, hang=[TESTS[1]], on_hang=lambda: clock.update(now=2000.0))
    result = runner(target, monkeypatch, fake, deadline=1500.0).lane(only=None, shard=None,
                                                                     echo=None)
    assert len(fake.starts) == 1
    assert [o.stop for o in result.passes] == [Stop.HUNG]   # no pass of its own: the
    assert result.stop is Stop.TIMEOUT                      # run's stop says it
    assert result.notes == ["the whole-run bound expired after the hang: 4 test(s) did not run"]
    assert result.stopped() is Stop.TIMEOUT


def test_a_pytest_killed_from_elsewhere_leaves_its_running_test_interrupted(target,
                                                                            monkeypatch):
    fake = FakePytest(TESTS, killed=[TESTS[2]])
    result = runner(target, monkeypatch, fake).lane(only=None, shard=None, echo=None)
    assert len(fake.starts) == 1
    got = outcomes(result)
    assert got["a"] is O.PASSED and got["c"] is O.INTERRUPTED and "d" not in got


def test_a_last_test_that_exits_leaves_an_unfinished_pass_that_fails_the_run(target,
                                                                         monkeypatch):
    """Issue 26 HIGH 1, the lane's half: every test is accounted for (the last one cut
    while running), and the lane says its pytest never finished: the run fails."""
    fake = FakePytest(TESTS, exits=[TESTS[-1]], fail=[TESTS[0]])
    result = runner(target, monkeypatch, fake).lane(only=None, shard=None, echo=None)
    assert result.results.not_run() == [] and result.unaccounted() == []
    assert result.unfinished == [f"pass 1: pytest ended (exit status 0) without finishing "
                                 f"its session, during {TESTS[-1]}"]
    ending = result.end(RunOptions())
    assert (ending.status.value, ending.code) == ("failed", 1)
    assert ending.why == result.unfinished[0]


# -- the shard merge -------------------------------------------------------------

def lane_result(target, shard: int, outcomes_: dict[str, O], *, stop=Stop.FINISHED,
                leaks=None, notes=()):
    results = Results(target)
    for nodeid, outcome in outcomes_.items():
        results.tests[nodeid] = TestResult(nodeid, outcome, where=f"shard {shard}: pass 1")
    results.collected = list(outcomes_)
    results.lastfailed_before = {"x": True} if shard == 1 else {}
    results.cachedir = f"/cache/{shard}"
    if leaks:
        results.leaks.merge(leaks)
    return RunResult(results, passes=[PassOutcome(1, None, stop, 0, 1.0)],
                     notes=list(notes))




def test_a_probe_log_past_the_readers_cap_is_the_runs_problem(target, monkeypatch):
    """What the reader did not read past its cap did not run as far as the run can
    tell: the pass is named in `broken` (a NOT RUN line) and the rest is unaccounted."""
    from tractor_tasks import probelog
    monkeypatch.setattr(probelog, "MAX_LOG", 400)
    result = runner(target, monkeypatch, FakePytest(TESTS)).lane(only=None, shard=None,
                                                                   echo=None)
    ran = set(result.results.tests)
    assert TESTS[0] in ran and TESTS[-1] not in ran
    assert [b.split(";")[0] for b in result.broken] == ["pass 1: its probe log passed 400 bytes"]
    assert result.unaccounted() == [t for t in TESTS if t not in ran]
