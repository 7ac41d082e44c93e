"""Processes: one look at each (a Proc), trees, and the one way we end them.

A `Proc` keeps the `psutil.Process` it was read from, so every later signal goes
through psutil's own pid-reuse guard (it compares the create time); nothing here
signals a bare pid. What a Proc does not need at once (its environment, its
memory maps) is read on first use, so a snapshot of the machine stays cheap.
"""
from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field

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
        if self.ps is None:
            return False
        try:
            return self.ps.is_running() and self.ps.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def signal(self, sig: int) -> bool:
        """Signal it, only if the pid still is this process (psutil checks)."""
        if self.ps is None:
            return False
        try:
            self.ps.send_signal(sig)
            return True
        except (psutil.NoSuchProcess, ProcessLookupError):
            return False
        except psutil.AccessDenied:
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


def wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    """Wait until the processes exit (zombies count as gone); return the survivors."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        alive = [p for p in alive if p.alive()]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


def end(procs: list[Proc], grace: float, kill_wait: float = 3.0
        ) -> tuple[list[int], list[int], list[int]]:
    """The ladder: SIGINT (tractor cancels its actor tree on it), `grace`, SIGKILL.

    Returns the pids (interrupted, killed, survivors).
    """
    interrupted = [p.pid for p in procs if p.signal(signal.SIGINT)]
    left = wait_gone(procs, grace)
    killed = [p.pid for p in left if p.signal(signal.SIGKILL)]
    survivors = wait_gone(left, kill_wait)
    return interrupted, killed, [p.pid for p in survivors]
