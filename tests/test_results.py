"""Results: flaky classification, the probe's log, and JUnit rebuilt after a hard kill."""
from __future__ import annotations

import json

from helpers import junit_ids
from tractor_tasks.command import Request
from tractor_tasks.results import Failure, classify, read_junit, read_probe, write_junit
from tractor_tasks.target import load_target


def test_flaky_rules_need_the_id_and_the_error_and_keep_brackets_literal(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'tractor'\n")
    t = load_target(tmp_path)
    docs = "tests/test_docs_examples.py::test_example[we_are_processes.py]"
    assert classify(t, Failure(docs, "failed", "assert None == 0", ""))
    assert not classify(t, Failure(docs.replace("we_are", "xe_are"), "failed",
                                   "assert None == 0", ""))  # [..] is not a char class
    peer = "tests/test_inter_peer_cancellation.py::test_peer_spawns_and_cancels_service_subactor[x]"
    assert classify(t, Failure(peer, "failed", "", "E   trio.TooSlowError"))
    assert not classify(t, Failure(peer, "failed", "assert 1 == 2", "E   AssertionError"))


def test_probe_log_to_summary_to_junit_and_back(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.tractor-tasks]\n")
    (tmp_path / "tests" / "sub").mkdir(parents=True)
    (tmp_path / "tests" / "sub" / "test_a.py").write_text("")
    t = load_target(tmp_path)
    recs = [
        {"nodeid": "tests/sub/test_a.py::test_ok", "when": "call", "outcome": "passed"},
        {"nodeid": "tests/sub/test_a.py::Cls::test_bad[1]", "when": "call", "outcome": "failed",
         "longrepr": "tb line\nE   trio.TooSlowError"},
        {"nodeid": "tests/sub/test_a.py::test_skip", "when": "setup", "outcome": "skipped"},
        {"nodeid": "tests/sub/test_a.py::test_xf", "when": "call", "outcome": "skipped",
         "xfail": True},
        {"nodeid": "tests/sub/test_a.py::test_ok", "when": "teardown", "outcome": "failed",
         "longrepr": "E   OSError: boom"},
    ]
    log = tmp_path / "results.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in recs) + '\n{"nodeid": "cut sho')
    s = read_probe(t, log)
    assert s.counts == {"passed": 0, "failed": 1, "errors": 1, "skipped": 1, "xfailed": 1}
    junit = tmp_path / "junit.xml"
    write_junit(s, junit)
    back = read_junit(t, junit)
    assert back.counts == s.counts
    assert {f.nodeid for f in back.failures} == {"tests/sub/test_a.py::Cls::test_bad[1]",
                                                 "tests/sub/test_a.py::test_ok"}
    assert next(f for f in back.failures if f.kind == "failed").message == "trio.TooSlowError"


def test_a_run_killed_before_junit_still_reports_what_ran(sample_repo, monkeypatch):
    """pytest SIGKILLed mid-run (think: the OOM killer) writes no JUnit; the probe's log
    still says what ran, and the JUnit file is rebuilt from it."""
    import threading

    import psutil

    from helpers import wait_for
    from tractor_tasks.runner import ensure_state_dir, execute
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang")
    t = load_target(sample_repo)
    run_dir = ensure_state_dir(t) / "killed"
    lines, results = [], []
    req = Request(paths=["tests/test_spawning.py"], exitfirst=False)
    worker = threading.Thread(target=lambda: results.append(
        execute(t, req, minor="3.11", run_dir=run_dir, timeout=120, out=lines.append)))
    worker.start()
    current = run_dir / "current"
    wait_for(lambda: current.exists() and "test_hang" in current.read_text(), 60, "the hang")
    pytest_proc = next(p for p in psutil.Process().children()
                       if "pytest" in " ".join(p.cmdline()))
    pytest_proc.kill()  # our own descendant, by pid
    worker.join(60)
    assert results and results[0].code == 1
    assert any("killed by signal 9" in line for line in lines), lines
    assert any("rebuilt from" in line for line in lines), lines
    ids = junit_ids(run_dir / "junit.xml")
    assert any("test_daemon_leak" in i for i in ids)
    assert not any("test_hang" in i for i in ids)  # it never reported


def test_exit_codes():
    from tractor_tasks.results import Summary
    from tractor_tasks.runner import exit_code
    from tractor_tasks.supervise import Outcome
    from tractor_tasks.target import FlakyRule

    def summary(*kinds):
        s = Summary()
        for i, kind in enumerate(kinds):
            f = Failure(f"tests/test_x.py::t{i}", "failed", "", "")
            f.flaky = FlakyRule("*", "x") if kind == "flaky" else None
            s.failures.append(f)
        return s

    done = Outcome("finished", 1, 1.0)
    assert exit_code(done, summary("new", "flaky"), exitfirst=False) == 1
    assert exit_code(done, summary("flaky"), exitfirst=False) == 0
    assert exit_code(done, summary("flaky"), exitfirst=True) == 1   # -x: the rest never ran
    assert exit_code(done, summary(), exitfirst=False) == 1         # failed, recorded nowhere
    assert exit_code(Outcome("finished", 0, 1.0), summary(), True) == 0
    assert exit_code(Outcome("finished", 5, 1.0), summary(), True) == 5
    assert exit_code(Outcome("finished", 4, 1.0), summary(), True) == 2
    assert exit_code(Outcome("finished", -9, 1.0), summary(), True) == 1
    assert exit_code(Outcome("timeout", None, 1.0), summary("flaky"), True) == 124
    assert exit_code(Outcome("interrupted", 2, 1.0), summary(), True) == 130
