"""Shards on the sample: real parallel contained runs merged into one result, the CI
split into jobs, and the merge job. (The planner itself: test_shards.py.)"""
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

import junit_rules
from helpers import copy_sample, invoke, last_run
from tractor_tasks.junit import EXTRAS as JUNIT_EXTRAS
from tractor_tasks.results import stable_id

pytestmark = pytest.mark.slow


def outcomes(root):
    out = {}
    for case in ET.parse(root / ".tractor-tasks" / "last" / "junit.xml").iter("testcase"):
        bad = case.find("failure") is not None or case.find("error") is not None
        out[stable_id(f"{case.get('file')}::{case.get('name')}")] = "failed" if bad else (
            "skipped" if case.find("skipped") is not None else "passed")
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = copy_sample(tmp_path_factory.mktemp("shards") / "sample-actors")
    assert invoke("venv", "--python", "3.11", root=root, timeout=600).returncode == 0
    return root


def test_two_shards_give_the_serial_result_and_show_progress(repo, monkeypatch):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "fail")  # one failure, in both
    # as on a user's machine: only the target and the run's own dirs reach past the
    # run's private /tmp (the plan's collection writes to a temp dir of its own)
    monkeypatch.delenv("TRACTOR_TASKS_KEEP_PATHS")
    serial = invoke("test", "--no-x", root=repo, timeout=600)
    assert serial.returncode == 1
    first = outcomes(repo)
    split = invoke("test", "--no-x", "-n", "2", root=repo, timeout=600)
    assert split.returncode == 1, split.stdout
    assert outcomes(repo) == first
    rec = json.loads((last_run(repo) / "outcome.json").read_text())
    assert rec["shards"] == 2 and rec["summary"]["collected"] == len(first)
    # the plan, what each worker runs and the admitted load (stdout is not a terminal here)
    assert "parallel: " in split.stdout and "on 2 worker(s)" in split.stdout
    progress = [line for line in split.stdout.splitlines() if line.startswith("progress: ")]
    assert any(line.startswith("progress: worker 1/2: tests/") for line in progress), split.stdout
    assert any(line.startswith("progress: admitted ") for line in progress), split.stdout
    assert "(2 shards)" in split.stdout and "worker 1: " in split.stdout
    # the serial run measured the costs the queue was admitted by; each unit's lane is kept
    units = json.loads((last_run(repo) / "units.json").read_text())
    assert all(u["rate"] is not None for u in units)
    assert sum(u["tests"] for u in units) == len(first)
    # the failure of the parallel run says what ran beside it and the load then
    seen = json.loads((last_run(repo) / "contention.json").read_text())
    bad = seen["tests/test_rpc.py::test_remote_math"]
    assert bad["parallel"] is True and bad["load"] is not None
    assert isinstance(bad["alongside"], list) and "tests/test_rpc.py" not in str(bad["alongside"])
    # lastfailed over both shards, as pytest's --lf reads it
    lastfailed = json.loads((repo / ".pytest_cache/v/cache/lastfailed").read_text())
    assert "tests/test_rpc.py::test_remote_math" in lastfailed


def test_a_worker_that_dies_mid_module_loses_no_test(repo, monkeypatch):
    """test_load.py::test_worker_dies SIGKILLs its own pytest (chaos 'die'): the two tests
    after it in its module still run, in a lane of their own, and the run fails as a
    serial run that died there would."""
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "die")
    out = invoke("test", "--no-x", "-n", "2", root=repo, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    got = outcomes(repo)
    assert got["tests/test_load.py::test_after_the_death"] == "passed"
    assert got["tests/test_load.py::test_after_the_death_too"] == "passed"
    assert got["tests/test_load.py::test_worker_dies"] == "failed"  # interrupted, reported
    rec = json.loads((last_run(repo) / "outcome.json").read_text())
    assert rec["summary"]["collected"] == len(got)  # none dropped
    assert "remaining test(s) were queued again" in out.stdout


def test_more_shards_than_tests_is_bad_usage(repo):
    out = invoke("test", "test_local.py::test_no_runtime", "-n", "3", root=repo, timeout=300)
    assert out.returncode == 2 and "3 shards for 1 test(s)" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_ci_jobs_split_a_cell_and_the_report_adds_them_up(repo, tmp_path):
    matrix = json.loads(invoke("ci-matrix", "--shards", "2", root=repo).stdout)["include"]
    tcp = [row for row in matrix if row["session"] == "tests-3.11(tpt='tcp')"]
    assert [(r["shard"], r["of"]) for r in tcp] == [(1, 2), (2, 2)]
    from helpers import nox
    artifacts = tmp_path / "artifacts"
    ran: list[set] = []
    for row in tcp:
        out = nox("-s", row["session"], "--", "--shard", f"{row['shard']}/{row['of']}",
                  root=repo, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"shard {row['shard']}/2: predicted ~" in out.stdout + out.stderr
        run = last_run(repo, "tests-3.11-trio-tcp")
        job = artifacts / f"shard-{row['shard']}"
        job.mkdir(parents=True)
        for name in ("outcome.json", "junit.xml"):
            (job / name).write_bytes((run / name).read_bytes())
        ran.append({stable_id(f"{c.get('file')}::{c.get('name')}")
                    for c in ET.parse(run / "junit.xml").iter("testcase")})
    assert ran[0] and ran[1] and not (ran[0] & ran[1])  # disjoint, both non-empty
    report = invoke("ci-report", str(artifacts), "--durations-out", str(tmp_path / "d.json"),
                    root=repo)
    assert report.returncode == 0, report.stdout + report.stderr
    row = next(line.split() for line in report.stdout.splitlines()
               if line.startswith("tests-3.11(tpt='tcp')"))
    assert int(row[2]) == len(ran[0] | ran[1]) - int(row[9])  # passed = all - skipped
    assert "shards (wall per job):" in report.stdout and "imbalance" in report.stdout
    doc = json.loads((tmp_path / "d.json").read_text())
    durations = doc["durations"]
    assert len(durations) >= len(ran[0] | ran[1]) - int(row[9])
    # the costs the jobs measured came through their JUnit files (empty before), and ids
    # with memory addresses are masked, so they match the next run's
    assert doc["costs"] and set(doc["costs"]) <= set(durations)
    assert all(c["cpu"] >= 0 for c in doc["costs"].values())
    assert "0x" not in (tmp_path / "d.json").read_text()
    assert any("test_ids_with_addresses" in k for k in durations)
    for job in artifacts.iterdir():   # each job's file keeps both schemas' rules
        suite = ET.parse(job / "junit.xml").getroot()
        assert junit_rules.check(suite, junit_rules.SUREFIRE, JUNIT_EXTRAS) == []
        assert junit_rules.check(suite, junit_rules.JENKINS, JUNIT_EXTRAS) == []


def test_ci_shards_split_a_long_module_unless_a_fixture_spans_it(tmp_path):
    """A module predicted longer than a job's share is cut at test boundaries across the
    CI jobs, unless its tests share a module-scoped fixture (the probe reports those at
    collection): both jobs together run every test once."""
    root = copy_sample(tmp_path / "sample-actors")
    (root / "tests" / "test_modfix.py").write_text(
        "import pytest\n\n\n@pytest.fixture(scope='module')\ndef shared():\n    return 1\n\n\n"
        + "".join(f"def test_m{i}(shared):\n    assert shared == 1\n\n\n" for i in range(4)))
    assert invoke("venv", "--python", "3.11", root=root, timeout=600).returncode == 0
    listed = subprocess.run([str(root / "py311" / "bin" / "python"), "-m", "pytest", "--co",
                             "-q", "tests/test_spawning.py", "tests/test_modfix.py"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    ids = [line.strip() for line in listed.stdout.splitlines() if "::" in line]
    spawning = [i for i in ids if i.startswith("tests/test_spawning.py")]
    modfix = [i for i in ids if i.startswith("tests/test_modfix.py")]
    assert len(spawning) >= 4 and len(modfix) == 4, listed.stdout
    # both modules predicted far longer than half the total: only one may be split
    durations = {i: 10.0 for i in spawning} | {i: 10.0 for i in modfix}
    dfile = tmp_path / "durations.json"
    dfile.write_text(json.dumps({"version": 1, "durations": durations}))
    ran = []
    for k in (1, 2):
        out = invoke("test", "tests/test_spawning.py", "tests/test_modfix.py", "--no-x",
                     "--strict", "--no-confirm", "--shard", f"{k}/2",
                     "--durations-file", str(dfile), root=root, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        results = next(x for x in out.stdout.splitlines() if x.startswith("results:"))
        assert results.endswith(f"(shard {k}/2)"), results   # one shard ran, not 2
        assert ("shard plan: split at test boundaries (no module- or class-scoped fixture "
                "shared): tests/test_spawning.py") in out.stdout, out.stdout
        scopes = json.loads((last_run(root) / "collect" / "scopes.json").read_text())
        assert scopes["tests/test_modfix.py"] == ["shared"]
        assert scopes["tests/test_spawning.py"] == []
        ran.append(set(outcomes(root)))
    assert not (ran[0] & ran[1])
    assert {i for i in ran[0] | ran[1] if "::" in i} >= set(map(stable_id, spawning + modfix))
    # the module fixture's module stayed in one job; the other is in both
    assert sum(any(i.startswith("tests/test_modfix.py") for i in r) for r in ran) == 1
    assert all(any(i.startswith("tests/test_spawning.py") for i in r) for r in ran)


def test_one_worker_runs_the_tests_in_one_pytest(repo):
    """-n 2 over one module gives one worker: no lane per unit, one pytest, as serial."""
    out = invoke("test", "tests/test_local.py", "-n", "2", "--strict", "--no-confirm",
                 root=repo, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "note: 1 worker(s), not 2" in out.stdout
    assert "parallel: 1 worker, so the tests run in one pytest" in out.stdout
    run = last_run(repo)
    assert not list(run.glob("shard-*")) and (run / "pass-1").is_dir()
    assert not (run / "collect").exists()
    rec = json.loads((run / "outcome.json").read_text())
    assert rec["summary"]["passed"] == 5 and not rec.get("shards")
