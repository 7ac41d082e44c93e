"""`invoke test` and friends running real pytest on the sample target: results, leaks,
contained runs, hangs and resumes, interrupts, and the front end's words."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import psutil
import pytest

import junit_rules
from helpers import (REPO, alive, copy_sample, bindspace, chaos_pids, command_of, git_state, invoke,
                     last_run, port_listening, private_dir_of, wait_for, wait_for_test)
from tractor_tasks.junit import EXTRAS as JUNIT_EXTRAS
from tractor_tasks.scope import ScopeView
from tractor_tasks.target import load_target

pytestmark = pytest.mark.slow  # every test here runs invoke end to end


def leftovers(root):
    """Everything of the target's still around: processes in scope and socket files."""
    view = ScopeView(load_target(root))
    in_scope = [p.describe() for p in view.procs.values() if view.in_scope(p)]
    socks = sorted(p.name for p in bindspace().glob("*.sock")) if bindspace().is_dir() else []
    return in_scope, socks


def junit(root):
    return ET.parse(root / ".tractor-tasks" / "last" / "junit.xml").getroot()


def junit_counts(root):
    suite = junit(root)
    return {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}


def outcome_of(root):
    return json.loads((root / ".tractor-tasks" / "last" / "outcome.json").read_text())


def cases(root):
    """name -> (outcome element tag or 'passed', its type attribute)."""
    out = {}
    for case in junit(root).iter("testcase"):
        el = next((e for e in case if e.tag in ("failure", "error", "skipped")), None)
        out[case.get("name")] = (el.tag, el.get("type")) if el is not None else ("passed", None)
    return out


@pytest.mark.parametrize("tpt", ["tcp", "uds"])
def test_a_plain_run_passes_and_leaves_nothing(sample_repo, tpt):
    out = invoke("test", "--tpt", tpt, root=sample_repo)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "results:" in out.stdout and " passed" in out.stdout and "failed" not in out.stdout
    assert "LEAK" not in out.stdout
    counts = junit_counts(sample_repo)
    assert counts["tests"] >= 20 and counts["failures"] == counts["errors"] == 0
    run = last_run(sample_repo)
    assert f"--tpt-proto {tpt}" in command_of(run)
    assert outcome_of(sample_repo)["containment"] == "namespaces"
    assert outcome_of(sample_repo)["summary"]["collected"] == counts["tests"]
    assert leftovers(sample_repo) == ([], [])
    assert not os.path.exists(private_dir_of(run))


def test_a_plain_run_on_313_in_its_own_venv(sample_repo):
    from tractor_tasks.interpreters import find_python
    if find_python("3.13") is None:
        pytest.skip("no Python 3.13 on this machine")
    for tpt in ("uds", "tcp"):
        out = invoke("test", "--python", "3.13", "--tpt", tpt, root=sample_repo, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "py313/bin/python -m pytest tests/" in out.stdout
        assert leftovers(sample_repo) == ([], [])
    assert (sample_repo / "py313" / "pyvenv.cfg").read_text().count("3.13") >= 1


def test_preflight_sweeps_leftovers_first_or_stops_with_no_sweep(sample_repo, procs,
                                                                 registry_port):
    leak = procs.orphan(sample_repo, "_subactor[old-run@1]", port=registry_port)
    stop = invoke("test", "test_local.py", "--no-sweep", root=sample_repo)
    assert stop.returncode == 1
    assert f"preflight: leftover pid {leak}" in stop.stdout
    assert "invoke clean" in stop.stderr and alive(leak)
    go = invoke("test", "test_local.py", root=sample_repo)
    assert go.returncode == 0, go.stdout
    assert f"preflight: ended pid {leak}" in go.stdout and not alive(leak)


@pytest.mark.parametrize("mode", ["namespaces", "subreaper", "off"])
def test_leaks_are_an_outcome_and_nothing_of_the_run_is_left(sample_repo, monkeypatch,
                                                           chaos_dir, procs, mode):
    """A leaking, SIGINT-ignoring orphan and two strays (a detached daemon with a wiped
    environment, a plain child with cwd /): counted before teardown, then all gone."""
    if mode != "namespaces":
        monkeypatch.setenv("TRACTOR_TASKS_CONTAIN", mode)
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "leak,ignore_sigint,stray")
    out = invoke("test", "test_spawning.py::test_daemon_leak", "test_spawning.py::test_strays",
                 "--tpt", "uds", root=sample_repo)
    # gone already when contained (their pids were the run's own), else ours to check
    found = chaos_pids(chaos_dir / "leaked.pid", "_subactor[leaker@") + chaos_pids(
        chaos_dir / "strays.pid", "_subactor[stray@", "time.sleep(3600)")
    for pid in found:
        if pid is not None:
            procs.adopt(pid)
    assert out.returncode == 0, out.stdout          # a leak alone does not fail the run
    leak_line = next(line for line in out.stdout.splitlines() if line.startswith("LEAK:"))
    assert "_subactor[leaker@" in leak_line and "_subactor[stray@" in leak_line, leak_line
    assert not any(p is not None and alive(p) for p in found), out.stdout
    assert leftovers(sample_repo) == ([], [])
    rec = outcome_of(sample_repo)
    assert rec["containment"] == mode and rec["summary"]["leaked"] >= 3
    titles = [p["title"] for p in rec["leaks"]["processes"]]
    assert any("leaker" in t for t in titles) and any("stray" in t for t in titles)
    assert junit(sample_repo).find("properties/property[@name='leaked']").get("value") == \
        str(rec["summary"]["leaked"])
    if mode != "namespaces":
        assert "note: " in out.stdout and mode in rec["containment"]
    strict = invoke("test", "test_spawning.py::test_daemon_leak", "--fail-on-leak",
                    root=sample_repo)
    assert strict.returncode == 1 and "LEAK:" in strict.stdout, strict.stdout
    assert leftovers(sample_repo) == ([], [])


def test_a_machine_wide_reaper_in_a_contained_run_never_sees_outside(sample_repo, monkeypatch,
                                                                     chaos_dir, procs, tmp_path):
    """tractor's per-test reaper SIGKILLs every orphaned `_subactor[` it can see. A decoy
    from another directory, born while the run goes, survives a contained run. (The same
    run uncontained would kill it, and anyone else's: never done here.)"""
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "reaper,hang")
    before = last_run(sample_repo)
    run = subprocess.Popen([sys.executable, "-m", "invoke", "test", "test_spawning.py::test_hang",
                            "test_signals.py::test_reaper", "--no-x", "--test-timeout", "6",
                            "--root", str(sample_repo)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_test(sample_repo, before, "test_hang")
        decoy = procs.orphan(tmp_path, "_subactor[decoy@1]")  # appears mid-run, elsewhere
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert "HUNG" in out and (chaos_dir / "reaped.pids").exists(), out
    assert alive(decoy)


def test_new_and_known_flaky_failures_are_told_apart(tmp_path, monkeypatch):
    """A fresh checkout with no history: a failure that fails again alone is new, one on
    the flaky list is known-flaky (with history of passes at this commit, the verdict
    would call the first flaky: see test_verdict.py)."""
    from tractor_tasks.pipeline import prepare_venv
    repo = copy_sample(tmp_path / "fresh", git=True)
    prepare_venv(load_target(repo), "3.11", out=lambda line: None)
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "tooslow,fail")
    out = invoke("test", "test_rpc.py", "--no-x", root=repo)
    assert out.returncode == 1, out.stdout
    lines = out.stdout.splitlines()
    ours = [line for line in lines if line.startswith("  ") and "::" in line and "[" in line]
    slow = next(line for line in ours if "tests/test_rpc.py::test_slow_reply" in line)
    new = next(line for line in ours if "tests/test_rpc.py::test_remote_math" in line)
    assert "[KNOWN-FLAKY]" in slow and "[NEW]" in new
    assert any("TooSlowError" in line for line in lines)


def test_only_known_flaky_failures_exit_0_unless_x_cut_the_run_short(sample_repo, monkeypatch):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "tooslow")
    full = invoke("test", "test_rpc.py", "--no-x", root=sample_repo)
    assert full.returncode == 0, full.stdout
    assert "[KNOWN-FLAKY]" in full.stdout and "1 known-flaky" in full.stdout
    cut = invoke("test", "test_rpc.py", root=sample_repo)
    assert cut.returncode == 1 and "-x stopped the run" in cut.stdout
    retry = invoke("test", "test_rpc.py", "--no-x", "--retry-flaky", root=sample_repo)
    assert retry.returncode == 0
    assert "retry: tests/test_rpc.py::test_slow_reply: failed again" in retry.stdout


def test_a_hung_test_costs_one_test_and_the_rest_resumes(sample_repo, monkeypatch, chaos_dir):
    """Two hangs in one run: each is dumped, ended and reported HUNG; every other test
    runs (in later passes) and passes; one JUnit, one lastfailed, exit 1 (--strict: the
    verdict, with this checkout's history of passes, would call the hangs flaky)."""
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang,hang2")
    out = invoke("test", "test_spawning.py", "test_signals.py", "test_local.py", "--no-x",
                 "--test-timeout", "4", "--strict", "--no-confirm", root=sample_repo,
                 timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    got = cases(sample_repo)
    assert got["test_hang"] == ("error", "hung") and got["test_hang_again"] == ("error", "hung")
    assert all(v == ("passed", None) for k, v in got.items()
               if k not in ("test_hang", "test_hang_again")), got
    # tests whose ids hold memory addresses ran once, in pass 1, not again in a resume
    ids = [(c.get("file"), c.get("name")) for c in junit(sample_repo).iter("testcase")]
    assert len(ids) == len(set(ids)) and len(ids) == len(got)
    assert sum("test_ids_with_addresses" in name for _, name in ids) == 2
    assert not any("0x" in name for _, name in ids)   # masked, as the history keys them
    for schema in (junit_rules.SUREFIRE, junit_rules.JENKINS):   # hung tests included
        assert junit_rules.check(junit(sample_repo), schema, JUNIT_EXTRAS) == []
    rec = outcome_of(sample_repo)
    assert rec["passes"] == 3 and rec["code"] == 1 and sorted(rec["hung"]) == [
        "tests/test_signals.py::test_hang_again", "tests/test_spawning.py::test_hang"]
    assert rec["summary"]["collected"] == len(got) and rec["summary"]["hung"] == 2
    run = last_run(sample_repo)
    assert (run / "pass-1" / "stacks.txt").exists() and (run / "pass-2" / "stacks.txt").exists()
    dump = (run / "pass-1" / "stacks.txt").read_text()
    assert "test_hang" in dump and "trio task tree" in dump  # --enable-stackscope's trees
    assert "HUNG   tests/test_spawning.py::test_hang  [" in out.stdout
    lastfailed = json.loads((sample_repo / ".pytest_cache/v/cache/lastfailed").read_text())
    assert {"tests/test_spawning.py::test_hang", "tests/test_signals.py::test_hang_again"} <= \
        set(lastfailed)
    assert not any("test_local" in k for k in lastfailed)
    assert leftovers(sample_repo) == ([], [])


def test_the_hang_limit_and_x_stop_resuming(sample_repo, monkeypatch, chaos_dir):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang,hang2")
    out = invoke("test", "test_spawning.py", "test_signals.py", "--no-x", "--test-timeout", "4",
                 "--max-hangs", "1", "--strict", "--no-confirm", root=sample_repo, timeout=300)
    assert out.returncode == 1
    assert "hang limit reached (1, --max-hangs)" in out.stdout
    assert outcome_of(sample_repo)["passes"] == 1 and "not run:" in out.stdout
    x = invoke("test", "test_spawning.py", "test_signals.py", "--test-timeout", "4",
               "--no-confirm", root=sample_repo, timeout=300)
    assert x.returncode == 1 and "-x: the run stops at the hung test" in x.stdout
    assert outcome_of(sample_repo)["passes"] == 1


def test_a_known_hanger_does_not_fail_the_run(tmp_path, monkeypatch):
    from helpers import copy_sample
    root = copy_sample(tmp_path / "s")
    with open(root / "pyproject.toml", "a") as f:
        f.write('\n[[tool.tractor-tasks.flaky]]\ntest = "test_spawning.py::test_hang"\n'
                'error = "HUNG"\nnote = "hangs on slow machines"\n')
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang")
    out = invoke("test", "test_spawning.py", "--no-x", "--test-timeout", "4", root=root,
                 timeout=600)
    assert out.returncode == 0, out.stdout
    assert "HUNG   tests/test_spawning.py::test_hang  [KNOWN-FLAKY]: hangs on slow" in out.stdout


def test_a_hang_in_session_setup_is_the_whole_run_bound(sample_repo, monkeypatch):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang_session")
    out = invoke("test", "test_local.py", "--timeout", "6", "--test-timeout", "2",
                 root=sample_repo, timeout=120)
    assert out.returncode == 124, out.stdout
    assert "TIMEOUT: no test was running" in out.stdout
    assert leftovers(sample_repo) == ([], [])


@pytest.mark.parametrize("dumper", ["py-spy", "fallback"])
def test_the_whole_run_bound_dumps_stacks_and_tears_down(sample_repo, monkeypatch, chaos_dir,
                                                         registry_port, dumper):
    import shutil
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang")
    if dumper == "py-spy":
        if not shutil.which("py-spy"):
            pytest.skip("py-spy is not installed here")
    else:  # hide py-spy: wchan + SIGUSR1 to the processes that handle it
        path = [d for d in os.environ["PATH"].split(os.pathsep)
                if not os.path.exists(os.path.join(d, "py-spy"))]
        monkeypatch.setenv("PATH", os.pathsep.join(path))
    out = invoke("test", "test_spawning.py::test_hang", "--timeout", "8", root=sample_repo,
                 timeout=120)
    assert out.returncode == 124, out.stdout + out.stderr
    assert "TIMEOUT" in out.stdout and "tests/test_spawning.py::test_hang" in out.stdout
    stacks = (last_run(sample_repo) / "pass-1" / "stacks.txt").read_text()
    assert "test_hang" in stacks  # pytest's Python stack
    if dumper == "py-spy":
        assert "(py-spy)" in stacks and "_subactor[hanger@" in stacks
    else:
        assert "(py-spy)" not in stacks and "wchan:" in stacks
        assert "=== SIGUSR1 dump stacks-" in stacks
    assert cases(sample_repo)["test_hang"] == ("error", "timeout")  # never "passed"
    assert leftovers(sample_repo) == ([], [])
    assert not port_listening(registry_port)


@pytest.mark.parametrize("how", ["terminal", "signal to invoke only", "during a resumed pass"])
def test_ctrl_c_mid_run_leaves_no_process_or_socket(sample_repo, monkeypatch, chaos_dir,
                                                    registry_port, procs, how):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "leak,ignore_sigint,hang,hang2")
    words = ["test_spawning.py", "test_signals.py"]
    cmd = [sys.executable, "-m", "invoke", "test", *words, "--no-x", "--tpt", "uds",
           "--root", str(sample_repo)]
    if how == "during a resumed pass":
        cmd += ["--test-timeout", "4"]
    before = last_run(sample_repo)
    run = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        wait_for(lambda: (chaos_dir / "leaked.pid").exists(), 120, "the leak")
        needle = "test_hang_again" if how == "during a resumed pass" else "test_hang"
        wait_for_test(sample_repo, before, needle)
        # (a resumed pass runs after the first pass's namespace, and its leak, are gone)
        leaked = chaos_pids(chaos_dir / "leaked.pid", "_subactor[leaker@")[0]
        if leaked is not None:
            procs.adopt(leaked)
        if how == "signal to invoke only":
            os.kill(run.pid, signal.SIGINT)
        else:
            os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, out
    assert "INTERRUPTED" in out
    assert leaked is None or not alive(leaked)
    assert leftovers(sample_repo) == ([], [])
    assert not port_listening(registry_port)
    rec = outcome_of(sample_repo)
    assert rec["status"] == "interrupted"
    if how == "during a resumed pass":
        assert rec["passes"] == 2 and rec["hung"] == ["tests/test_spawning.py::test_hang"]
        # reported as interrupted, or as the failure the interrupt made of it: never passed
        assert cases(sample_repo)["test_hang_again"] in (("error", "interrupted"),
                                                          ("failure", None))


def test_sigkill_of_the_supervisor_leaves_nothing_of_the_run(sample_repo, monkeypatch,
                                                             chaos_dir, procs):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "leak,ignore_sigint,hang")
    before = last_run(sample_repo)
    run = subprocess.Popen([sys.executable, "-m", "invoke", "test", "test_spawning.py",
                            "--no-x", "--root", str(sample_repo)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (chaos_dir / "leaked.pid").exists(), 120, "the leak")
        wait_for_test(sample_repo, before, "test_hang")
        ours = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
        assert len(ours) >= 4  # unshare, init, pytest, actors
        for pid in ours:
            procs.adopt(pid)
        run.kill()
        run.wait()
        wait_for(lambda: not any(alive(p) for p in ours), 10, "the run to die with it")
    finally:
        if run.poll() is None:
            run.kill()
    assert leftovers(sample_repo) == ([], [])


def test_a_run_started_with_sigint_ignored_still_delivers_it_to_tests(sample_repo):
    """nohup, a background job of a script: pytest must not inherit SIG_IGN."""
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    for contain in ([], ["--no-contain"]):
        out = subprocess.run([sys.executable, "-m", "invoke", "test",
                              "test_signals.py::test_sigint_self", *contain, "--root",
                              str(sample_repo)], cwd=REPO, capture_output=True, text=True,
                             preexec_fn=ignore, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "1 passed" in out.stdout


def test_a_lost_stdout_never_stops_supervision(sample_repo, monkeypatch, chaos_dir):
    """`invoke test ... | timeout 7 cat`: the reader goes away mid-run; the run is still
    bounded, torn down and recorded."""
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang")
    before = last_run(sample_repo)
    run = subprocess.Popen([sys.executable, "-m", "invoke", "test", "test_spawning.py::test_hang",
                            "--timeout", "8", "--root", str(sample_repo)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        wait_for_test(sample_repo, before, "test_hang")
        run.stdout.close()  # the pipe's reader is gone
        assert run.wait(60) == 124
    finally:
        if run.poll() is None:
            run.kill()
    assert outcome_of(sample_repo)["status"] == "timeout"
    assert leftovers(sample_repo) == ([], [])


def test_two_runs_at_once_keep_their_own_files_and_ports(sample_repo, monkeypatch):
    """Both bind the same fixed registry port for seconds: contained, both pass."""
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hold_registry")
    cmd = [sys.executable, "-m", "invoke", "test",
           "discovery/test_registrar.py::test_default_registry_addr", "--root", str(sample_repo)]
    runs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for _ in range(2)]
    outs = [r.communicate(timeout=180)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    dirs = {line.split("files: ")[1] for o in outs for line in o.splitlines()
            if line.startswith("files: ")}
    assert len(dirs) == 2 and all("results: 1 passed" in o for o in outs)
    for d in dirs:
        assert json.loads(open(f"{d}/outcome.json").read())["summary"]["passed"] == 1


def test_with_a_debugger_ctrl_c_belongs_to_pytest(sample_repo, monkeypatch, chaos_dir):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang")
    before = last_run(sample_repo)
    run = subprocess.Popen([sys.executable, "-m", "invoke", "test", "test_spawning.py::test_hang",
                            "--tpdb", "--root", str(sample_repo)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        wait_for_test(sample_repo, before, "test_hang")
        os.kill(run.pid, signal.SIGINT)  # to invoke only: a REPL's Ctrl-C is not "stop"
        with pytest.raises(subprocess.TimeoutExpired):
            run.wait(timeout=3)
        os.kill(run.pid, signal.SIGTERM)  # a real stop still tears everything down
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130 and "INTERRUPTED" in out
    assert leftovers(sample_repo) == ([], [])


def test_lastfailed_rerun_and_smoke(sample_repo, monkeypatch):
    cache = sample_repo / ".pytest_cache" / "v" / "cache" / "lastfailed"
    cache.unlink(missing_ok=True)  # what earlier tests of this shared copy left
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "fail")
    # --strict: this checkout's history has it passing at this commit (the verdict: flaky)
    first = invoke("test", "test_rpc.py", "--no-x", "--strict", root=sample_repo)
    assert first.returncode == 1, first.stdout
    out = invoke("lastfailed", root=sample_repo)
    assert out.returncode == 0
    assert out.stdout.splitlines() == ["1 last-failed test(s):",
                                       "  tests/test_rpc.py::test_remote_math"]
    monkeypatch.delenv("SAMPLE_ACTORS_CHAOS")
    again = invoke("rerun", root=sample_repo)
    assert again.returncode == 0, again.stdout
    assert junit_counts(sample_repo)["tests"] == 1
    assert invoke("lastfailed", root=sample_repo).stdout.strip() == "no failures recorded"
    assert json.loads(cache.read_text()) == {}

    smoke = invoke("smoke", root=sample_repo)
    assert smoke.returncode == 0, smoke.stdout
    ran = {c.get("classname") for c in junit(sample_repo).iter("testcase")}
    assert ran and all(c.split(".")[-1] in ("test_local", "test_rpc", "test_spawning",
                                            "test_registrar") for c in ran)


@pytest.mark.parametrize("content, needle", [
    (b'{"tests/test_a.py": tru', "not valid JSON"),
    (b"\x80\x81\xfe binary", "not UTF-8 text"),
    (b"[1, 2]", "not a lastfailed mapping"),
    ("DIR", "is a directory"),
])
def test_a_bad_lastfailed_cache_is_one_line_and_left_alone(tmp_path, content, needle):
    from helpers import copy_sample
    root = copy_sample(tmp_path / "s")
    cache = root / ".pytest_cache" / "v" / "cache" / "lastfailed"
    cache.parent.mkdir(parents=True)
    if content == "DIR":
        cache.mkdir()
    else:
        cache.write_bytes(content)
    bad = invoke("lastfailed", root=root)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert needle in bad.stderr and "Traceback" not in bad.stderr
    assert cache.is_dir() if content == "DIR" else cache.read_bytes() == content


def test_lastfailed_missing_bom_and_junk(tmp_path):
    from helpers import copy_sample
    root = copy_sample(tmp_path / "s")
    assert "no lastfailed cache" in invoke("lastfailed", root=root).stdout
    cache = root / ".pytest_cache" / "v" / "cache" / "lastfailed"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\xef\xbb\xbf" + b'{"tests/test_b.py::t": true, "/usr/lib/python3/junk.py": '
                      b'true, "tests/test_a.py::t[x]": true, "other/test_c.py": true}')
    out = invoke("lastfailed", root=root)
    assert out.stdout.splitlines() == ["2 last-failed test(s):", "  tests/test_a.py::t[x]",
                                       "  tests/test_b.py::t"]
    unknown = invoke("lastfailed", "--session", "tests-3.11(tpt='quic')", root=root)
    assert unknown.returncode == 2 and "no runs recorded" in unknown.stderr


def test_quick_and_no_task_touches_git(sample_repo):
    before = git_state(sample_repo)
    quick = invoke("quick", root=sample_repo)
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert "tests collected" in quick.stdout and "imports from" in quick.stdout
    for args, code in ((["doctor", "--no-collect"], 0), (["clean"], 0), (["venv"], 0),
                       (["lastfailed", "--all"], 0), (["affected", "--list"], 0),
                       (["test", "test_local.py"], 0), (["report"], 0), (["history"], 0),
                       (["flaky"], 0)):
        out = invoke(*args, root=sample_repo)
        assert out.returncode == code, (args, out.stdout, out.stderr)
    assert git_state(sample_repo) == before


def test_words_go_anywhere_and_invoke_conventions_hold(sample_repo):
    many = invoke("test", "test_local.py", "--tpt", "uds", "rpc", "--dry-run", root=sample_repo)
    assert many.returncode == 0, many.stderr
    assert "tests/test_local.py tests/test_rpc.py -x" in many.stdout and "uds" in many.stdout
    # the chained task lists a cache whose content this test decides (the session's
    # sample is shared: what it held is put back)
    from tractor_tasks.lastfailed import lastfailed_sources
    cache = lastfailed_sources(load_target(sample_repo))[0][1]
    held = cache.read_bytes() if cache.is_file() else None
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"tests/test_local.py::test_chained": True}))
    try:
        chained = invoke("test", "test_local.py", "--dry-run", "lastfailed", root=sample_repo)
    finally:
        if held is None:
            cache.unlink()
        else:
            cache.write_bytes(held)
    assert chained.returncode == 0, chained.stderr
    assert "tests/test_local.py -x" in chained.stdout and "lastfailed" not in \
        chained.stdout.splitlines()[1]
    assert "1 last-failed test(s):\n  tests/test_local.py::test_chained\n" in chained.stdout
    unknown = invoke("test", "--frobnicate", root=sample_repo)
    assert unknown.returncode != 0 and "--frobnicate" in unknown.stderr
    assert "no tests match" not in unknown.stderr + unknown.stdout


def test_history_records_runs_and_flaky_ranks_flips(tmp_path, monkeypatch):
    from helpers import copy_sample
    root = copy_sample(tmp_path / "s")
    for chaos in ("fail", "", "fail", ""):
        monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", chaos)
        invoke("test", "test_rpc.py", "--no-x", root=root, timeout=600)
    hist = invoke("history", "test_rpc.py::test_remote_math", root=root)
    assert hist.returncode == 0 and "F.F." in hist.stdout, hist.stdout
    flaky = invoke("flaky", root=root)
    assert flaky.returncode == 0 and "tests/test_rpc.py::test_remote_math" in flaky.stdout
    import tomllib
    entries = tomllib.loads(flaky.stdout.split("pyproject.toml:")[1])["tool"]["tractor-tasks"]
    assert entries["flaky"][0]["test"] == "test_rpc.py::test_remote_math"


def test_a_broken_history_file_is_moved_aside_and_the_run_goes_on(tmp_path):
    from helpers import copy_sample
    root = copy_sample(tmp_path / "s")
    (root / ".tractor-tasks").mkdir()
    (root / ".tractor-tasks" / "history.sqlite").write_bytes(b"garbage" * 100)
    out = invoke("test", "test_local.py", root=root, timeout=600)
    assert out.returncode == 0, out.stdout
    assert list((root / ".tractor-tasks").glob("history.sqlite.corrupt-*"))
    assert invoke("history", root=root).stdout.count("tests/test_local.py") >= 1


def _run_until(root, before, needle, *args, line=None):
    """Start `invoke test ...` in its own session; wait for a test (or an output line)."""
    run = subprocess.Popen([sys.executable, "-m", "invoke", "test", *args, "--root", str(root)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    seen = []
    if line is not None:
        for text in run.stdout:
            seen.append(text)
            if line in text:
                break
    else:
        wait_for_test(root, before, needle)
    return run, seen


@pytest.mark.parametrize("how", ["SIGTERM to invoke", "Ctrl-C"])
def test_a_stop_between_passes_starts_no_more(sample_repo, monkeypatch, chaos_dir, how):
    """Stopped right when a hang is found: no resumed pass, exit 130."""
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang,hang2")
    run, seen = _run_until(sample_repo, None, None, "test_spawning.py", "test_signals.py",
                           "--no-x", "--test-timeout", "3", line="HUNG:")
    try:
        if how == "Ctrl-C":
            os.killpg(run.pid, signal.SIGINT)
        else:
            os.kill(run.pid, signal.SIGTERM)
        out = "".join(seen) + run.communicate(timeout=60)[0]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, out
    rec = outcome_of(sample_repo)
    assert rec["status"] == "interrupted" and "test_hang_again" not in json.dumps(rec["hung"])
    assert not (last_run(sample_repo) / "pass-2" / "results.jsonl").exists()
    assert leftovers(sample_repo) == ([], [])


def test_ctrl_c_while_shards_start_is_an_interrupt(sample_repo):
    run, seen = _run_until(sample_repo, None, None, "--no-x", "-n", "2", line="parallel: ")
    try:
        os.killpg(run.pid, signal.SIGINT)
        out = "".join(seen) + run.communicate(timeout=60)[0]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, out
    # stopped right after the plan: whether a lane had started or not, most of the
    # selection never ran, and the summary says how much
    assert "\nnot run: " in out and " collected test(s)\n" in out, out
    assert outcome_of(sample_repo)["status"] == "interrupted"
    assert leftovers(sample_repo) == ([], [])


def test_the_whole_run_bound_holds_through_collection_and_resumes(sample_repo, monkeypatch):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang_session")
    out = invoke("test", "test_local.py", "-n", "2", "--timeout", "6", root=sample_repo,
                 timeout=120)
    assert out.returncode == 124, out.stdout + out.stderr
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang,hang2")
    out = invoke("test", "test_spawning.py", "test_signals.py", "test_local.py", "--no-x",
                 "--test-timeout", "4", "--timeout", "9", root=sample_repo, timeout=120)
    assert out.returncode == 124, out.stdout
    assert "not run:" in out.stdout and "whole-run bound expired" in out.stdout
    assert leftovers(sample_repo) == ([], [])


def test_an_uncontained_run_killed_hard_leaves_nothing_after_clean(sample_repo, monkeypatch,
                                                                   chaos_dir, procs):
    """--no-contain and SIGKILL of invoke: the run goes on, unsupervised; `invoke clean`
    ends all of it: pytest (its supervisor is gone), its children (a plain one with its
    environment wiped and cwd / too), the leaked orphan and the strays."""
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "leak,ignore_sigint,stray,hang")
    before = last_run(sample_repo)
    run = subprocess.Popen([sys.executable, "-m", "invoke", "test", "test_spawning.py", "--no-x",
                            "--no-contain", "--root", str(sample_repo)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_test(sample_repo, before, "test_hang")
        tree = [procs.adopt(p.pid) for p in psutil.Process(run.pid).children(recursive=True)]
        strays = [procs.adopt(int(x)) for x in (chaos_dir / "strays.pid").read_text().split()]
        procs.adopt(int((chaos_dir / "leaked.pid").read_text()))
        run.kill()
        run.wait()
    finally:
        if run.poll() is None:
            run.kill()
    out = invoke("clean", root=sample_repo)
    assert out.returncode == 0 and out.stdout.strip().endswith("clean"), out.stdout
    assert not any(alive(p) for p in tree + strays), out.stdout
    assert leftovers(sample_repo) == ([], [])


@pytest.mark.parametrize("args, needle, code", [
    (["test", "--root", ""], "--root is empty", 2),
    (["test", "--tpt", ""], "--tpt is empty", 2),
    (["test", "--test-timeout", "1e-400"], "0 or a positive number", 2),
    (["test", "test_local.py::test_no_runtime", "-n", "3"], "3 shards for 1 test(s)", 2),
    (["ci-matrix", "--shards", "99999999"], "1 to 256", 2),
    (["history", "--limit", "0"], "--limit must be a whole number (1 or more), got '0'", 2),
])
def test_more_bad_usage_is_one_line_and_writes_nothing(tmp_path, args, needle, code):
    from helpers import copy_sample
    root = copy_sample(tmp_path / "s")
    assert invoke("venv", "--python", "3.11", root=root, timeout=600).returncode == 0
    state = root / ".tractor-tasks"
    before = sorted(p.name for p in (state / "runs").glob("*")) if state.exists() else None
    out = invoke(*args, root=root)
    assert out.returncode == code, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr
    assert "Traceback" not in out.stderr
    after = sorted(p.name for p in (state / "runs").glob("*")) if state.exists() else None
    assert after == before


def test_a_state_dir_in_the_way_is_one_line(tmp_path):
    from helpers import copy_sample
    root = copy_sample(tmp_path / "s")
    (root / ".tractor-tasks").write_text("not a dir")
    out = invoke("test", "test_local.py", root=root, timeout=600)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "cannot make" in out.stderr and "Traceback" not in out.stderr
    assert (root / ".tractor-tasks").read_text() == "not a dir"


def test_help_for_a_task_with_words(sample_repo):
    for flag in ("--help", "-h"):
        out = invoke("test", flag, root=sample_repo)
        assert out.returncode == 0 and "--test-timeout" in out.stdout, out.stdout + out.stderr


EXITS_LAST = ("import os\n\n\ndef test_a():\n    pass\n\n\ndef test_b():\n    assert 0, 'b'\n"
              "\n\ndef test_c():\n    assert 0, 'c'\n\n\ndef test_z():\n    os._exit(0)\n")


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "n2"])
def test_a_last_test_that_calls_os_exit_is_never_a_pass(tmp_path, parallel):
    """Issue 26 HIGH 1: the last selected test calls os._exit(0), so pytest ends with
    status 0 and every test accounted for, but without finishing its session: the run
    fails (exit 1, outcome.json not passed, the reason in it), serial and with -n 2,
    and lastfailed keeps the failures before it (so `invoke rerun` runs those). The
    failures are quarantined: no verdict class excuses a pytest that never finished."""
    from tractor_tasks.pipeline import prepare_venv
    repo = copy_sample(tmp_path / "exit", git=True)
    with open(repo / "pyproject.toml", "a") as f:
        f.write('\n[[tool.tractor-tasks.quarantine]]\ntest = "test_zexit.py::*"\n')
    (repo / "tests" / "test_early.py").write_text("def test_ok():\n    pass\n")
    (repo / "tests" / "test_zexit.py").write_text(EXITS_LAST)
    prepare_venv(load_target(repo), "3.11", out=lambda line: None)
    out = invoke("test", "tests/test_early.py", "tests/test_zexit.py", "--no-x",
                 "--no-confirm", *(["-n", "2"] if parallel else []), root=repo)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "without finishing its session, during tests/test_zexit.py::test_z" in out.stdout
    assert "  INTERRUPTED tests/test_zexit.py::test_z  (running when pytest ended)" \
        in out.stdout
    rec = outcome_of(repo)
    assert (rec["status"], rec["code"]) == ("failed", 1)
    assert "pytest ended (exit status 0) without finishing its session" in rec["reason"]
    assert rec["counts"]["failed"] == 2 and rec["counts"]["passed"] == 2
    assert rec["verdicts"] == {"quarantined": 2}
    assert rec["shards"] == (2 if parallel else 0)
    lastfailed = json.loads((repo / ".pytest_cache" / "v" / "cache" / "lastfailed").read_text())
    assert sorted(lastfailed) == ["tests/test_zexit.py::test_b", "tests/test_zexit.py::test_c"]


@pytest.mark.slow
def test_tests_that_never_ran_are_never_a_pass(tmp_path):
    """A test that calls os._exit(0) ends pytest part-way with status 0: the run fails,
    names the pass that ended early and lists the tests that never ran."""
    from tractor_tasks.pipeline import prepare_venv
    repo = copy_sample(tmp_path / "exit", git=True)
    (repo / "tests" / "test_exit.py").write_text(
        "import os\n\n\ndef test_a():\n    pass\n\n\ndef test_b():\n    os._exit(0)\n\n\n"
        "def test_c():\n    pass\n")
    prepare_venv(load_target(repo), "3.11", out=lambda line: None)
    out = invoke("test", "tests/test_exit.py", "--no-x", "--no-confirm", root=repo)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "NOT RUN: pass 1: pytest ended (exit status 0) without finishing its session, " \
           "during tests/test_exit.py::test_b" in out.stdout
    assert "NOT RUN: 1 selected test(s) never ran and nothing accounts for it: " \
           "tests/test_exit.py::test_c" in out.stdout
    rec = outcome_of(repo)
    assert rec["status"] == "failed" and rec["not_run"] == ["tests/test_exit.py::test_c"]
    assert rec["summary"]["not_run"] == 1
