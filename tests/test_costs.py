"""Per-test costs in the history: schema 3 (cpu, rss per result; cores and freq per run),
the migration of version-1 and version-2 files in place, per-unit predictions, and the
durations file carrying costs (the version-1 shape still loads)."""
from __future__ import annotations

import json
import sqlite3
import uuid

import pytest

from tractor_tasks.errors import TaskError
from tractor_tasks.durations import TestCost, load_costs, load_durations
from tractor_tasks.history import (
    APPLICATION_ID, SCHEMA_VERSION, History, RunRow, TestRow, aggregate, machine_freq)

# the schema as tractor-tasks 1 wrote it (user_version 1), verbatim
V1_SCHEMA = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, started REAL NOT NULL, finished REAL NOT NULL,
        kind TEXT NOT NULL, cell TEXT NOT NULL DEFAULT '', minor TEXT NOT NULL DEFAULT '',
        tpt TEXT NOT NULL DEFAULT '', spawn TEXT NOT NULL DEFAULT '', commit_sha TEXT,
        load REAL, host TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX runs_started ON runs(started)",
    """CREATE TABLE results (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(run_id),
        nodeid TEXT NOT NULL, minor TEXT NOT NULL DEFAULT '', tpt TEXT NOT NULL DEFAULT '',
        spawn TEXT NOT NULL DEFAULT '', started REAL NOT NULL, outcome TEXT NOT NULL,
        duration REAL NOT NULL, flaky TEXT NOT NULL DEFAULT '',
        signature TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX results_test ON results(nodeid, started)",
    "CREATE INDEX results_started ON results(started)",
    "CREATE INDEX results_run ON results(run_id)",
)


def v1_file(path, rows, version=1):
    """A history file of schema version 1 (or 2: plus the verdict's columns), with
    (nodeid, duration) rows of one run."""
    con = sqlite3.connect(path)
    for stmt in V1_SCHEMA:
        con.execute(stmt)
    con.execute("INSERT INTO runs VALUES ('r1', 1.0, 2.0, 'run', '', '3.13', 'tcp', 'trio', "
                "NULL, 0.5, 'box')")
    con.executemany("INSERT INTO results (run_id, nodeid, minor, tpt, spawn, started, outcome, "
                    "duration) VALUES ('r1', ?, '3.13', 'tcp', 'trio', 1.0, 'passed', ?)", rows)
    if version == 2:
        con.execute("ALTER TABLE runs ADD COLUMN tree TEXT NOT NULL DEFAULT ''")
        con.execute("ALTER TABLE results ADD COLUMN verdict TEXT NOT NULL DEFAULT ''")
    con.execute(f"PRAGMA user_version={version}")
    con.execute(f"PRAGMA application_id={APPLICATION_ID}")
    con.commit()
    con.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_file_is_migrated_in_place_and_keeps_its_rows(tmp_path, version):
    path = tmp_path / "h.db"
    v1_file(path, [("tests/test_a.py::t1", 2.0), ("tests/test_b.py::t1", 5.0)], version)
    hist = History(path)
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        cols = {r[1] for r in con.execute("PRAGMA table_info(results)")}
        assert {"cpu", "rss", "verdict"} <= cols
        assert {"cores", "freq"} <= {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    # old rows: walls known, costs unknown (None: not free)
    costs = hist.test_costs(minor="3.13", tpt="tcp")
    assert costs["tests/test_a.py::t1"] == TestCost(2.0, None, None)
    ids = ["tests/test_a.py::t1", "tests/test_b.py::t1"]
    units = aggregate(ids, hist.test_costs(ids))
    assert units["tests/test_b.py"].wall == 5.0 and units["tests/test_b.py"].rate is None
    # and the migrated file takes new rows with costs
    hist.record(RunRow(uuid.uuid4().hex, 3.0, 4.0, "run", minor="3.13", tpt="tcp", cores=2,
                       freq=0.8),
                [TestRow("tests/test_a.py::t1", "passed", 2.0, cpu=3.0, rss=10 << 20,
                         verdict="passed")])
    assert hist.test_costs()["tests/test_a.py::t1"].cpu == 3.0
    assert History(path).durations() == {"tests/test_a.py::t1": 2.0, "tests/test_b.py::t1": 5.0}


def test_unit_costs_are_module_sums_and_rates(tmp_path):
    hist = History(tmp_path / "h.db")
    for k in range(3):
        hist.record(RunRow(uuid.uuid4().hex, float(k), k + 1.0, "run", tpt="tcp"), [
            TestRow("tests/test_heavy.py::a", "passed", 4.0, cpu=6.0 + k, rss=100),
            TestRow("tests/test_heavy.py::b", "failed", 2.0, cpu=2.0, rss=300),
            TestRow("tests/test_light.py::a", "passed", 10.0, cpu=1.0),
            TestRow("tests/test_light.py::skip", "skipped", 0.0),
        ])
    ids = ["tests/test_heavy.py::a", "tests/test_heavy.py::b", "tests/test_light.py::a",
           "tests/test_new.py::x"]
    units = aggregate(ids, hist.test_costs(ids, tpt="tcp"))
    assert set(units) == {"tests/test_heavy.py", "tests/test_light.py"}  # new: unseen
    heavy = units["tests/test_heavy.py"]
    assert heavy.wall == 6.0 and heavy.rate == pytest.approx((7.0 + 2.0) / 6.0, abs=1e-3)
    assert heavy.rss == 300 and heavy.tests == 2
    assert units["tests/test_light.py"].rate == pytest.approx(0.1)


def test_aggregate_with_partly_measured_units():
    costs = {"m.py::a": TestCost(2.0, 2.0), "m.py::b": TestCost(2.0, None)}
    got = aggregate(["m.py::a", "m.py::b"], costs)["m.py"]
    assert got.wall == 4.0 and got.rate == 1.0  # the rate from the measured tests


def test_durations_file_carries_costs_and_the_v1_shape_still_loads(tmp_path):
    hist = History(tmp_path / "h.db")
    hist.record(RunRow("r", 1.0, 2.0, "run", tpt="tcp"), [
        TestRow("tests/test_a.py::t", "passed", 2.0, cpu=3.0, rss=4096),
        TestRow("tests/test_a.py::old", "passed", 1.0)])
    out = tmp_path / "d.json"
    assert hist.export_durations(out) == 2
    doc = json.loads(out.read_text())
    assert doc["version"] == 2 and doc["costs"] == {"tests/test_a.py::t": {"cpu": 3.0, "rss": 4096}}
    assert load_costs(out) == {"tests/test_a.py::t": TestCost(2.0, 3.0, 4096),
                               "tests/test_a.py::old": TestCost(1.0, None, None)}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 1, "durations": {"tests/test_a.py::t": 2.5}}))
    assert load_durations(old) == {"tests/test_a.py::t": 2.5}
    assert load_costs(old) == {"tests/test_a.py::t": TestCost(2.5, None, None)}
    out.write_text(json.dumps({"version": 2, "durations": {"a": 1}, "costs": {"a": {"cpu": -1}}}))
    with pytest.raises(TaskError) as err:
        load_costs(out)
    assert err.value.code == 1 and "\n" not in str(err.value)


def test_machine_freq_from_sys_or_none(tmp_path):
    assert machine_freq(tmp_path) is None
    for n, (cur, top) in enumerate(((1000, 2000), (2000, 2000))):
        d = tmp_path / f"cpu{n}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_cur_freq").write_text(f"{cur}\n")
        (d / "cpuinfo_max_freq").write_text(f"{top}\n")
    assert machine_freq(tmp_path) == 0.75


def test_read_pass_takes_the_probe_and_the_supervisor_costs(tmp_path):
    """The files the probe (costs.jsonl) and the supervisor (tree-costs.json) write: the
    CPU is the larger of the two (each undercounts), the RSS the sampled tree's peak."""
    from tractor_tasks.results import read_pass
    recs = [{"nodeid": "t.py::a", "when": "call", "outcome": "passed", "duration": 1.0},
            {"nodeid": "t.py::b", "when": "call", "outcome": "failed", "duration": 2.0,
             "longrepr": "E  boom"}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "costs.jsonl").write_text(
        json.dumps({"nodeid": "t.py::a", "start": 10.0, "stop": 11.0, "cpu": 0.5,
                    "rss": 1000, "load": 1.5}) + "\n"
        + json.dumps({"nodeid": "t.py::b", "start": 11.0, "stop": 13.0, "cpu": 0.2,
                      "rss": 2000, "load": 1.7}) + "\n" + '{"nodeid": "t.py::b", "st')
    (tmp_path / "tree-costs.json").write_text(json.dumps({"t.py::b": {"cpu": 3.0, "rss": 9000}}))
    log = read_pass(tmp_path)
    a, b = log.tests["t.py::a"], log.tests["t.py::b"]
    assert (a.cpu, a.rss, a.window, a.load) == (0.5, 1000, (10.0, 11.0), 1.5)
    assert (b.cpu, b.rss, b.window) == (3.0, 9000, (11.0, 13.0))


def test_a_v1_file_without_costs_still_plans(tmp_path):
    """Both plans from an old file: the CI shards balance on its durations, and the
    local queue runs its (unmeasured) modules alone, every test once."""
    from tractor_tasks.schedule import simulate
    from tractor_tasks.shard_plan import plan
    from tractor_tasks.sharding import make_units
    from tractor_tasks.target import Target
    ids = [f"tests/test_{m}.py::t{k}" for m in "abcd" for k in range(3)]
    path = tmp_path / "h.db"
    v1_file(path, [(i, 1.0 + "abcd".index(i[11])) for i in ids])
    found = History(path).test_costs(minor="3.13", tpt="tcp")
    shards = plan(ids, {k: c.wall for k, c in found.items()}, 2)
    assert sorted(t for s in shards for t in s) == sorted(ids) and len(shards) == 2
    units = make_units(ids, found, Target(tmp_path))
    assert [u.alone for u in units] == [True] * 4
    slots = simulate(units, workers=2, cores=2)
    assert sorted(s.unit for s in slots) == sorted(u.name for u in units)
    assert all(a.end <= b.start for a, b in zip(slots, slots[1:]))  # one at a time


def test_tree_cost_counts_cpu_between_samples_of_one_test():
    """The supervisor's samples (ProcSample: what one tick read of each live process)
    put CPU on the test that ran at both ends of an interval; a process alive before the
    first sample brings no earlier CPU; RSS is the tree's summed peak."""
    from tractor_tasks.sampling import ProcSample, TreeCost
    tc = TreeCost()
    old = ProcSample(10, 50.0, None, 5.0, 100)          # pytest: 5 s of import CPU already
    tc.sample([old], "t::a", stamp=100.0)
    kid = ProcSample(11, 100.5, None, 0.4, 300)         # a subactor started after that
    tc.sample([ProcSample(10, 50.0, None, 5.5, 100), kid], "t::a", stamp=101.0)
    assert tc.tests["t::a"] == {"cpu": 0.9, "rss": 400}
    # a boundary interval (a at one end, b at the other) goes to neither
    tc.sample([ProcSample(10, 50.0, None, 6.0, 100)], "t::b", stamp=102.0)
    tc.sample([ProcSample(10, 50.0, None, 6.25, 120)], "t::b", stamp=103.0)
    assert tc.tests["t::a"]["cpu"] == 0.9
    assert tc.tests["t::b"] == {"cpu": 0.25, "rss": 120}
