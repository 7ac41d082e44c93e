"""Stalls a hang's dump names, and runaway processes, read off /proc.

Blocked pipe writers: a process of the run asleep in write() on a pipe (its wchan is
`pipe_write`/`pipe_wait`, or /proc/PID/syscall shows a write on that fd) whose pipe is
full because its reader does not read. The reader is found by the pipe's inode: every
process of the run whose fd links to the same `pipe:[N]` with a read-only fd
(/proc/PID/fdinfo flags). tractor's shape is a subactor flooding pytest's capture
(its inherited stdout/stderr) during a cancel cascade: the hang that vanishes with -s.

Runaways: a process of the run that keeps using most of a core after the test that
started it ended (`runaway_cpu` of a core over `runaway_seconds`, sampled by the
supervisor's watch loop). A process no test started (a session-wide actor, pytest
itself) is never one.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
PIPE_WCHANS = ("pipe_write", "pipe_wait", "pipe_wait_writable")
# write-like syscall numbers whose first argument is the fd
_WRITES = {"x86_64": {1, 18, 20, 296, 328},     # write pwrite64 writev pwritev pwritev2
           "aarch64": {64, 66, 68, 70, 287}}     # write writev pwrite64 pwritev pwritev2
O_ACCMODE, O_RDONLY = 0o3, 0o0


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _link(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _title(proc: Path, pid: int) -> str:
    raw = _read(proc / str(pid) / "cmdline").replace("\0", " ")
    return " ".join(raw.split()) or _read(proc / str(pid) / "comm") or "?"


def _syscall_fd(proc: Path, pid: int, machine: str) -> int | None:
    """The fd of the write-like syscall the process is blocked in, or None."""
    fields = _read(proc / str(pid) / "syscall").split()
    if len(fields) < 2 or not fields[0].isdigit():
        return None
    if int(fields[0]) not in _WRITES.get(machine, _WRITES["x86_64"]):
        return None
    try:
        return int(fields[1], 16)
    except ValueError:
        return None


def _pipe_fds(proc: Path, pid: int) -> dict[int, tuple[str, bool]]:
    """fd -> (pipe inode link, opened for reading) for every pipe fd of `pid`."""
    out = {}
    base = proc / str(pid)
    try:
        fds = os.listdir(base / "fd")
    except OSError:
        return out
    for fd in fds:
        link = _link(base / "fd" / fd)
        if not link.startswith("pipe:"):
            continue
        flags = 0o1
        for line in _read(base / "fdinfo" / fd).splitlines():
            if line.startswith("flags:"):
                try:
                    flags = int(line.split()[1], 8)
                except (IndexError, ValueError):
                    pass
        if fd.isdigit():
            out[int(fd)] = (link, (flags & O_ACCMODE) == O_RDONLY)
    return out


@dataclass(frozen=True)
class BlockedWrite:
    pid: int
    title: str
    fd: int
    pipe: str                          # pipe:[inode]
    readers: tuple[tuple[int, str, int], ...]   # (pid, title, fd) in the run

    def line(self, main_pid: int | None) -> str:
        what = f"pid {self.pid} ({self.title}) is blocked writing to fd {self.fd}"
        by_pytest = [r for r in self.readers if r[0] == main_pid]
        if by_pytest:
            fd = by_pytest[0][2]
            return (f"{what}, a pipe that pytest (pid {main_pid}, its fd {fd}) captures and "
                    "nobody is draining: try --capture=sys or -s (or have the test read "
                    "its child's output)")
        if self.readers:
            pid, title, fd = self.readers[0]
            return (f"{what}, a pipe whose reader pid {pid} ({title}, its fd {fd}) is in "
                    "the run and not draining it")
        return (f"{what}, a full pipe ({self.pipe}) whose reader is not in the run "
                "and is not draining it")


def blocked_writes(pids: list[int], proc: Path = PROC, machine: str | None = None
                   ) -> list[BlockedWrite]:
    """The processes of `pids` (the run) asleep writing to a full pipe, with the
    processes of the run that hold that pipe's read end."""
    machine = machine or platform.machine()
    pipes = {pid: _pipe_fds(proc, pid) for pid in pids}
    readers: dict[str, list[tuple[int, str, int]]] = {}
    for pid, fds in pipes.items():
        for fd, (link, reads) in sorted(fds.items()):
            if reads:
                readers.setdefault(link, []).append((pid, _title(proc, pid), fd))
    out = []
    for pid in pids:
        state = _read(proc / str(pid) / "stat").rpartition(")")[2].split()[:1]
        if state and state[0] not in ("S", "D"):
            continue   # running, stopped or a zombie: not asleep in a write
        fd = _syscall_fd(proc, pid, machine)
        wchan = _read(proc / str(pid) / "wchan")
        if fd is None:
            if wchan not in PIPE_WCHANS:
                continue
            # no syscall file to read: the stdio fds that are pipes it writes to
            cands = [f for f in (2, 1) if f in pipes[pid] and not pipes[pid][f][1]]
            if not cands:
                continue
            fd = cands[0]
        if fd not in pipes[pid] or pipes[pid][fd][1]:
            continue   # a write, but not to a pipe it writes to
        if wchan and wchan != "0" and wchan not in PIPE_WCHANS:
            continue   # in write() on a pipe, but not waiting for room in it
        link = pipes[pid][fd][0]
        them = tuple(r for r in readers.get(link, []) if r[0] != pid)
        out.append(BlockedWrite(pid, _title(proc, pid), fd, link, them))
    return out


def diagnose(pids: list[int], main_pid: int | None, proc: Path = PROC,
             machine: str | None = None) -> list[str]:
    """The lines a hang's dump starts with: every stall named (none: [])."""
    return [f"STALL: {b.line(main_pid)}" for b in blocked_writes(pids, proc, machine)]


# -- runaways --------------------------------------------------------------------

@dataclass
class _Tracked:
    title: str
    test: str | None                  # the test running when it started
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, cpu s) after
    reported: bool = False


class RunawayWatch:
    """Fed by the watch loop: which test runs now, and each process's CPU time.

    `cpu` is the fraction of one core (0.8 = 80%), `seconds` the window; seconds 0
    turns it off. A process is tied to the test that ran when it was created (pytest
    itself, `main_pid`, never is); once that test is over, a window in which it used
    at least `cpu` of a core makes it a runaway (reported once)."""

    def __init__(self, cpu: float, seconds: float, main_pid: int | None = None):
        self.cpu, self.seconds, self.main_pid = cpu, seconds, main_pid
        self.tests: list[tuple[float, str | None]] = []   # (since, nodeid) as seen
        self.procs: dict[tuple[int, float], _Tracked] = {}
        self.found: list[dict] = []

    @property
    def on(self) -> bool:
        return self.seconds > 0

    def test_at(self, t: float) -> str | None:
        """The test that was running at time t (as far as we saw)."""
        now = None
        for since, nodeid in self.tests:
            if since <= t:
                now = nodeid
            else:
                break
        return now

    def note_test(self, now: float, current: tuple[str | None, float | None]) -> None:
        """`current`: (nodeid, since) of the test running now (None between tests)."""
        nodeid, since = current
        last = self.tests[-1][1] if self.tests else None
        if nodeid != last:
            self.tests.append((since if nodeid and since else now, nodeid))

    def update(self, now: float, current: tuple[str | None, float | None],
               samples: list[tuple[int, float, str, float]]) -> list[dict]:
        """`now` in wall-clock seconds (as create times are); `samples`: (pid, create
        time, title, cpu seconds so far) of every live process of the run. Returns the
        runaways found in this call."""
        if not self.on:
            return []
        self.note_test(now, current)
        nodeid = current[0]
        new = []
        for pid, created, title, cpu in samples:
            if pid == self.main_pid:
                continue
            key = (pid, created)
            tr = self.procs.get(key)
            if tr is None:
                tr = self.procs[key] = _Tracked(title, self.test_at(created))
            tr.title = title
            if tr.test is None or tr.reported or nodeid == tr.test:
                tr.samples.clear()   # its test runs (again): the window starts over
                continue
            tr.samples.append((now, cpu))
            old = [s for s in tr.samples if s[0] <= now - self.seconds]
            if not old:
                continue
            t0, c0 = old[-1]
            tr.samples = tr.samples[tr.samples.index(old[-1]):]
            rate = (cpu - c0) / (now - t0) if now > t0 else 0.0
            if rate >= self.cpu:
                tr.reported = True
                rec = {"pid": pid, "title": title, "test": tr.test,
                       "cpu": round(rate, 2), "seconds": round(now - t0, 1)}
                self.found.append(rec)
                new.append(rec)
        return new
