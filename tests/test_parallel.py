"""The parallel runner's bookkeeping with fake lanes (each stands in for one contained
pytest start: the process boundary is faked, the scheduler, requeue and merge are the
real ones): a worker that dies mid-unit loses no test, contention is attributed, the
assignment follows the history. The same on real processes: test_shards_run.py."""
from __future__ import annotations

import io
import time
from types import SimpleNamespace

from tractor_tasks import sharding, workers
from tractor_tasks.history import TestCost
from tractor_tasks.output import Output
from tractor_tasks.passes import RunResult
from tractor_tasks.results import Results, TestResult
from tractor_tasks.schedule import Unit
from tractor_tasks.status import Stop, TestOutcome as O
from tractor_tasks.supervise import PassOutcome
from tractor_tasks.rundirs import RunDir
from tractor_tasks.target import Target

IDS = [f"tests/test_{m}.py::t{k}" for m in ("a", "b", "c") for k in range(4)]


def ctx(tmp_path, **opts):
    target = Target(tmp_path)
    out = Output(io.StringIO())
    p = SimpleNamespace(target=target, opts=SimpleNamespace(exitfirst=False, **opts))
    return SimpleNamespace(p=p, run_dir=RunDir(tmp_path),
                           signals=SimpleNamespace(count=0), deadline=time.monotonic() + 600,
                           out=out)


def plan(units, workers=2):
    return sharding.ShardPlan(IDS, [], {}, None, units=units, workers=workers)


def units(rate=0.3):
    return [Unit(f"tests/test_{m}.py", tuple(i for i in IDS if f"test_{m}." in i), 1.0, rate)
            for m in ("a", "b", "c")]


class FakeLanes:
    """lane_fn: runs every test given (passed, with a time window), except that pytest
    "dies" (SIGKILL) once at each test in `dies`."""

    def __init__(self, *dies, exits=()):
        self.dies, self.calls = set(dies), []
        self.exits = set(exits)   # the test calls os._exit(0): pytest ends with 0, unfinished

    def __call__(self, c, tests, number):
        self.calls.append(list(tests))
        results = Results(c.p.target)
        rc = 0
        unfinished = []
        t0 = time.time()
        for k, nodeid in enumerate(tests):
            if nodeid in self.exits:
                results.tests[nodeid] = TestResult(nodeid, O.INTERRUPTED)
                unfinished.append("pass 1: pytest ended (exit status 0) without finishing "
                                  f"its session, during {nodeid}")
                break
            if nodeid in self.dies:
                self.dies.discard(nodeid)
                results.tests[nodeid] = TestResult(nodeid, O.INTERRUPTED)
                rc = -9
                break
            bad = nodeid.endswith("b.py::t1")
            t = TestResult(nodeid, O.FAILED if bad else O.PASSED, 0.01)
            t.window = (t0 + k, t0 + k + 1)
            results.tests[nodeid] = t
        passes = [PassOutcome(1, c.run_dir.path, Stop.FINISHED, rc, 0.01)]
        return RunResult(results, passes=passes, unfinished=unfinished)


def test_a_worker_that_dies_mid_unit_loses_no_test(tmp_path):
    c = ctx(tmp_path)
    lanes = FakeLanes("tests/test_b.py::t1")
    res = workers.run_shards(c, plan(units()), lane_fn=lanes)
    # every test has an outcome: the one it died in is interrupted, the rest ran elsewhere
    assert set(res.results.tests) == set(IDS) and res.results.not_run() == []
    assert res.results.tests["tests/test_b.py::t1"].outcome is O.INTERRUPTED
    assert ["tests/test_b.py::t2", "tests/test_b.py::t3"] in lanes.calls
    assert any("queued again" in n for n in res.notes)
    assert res.broken == [] and res.unaccounted() == []  # nothing to report not run
    assert res.passes[-1].returncode == -9  # the run fails, as a serial run would


def test_a_lane_whose_last_test_exits_fails_the_parallel_run(tmp_path):
    """Issue 26 HIGH 1 with -n: every test is accounted for, nothing is queued again,
    yet the merged run carries the unfinished lane, and its end is a failure for it."""
    from tractor_tasks.options import RunOptions
    c = ctx(tmp_path)
    lanes = FakeLanes(exits=["tests/test_c.py::t3"])
    res = workers.run_shards(c, plan(units()), lane_fn=lanes)
    assert res.results.not_run() == [] and res.unaccounted() == [] and res.broken == []
    assert len(lanes.calls) == 3   # its rest: none, so nothing queued again
    assert res.unfinished == ["tests/test_c.py: pass 1: pytest ended (exit status 0) "
                              "without finishing its session, during tests/test_c.py::t3"]
    ending = res.end(RunOptions())
    assert (ending.status.value, ending.code, ending.why) == ("failed", 1, res.unfinished[0])


def test_a_unit_that_dies_twice_reports_its_rest_not_run(tmp_path):
    c = ctx(tmp_path)
    lanes = FakeLanes("tests/test_c.py::t1", "tests/test_c.py::t2")
    res = workers.run_shards(c, plan(units()), lane_fn=lanes)
    # died at t1, its rest queued again died at t2: t3 never ran, and the notes name it
    assert res.results.not_run() == ["tests/test_c.py::t3"]
    lost = [n for n in res.broken if "tests/test_c.py::t3" in n]  # the report's NOT RUN lines
    assert lost and "twice" in lost[0] and res.unaccounted() == ["tests/test_c.py::t3"]


def test_failures_of_a_parallel_run_carry_what_ran_alongside(tmp_path):
    c = ctx(tmp_path)
    res = workers.run_shards(c, plan(units(), workers=3), lane_fn=FakeLanes())
    bad = res.results.tests["tests/test_b.py::t1"]
    assert bad.parallel and all(t.parallel for t in res.results.tests.values())
    # the other lanes' tests whose windows overlap its own; never its own lane's
    assert bad.alongside and not any("test_b.py" in x for x in bad.alongside)
    assert res.results.tests["tests/test_a.py::t0"].alongside == []  # passes: not attributed


def test_a_serial_run_is_not_marked_parallel(tmp_path):
    c = ctx(tmp_path)
    res = workers.run_shards(c, plan(units(), workers=1), lane_fn=FakeLanes())
    assert set(res.results.tests) == set(IDS)   # every test ran, and none is marked
    assert not any(t.parallel for t in res.results.tests.values())


def test_units_from_the_history_and_heavy_from_the_config(tmp_path):
    costs = {i: TestCost(2.0, 0.5) for i in IDS if "test_a" in i}
    costs |= {i: TestCost(2.0, 2.4) for i in IDS if "test_b" in i}
    target = Target(tmp_path, heavy=("test_c.py",))
    got = {u.name: u for u in sharding.make_units(IDS, costs, target)}
    assert got["tests/test_a.py"].rate == 0.25 and not got["tests/test_a.py"].alone
    assert got["tests/test_b.py"].alone and got["tests/test_c.py"].alone
    assert got["tests/test_c.py"].heavy and got["tests/test_c.py"].rate is None
    assert got["tests/test_a.py"].tests == tuple(IDS[:4])  # pytest's order
    # the CI plan keeps the heavy ones apart
    assert sharding.heavy_modules(IDS, costs, target) == {"tests/test_b.py", "tests/test_c.py"}


def test_short_light_units_are_batched_and_modules_stay_whole(tmp_path):
    ids = [f"tests/test_{k}.py::t" for k in range(6)]
    costs = {i: TestCost(0.1, 0.01) for i in ids}
    got = sharding.make_units(ids, costs, Target(tmp_path))
    assert len(got) == 1 and got[0].tests == tuple(ids) and not got[0].alone


def test_the_static_plan_keeps_heavy_modules_apart():
    from tractor_tasks.shard_plan import module_of, plan
    ids = [f"tests/test_{m}.py::t{k}" for m in "abcdefgh" for k in range(3)]
    durations = {i: (9.0 if "test_a" in i or "test_b" in i else 1.0) for i in ids}
    heavy = {"tests/test_c.py", "tests/test_d.py", "tests/test_e.py"}
    shards = plan(ids, durations, 3, heavy=heavy)
    per = [{module_of(t) for t in s} & heavy for s in shards]
    assert all(len(h) == 1 for h in per)  # one heavy each: none shares while one is free
    shards = plan(ids, durations, 2, heavy=heavy)
    assert sorted(len({module_of(t) for t in s} & heavy) for s in shards) == [1, 2]


def test_ci_report_lines_give_each_job_wall_and_the_imbalance(tmp_path):
    import json
    from tractor_tasks.ci import shard_walls
    paths = []
    for i, (wall, predicted) in enumerate(((540.0, 500.0), (570.0, 510.0)), 1):
        d = tmp_path / f"job{i}"
        d.mkdir()
        (d / "outcome.json").write_text(json.dumps({"cell": "tests-3.13(tpt='tcp')",
                                                    "shard": f"{i}/2", "seconds": wall}))
        (d / "shard.json").write_text(json.dumps({"predicted": predicted}))
        paths.append(d / "outcome.json")
    (line,) = shard_walls(paths)
    assert line == ("tests-3.13(tpt='tcp'): 1/2 540s (predicted 500s), 2/2 570s (predicted "
                    "510s); imbalance 1.03 (max/mean)")
