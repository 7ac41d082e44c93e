"""Contained runs, with real processes: what a contained command can and cannot touch,
and that everything of a run is gone after end(), or after its supervisor is SIGKILLed.

The subreaper fallback makes its caller a subreaper for good, so it only ever runs in
a helper process here, never in pytest itself. Nothing here runs the /proc-scanning
killer uncontained: it would hit other people's processes.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import psutil
import pytest

from helpers import alive, free_port, port_listening, wait_for
from tractor_tasks.contain import ENV_CONTAIN, MODES, detect, launch
from tractor_tasks.errors import TaskError

PY = sys.executable
# real namespaces, inits and process trees, every one
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ns():
    """The namespaces containment; skipped where this machine does not allow it."""
    if shutil.which("unshare") is None:
        pytest.skip("no `unshare` binary here (util-linux)")
    probe = subprocess.run(["unshare", "-rpfn", "--mount-proc", "true"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces not allowed here: `unshare -rpfn --mount-proc true` "
                    f"says: {probe.stderr.strip()}")
    return detect("namespaces")


def start(code: str, *args, containment, cwd: Path, env=None):
    return launch([PY, "-c", textwrap.dedent(code), *map(str, args)], cwd=cwd,
                  env=dict(os.environ if env is None else env), containment=containment)


def run_helper(tmp: Path, code: str, *args, timeout: float = 60, **kw) -> dict:
    """Run a supervisor script in its own process; it prints one JSON line."""
    script = tmp / "helper.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run([PY, str(script), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, cwd=tmp, **kw)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def ppid(pid: int) -> int:
    return psutil.Process(pid).ppid()


# -- 1. which mode ---------------------------------------------------------------------

def test_detect_modes(ns):
    auto = detect(env={})
    assert auto.mode == "namespaces", auto.note
    assert auto.note == "contained: own user, pid, network and mount namespaces"
    forced = detect(env={ENV_CONTAIN: "subreaper"})
    assert forced.mode == "subreaper" and f"{ENV_CONTAIN}=subreaper" in forced.note
    assert detect(env={ENV_CONTAIN: "off"}).mode == "off"
    assert detect(env={ENV_CONTAIN: "auto"}).mode == "namespaces"
    assert detect("subreaper", env={}).mode == "subreaper"
    assert detect("subreaper", env={ENV_CONTAIN: "off"}).mode == "subreaper"  # argument wins
    off = detect("off", env={})
    assert off.mode == "off" and "--no-contain" in off.note
    for c in (auto, forced, off):
        assert c.mode in MODES and "\n" not in c.note


def test_auto_falls_back_to_a_subreaper_where_namespaces_are_refused(ns, tmp_path):
    """In a user namespace that may create no more of them, as a machine with user
    namespaces turned off: "auto" falls back, and says why in one line."""
    script = tmp_path / "detect.py"
    script.write_text("import json\nfrom tractor_tasks.contain import detect\n"
                      "c = detect(env={})\nprint(json.dumps([c.mode, c.note]))\n")
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c",
         'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" "$1"', PY, str(script)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    mode, note = json.loads(out.stdout)
    assert mode == "subreaper"
    assert note.startswith("namespaces not allowed here (unshare: ")
    assert note.endswith("); falling back to a child subreaper: the run's orphans come back "
                         "to tractor-tasks and are ended at the end")
    assert "\n" not in note


@pytest.mark.parametrize("how", ["env", "argument"])
def test_bad_mode_is_a_usage_error(how):
    with pytest.raises(TaskError) as err:
        if how == "env":
            detect(env={ENV_CONTAIN: "bogus"})
        else:
            detect("bogus", env={})
    assert err.value.code == 2
    assert "bogus" in str(err.value) and "auto, namespaces, subreaper, off" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mode", ["namespaces", "off"])
def test_a_missing_command_is_one_error(ns, tmp_path, mode):
    with pytest.raises(TaskError) as err:
        launch(["tt-no-such-command"], cwd=tmp_path, env=dict(os.environ),
               containment=detect(mode, env={}))
    assert "tt-no-such-command" in str(err.value)


# -- 2. two runs, one fixed port -------------------------------------------------------

BIND = """
    import os, socket, sys, time
    port, me, release = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen()
    open(me, "w").write("bound")
    deadline = time.time() + 30
    while not os.path.exists(release):
        if time.time() > deadline:
            sys.exit(3)
        time.sleep(0.02)
    socket.create_connection(("127.0.0.1", port)).close()
"""


def test_two_contained_runs_bind_the_same_port(ns, tmp_path):
    port = free_port()
    assert port not in (1616, 1626)
    release = tmp_path / "release"
    bound = [tmp_path / "bound-a", tmp_path / "bound-b"]
    with start(BIND, port, bound[0], release, containment=ns, cwd=tmp_path) as a, \
            start(BIND, port, bound[1], release, containment=ns, cwd=tmp_path) as b:
        wait_for(lambda: all(p.exists() for p in bound), what="both runs bound")
        assert a.tcp_listeners() == [("127.0.0.1", port)]
        assert b.tcp_listeners() == [("127.0.0.1", port)]
        assert not port_listening(port)   # neither is visible on the machine
        release.write_text("go")
        assert a.wait(30) and b.wait(30)
        assert (a.poll(), b.poll()) == (0, 0)


# -- 3. a daemon cannot escape ---------------------------------------------------------

DAEMON = """
    import os, sys, time
    ready = sys.argv[1]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.chdir("/")
            body = ("import time\\nopen(%r, 'w').write('up')\\n"
                    "while True: time.sleep(1)") % ready
            os.execve(sys.executable, ["tt-test-daemon", "-c", body], {})
        os._exit(0)
    os.wait()
    deadline = time.time() + 30
    while not os.path.exists(ready) and time.time() < deadline:
        time.sleep(0.02)
"""


def test_a_double_forked_daemon_is_ended(ns, tmp_path, procs):
    ready = tmp_path / "daemon-up"
    with start(DAEMON, ready, containment=ns, cwd=tmp_path) as run:
        assert run.wait(30) and run.poll() == 0
        daemons = [p for p in run.members() if p.cmdline()[:1] == ["tt-test-daemon"]]
        assert len(daemons) == 1, run.members()
        daemon = daemons[0]
        procs.adopt(daemon.pid)
        assert daemon.cwd() == "/" and daemon.environ() == {}
        init = daemon.ppid()   # the orphan went to the namespace's pid 1
        assert init != os.getpid() and ppid(init) == run._popen.pid
        notes = run.end()
    assert notes == [f"SIGINT -> 1 process(es) of the run: {daemon.pid}"]
    assert not alive(daemon.pid) and not alive(init)
    assert run.members() == []


# -- 4. a contained /proc scan sees only its own run ----------------------------------

KILLER = """
    import json, os, signal, subprocess, sys, time
    out = sys.argv[1]
    inner = subprocess.Popen(["_subactor[inner@1]", "-c", "import time; time.sleep(60)"],
                             executable=sys.executable)
    while b"_subactor[" not in open(f"/proc/{inner.pid}/cmdline", "rb").read():
        time.sleep(0.01)   # a vforked child's argv shows up just after the exec
    seen, killed = [], []
    for name in sorted(os.listdir("/proc"), key=lambda n: (len(n), n)):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        seen.append(int(name))
        try:
            cmdline = open(f"/proc/{name}/cmdline", "rb").read()
        except OSError:
            continue
        if b"_subactor[" in cmdline:
            os.kill(int(name), signal.SIGKILL)
            killed.append(int(name))
    inner.wait()
    json.dump({"seen": seen, "killed": killed, "inner": inner.pid}, open(out, "w"))
"""


def test_a_contained_killer_cannot_reach_a_decoy_outside(ns, tmp_path, procs):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    decoy = procs.orphan(elsewhere, title="_subactor[decoy@1]")
    assert ppid(decoy) != os.getpid()
    out = tmp_path / "killer.json"
    with start(KILLER, out, containment=ns, cwd=tmp_path) as run:
        assert run.wait(30) and run.poll() == 0
    report = json.loads(out.read_text())
    assert report["seen"] == [1, report["inner"]]  # it sees only its own run...
    # ...and kills what it matches there: the init (pid 1: its command line carries the
    # command's, and pid 1 ignores a SIGKILL from inside) and its own subactor
    assert report["killed"] == [1, report["inner"]]
    assert alive(decoy)
    assert "_subactor[decoy@1]" in psutil.Process(decoy).cmdline()[0]


# -- 5. the supervisor SIGKILLed: the run dies with it ---------------------------------

TREE = """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)"])
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(120)
"""

SUPERVISOR = """
    import json, os, sys, time, textwrap
    import psutil
    from tractor_tasks.contain import detect, launch
    run = launch([sys.executable, "-c", textwrap.dedent(sys.argv[1])], cwd=os.getcwd(),
                 env=dict(os.environ), containment=detect("namespaces"))
    deadline = time.time() + 30
    members = []
    while time.time() < deadline:  # the same three for a moment: the middle fork is gone
        now = sorted(p.pid for p in run.members())
        if len(now) == 3 and now == members:
            break
        members = now
        time.sleep(0.2)
    init = psutil.Process(run.main_pid).ppid()
    print(json.dumps({"members": members, "main": run.main_pid,
                      "init": init, "unshare": psutil.Process(init).ppid()}), flush=True)
    time.sleep(120)
"""


def test_sigkill_of_the_supervisor_ends_the_run(ns, tmp_path, procs):
    script = tmp_path / "supervisor.py"
    script.write_text(textwrap.dedent(SUPERVISOR))
    sup = subprocess.Popen([PY, str(script), TREE], stdout=subprocess.PIPE, text=True,
                           cwd=tmp_path)
    procs.adopt(sup.pid)
    try:
        ready, _, _ = select.select([sup.stdout], [], [], 30)
        assert ready, "the supervisor printed nothing"
        seen = json.loads(sup.stdout.readline())
        pids = [*seen["members"], seen["init"], seen["unshare"]]
        for pid in pids:
            procs.adopt(pid)
        assert len(seen["members"]) == 3 and seen["main"] in seen["members"]
        assert all(alive(p) for p in pids)
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait(10)
        wait_for(lambda: not any(alive(p) for p in pids), timeout=5,
                 what=f"every process of the run gone: {pids}")
    finally:
        sup.kill()
        sup.wait()
        sup.stdout.close()


# -- 6. signals ------------------------------------------------------------------------

REPORT_SIGNALS = """
    import json, signal, sys
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    json.dump({"ign": int(status["SigIgn"], 16), "blk": int(status["SigBlk"], 16),
               "handler": getattr(signal.getsignal(signal.SIGINT), "__name__", "?")},
              open(sys.argv[1], "w"))
"""

LAUNCHER = """
    import json, os, signal, sys, textwrap
    from tractor_tasks.contain import detect, launch
    out = {"launcher_ignores": signal.getsignal(signal.SIGINT) == signal.SIG_IGN}
    for mode in ("namespaces", "subreaper", "off"):
        dest = f"{mode}.json"
        run = launch([sys.executable, "-c", textwrap.dedent(sys.argv[1]), dest],
                     cwd=os.getcwd(), env=dict(os.environ), containment=detect(mode))
        with run:
            run.wait(30)
        out[mode] = json.load(open(dest))
    print(json.dumps(out))
"""

BITS = {s: 1 << (s - 1) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                   signal.SIGQUIT)}


def test_the_command_starts_with_sigint_at_default(ns, tmp_path):
    def ignore_and_block():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGQUIT, signal.SIGHUP})

    seen = run_helper(tmp_path, LAUNCHER, textwrap.dedent(REPORT_SIGNALS),
                      preexec_fn=ignore_and_block)
    assert seen["launcher_ignores"]
    for mode in ("namespaces", "subreaper", "off"):
        got = seen[mode]
        assert not any(got["ign"] & bit for bit in BITS.values()), (mode, hex(got["ign"]))
        assert got["blk"] == 0, (mode, hex(got["blk"]))
        assert got["handler"] == "default_int_handler", mode   # python saw SIG_DFL


@pytest.mark.parametrize("mode", ["namespaces", "off"])
def test_signal_command_sigint_ends_a_command_without_handler(ns, tmp_path, mode):
    with launch(["sleep", "60"], cwd=tmp_path, env=dict(os.environ),
                containment=detect(mode, env={})) as run:
        assert run.poll() is None and run.main_pid
        assert run.signal_command(signal.SIGINT)
        assert run.wait(10)
        assert run.poll() == -signal.SIGINT
        assert not run.signal_command(signal.SIGINT)   # gone: nothing is signalled


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_a_process_sends_to_the_init_is_forwarded(ns, tmp_path, sig):
    with launch(["sleep", "60"], cwd=tmp_path, env=dict(os.environ), containment=ns) as run:
        init = ppid(run.main_pid)
        assert psutil.Process(init).cmdline()[-3:] == ["--", "sleep", "60"]
        os.kill(init, sig)
        assert run.wait(10)
        assert run.poll() == -sig


COUNT_SIGINTS = """
    import signal, sys, time
    ready, out = sys.argv[1], sys.argv[2]
    got = []
    signal.signal(signal.SIGINT, lambda *a: got.append(1))
    open(ready, "w").write("up")
    deadline = time.time() + 30
    while not got and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)   # a forwarded duplicate would land in here
    open(out, "w").write(str(len(got)))
"""

TTY_SUPERVISOR = """
    import os, signal, sys, textwrap
    from tractor_tasks.contain import detect, launch
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the terminal's Ctrl-C reaches us too
    run = launch([sys.executable, "-c", textwrap.dedent(sys.argv[1]), *sys.argv[2:]],
                 cwd=os.getcwd(), env=dict(os.environ), containment=detect("namespaces"))
    with run:
        run.wait(60)
"""


def test_the_terminals_ctrl_c_reaches_the_command_once(ns, tmp_path, procs):
    """A kernel-sent SIGINT (Ctrl-C on the controlling tty) is not forwarded by the init:
    the command, in the terminal's foreground process group, got it already."""
    script = tmp_path / "tty_supervisor.py"
    script.write_text(textwrap.dedent(TTY_SUPERVISOR))
    ready, out = tmp_path / "ready", tmp_path / "count"
    master, slave = os.openpty()
    sup = subprocess.Popen([PY, str(script), textwrap.dedent(COUNT_SIGINTS), ready, out],
                           stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                           start_new_session=True,
                           preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    procs.adopt(sup.pid)
    try:
        wait_for(ready.exists, what="the command up")
        os.write(master, termios.tcgetattr(master)[6][termios.VINTR])  # Ctrl-C
        wait_for(out.exists, what="the command's count")
        assert sup.wait(30) == 0
        assert out.read_text() == "1"
    finally:
        sup.kill()
        sup.wait()
        os.close(master)


# -- 7. a held namespace ---------------------------------------------------------------

LEAVE_A_LISTENER = """
    import subprocess, sys, time
    port, ready = sys.argv[1], sys.argv[2]
    body = ("import socket, sys, time\\n"
            "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\\n"
            "open(sys.argv[2], 'w').write('up')\\n"
            "time.sleep(120)")
    subprocess.Popen(["tt-leftover", "-c", body, port, ready], executable=sys.executable)
    deadline = time.time() + 30
    import os
    while not os.path.exists(ready) and time.time() < deadline:
        time.sleep(0.02)
    sys.exit(7)
"""


def test_a_finished_run_is_held_for_inspection_then_ended(ns, tmp_path, procs):
    port = free_port()
    with start(LEAVE_A_LISTENER, port, tmp_path / "up", containment=ns, cwd=tmp_path) as run:
        assert run.wait(30)
        assert run.poll() == 7                       # the command's status...
        left = run.members()                         # ...while its leftover is held
        assert [p.cmdline()[0] for p in left] == ["tt-leftover"]
        procs.adopt(left[0].pid)
        assert run.tcp_listeners() == [("127.0.0.1", port)]
        init = left[0].ppid()
        notes = run.end(grace=0.1)
        assert notes == [f"SIGINT -> 1 process(es) of the run: {left[0].pid}"]
        assert run.poll() == 7
        assert run.members() == [] and run.tcp_listeners() == []
        assert not alive(left[0].pid) and not alive(init)
        assert run._popen.poll() is not None         # unshare reaped


def test_kill_takes_the_whole_namespace(ns, tmp_path, procs):
    with start(TREE, containment=ns, cwd=tmp_path) as run:
        members = wait_for(lambda: len(run.members()) == 3 and run.members(),
                           what="the tree up")
        for p in members:
            procs.adopt(p.pid)
        run.kill()
        assert run.wait(10) and run.poll() == -signal.SIGKILL
        wait_for(lambda: not any(alive(p.pid) for p in members), timeout=5,
                 what="the tree gone")


# -- 8. the subreaper fallback ---------------------------------------------------------

ORPHANER = """
    import os, sys, time
    ready = sys.argv[1]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open(ready + ".tmp", "w").write(str(os.getpid()))
            os.rename(ready + ".tmp", ready)
            while True:
                time.sleep(1)
        os._exit(0)
    os.wait()
    deadline = time.time() + 30
    while not os.path.exists(ready) and time.time() < deadline:
        time.sleep(0.02)
"""

FALLBACK = """
    import json, os, sys, textwrap, time
    import psutil
    from tractor_tasks.contain import detect, launch
    c = detect()   # TRACTOR_TASKS_CONTAIN=subreaper in our environment
    ready = os.path.abspath("orphan.pid")
    run = launch([sys.executable, "-c", textwrap.dedent(sys.argv[1]), ready],
                 cwd=os.getcwd(), env=dict(os.environ), containment=c)
    try:
        run.wait(30)
        orphan = int(open(ready).read())
        seen = {"mode": c.mode, "note": c.note, "status": run.poll(), "orphan": orphan,
                "orphan_ppid": psutil.Process(orphan).ppid(), "me": os.getpid(),
                "members": [p.pid for p in run.members()], "fd": run.fileno()}
        seen["notes"] = run.end()
    finally:
        run.kill()   # a no-op after end(); on a failure above, the orphan goes too
        run.close()
    seen["orphan_alive"] = psutil.pid_exists(orphan)
    seen["children"] = [(p.pid, p.status()) for p in psutil.Process().children()]
    print(json.dumps(seen))
"""


def test_subreaper_fallback_adopts_and_ends_orphans(tmp_path, procs):
    out = run_helper(tmp_path, FALLBACK, textwrap.dedent(ORPHANER),
                     env={**os.environ, ENV_CONTAIN: "subreaper"})
    procs.adopt(out["orphan"])
    assert out["mode"] == "subreaper" and f"{ENV_CONTAIN}=subreaper" in out["note"]
    assert out["status"] == 0 and out["fd"] is not None
    assert out["orphan_ppid"] == out["me"]        # re-parented to the supervisor
    assert out["members"] == [out["orphan"]]      # the command itself has exited
    assert out["notes"] == [f"SIGINT -> 1 process(es) of the run: {out['orphan']}"]
    assert not out["orphan_alive"]                # ended, and reaped: not even a zombie
    assert out["children"] == []
