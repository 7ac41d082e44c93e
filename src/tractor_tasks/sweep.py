"""The sweep: end this target's leaked processes and remove its stale socket files.

SIGINT first (tractor cancels its actor tree on it), a bounded grace, SIGKILL
for the survivors, then stale sockets, then a re-check. Only what scope.py
shows to be in scope is ever signalled (by pid, guarded against pid reuse)
or unlinked (only socket files nothing listens on).
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .scope import Proc, ScopeView, SockFile, is_alive, registry_listeners, socket_files
from .target import Target


def send_signal(proc: Proc, sig: int) -> bool:
    """Signal one process, only if that pid is still the process we looked at."""
    try:
        p = psutil.Process(proc.pid)
        if abs(p.create_time() - proc.create_time) > 0.01:
            return False
        p.send_signal(sig)
        return True
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False


def unlink_socket(path: Path) -> bool:
    """Remove one socket file (never anything that is not a socket)."""
    try:
        if not path.is_socket():
            return False
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    """Wait until the processes exit (zombies count as gone); return the survivors."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        alive = [p for p in alive if is_alive(p.pid, p.create_time)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


def end_processes(procs: list[Proc], grace: float, kill_wait: float = 3.0) -> tuple[list, list, list]:
    """SIGINT, grace, SIGKILL. Returns (interrupted, killed, survivors) pids."""
    interrupted = [p.pid for p in procs if send_signal(p, signal.SIGINT)]
    left = wait_gone(procs, grace)
    killed = [p.pid for p in left if send_signal(p, signal.SIGKILL)]
    survivors = wait_gone(left, kill_wait)
    return interrupted, killed, [p.pid for p in survivors]


@dataclass
class SweepReport:
    dry_run: bool
    processes: list[Proc] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    stale_sockets: list[Path] = field(default_factory=list)
    removed_sockets: list[Path] = field(default_factory=list)
    kept_sockets: list[SockFile] = field(default_factory=list)
    registry_after: list = field(default_factory=list)

    @property
    def clean(self) -> bool:
        if self.dry_run:
            return not (self.processes or self.stale_sockets)
        return not (self.survivors or self.registry_after
                    or len(self.removed_sockets) < len(self.stale_sockets))

    def lines(self) -> list[str]:
        verb = "would end" if self.dry_run else "ended"
        out = []
        for p in self.processes:
            how = ("SIGKILL" if p.pid in self.killed else "SIGINT" if p.pid in self.interrupted
                   else "already gone")
            out.append(f"{verb} {p.describe()}" + ("" if self.dry_run else f" [{how}]")
                       + f": {p.why}")
        for pid in self.survivors:
            out.append(f"STILL ALIVE after SIGKILL: pid {pid}")
        for path in self.stale_sockets:
            done = self.dry_run or path in self.removed_sockets
            out.append(f"{'would remove' if self.dry_run else 'removed' if done else 'could not remove'}"
                       f" stale socket {path}")
        for s in self.kept_sockets:
            out.append(f"kept {s.describe()}")
        for lst in self.registry_after:
            out.append(f"registry still held: {lst.describe()}"
                       + ("" if lst.in_scope else " (outside this checkout: not touched)"))
        if not out:
            out.append("nothing to clean")
        return out


def sweep(target: Target, *, grace: float = 0.3, dry_run: bool = False,
          parent: int | None = None, run: tuple | None = None,
          runtime_dir: Path | None = None, private_dirs=(), descendants=(),
          rounds: int = 3, verify: bool = True) -> SweepReport:
    """Find what is leaked in scope and end/remove it; re-check until clean.

    A finished run also passes its private dirs and every process it saw descend
    from its pytest (`descendants`): those still alive are its leftovers too.
    `verify` re-reads who holds the registry afterwards (for `invoke clean`).
    """
    report = SweepReport(dry_run=dry_run)
    seen: set[tuple[int, float]] = set()
    for _ in range(rounds):
        view = ScopeView(target, private_dirs=tuple(private_dirs))
        leaks = [p for p in view.leaks(parent=parent, run=run)
                 if (p.pid, p.create_time) not in seen]
        found = {p.pid for p in leaks}
        for p in descendants:
            if ((p.pid, p.create_time) not in seen and p.pid not in found
                    and p.pid not in view.own and is_alive(p.pid, p.create_time)):
                p.why = "descended from this run's pytest; the run is over"
                leaks.append(p)
        if not leaks:
            break
        seen.update((p.pid, p.create_time) for p in leaks)
        report.processes += leaks
        if dry_run:
            break
        interrupted, killed, survivors = end_processes(leaks, grace)
        report.interrupted += interrupted
        report.killed += killed
        report.survivors += survivors

    for sock in socket_files(target, runtime_dir):
        if sock.stale:
            report.stale_sockets.append(sock.path)
            if not dry_run and unlink_socket(sock.path):
                report.removed_sockets.append(sock.path)
        else:
            report.kept_sockets.append(sock)
    if verify and not dry_run:
        report.registry_after = registry_listeners(target, ScopeView(target), runtime_dir)
    return report


def tree_of(pid: int) -> list[Proc]:
    """A live process and all its descendants, as Procs (for a run's teardown)."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            with p.oneshot():
                out.append(Proc(p.pid, p.ppid(), p.name(), " ".join(p.cmdline()), None,
                                p.status(), p.create_time()))
        except psutil.Error:
            continue
    return out
