"""The run's timeline (trace.json, Chrome trace-event format): its format checked
against the spec's required fields, from a run dir made here on disk (what the probe
and the pipeline write), and from real sharded and hung runs of the sample."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import copy_sample, invoke, invoke_here, last_run
from tractor_tasks import trace


def check_format(data: dict) -> list[dict]:
    """The trace-event spec's required fields (JSON object form); returns the events."""
    data = json.loads(json.dumps(data))  # what a viewer loads
    assert isinstance(data, dict) and isinstance(data["traceEvents"], list)
    assert data.get("displayTimeUnit") in (None, "ms", "ns")
    events = data["traceEvents"]
    for e in events:
        for key in ("name", "ph", "ts", "pid", "tid"):
            assert key in e, (key, e)
        assert isinstance(e["name"], str) and e["ph"] in {"X", "i", "C", "M"}, e
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        assert all(isinstance(e[k], int) for k in ("pid", "tid")), e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "process_sort_index",
                                 "thread_sort_index"), e
            assert isinstance(e["args"], dict) and e["args"], e
            key = "name" if e["name"].endswith("_name") else "sort_index"
            assert isinstance(e["args"][key], str if key == "name" else int), e
        if e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                     for v in e["args"].values()), e
        if e["ph"] == "i":
            assert e.get("s", "t") in {"g", "p", "t"}, e
    # complete events on one track nest (a viewer draws overlapping ones wrongly)
    by_track: dict[tuple[int, int], list[dict]] = {}
    for e in events:
        if e["ph"] == "X":
            by_track.setdefault((e["pid"], e["tid"]), []).append(e)
    for slices in by_track.values():
        open_ends: list[int] = []
        for e in sorted(slices, key=lambda e: (e["ts"], -e["dur"])):
            while open_ends and open_ends[-1] <= e["ts"]:
                open_ends.pop()
            assert not open_ends or e["ts"] + e["dur"] <= open_ends[-1], e
            open_ends.append(e["ts"] + e["dur"])
    return events


def tracks(events) -> dict[tuple[int, int], str]:
    """(pid, tid) -> "process name / thread name"."""
    procs = {e["pid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "process_name"}
    return {(e["pid"], e["tid"]): f"{procs.get(e['pid'])} / {e['args']['name']}"
            for e in events if e["ph"] == "M" and e["name"] == "thread_name"}


def slices_of(events) -> dict[str, list[tuple[str, str]]]:
    """test id -> [(track, outcome)] of its slices."""
    names = tracks(events)
    out: dict[str, list[tuple[str, str]]] = {}
    for e in events:
        if e["ph"] == "X" and "nodeid" in e.get("args", {}):
            out.setdefault(e["args"]["nodeid"], []).append(
                (names[(e["pid"], e["tid"])], e["args"]["outcome"]))
    return out



# -- fast: a run dir written here as the probe and the pipeline write one --------

T = 1_800_000_000.0


def _pass(d: Path, started: float, reports: list[dict], *, current: dict,
          finished: bool = True, dump: float | None = None) -> None:
    d.mkdir(parents=True)
    (d / "command.txt").write_text("pytest ...\n")
    os.utime(d / "command.txt", (started, started))
    (d / "session.json").write_text(json.dumps({"pid": 7, "started": started + 0.2}))
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports)
                                     + '{"nodeid": "cut')  # a line cut short by a kill
    (d / "current").write_text(json.dumps(current))
    end = max(r["at"] for r in reports) + 0.1
    for name in ("results.jsonl", "current", "session.json"):
        os.utime(d / name, (end, end))
    if finished:
        (d / "finished.json").write_text('{"exitstatus": 1}')
        os.utime(d / "finished.json", (end, end))
    if dump is not None:
        (d / "stacks.txt").write_text("=== pid 7\n")
        os.utime(d / "stacks.txt", (dump, dump))


def _test(nodeid, start, dur, outcome="passed", load=0.5, cpu=1.0):
    return [{"nodeid": nodeid, "when": w, "outcome": o, "duration": dd, "at": start + a,
             "start": start, "load": load, "cpu": cpu}
            for w, o, dd, a in (("setup", "passed", 0.0, 0.01),
                                ("call", outcome, dur, dur + 0.01),
                                ("teardown", "passed", 0.0, dur + 0.02))]


@pytest.fixture
def run_dir(tmp_path):
    """Two shards; shard 2's first pass hung in test_hang, pass 2 resumed the rest."""
    run = tmp_path / "runs" / "20260101-000000-1-0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"cell": None, "started": T}))
    (run / "outcome.json").write_text(json.dumps({
        "status": "failed", "code": 1, "passes": 3, "shards": 2, "finished": T + 30,
        "hung": ["tests/test_b.py::test_hang"], "counts": {"passed": 3, "failed": 1}}))
    _pass(run / "collect", T - 3, [{"nodeid": "x", "at": T - 1, "when": "collect",
                                    "outcome": "failed", "duration": 0}], current={})
    _pass(run / "shard-1" / "pass-1", T + 1,
          _test("tests/test_a.py::test_one", T + 2, 1.0) +
          _test("tests/test_a.py::test_two[p at 0x7f00]", T + 4, 2.0, "failed", load=1.5,
                cpu=3.0), current={"after": "tests/test_a.py::test_two[p at 0x7f00]"})
    _pass(run / "shard-2" / "pass-1", T + 1, _test("tests/test_b.py::test_first", T + 2, 1.0)
          + _test("tests/test_b.py::test_hang", T + 4, 0)[:1],
          current={"nodeid": "tests/test_b.py::test_hang", "since": T + 4},
          finished=False, dump=T + 10)
    _pass(run / "shard-2" / "pass-2", T + 12, _test("tests/test_b.py::test_last", T + 13, 1.0),
          current={"after": "tests/test_b.py::test_last"})
    return run


def test_the_trace_has_the_spec_fields_and_a_track_per_shard_and_pass(run_dir):
    events = check_format(trace.build(run_dir))
    assert set(tracks(events).values()) == {"run / run", "shard 1 / pass 1",
                                            "shard 2 / pass 1", "shard 2 / pass 2"}
    assert slices_of(events) == {
        "tests/test_a.py::test_one": [("shard 1 / pass 1", "passed")],
        "tests/test_a.py::test_two[p at 0x7f00]": [("shard 1 / pass 1", "failed")],
        "tests/test_b.py::test_first": [("shard 2 / pass 1", "passed")],
        "tests/test_b.py::test_hang": [("shard 2 / pass 1", "hung")],
        "tests/test_b.py::test_last": [("shard 2 / pass 2", "passed")]}
    by = {(e["ph"], e["name"]): e for e in events}
    # times: microseconds since the collection (the first thing the run did)
    assert by[("X", "collect (shard plan)")]["ts"] == 0
    one = by[("X", "test_a.py::test_one")]
    assert one["ts"] == 5_000_000 and one["dur"] == 1_020_000
    # the hung test runs until its dump; the dump, the hang and the resume are instants
    hang = by[("X", "test_b.py::test_hang")]
    assert hang["ts"] == 7_000_000 and hang["dur"] == 6_000_000
    assert by[("i", "hang")]["args"]["test"] == "tests/test_b.py::test_hang"
    assert by[("i", "dump")]["ts"] == 13_000_000
    resume = by[("i", "resume")]
    assert resume["ts"] == 15_000_000 and tracks(events)[(resume["pid"], resume["tid"])] == \
        "shard 2 / pass 2"
    # the run spans run.json to outcome.json; each pass is a slice holding its tests
    assert by[("X", "run")]["dur"] == 30_000_000
    assert by[("X", "run")]["args"]["status"] == "failed"
    assert by[("X", "shard 2: pass 1")]["args"]["exitstatus"] is None
    assert by[("X", "shard 2: pass 1")]["args"]["stopped"] == "hung"
    # counters: the machine's load on the run, each shard's CPU on its own
    loads = [e["args"]["load"] for e in events if e["ph"] == "C" and e["name"] == "load (1 min)"]
    assert 1.5 in loads and 0.5 in loads
    cpu = {e["pid"] for e in events if e["ph"] == "C" and e["name"] == "cpu (cores)"}
    assert cpu == {one["pid"], hang["pid"]} and one["pid"] != hang["pid"]


def test_a_parallel_runs_lanes_go_on_their_workers_track(run_dir):
    """With units.json (a local -n run), each lane is a thread of its worker's track,
    named by its unit; lanes one after the other on one worker share its track, and a
    hang's resume stays with its own lane."""
    (run_dir / "units.json").write_text(json.dumps([
        {"lane": 1, "unit": "tests/test_a.py", "worker": 1},
        {"lane": 2, "unit": "tests/test_b.py", "worker": 1}]))
    events = check_format(trace.build(run_dir))
    assert set(tracks(events).values()) == {
        "run / run", "worker 1 / tests/test_a.py: pass 1",
        "worker 1 / tests/test_b.py: pass 1", "worker 1 / tests/test_b.py: pass 2"}
    assert slices_of(events)["tests/test_b.py::test_last"] == [
        ("worker 1 / tests/test_b.py: pass 2", "passed")]
    resume = next(e for e in events if e["ph"] == "i" and e["name"] == "resume")
    assert tracks(events)[(resume["pid"], resume["tid"])] == "worker 1 / tests/test_b.py: pass 2"
    assert len({e["pid"] for e in events if e["ph"] == "X" and "::" in e["name"]}) == 1


@pytest.mark.parametrize("units", ['[{"lane": [1], "worker": 1}]', '[{"lane": 1, "worker": true}]',
                                   '{"lane": 1}', '[1, null, "x"]', 'not json'])
def test_a_malformed_units_json_falls_back_to_a_track_per_shard(run_dir, units):
    (run_dir / "units.json").write_text(units)
    events = check_format(trace.build(run_dir))
    assert {"shard 1 / pass 1", "shard 2 / pass 2"} <= set(tracks(events).values())


def test_results_add_the_class_and_an_unsharded_run_uses_the_run_track(tmp_path):
    from tractor_tasks.results import Results, TestResult
    from tractor_tasks.status import TestOutcome
    run = tmp_path / "run"
    _pass(run / "pass-1", T, _test("tests/t.py::test_x", T + 1, 1.0, "failed"),
          current={"after": "tests/t.py::test_x"})
    res = Results(target=None)
    t = TestResult("tests/t.py::test_x", TestOutcome.FAILED, 1.0, message="AssertionError",
                   where="pass 1")
    t.verdict = "new"  # the class a result may carry (TestResult.verdict)
    res.tests["tests/t.py::test_x"] = t
    events = check_format(trace.build(run, res))
    assert set(tracks(events).values()) == {"run / run", "run / pass 1"}
    (x,) = [e for e in events if e.get("args", {}).get("nodeid") == "tests/t.py::test_x"]
    assert x["args"]["class"] == "new" and x["args"]["message"] == "AssertionError"
    assert x["cname"] == "bad"
    (bare,) = [e for e in trace.build(run)["traceEvents"]
               if e.get("args", {}).get("nodeid") == "tests/t.py::test_x"]
    assert "class" not in bare["args"] and bare["args"]["outcome"] == "failed"


def test_the_verdicts_passes_have_a_track_of_their_own(tmp_path):
    """Confirmation re-runs and the baseline pass: the `verdict` process, a thread each."""
    run = tmp_path / "run"
    _pass(run / "pass-1", T, _test("tests/t.py::test_x", T + 1, 1.0, "failed"),
          current={"after": "tests/t.py::test_x"})
    _pass(run / "confirm-1" / "pass-1", T + 5, _test("tests/t.py::test_x", T + 6, 1.0, "failed"),
          current={"after": "tests/t.py::test_x"})
    _pass(run / "baseline" / "pass-1", T + 9, _test("tests/t.py::test_x", T + 10, 1.0),
          current={"after": "tests/t.py::test_x"})
    events = check_format(trace.build(run))
    assert set(tracks(events).values()) == {"run / run", "run / pass 1",
                                            "verdict / confirm-1 pass 1",
                                            "verdict / baseline pass 1"}
    assert sorted(slices_of(events)["tests/t.py::test_x"]) == [
        ("run / pass 1", "failed"), ("verdict / baseline pass 1", "passed"),
        ("verdict / confirm-1 pass 1", "failed")]


def test_a_test_the_whole_run_bound_cut_off_is_a_timeout(tmp_path):
    (tmp_path / "outcome.json").write_text('{"status": "timeout", "hung": []}')
    _pass(tmp_path / "pass-1", T, _test("tests/t.py::test_slow", T + 1, 0)[:1],
          current={"nodeid": "tests/t.py::test_slow", "since": T + 1}, dump=T + 9)
    events = check_format(trace.build(tmp_path))
    assert slices_of(events) == {"tests/t.py::test_slow": [("run / pass 1", "timeout")]}
    assert [(e["name"], e["ts"]) for e in events if e["ph"] == "i"] == [
        ("dump", 9_000_000), ("timeout", 9_000_000)]


def test_a_damaged_or_empty_run_dir_still_gives_a_loadable_trace(tmp_path):
    (tmp_path / "pass-1").mkdir()
    (tmp_path / "pass-1" / "results.jsonl").write_text('[1]\n{"nodeid": 3}\nnot json\n')
    (tmp_path / "outcome.json").write_text("[")
    check_format(trace.build(tmp_path))
    path = trace.write(tmp_path)
    assert path == tmp_path / "trace.json" and json.loads(path.read_text())["traceEvents"]


def test_report_trace_names_the_newest_timeline(tmp_path, capsys):
    root = copy_sample(tmp_path / "s")
    none = invoke_here("report", "--trace", root=root, capsys=capsys)
    assert none.returncode == 1 and none.stderr.startswith("error: no run with a timeline")
    runs = root / ".tractor-tasks" / "runs"
    for i, name in enumerate(["b", "a"]):  # the newest is the one written last
        (runs / name).mkdir(parents=True)
        (runs / name / "trace.json").write_text("{}")
        os.utime(runs / name / "trace.json", (T + i, T + i))
    out = invoke_here("report", "--trace", root=root, capsys=capsys)
    assert out.returncode == 0 and out.stdout.strip() == str(runs / "a" / "trace.json")


# -- slow: real runs of the sample ------------------------------------------------

def _run_trace(root):
    run = last_run(root)
    events = check_format(json.loads((run / "trace.json").read_text()))
    return run, events


@pytest.mark.slow
def test_a_sharded_run_has_a_track_per_shard_and_a_slice_per_test(sample_repo, monkeypatch):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "fail")
    # --strict --no-confirm: this test is about the tracks; the verdict's passes would add
    # a track of their own (tested with a run dir above)
    out = invoke("test", "--no-x", "-n", "2", "--strict", "--no-confirm", root=sample_repo,
                 timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    run, events = _run_trace(sample_repo)
    assert f"timeline: {run / 'trace.json'} (open in ui.perfetto.dev)" in out.stdout
    assert out.stdout.rstrip().splitlines()[-1].startswith("timeline: ")
    names = set(tracks(events).values())
    units = json.loads((run / "units.json").read_text())
    assert {u["worker"] for u in units} <= {1, 2} and len(units) >= 2
    assert {f"worker {u['worker']} / {u['unit']}: pass 1" for u in units} <= names
    import xml.etree.ElementTree as ET
    from tractor_tasks.results import stable_id
    junit = {}
    for case in ET.parse(run / "junit.xml").iter("testcase"):
        bad = case.find("failure") is not None or case.find("error") is not None
        junit[stable_id(f"{case.get('file')}::{case.get('name')}")] = (
            "failed" if bad else "skipped" if case.find("skipped") is not None else "passed")
    got = {stable_id(k): v for k, v in slices_of(events).items()}
    assert set(got) == set(junit)
    for nodeid, slices in got.items():
        assert len(slices) == 1 and slices[0][0].startswith("worker "), (nodeid, slices)
        outcome = {"xfailed": "skipped", "error": "failed"}.get(slices[0][1], slices[0][1])
        assert outcome == junit[nodeid], nodeid
    assert got["tests/test_rpc.py::test_remote_math"][0][1] == "failed"
    workers = {tracks(events)[(e["pid"], e["tid"])].split(" / ")[0] for e in events
               if e["ph"] == "X" and "nodeid" in e.get("args", {})}
    # a parallel run's lanes go on the track of the worker that ran them (units.json)
    assert workers == {f"worker {u['worker']}" for u in units}
    assert any(e["ph"] == "C" and e["name"] == "load (1 min)" for e in events)
    assert any(e["ph"] == "C" and e["name"] == "cpu (cores)" for e in events)
    newest = invoke("report", "--trace", root=sample_repo)
    assert newest.stdout.strip() == str(run / "trace.json")


@pytest.mark.slow
def test_a_hung_run_has_the_hang_and_a_second_pass(sample_repo, monkeypatch, chaos_dir):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang")
    out = invoke("test", "test_spawning.py", "test_local.py", "--no-x", "--test-timeout", "4",
                 "--strict", "--no-confirm", root=sample_repo, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    run, events = _run_trace(sample_repo)
    names = tracks(events)
    assert {"run / pass 1", "run / pass 2"} <= set(names.values())
    hang = [e for e in events if e["ph"] == "i" and e["name"] == "hang"]
    assert [e["args"]["test"] for e in hang] == ["tests/test_spawning.py::test_hang"]
    assert names[(hang[0]["pid"], hang[0]["tid"])] == "run / pass 1"
    assert any(e["ph"] == "i" and e["name"] == "dump" for e in events)
    (resume,) = [e for e in events if e["ph"] == "i" and e["name"] == "resume"]
    assert names[(resume["pid"], resume["tid"])] == "run / pass 2"
    slices = slices_of(events)
    assert slices["tests/test_spawning.py::test_hang"] == [("run / pass 1", "hung")]
    assert any(track == "run / pass 2" for v in slices.values() for track, _ in v)
