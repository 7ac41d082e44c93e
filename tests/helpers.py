"""Real processes, sockets and commands for the tests; everything started here is ended
here, by pid."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample-actors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_listening(port: int) -> bool:
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            return True
    return False


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# A program for the processes the tests start: optionally ignores SIGINT,
# listens on a tcp port or a uds path, reports readiness, then sleeps.
_BODY = textwrap.dedent("""
    import os, signal, socket, sys, time
    cfg = dict(a.split("=", 1) for a in sys.argv[1:])
    if cfg.get("ignore_sigint") == "1":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep = []
    if cfg.get("port"):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(cfg["port"]))); s.listen(); keep.append(s)
    if cfg.get("uds"):
        u = socket.socket(socket.AF_UNIX); u.bind(cfg["uds"]); u.listen(); keep.append(u)
    with open(cfg["ready"], "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(1)
""")

# Double fork: the grandchild runs the body, orphaned to init, with argv[0] = title.
_ORPHAN = textwrap.dedent("""
    import os, sys
    title, cwd = sys.argv[1], sys.argv[2]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.chdir(cwd)
            os.execv(sys.executable, [title, "-c", sys.argv[3], *sys.argv[4:]])
        os._exit(0)
    os._exit(0)
""")


class Procs:
    """Processes a test started; `cleanup()` SIGKILLs whatever of them is still alive."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[psutil.Process] = []
        self.n = 0

    def _track(self, pid: int) -> int:
        if not isinstance(pid, int) or pid <= 1 or pid == os.getpid():
            raise AssertionError(f"refusing to track pid {pid!r}: not a process a test started")
        try:
            self.started.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
        return pid

    def _args(self, ignore_sigint, port, uds):
        self.n += 1
        ready = self.tmp / f"ready-{self.n}"
        args = [f"ready={ready}", f"ignore_sigint={int(ignore_sigint)}"]
        if port:
            args.append(f"port={port}")
        if uds:
            args.append(f"uds={uds}")
        return ready, args

    def orphan(self, cwd: Path, title: str = "python3", *, ignore_sigint=False, port=None,
               uds=None) -> int:
        """A process orphaned to init (PPid 1) with the given cwd and command-line title."""
        ready, args = self._args(ignore_sigint, port, uds)
        subprocess.run([sys.executable, "-c", _ORPHAN, title, str(cwd), _BODY, *args],
                       check=True)
        pid = int(wait_for(lambda: ready.exists() and ready.read_text(), what="orphan ready"))
        return self._track(pid)

    def child(self, cwd: Path, title: str = "python3", *, ignore_sigint=False, port=None,
              uds=None, env=None) -> subprocess.Popen:
        """A child of this test process (its parent is alive)."""
        ready, args = self._args(ignore_sigint, port, uds)
        p = subprocess.Popen([title, "-c", _BODY, *args], executable=sys.executable, cwd=cwd,
                             env=env)
        wait_for(ready.exists, what="child ready")
        self._track(p.pid)
        return p

    def adopt(self, pid: int) -> int:
        return self._track(pid)

    def cleanup(self):
        for p in self.started:
            try:
                if p.is_running():
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs([p for p in self.started if _running(p)], timeout=5)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running()
    except psutil.NoSuchProcess:
        return False


def copy_sample(dest: Path, *, config: str | None = None, git: bool = False) -> Path:
    """A copy of the bundled sample (no venvs, no caches), optionally with extra config."""
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns(
        "py3*", ".venv", ".tractor-tasks", "__pycache__", ".pytest_cache"))
    if config is not None:  # replace every [tool.tractor-tasks...] table with `config`
        pyproject = dest / "pyproject.toml"
        kept, skipping = [], False
        for line in pyproject.read_text().splitlines():
            if line.startswith("["):
                skipping = line.lstrip("[").startswith("tool.tractor-tasks")
            if not skipping:
                kept.append(line)
        pyproject.write_text("\n".join(kept) + "\n" + config)
    if git:
        for cmd in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "sample"]):
            subprocess.run(["git", *cmd], cwd=dest, check=True, capture_output=True)
    return dest


def git_state(root: Path) -> dict:
    def g(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout
    return {"head": g("rev-parse", "HEAD"), "status": g("status", "--porcelain", "--ignored=no"),
            "index": g("ls-files", "-s"), "stash": g("stash", "list"),
            "diff": g("diff"), "branches": g("branch", "-a")}


def run_tool(tool: str, *args, env=None, timeout=300, cwd=REPO, **kw):
    """`invoke ...` or `nox ...` in this repo, as a user would run it."""
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout, **kw)


def invoke(*args, root: Path | None = None, **kw):
    # --root goes after the task name (it is a task option)
    args = list(args)
    if root is not None:
        if "--" in args:
            i = args.index("--")
            args[i:i] = ["--root", str(root)]
        else:
            args += ["--root", str(root)]
    return run_tool("invoke", *args, **kw)


def invoke_here(*args, root: Path | None = None, capsys):
    """`invoke ...` run by invoke's own Program in this process (no child): the same
    exit code, stdout and stderr as `invoke(...)` gives, for the fast tier."""
    from invoke import Program

    from tractor_tasks.invoke_tasks import collection
    args = list(args) + (["--root", str(root)] if root is not None else [])
    capsys.readouterr()
    try:
        Program(namespace=collection(str(REPO / "tasks.py")), name="invoke",
                binary="invoke").run(["invoke", *args])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["invoke", *args], code, out, err)


def nox(*args, root: Path | None = None, env=None, **kw):
    env = dict(env or {})
    if root is not None:
        env["TRACTOR_TASKS_ROOT"] = str(root)
    return run_tool("nox", *args, env=env, **kw)


def junit_ids(path: Path) -> dict[str, str]:
    """node-ish id (memory addresses left out) -> outcome from a JUnit file."""
    import xml.etree.ElementTree as ET

    from tractor_tasks.results import stable_id
    out = {}
    for case in ET.parse(path).iter("testcase"):
        key = stable_id(f"{case.get('classname')}::{case.get('name')}")
        if case.find("failure") is not None or case.find("error") is not None:
            out[key] = "failed"
        elif case.find("skipped") is not None:
            out[key] = "skipped"
        else:
            out[key] = "passed"
    return out


def bindspace(name: str = "sample-actors") -> Path:
    return Path(os.environ["XDG_RUNTIME_DIR"]) / name


def last_run(root: Path, slug: str | None = None) -> Path | None:
    """The run dir the target's `last` link (or a cell's) points at now."""
    link = root / ".tractor-tasks" / ("cells/" + slug + "/last" if slug else "last")
    return link.resolve() if link.is_symlink() else None


def wait_for_test(root: Path, before: Path | None, needle: str, slug: str | None = None,
                  timeout: float = 120) -> Path:
    """Wait until a new run (not `before`) is running a test whose id contains `needle`;
    return that run's dir."""
    def running():
        run = last_run(root, slug)
        if run is None or run == before:
            return None
        for current in sorted(run.glob("**/pass-*/current")):
            try:
                if needle in json.loads(current.read_text()).get("nodeid", ""):
                    return run
            except (OSError, ValueError):
                continue
        return None
    return wait_for(running, timeout, f"a new run to start {needle}")


def command_of(run: Path) -> str:
    return (run / "pass-1" / "command.txt").read_text()


def private_dir_of(run: Path) -> str:
    return command_of(run).split("XDG_RUNTIME_DIR=")[1].split()[0].strip("'")


def host_pid(pid: int, hint: str) -> int | None:
    """The host pid of a process a test of the sample reported about itself: inside a
    contained run it only knows its pid in the run's namespace. Matched on that pid (the
    last NSpid) and a piece of its command line, so a stranger's process never is."""
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if hint not in " ".join(p.info["cmdline"] or []):
                continue
            with open(f"/proc/{p.pid}/status") as f:
                ns = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
        except (OSError, psutil.Error):
            continue
        if ns and int(ns[-1]) == pid:
            return p.pid
    return None


def chaos_pids(path: Path, *hints: str) -> list[int | None]:
    """Host pids for the pids a chaos switch wrote to `path`, one hint each (None: gone)."""
    pids = [int(x) for x in path.read_text().split()]
    return [host_pid(pid, hint) for pid, hint in zip(pids, hints)]
