"""The nox matrix on the sample: real nox, real cells, parallel and interrupted runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from helpers import (REPO, alive, copy_sample, invoke, junit_ids, last_run, nox, port_listening,
                     private_dir_of, wait_for, wait_for_test)
from tractor_tasks.scope import ScopeView
from tractor_tasks.target import load_target

pytestmark = pytest.mark.slow

SMALL = """[tool.tractor-tasks]
package = "sample_actors"
bindspace = "sample-actors"
process_markers = ["_subactor[", "sample_actors._child"]
pythons = ["3.11", "3.99"]
spawn_backends = ["trio"]
smoke = ["test_local.py", "test_rpc.py"]

[[tool.tractor-tasks.flaky]]
test = "test_rpc.py::test_slow_reply*"
error = "TooSlowError"
"""
TCP, UDS = "tests-3.11(tpt='tcp')", "tests-3.11(tpt='uds')"


@pytest.fixture(scope="session")
def matrix_repo(tmp_path_factory):
    """The sample with a small matrix: 3.11 (here) and 3.99 (missing), trio only."""
    root = copy_sample(tmp_path_factory.mktemp("matrix") / "sample-actors", config=SMALL)
    out = invoke("venv", "--python", "3.11", root=root, timeout=600)
    assert out.returncode == 0, out.stderr
    return root


def cell_dir(root, slug):
    return root / ".tractor-tasks" / "cells" / slug


def test_the_exact_session_name_runs_one_cell_and_reports(matrix_repo, tmp_path):
    summary = tmp_path / "summary.md"
    out = nox("-s", TCP, root=matrix_repo, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert out.returncode == 0, out.stdout + out.stderr
    d = cell_dir(matrix_repo, "tests-3.11-trio-tcp")
    ids = junit_ids(d / "last" / "junit.xml")
    assert len(ids) >= 20 and set(ids.values()) <= {"passed", "skipped"}
    outcome = json.loads((d / "last" / "outcome.json").read_text())
    assert outcome["cell"] == TCP and outcome["status"] == "passed"
    command = (d / "last" / "pass-1" / "command.txt").read_text()
    assert "py311/bin/python -m pytest tests/" in command and "--tpt-proto tcp" in command
    assert f"cache_dir={d / 'pytest-cache'}" in command and "XDG_RUNTIME_DIR=" in command
    table = out.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("cell "))
    assert table[header].split() == ["cell", "status", "passed", "regressions", "new",
                                     "pre-existing", "flaky", "known-flaky", "hung", "skipped",
                                     "leaked", "duration"]
    assert table[header + 1].startswith(TCP) and " passed " in table[header + 1]
    md = summary.read_text()
    assert "| cell | status |" in md and TCP in md
    report = invoke("report", root=matrix_repo)
    assert report.returncode == 0 and TCP in report.stdout


def test_posargs_go_to_pytest_and_the_cells_own_options_are_taken(matrix_repo):
    out = nox("-s", UDS, "--", "-k", "registry", "--cell-timeout", "300", "--test-timeout",
              "60", root=matrix_repo)
    assert out.returncode == 0, out.stdout + out.stderr
    d = cell_dir(matrix_repo, "tests-3.11-trio-uds")
    ids = junit_ids(d / "last" / "junit.xml")
    assert ids and all("registr" in i.lower() for i in ids)
    import shlex
    words = shlex.split((d / "last" / "pass-1" / "command.txt").read_text())
    pytest_args = words[words.index("pytest") + 1:]
    assert pytest_args[-2:] == ["-k", "registry"]
    assert not {"--cell-timeout", "300", "--test-timeout", "60"} & set(pytest_args)


@pytest.mark.parametrize("args, env, needle", [
    (["--cell-timeout", "nan"], {}, "--cell-timeout must be a positive number"),
    (["--cell-timeout=-1"], {}, "--cell-timeout must be a positive number"),
    (["--cell-timeout"], {}, "expected one argument"),
    ([], {"TRACTOR_TASKS_TIMEOUT": "inf"}, "TRACTOR_TASKS_TIMEOUT must be a positive number"),
    (["--shards", "0"], {}, "number of shards"),
])
def test_bad_cell_options_are_one_line(matrix_repo, args, env, needle):
    out = nox("-s", TCP, "--", *args, root=matrix_repo, env=env)
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert needle in said and "Traceback" not in said


def test_a_missing_minor_skips_locally_and_fails_under_ci(matrix_repo):
    local = nox("-s", "tests-3.99(tpt='tcp')", root=matrix_repo)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "no Python 3.99 interpreter" in local.stderr and "skipped" in local.stderr.lower()
    ci = nox("-s", "tests-3.99(tpt='tcp')", root=matrix_repo, env={"CI": "1"})
    assert ci.returncode != 0
    assert "no Python 3.99 interpreter" in ci.stderr
    assert not (matrix_repo / "py399").exists()
    # the skipped cell is in the matrix table, with why
    rec = json.loads((cell_dir(matrix_repo, "tests-3.99-trio-tcp") / "last" / "outcome.json")
                     .read_text())
    assert rec["status"] == "skipped" and "no Python 3.99" in rec["note"]
    report = invoke("report", root=matrix_repo)
    assert any(line.startswith("tests-3.99(tpt='tcp')") and " skipped " in line
               for line in report.stdout.splitlines()), report.stdout


def test_a_cell_that_errors_before_running_is_in_the_matrix_table(matrix_repo):
    out = nox("-s", UDS, "--", "--cell-timeout", "nan", root=matrix_repo)
    assert out.returncode != 0
    rec = json.loads((cell_dir(matrix_repo, "tests-3.11-trio-uds") / "last" / "outcome.json")
                     .read_text())
    assert rec["status"] == "error" and rec["code"] == 2 and "--cell-timeout" in rec["note"]
    report = invoke("report", root=matrix_repo)
    assert any(line.startswith(UDS) and " error " in line for line in report.stdout.splitlines())


def test_parallel_cells_give_the_same_results_as_serial(matrix_repo):
    tcp, uds = (cell_dir(matrix_repo, s) / "last" / "junit.xml"
                for s in ("tests-3.11-trio-tcp", "tests-3.11-trio-uds"))
    serial = nox("-t", "tcp", "uds", "--", "--isolate-net", root=matrix_repo)
    assert serial.returncode == 0, serial.stdout + serial.stderr
    before = (junit_ids(tcp), junit_ids(uds))
    started = time.time()
    parallel = nox("-j", "2", "-t", "tcp", "uds", "--", "--isolate-net", root=matrix_repo)
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert tcp.stat().st_mtime > started and uds.stat().st_mtime > started
    assert (junit_ids(tcp), junit_ids(uds)) == before
    # a parallel worker's pytest output goes to its pass's file; nox shows the summary
    said = parallel.stdout + parallel.stderr
    assert said.count("results: ") == 2 and "test session starts" not in said


def test_ctrl_c_during_a_parallel_run_leaves_nothing(matrix_repo, registry_port, tmp_path,
                                                     procs):
    env = {**os.environ, "SAMPLE_ACTORS_CHAOS": "leak,ignore_sigint,hang",
           "SAMPLE_ACTORS_CHAOS_DIR": str(tmp_path), "TRACTOR_TASKS_ROOT": str(matrix_repo)}
    slugs = ("tests-3.11-trio-tcp", "tests-3.11-trio-uds")
    before = {s: last_run(matrix_repo, s) for s in slugs}
    run = subprocess.Popen([sys.executable, "-m", "nox", "-j", "2", "-t", "tcp", "uds",
                            "--", "tests/test_spawning.py"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    target = load_target(matrix_repo)
    try:
        for slug in slugs:
            wait_for_test(matrix_repo, before[slug], "test_hang", slug=slug, timeout=180)
        def leakers():
            view = ScopeView(target)
            return [p.pid for p in view.procs.values() if view.in_scope(p)
                    and "leaker" in p.cmdline]
        for pid in wait_for(lambda: len(leakers()) == 2 and leakers(), 30, "both leaks"):
            procs.adopt(pid)
        leaked = leakers()
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in the terminal
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode != 0
    assert not any(alive(p) for p in leaked), out
    view = ScopeView(target)
    assert [p.describe() for p in view.procs.values() if view.in_scope(p)] == []
    assert not port_listening(registry_port)
    for slug in slugs:
        run_dir = last_run(matrix_repo, slug)
        assert not os.path.exists(private_dir_of(run_dir))
        assert json.loads((run_dir / "outcome.json").read_text())["status"] == "interrupted"
    rows = [line.split() for line in out.split("\ncell ")[-1].splitlines()[1:] if line.strip()]
    assert [r[1] for r in rows] == ["interrupted", "interrupted"], out


def test_per_cell_lastfailed_and_rerun(matrix_repo):
    fail = nox("-s", TCP, "--", "tests/test_rpc.py", root=matrix_repo,
               env={"SAMPLE_ACTORS_CHAOS": "fail"})
    assert fail.returncode != 0
    out = invoke("lastfailed", "--session", TCP, root=matrix_repo)
    assert out.returncode == 0
    assert out.stdout.splitlines()[1:] == ["  tests/test_rpc.py::test_remote_math"]
    every = invoke("lastfailed", "--all", root=matrix_repo)
    assert "[tests-3.11-trio-tcp] 1 last-failed" in every.stdout
    rerun = nox("-s", TCP, "--", "--lf", root=matrix_repo)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    ids = junit_ids(cell_dir(matrix_repo, "tests-3.11-trio-tcp") / "last" / "junit.xml")
    assert list(ids.values()) == ["passed"] and "test_remote_math" in next(iter(ids))


def test_ci_matrix_is_derived_from_the_sessions(matrix_repo):
    out = invoke("ci-matrix", root=matrix_repo)
    assert out.returncode == 0, out.stderr
    matrix = json.loads(out.stdout)
    listed = json.loads(nox("--list", "--json", root=matrix_repo).stdout)
    assert [row["session"] for row in matrix["include"]] == \
        [s["session"] for s in listed if not s["name"].startswith("smoke")]
    for row in matrix["include"]:
        assert set(row) == {"session", "python", "tpt", "spawn"}
        assert row["python"] in ("3.11", "3.99") and row["tpt"] in ("tcp", "uds")
        assert row["session"].startswith(f"tests-{row['python']}(tpt='{row['tpt']}')")
    full = json.loads(invoke("ci-matrix").stdout)  # this repo: the sample's own matrix
    assert {"session": "backends-3.13(spawn='mp_forkserver', tpt='uds')", "python": "3.13",
            "tpt": "uds", "spawn": "mp_forkserver"} in full["include"]


def test_the_shipped_workflow_parses_and_runs_the_matrix():
    wf = yaml.safe_load((REPO / "examples" / "github" / "tractor-tasks.yml").read_text())
    jobs = wf["jobs"]
    assert "ci-matrix" in json.dumps(jobs["matrix"])
    test = jobs["test"]
    assert test["timeout-minutes"] > 0
    assert "fromJSON(needs.matrix.outputs.matrix)" in json.dumps(test["strategy"])
    steps = json.dumps(test["steps"])
    assert 'nox -s \\"$SESSION\\"' in steps and "${{ matrix.session }}" in steps
    assert "upload-artifact" in steps


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_dead_nox_never_leaves_its_parallel_cells_running(matrix_repo, tmp_path, sig):
    """nox's main process killed (a closed terminal's SIGHUP, or SIGTERM) while two
    parallel cells hang: each cell stops its run, and its private dir goes only after
    the run's processes."""
    env = {**os.environ, "SAMPLE_ACTORS_CHAOS": "hang", "SAMPLE_ACTORS_CHAOS_DIR": str(tmp_path),
           "TRACTOR_TASKS_ROOT": str(matrix_repo)}
    slugs = ("tests-3.11-trio-tcp", "tests-3.11-trio-uds")
    before = {s: last_run(matrix_repo, s) for s in slugs}
    run = subprocess.Popen([sys.executable, "-m", "nox", "-j", "2", "-t", "tcp", "uds",
                            "--", "tests/test_spawning.py::test_hang"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        runs = [wait_for_test(matrix_repo, before[s], "test_hang", slug=s, timeout=180)
                for s in slugs]
        tree = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
        os.kill(run.pid, sig)  # nox's main process only, as a closed terminal would
        run.wait(30)
        wait_for(lambda: not any(alive(p) for p in tree), 30, "every process of both runs")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    for run_dir in runs:
        assert not os.path.exists(private_dir_of(run_dir))
        rec = json.loads((run_dir / "outcome.json").read_text())
        assert rec["status"] == "interrupted", rec


@pytest.mark.parametrize("content, needle", [
    ("[1, 2]", "a list, not an object"),
    ('{"status": "passed", "summary": {}}', "no 'cell' name"),
    ('{"cell": "c", "status": "passed", "summary": {}, "seconds": "abc"}', "seconds is 'abc'"),
    ('{"cell": "c", "status": "passed", "summary": {"passed": null}, "seconds": 1}',
     "passed is None"),
    ('{"cell": "c", "status": "weird", "summary": {}, "seconds": 1}', "unknown status"),
    ('{"cell": "c", "status": "passed", "seconds": 1}', "no 'summary'"),
    ("DIR", "a directory"),
    ("{not json", "not JSON"),
])
def test_report_over_a_bad_outcome_file_is_one_line_and_the_rest_is_shown(tmp_path, content,
                                                                           needle):
    root = copy_sample(tmp_path / "s")
    good = root / ".tractor-tasks" / "cells" / "tests-3.11-trio-tcp" / "last"
    good.mkdir(parents=True)
    (good / "outcome.json").write_text(json.dumps({
        "cell": TCP, "status": "passed", "seconds": 3.5,
        "summary": {"passed": 7, "new_failures": 0, "known_flaky": 0, "hung": 0,
                    "skipped": 1, "leaked": 0}}))
    bad = root / ".tractor-tasks" / "cells" / "tests-3.11-trio-uds" / "last" / "outcome.json"
    bad.parent.mkdir(parents=True)
    if content == "DIR":
        bad.mkdir()
    else:
        bad.write_text(content)
    out = invoke("report", root=root)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and TCP in out.stdout and " 7 " in out.stdout
    assert bad.is_dir() if content == "DIR" else bad.read_text() == content
