"""Stalls a hang's dump names, and runaway processes, read off /proc.

Blocked pipe writers: a process of the run asleep in write() on a pipe (its wchan is
`pipe_write`/`anon_pipe_write`/`pipe_wait`; /proc/PID/syscall names the fd) whose pipe is
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .probelog import Report

PROC = Path("/proc")
PIPE_WCHANS = ("pipe_write", "anon_pipe_write", "pipe_wait", "pipe_wait_writable")


def _pipe_wchan(wchan: str) -> bool:
    """A kernel wait for room in a pipe (the name varies by kernel: `pipe_wait` before
    5.5, `pipe_write` after, `anon_pipe_write` on 6.x)."""
    return wchan in PIPE_WCHANS or "pipe_write" in wchan
# write-like syscall numbers whose first argument is the fd
_WRITES = {"x86_64": {1, 18, 20, 296, 328},     # write pwrite64 writev pwritev pwritev2
           "aarch64": {64, 66, 68, 70, 287}}     # write writev pwrite64 pwritev pwritev2
O_ACCMODE, O_RDONLY = 0o3, 0o0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def start_time(pid: int, proc: Path = PROC) -> float | None:
    """When `pid` started, in wall-clock seconds to a clock tick: from its start time
    since boot (/proc/PID/stat) and the wall clock's offset to CLOCK_BOOTTIME now.
    (psutil's create time adds the boot time /proc/stat gives in whole seconds, so it
    can be off by up to a second: too coarse to tell which of two quick tests started
    a process.)"""
    stat = _read(proc / str(pid) / "stat").rpartition(")")[2].split()
    try:
        ticks = int(stat[19])
    except (IndexError, ValueError):
        return None
    return _boot_offset() + ticks / CLK_TCK


_OFFSET: list[float] = []


def _boot_offset() -> float:
    """The wall clock minus CLOCK_BOOTTIME, read once: the same process then always
    gets the same start time (a key), whatever microseconds pass between two reads."""
    if not _OFFSET:
        _OFFSET.append(time.time() - time.clock_gettime(time.CLOCK_BOOTTIME))
    return _OFFSET[0]


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
            if not _pipe_wchan(wchan):
                continue
            # no syscall file to read: the stdio fds that are pipes it writes to
            cands = [f for f in (2, 1) if f in pipes[pid] and not pipes[pid][f][1]]
            if not cands:
                continue
            fd = cands[0]
        if fd not in pipes[pid] or pipes[pid][fd][1]:
            continue   # a write, but not to a pipe it writes to
        if wchan and wchan != "0" and not _pipe_wchan(wchan):
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
    test: str | None                  # the test that ran when it was created
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, cpu s) after
    reported: bool = False


class RunawayWatch:
    """Fed by the watch loop: when each test ran, and each process's CPU time.

    `cpu` is the fraction of one core (0.8 = 80%), `seconds` the window; seconds 0
    turns it off. A process is tied to the test that ran when it was created (from
    the probe's reports: a test runs from its setup's start to its teardown's end);
    pytest itself (`main_pid`) and a process no test created never are. Once that
    test is over, a window of `seconds` in which it used at least `cpu` of a core
    makes it a runaway (reported once)."""

    def __init__(self, cpu: float, seconds: float, main_pid: int | None = None):
        self.cpu, self.seconds, self.main_pid = cpu, seconds, main_pid
        self.spans: dict[str, list] = {}     # nodeid -> [start, end or None]
        self.procs: dict[tuple[int, float], _Tracked] = {}
        self.found: list[dict] = []
        self._offset = 0

    @property
    def on(self) -> bool:
        return self.seconds > 0

    def note_test(self, nodeid: str | None, since: float | None) -> None:
        """The probe's `current`: this test runs, since then."""
        if nodeid and since and nodeid not in self.spans:
            self.spans[nodeid] = [since, None]

    def note_report(self, rec: Report) -> None:
        """One report of the probe's log (a setup/call/teardown), as probelog.py read it."""
        if rec.at is None:
            return
        began = rec.at - rec.duration
        span = self.spans.setdefault(rec.nodeid, [began, None])
        span[0] = min(span[0], began)
        if rec.when == "teardown":
            span[1] = rec.at

    def test_at(self, t: float) -> str | None:
        """The test that was running when a process started at `t` (a /proc start time:
        the true start lies in [t, t + one clock tick]), as far as the reports tell:
        the test whose span overlaps that most (the earlier one on a tie)."""
        lo, hi = t - 0.003, t + 1.0 / CLK_TCK + 0.003   # the reports' times are to 1 ms
        best, most = None, -1.0
        for nodeid, (start, end) in sorted(self.spans.items(), key=lambda kv: kv[1][0]):
            overlap = min(hi, end if end is not None else hi) - max(lo, start)
            if overlap >= 0 and overlap > most:
                best, most = nodeid, overlap
        return best

    def update(self, now: float, samples: list[tuple[int, float, str, float]]) -> list[dict]:
        """`now` in wall-clock seconds (as create times are); `samples`: (pid, create
        time, title, cpu seconds so far) of every live process of the run. Returns the
        runaways found in this call."""
        if not self.on:
            return []
        new = []
        for pid, created, title, cpu in samples:
            if pid == self.main_pid:
                continue
            key = (pid, created)
            tr = self.procs.get(key)
            if tr is None or tr.test is None:   # its test may show up in a later report
                tr = self.procs[key] = _Tracked(title, self.test_at(created))
            tr.title = title
            end = self.spans[tr.test][1] if tr.test is not None else None
            if tr.reported or end is None or now <= end:
                continue   # not tied to a test, reported already, or its test still runs
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
