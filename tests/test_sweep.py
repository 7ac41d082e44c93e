"""Scope and sweep on real processes and sockets: in-scope leaks go, decoys stay."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from helpers import alive, bindspace, invoke, port_listening
from tractor_tasks.scope import ENV_RUN, RunMarker, ScopeView
from tractor_tasks.sockets import socket_files
from tractor_tasks.target import load_target

CONFIG = """[tool.tractor-tasks]
package = "sample_actors"
bindspace = "sample-actors"
process_markers = ["_subactor[", "sample_actors._child"]
"""


@pytest.fixture
def checkouts(tmp_path):
    """Checkout A is the target; B is some other dir; C is another checkout of the project."""
    dirs = {}
    for name in "ABC":
        d = tmp_path / name
        d.mkdir()
        (d / "pyproject.toml").write_text(CONFIG)
        dirs[name] = d
    return dirs


def dead_socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens
    return path


@pytest.mark.slow
def test_clean_ends_in_scope_leaks_and_spares_decoys(checkouts, procs, registry_port):
    a, b, c = checkouts["A"], checkouts["B"], checkouts["C"]
    space = bindspace()
    space.mkdir(mode=0o700, exist_ok=True)
    holder = procs.orphan(a, "_subactor[leaker@1]", port=registry_port)
    stubborn = procs.orphan(a, "_subactor[stubborn@2]", ignore_sigint=True)
    uds_leak = procs.orphan(a, "python3 -m sample_actors._child --uid x",
                            uds=space / "child@424242.sock")
    decoys = [
        procs.orphan(b, "_subactor[elsewhere@3]"),                    # actor-looking, other cwd
        procs.orphan(c, "python3 -m sample_actors._child --uid y"),   # another checkout
        procs.orphan(a, "python3"),                                   # unrelated child of init
    ]
    live = procs.child(b, "listener", uds=space / "live@999999.sock")
    dead = dead_socket(space / "dead@999998.sock")
    assert port_listening(registry_port)
    assert psutil.Process(holder).ppid() == 1

    dry = invoke("clean", "--dry-run", root=a)
    assert dry.returncode == 0, dry.stderr
    for pid in (holder, stubborn, uds_leak):
        assert f"would end pid {pid}" in dry.stdout
    assert f"would remove stale socket {dead}" in dry.stdout
    assert all(alive(p) for p in (holder, stubborn, uds_leak, *decoys))
    assert dead.exists() and port_listening(registry_port)

    out = invoke("clean", root=a)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("clean")
    assert not any(alive(p) for p in (holder, stubborn, uds_leak))
    assert f"pid {stubborn}" in out.stdout and "[SIGKILL]" in out.stdout
    assert all(alive(p) for p in decoys), out.stdout
    assert not port_listening(registry_port)
    assert not dead.exists() and not (space / "child@424242.sock").exists()
    assert (space / "live@999999.sock").exists() and live.poll() is None
    assert "kept" in out.stdout and "live@999999.sock (live listener)" in out.stdout


@pytest.mark.slow
def test_descendant_mode_ends_only_the_named_parents_subtree(checkouts, procs):
    a = checkouts["A"]
    script = textwrap.dedent("""
        import subprocess, sys, time
        kids = [subprocess.Popen([f"_subactor[kid@{i}]", "-c", "import time; time.sleep(300)"],
                                 executable=sys.executable) for i in range(2)]
        print(" ".join(str(k.pid) for k in kids), flush=True)
        time.sleep(300)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=a, stdout=subprocess.PIPE,
                              text=True)
    procs.adopt(parent.pid)
    kids = [procs.adopt(int(p)) for p in parent.stdout.readline().split()]

    # a live parent owns them: no leak in the default (orphan) mode
    out = invoke("clean", root=a)
    assert out.returncode == 0 and "nothing to clean" in out.stdout
    assert all(alive(k) for k in kids)

    out = invoke("clean", "--parent", str(parent.pid), root=a)
    assert out.returncode == 0, out.stdout
    assert not any(alive(k) for k in kids)
    assert parent.poll() is None  # the parent itself is not touched
    parent.kill()
    parent.wait()


@pytest.mark.slow
def test_processes_of_a_live_run_are_not_leaks_but_of_a_dead_one_are(checkouts, procs,
                                                                     monkeypatch):
    a = checkouts["A"]
    me = psutil.Process()
    monkeypatch.setenv(ENV_RUN, f"{me.pid}:{me.create_time()}:p1:{a.resolve()}")
    ours = procs.orphan(a, "_subactor[live-run@1]")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True)
    gone = int(finished.stdout)
    monkeypatch.setenv(ENV_RUN, f"{gone}:1.0:p2:{a.resolve()}")
    stale = procs.orphan(a, "python3 -c pass-but-started-by-a-run")

    view = ScopeView(load_target(a))
    leaked = {p.pid: str(why) for p, why in view.leaks()}
    assert ours not in leaked
    assert stale in leaked and "supervisor is gone" in leaked[stale]
    # the run's own sweep (given its marker) takes the live run's processes too
    run = RunMarker(me.pid, me.create_time(), "p1", str(a.resolve()))
    assert ours in {p.pid for p, _ in view.leaks(run=run)}


def test_socket_staleness_is_tested_not_assumed(checkouts):
    """A listener is a listener whoever holds it: this process listens (no child)."""
    target = load_target(checkouts["A"])
    space = bindspace()
    space.mkdir(mode=0o700, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(space / "registry@1.sock"))
    listener.listen()
    dead_socket(space / "registry@2.sock")
    me = os.getpid()
    dead_socket(space / f"bound-by-me@{me}.sock")  # binder alive: not stale yet
    states = {s.path.name: s for s in socket_files(target, [space])}
    assert states["registry@1.sock"].listening and not states["registry@1.sock"].stale
    assert states["registry@2.sock"].stale
    assert states[f"bound-by-me@{me}.sock"].binder_alive
    assert not states[f"bound-by-me@{me}.sock"].stale
    listener.close()
    for name in ("registry@1.sock", "registry@2.sock", f"bound-by-me@{me}.sock"):
        (space / name).unlink()


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    return int(done.stdout)


@pytest.mark.parametrize("args", [
    ["--grace", "soon"], ["--grace", "-1"], ["--grace", "nan"], ["--grace", "inf"],
    ["--grace", "1e400"], ["--parent", "abc"], ["--parent", "0"], ["--parent", "-5"],
    ["--parent", "\u0661\u0662\u0663"],  # Arabic-Indic digits are not a pid
    ["--parent", "DEAD"],
])
@pytest.mark.slow
def test_bad_clean_arguments_are_usage_errors(checkouts, args):
    a = checkouts["A"]
    args = [str(_dead_pid()) if x == "DEAD" else x for x in args]
    out = invoke("clean", *args, root=a, timeout=60)
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1 and "error:" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (a / ".tractor-tasks").exists()


@pytest.mark.slow
def test_the_legacy_temp_dir_check_takes_only_this_targets_registry_port(checkouts,
                                                                        registry_port):
    """Another app's `registry@<other port>.sock` in $TMPDIR is not ours to remove."""
    a = checkouts["A"]
    legacy = Path(os.environ.get("TMPDIR") or "/tmp")
    ours = dead_socket(legacy / f"registry@{registry_port}.sock")
    other_port = registry_port + 1 if registry_port < 65535 else registry_port - 1
    theirs = dead_socket(legacy / f"registry@{other_port}.sock")
    try:
        out = invoke("clean", root=a)
        assert out.returncode == 0, out.stdout
        assert f"removed stale socket {ours}" in out.stdout
        assert not ours.exists() and theirs.exists()
    finally:
        for path in (ours, theirs):
            path.unlink(missing_ok=True)


def _dead_run_private_dir(target_root: Path) -> Path:
    """What a SIGKILLed run leaves: its private dir, marked with a supervisor that is
    gone, and a stale registry socket in its bindspace."""
    import json
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="tt-"))
    (d / ".tractor-tasks-run").write_text(json.dumps(
        {"root": str(target_root.resolve()), "pid": _dead_pid(), "create_time": 1.0}))
    (d / "sample-actors").mkdir()
    dead_socket(d / "sample-actors" / "registry@1626.sock")
    return d


@pytest.mark.slow
def test_a_sigkilled_runs_private_dir_is_found_and_removed(checkouts, procs):
    a, b = checkouts["A"], checkouts["B"]
    mine, other = _dead_run_private_dir(a), _dead_run_private_dir(b)
    live = _dead_run_private_dir(a)   # a live run's: its supervisor is this test process
    import json
    me = psutil.Process()
    (live / ".tractor-tasks-run").write_text(json.dumps(
        {"root": str(a.resolve()), "pid": me.pid, "create_time": me.create_time()}))
    # a stray of the dead run still working in its dir
    stray = procs.orphan(mine, "python3 -c stray-of-a-killed-run")
    try:
        doctor = invoke("doctor", "--json", "--fast", root=a)
        checks = {c["name"]: c for c in __import__("json").loads(doctor.stdout)["checks"]}
        assert doctor.returncode == 1
        assert checks["sockets"]["status"] == "FAIL" and str(mine) in checks["sockets"]["detail"]
        assert str(live) not in checks["sockets"]["detail"]
        assert f"pid {stray}" in checks["processes"]["detail"]
        out = invoke("clean", root=a)
        assert out.returncode == 0, out.stdout
        assert f"removed the private dir of a run that is over: {mine}" in out.stdout
        assert not mine.exists() and not alive(stray)
        assert other.exists() and live.exists()  # another checkout's, a live run's
    finally:
        import shutil
        for d in (mine, other, live):
            shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
def test_the_bindspace_is_the_one_the_targets_own_interpreter_computes(checkouts):
    """Where the target's platformdirs puts its sockets is asked of its venv: a stale
    socket there is found even where ours would not look."""
    import tempfile
    a = checkouts["A"]
    elsewhere = Path(tempfile.mkdtemp(prefix="their-")) / "sample-actors"  # short: UDS
    elsewhere.mkdir(parents=True)
    stale = dead_socket(elsewhere / "registry@1626.sock")
    venv = a / f"py{sys.version_info[0]}{sys.version_info[1]}" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f"#!/bin/sh\necho {elsewhere}\n")  # its platformdirs' answer
    (venv / "python").chmod(0o755)
    (a / "pyproject.toml").write_text(CONFIG + f'pythons = ["{sys.version_info[0]}.'
                                      f'{sys.version_info[1]}"]\n')
    dry = invoke("clean", "--dry-run", root=a)
    assert f"would remove stale socket {stale}" in dry.stdout, dry.stdout
    assert invoke("clean", root=a).returncode == 0 and not stale.exists()


@pytest.mark.slow
def test_the_doctor_summarises_many_leftovers(checkouts, procs):
    a = checkouts["A"]
    pids = [procs.orphan(a, f"_subactor[many@{i}]") for i in range(5)]
    table = invoke("doctor", "--fast", root=a)
    row = next(line for line in table.stdout.splitlines() if line.startswith("processes"))
    assert row.count("_subactor[many@") == 3 and "(+2 more" in row and len(row) < 500
    full = invoke("doctor", "--fast", "--verbose", root=a)
    row = next(line for line in full.stdout.splitlines() if line.startswith("processes"))
    assert all(f"pid {p} " in row for p in pids)
