"""`invoke test` and friends running real pytest on the sample target."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import psutil
import pytest

from helpers import REPO, alive, bindspace, git_state, invoke, port_listening, wait_for
from tractor_tasks.scope import ScopeView
from tractor_tasks.target import load_target


def leftovers(root):
    """Everything of the target's still around: leaked processes and socket files."""
    view = ScopeView(load_target(root))
    in_scope = [p for p in view.procs.values() if view.in_scope(p)]
    socks = sorted(p.name for p in bindspace().glob("*.sock")) if bindspace().is_dir() else []
    return in_scope, socks


def junit_counts(root):
    suite = next(ET.parse(root / ".tractor-tasks" / "last" / "junit.xml").iter("testsuite"))
    return {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}


@pytest.mark.parametrize("tpt", ["tcp", "uds"])
def test_a_plain_run_passes_and_leaves_nothing(sample_repo, tpt):
    out = invoke("test", "--tpt", tpt, root=sample_repo)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "results:" in out.stdout and " passed" in out.stdout and "failed" not in out.stdout
    counts = junit_counts(sample_repo)
    assert counts["tests"] >= 20 and counts["failures"] == counts["errors"] == 0
    assert f"--tpt-proto {tpt}" in (sample_repo / ".tractor-tasks/last/command.txt").read_text()
    assert leftovers(sample_repo) == ([], [])


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


def test_strays_no_marker_points_to_are_swept_after_the_run(sample_repo, monkeypatch,
                                                           chaos_dir, procs):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "stray")
    out = invoke("test", "test_spawning.py::test_strays", root=sample_repo)
    daemon, child = (procs.adopt(int(p)) for p in (chaos_dir / "strays.pid").read_text().split())
    assert out.returncode == 0, out.stdout
    assert not alive(daemon) and not alive(child)
    sweep_lines = [line for line in out.stdout.splitlines() if line.startswith("sweep: ended")]
    assert any(f"pid {daemon} " in line and "private temp dir" in line for line in sweep_lines)
    assert any(f"pid {child} " in line and "descended from this run's pytest" in line
               for line in sweep_lines), out.stdout
    command = (sample_repo / ".tractor-tasks/last/command.txt").read_text()
    private = command.split("XDG_RUNTIME_DIR=")[1].split()[0]
    assert not os.path.exists(private)  # the run's private dir is gone too


def test_new_and_known_flaky_failures_are_told_apart(sample_repo, monkeypatch):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "tooslow,fail")
    out = invoke("test", "test_rpc.py", "--no-x", root=sample_repo)
    assert out.returncode == 1, out.stdout
    lines = out.stdout.splitlines()
    ours = [line for line in lines if line.startswith("  ") and line.endswith("]")]
    slow = next(line for line in ours if "tests/test_rpc.py::test_slow_reply" in line)
    new = next(line for line in ours if "tests/test_rpc.py::test_remote_math" in line)
    assert "[known flaky" in slow and "[NEW]" in new
    assert any("TooSlowError" in line for line in lines)


def test_only_known_flaky_failures_exit_0_unless_x_cut_the_run_short(sample_repo, monkeypatch):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "tooslow")
    full = invoke("test", "test_rpc.py", "--no-x", root=sample_repo)
    assert full.returncode == 0, full.stdout
    assert "known flaky" in full.stdout
    cut = invoke("test", "test_rpc.py", root=sample_repo)
    assert cut.returncode == 1 and "-x stopped the run" in cut.stdout

    retry = invoke("test", "test_rpc.py", "--no-x", "--retry-flaky", root=sample_repo)
    assert retry.returncode == 0
    assert "retry: tests/test_rpc.py::test_slow_reply: failed again" in retry.stdout
    monkeypatch.delenv("SAMPLE_ACTORS_CHAOS")


@pytest.mark.parametrize("dumper", ["py-spy", "fallback"])
def test_a_hang_times_out_with_the_test_id_a_stack_dump_and_a_clean_teardown(
        sample_repo, monkeypatch, chaos_dir, registry_port, dumper):
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
    stacks = (sample_repo / ".tractor-tasks/last/stacks.txt").read_text()
    assert "test_hang" in stacks  # pytest's Python stack
    if dumper == "py-spy":
        assert "(py-spy)" in stacks and "_subactor[hanger@" in stacks
    else:
        assert "(py-spy)" not in stacks and "wchan:" in stacks
        assert "=== SIGUSR1 dump stacks-" in stacks
    assert leftovers(sample_repo) == ([], [])
    assert not port_listening(registry_port)


@pytest.mark.parametrize("how", ["terminal", "signal to invoke only"])
def test_ctrl_c_mid_run_leaves_no_process_or_socket(sample_repo, monkeypatch, chaos_dir,
                                                    registry_port, procs, how):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "leak,ignore_sigint,hang")
    cmd = [sys.executable, "-m", "invoke", "test", "test_spawning.py", "--no-x", "--tpt", "uds",
           "--root", str(sample_repo)]
    current = sample_repo / ".tractor-tasks/last/current"
    current.unlink(missing_ok=True)
    run = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        wait_for(lambda: (chaos_dir / "leaked.pid").exists(), 120, "the leak")
        wait_for(lambda: current.exists() and "test_hang" in current.read_text(), 60,
                 "the hang test to start")
        leaked = procs.adopt(int((chaos_dir / "leaked.pid").read_text()))
        assert alive(leaked) and psutil.Process(leaked).ppid() == 1
        if how == "terminal":
            os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(run.pid, signal.SIGINT)
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, out
    assert "INTERRUPTED" in out
    assert not alive(leaked)
    assert leftovers(sample_repo) == ([], [])
    assert not port_listening(registry_port)


def test_with_a_debugger_ctrl_c_belongs_to_pytest(sample_repo, monkeypatch, chaos_dir):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang")
    current = sample_repo / ".tractor-tasks/last/current"
    current.unlink(missing_ok=True)
    run = subprocess.Popen([sys.executable, "-m", "invoke", "test", "test_spawning.py::test_hang",
                            "--tpdb", "--root", str(sample_repo)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        wait_for(lambda: current.exists() and "test_hang" in current.read_text(), 60, "the hang")
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
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "fail")
    invoke("test", "test_rpc.py", "--no-x", root=sample_repo)
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
    ran = {c.get("classname") for c in
           ET.parse(sample_repo / ".tractor-tasks/last/junit.xml").iter("testcase")}
    assert ran and all(c.split(".")[-1] in ("test_local", "test_rpc", "test_spawning",
                                            "test_registrar") for c in ran)


def test_lastfailed_missing_corrupt_and_junk(tmp_path):
    from helpers import copy_sample
    root = copy_sample(tmp_path / "s")
    assert "no lastfailed cache" in invoke("lastfailed", root=root).stdout
    cache = root / ".pytest_cache" / "v" / "cache" / "lastfailed"
    cache.parent.mkdir(parents=True)
    cache.write_text('{"tests/test_b.py::t": true, "/usr/lib/python3/junk.py": true, '
                     '"tests/test_a.py::t[x]": true, "other/test_c.py": true}')
    out = invoke("lastfailed", root=root)
    assert out.stdout.splitlines() == ["2 last-failed test(s):", "  tests/test_a.py::t[x]",
                                       "  tests/test_b.py::t"]
    cache.write_bytes(b'{"tests/test_a.py": tru')
    bad = invoke("lastfailed", root=root)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "not valid JSON" in bad.stderr and "left as it is" in bad.stderr
    assert cache.read_bytes() == b'{"tests/test_a.py": tru'
    unknown = invoke("lastfailed", "--session", "tests-3.11(tpt='quic')", root=root)
    assert unknown.returncode == 2 and "no runs recorded" in unknown.stderr


def test_quick_and_no_task_touches_git(sample_repo):
    before = git_state(sample_repo)
    quick = invoke("quick", root=sample_repo)
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert "tests collected" in quick.stdout
    for args in (["doctor", "--no-collect"], ["clean"], ["venv"], ["lastfailed", "--all"],
                 ["affected", "--list"], ["test", "test_local.py"], ["report"]):
        out = invoke(*args, root=sample_repo)
        assert out.returncode in (0, 1), (args, out.stderr)
    assert git_state(sample_repo) == before
