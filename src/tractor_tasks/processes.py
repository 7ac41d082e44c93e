"""Processes: one look at each (a Proc), trees, and the one way we end them (a ladder).

A `Proc` keeps the `psutil.Process` it was read from, so every later signal goes
through psutil's own pid-reuse guard (it compares the create time); nothing here
signals a bare pid. What a Proc does not need at once (its environment, its
memory maps) is read on first use, so a snapshot of the machine stays cheap.

`end_ladder` is the one ending ladder (SIGINT, a grace, SIGKILL until none is left):
the sweep (`end`, over Procs) and a launched run's `end` (contain.py, over its
members) both climb it. What is killed at once, with no ladder, stays with its owner:
a Launched's `kill()` (its teardown's last resort) and a stuck preflight probe (our
own Popen child). `nested_pid` is a process's pid inside a pid namespace of its own
(a contained run's), the one reader of /proc/PID/status's NSpid.
"""
from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

_ATTRS = ["pid", "ppid", "name", "cmdline", "cwd", "status", "create_time"]
# a Python interpreter's executable (a venv's python resolves to its base interpreter's),
# and the shared library an embedding or a shared-libpython build maps
_PY_EXE = re.compile(r"(?:python|pypy)[0-9.]*[dmt]*")
_LIBPYTHON = re.compile(r"libpython[0-9.]+[dmt]*\.so")


@dataclass(eq=False)
class Proc:
    pid: int
    ppid: int
    name: str
    cmdline: str
    cwd: str | None
    status: str
    create_time: float
    ps: psutil.Process | None = None   # None only for synthetic trees in tests
    _environ: dict | None = field(default=None, repr=False)
    _maps: tuple[str, ...] | None = field(default=None, repr=False)
    _exe: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, p: psutil.Process, info: dict | None = None) -> Proc | None:
        """A Proc from a psutil.Process (None when it is already gone)."""
        try:
            info = info or p.as_dict(_ATTRS)
        except psutil.Error:
            return None
        cwd = info.get("cwd")
        if cwd and cwd.endswith(" (deleted)"):
            cwd = cwd[: -len(" (deleted)")]
        return cls(pid=info["pid"], ppid=info.get("ppid") or 0, name=info.get("name") or "",
                   cmdline=" ".join(info.get("cmdline") or []), cwd=cwd,
                   status=info.get("status") or "", create_time=info.get("create_time") or 0.0,
                   ps=p)

    @property
    def title(self) -> str:
        """The command line as people read it (setproctitle pads with spaces)."""
        return " ".join((self.cmdline or self.name).split())

    def describe(self, width: int = 80) -> str:
        text = self.title
        return f"pid {self.pid} ({text if len(text) <= width else text[:width - 3] + '...'})"

    @property
    def zombie(self) -> bool:
        return self.status == psutil.STATUS_ZOMBIE

    def environ(self) -> dict[str, str]:
        if self._environ is None:
            try:
                self._environ = self.ps.environ() if self.ps else {}
            except (psutil.Error, OSError):
                self._environ = {}
        return self._environ

    def mapped_files(self) -> tuple[str, ...]:
        """Paths of the files mapped into its memory (Linux), for venv detection."""
        if self._maps is None:
            paths: set[str] = set()
            try:
                with open(f"/proc/{self.pid}/maps") as f:
                    for line in f:
                        parts = line.split(None, 5)
                        if len(parts) == 6 and parts[5].startswith("/"):
                            paths.add(parts[5].rstrip("\n").removesuffix(" (deleted)"))
            except OSError:
                pass
            self._maps = tuple(sorted(paths))
        return self._maps

    def exe(self) -> str:
        """Its executable ("" when unreadable): /proc/PID/exe, not argv, so a retitled
        process (setproctitle) still shows what it runs."""
        if self._exe is None:
            try:
                self._exe = (self.ps.exe() if self.ps else "") or ""
            except (psutil.Error, OSError):
                self._exe = ""
            self._exe = self._exe.removesuffix(" (deleted)")
        return self._exe

    def is_python(self) -> bool:
        """A Python interpreter runs in it: its executable is one (pythonX.Y, pypy), or
        a libpython is mapped. What argv says is never enough (tractor retitles its
        actors; `tail -f x_subactor[y].log` only names one)."""
        if _PY_EXE.fullmatch(os.path.basename(self.exe())):
            return True
        return any(_LIBPYTHON.match(os.path.basename(f)) for f in self.mapped_files())

    def alive(self) -> bool:
        """Still this process, and not a zombie (an exited process counts as gone)."""
        return self.ps is not None and live(self.ps)

    def signal(self, sig: int) -> bool:
        """Signal it, only if the pid still is this process (psutil checks)."""
        return self.ps is not None and send(self.ps, sig)


def live(p: psutil.Process) -> bool:
    """Running and not a zombie (zombies count as gone), and still the same process."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def send(p: psutil.Process, sig: int) -> bool:
    """Signal one live process, only if its pid still names the process we looked at
    (psutil compares the create time); False when it is gone or not ours to signal."""
    try:
        if not live(p):
            return False
        p.send_signal(sig)
        return True
    except (psutil.Error, ProcessLookupError):
        return False


def snapshot() -> dict[int, Proc]:
    """Every process this user can see, by pid."""
    procs = {}
    for p in psutil.process_iter(_ATTRS):
        proc = Proc.of(p, p.info)
        if proc is not None:
            procs[proc.pid] = proc
    return procs


def get(pid: int) -> Proc | None:
    try:
        return Proc.of(psutil.Process(pid))
    except psutil.Error:
        return None


def pid_exists(pid: int) -> bool:
    """A live, non-zombie process with this pid."""
    proc = get(pid)
    return proc is not None and not proc.zombie


def own_lineage() -> set[int]:
    """This process and its ancestors: never in scope, whatever they look like."""
    pids = {os.getpid()}
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    return pids


def nested_pid(pid: int) -> int | None:
    """Its pid inside the innermost pid namespace it lives in, when that is not ours
    (a contained run's: what the run's own dumps print); None for a process of our
    namespace, or one gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return int(ids[-1]) if len(ids) > 1 else None
    except (OSError, ValueError):
        pass
    return None


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` until the processes exit (zombies count as gone); return
    the survivors."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if live(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if live(p)]
    return left


@dataclass
class Ended:
    """What the ladder did: pids asked to stop, killed, and still alive at its end."""
    interrupted: list[int]
    killed: list[int]
    survivors: list[int]

    def notes(self, whose: str = "of the run") -> list[str]:
        """One line per rung climbed, e.g. `SIGINT -> 2 process(es) of the run: 7, 9`."""
        out = []
        for sig, pids in (("SIGINT", self.interrupted), ("SIGKILL", self.killed)):
            if pids:
                out.append(f"{sig} -> {len(pids)} process(es) {whose}: "
                           + ", ".join(map(str, pids)))
        if self.survivors:
            out.append("still alive after SIGKILL: " + ", ".join(map(str, self.survivors)))
        return out


def end_ladder(members: Callable[[], list[psutil.Process]], grace: float, *,
               kill_wait: float = 2.0, rounds: int = 10) -> Ended:
    """The one way we end processes: SIGINT every member (tractor cancels its actor tree
    on it), wait `grace`, then SIGKILL what is left and wait `kill_wait`, re-listing the
    members up to `rounds` times (a forking tree makes new ones while we kill). Every
    signal goes through psutil's pid-reuse guard (`send`)."""
    asked = [p for p in members() if send(p, signal.SIGINT)]
    if asked:
        wait_gone(asked, grace)
    killed: dict[int, psutil.Process] = {}
    for _ in range(rounds):
        left = members()
        if not left:
            break
        killed.update((p.pid, p) for p in left if send(p, signal.SIGKILL))
        wait_gone(left, kill_wait)
    return Ended([p.pid for p in asked], sorted(killed),
                 sorted(p.pid for p in members()))


def end(procs: list[Proc], grace: float, kill_wait: float = 3.0
        ) -> tuple[list[int], list[int], list[int]]:
    """End a fixed set of processes (the sweep's) with the ladder: SIGINT, `grace`,
    SIGKILL, `kill_wait` (one round: a fixed set grows no new members).

    Returns the pids (interrupted, killed, survivors).
    """
    ps = [p.ps for p in procs if p.ps is not None]
    done = end_ladder(lambda: [q for q in ps if live(q)], grace, kill_wait=kill_wait,
                      rounds=1)
    return done.interrupted, done.killed, done.survivors
