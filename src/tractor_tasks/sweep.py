"""The sweep: end this target's leftover processes, remove its stale socket files and
the private dirs of its runs that are provably over.

SIGINT first, a bounded grace, SIGKILL for the survivors, then stale sockets and
dirs, then a re-check. Only what scope.py shows to be in scope is signalled (by
Proc, so psutil guards against pid reuse); only socket files nothing listens on,
and private dirs whose run is over and that nothing of ours still uses, are removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psutil

from . import processes, rundirs
from .processes import Proc
from .scope import Leak, LeakKind, RunMarker, ScopeView
from .sockets import SockFile, bindspace_dirs, socket_files
from .target import Target


def _children(p: Proc) -> list[Proc]:
    try:
        kids = p.ps.children(recursive=True) if p.ps else []
    except psutil.Error:
        return []
    return [k for k in map(Proc.of, kids) if k is not None]


def unlink_socket(path: Path) -> bool:
    """Remove one socket file (never anything that is not a socket)."""
    try:
        if not path.is_socket():
            return False
        path.unlink()
        return True
    except FileNotFoundError:
        return False


@dataclass
class SweepReport:
    dry_run: bool
    processes: list[tuple[Proc, Leak]] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    stale_sockets: list[Path] = field(default_factory=list)
    removed_sockets: list[Path] = field(default_factory=list)
    kept_sockets: list[SockFile] = field(default_factory=list)
    stale_dirs: list[Path] = field(default_factory=list)
    removed_dirs: list[Path] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        if self.dry_run:
            return not (self.processes or self.stale_sockets or self.stale_dirs)
        return not (self.survivors or len(self.removed_sockets) < len(self.stale_sockets)
                    or len(self.removed_dirs) < len(self.stale_dirs))

    @property
    def acted(self) -> bool:
        return bool(self.processes or self.removed_sockets or self.removed_dirs)

    def lines(self) -> list[str]:
        verb = "would end" if self.dry_run else "ended"
        out = []
        for p, why in self.processes:
            how = ("SIGKILL" if p.pid in self.killed else "SIGINT" if p.pid in self.interrupted
                   else "already gone")
            out.append(f"{verb} {p.describe()}" + ("" if self.dry_run else f" [{how}]")
                       + f": {why}")
        for pid in self.survivors:
            out.append(f"STILL ALIVE after SIGKILL: pid {pid}")
        for path in self.stale_sockets:
            done = self.dry_run or path in self.removed_sockets
            out.append(f"{'would remove' if self.dry_run else 'removed' if done else 'could not remove'}"
                       f" stale socket {path}")
        for path in self.stale_dirs:
            done = self.dry_run or path in self.removed_dirs
            out.append(f"{'would remove' if self.dry_run else 'removed' if done else 'could not remove'}"
                       f" the private dir of a run that is over: {path}")
        for s in self.kept_sockets:
            out.append(f"kept {s.describe()}")
        return out or ["nothing to clean"]


def sweep(target: Target, *, venv: Path | None = None, grace: float = 0.3,
          dry_run: bool = False, parent: int | None = None, run: RunMarker | None = None,
          runtime_dir: Path | None = None, private_dirs=(), descendants=(),
          rounds: int = 3, stale_dirs: bool = True) -> SweepReport:
    """Find the target's leftovers and end/remove them; look again until none is left.

    A finished run passes its marker, its private dirs and every process it saw under
    its pytest (`descendants`): those still alive are its leftovers too.
    """
    report = SweepReport(dry_run=dry_run)
    dead_dirs = rundirs.stale_private_dirs(target) if stale_dirs else []
    all_private = (*map(str, private_dirs), *map(str, dead_dirs))
    seen: set[tuple[int, float]] = set()
    for _ in range(rounds):
        view = ScopeView(target, private_dirs=all_private)
        found = [(p, why) for p, why in view.leaks(parent=parent, run=run)
                 if (p.pid, p.create_time) not in seen]
        pids = {p.pid for p, _ in found}
        for p in descendants:
            if ((p.pid, p.create_time) not in seen and p.pid not in pids
                    and p.pid not in view.own and p.alive()):
                found.append((p, Leak(None, LeakKind.SEEN_UNDER_PYTEST)))
                pids.add(p.pid)
        # a leftover's own children go with it: ended first, it would hand them to init,
        # and a child with its environment wiped and its cwd elsewhere is found by nothing
        for p, _ in list(found):
            for kid in _children(p):
                if kid.pid not in pids and kid.pid not in view.own and not kid.zombie:
                    found.append((kid, Leak(None, LeakKind.UNDER_LEFTOVER)))
                    pids.add(kid.pid)
        if not found:
            break
        seen.update((p.pid, p.create_time) for p, _ in found)
        report.processes += found
        if dry_run:
            break
        interrupted, killed, survivors = processes.end([p for p, _ in found], grace)
        report.interrupted += interrupted
        report.killed += killed
        report.survivors += survivors

    for sock in socket_files(target, bindspace_dirs(target, venv, runtime_dir)):
        if sock.stale:
            report.stale_sockets.append(sock.path)
            if not dry_run and unlink_socket(sock.path):
                report.removed_sockets.append(sock.path)
        else:
            report.kept_sockets.append(sock)
    for d in dead_dirs:
        report.stale_dirs.append(d)
        in_use = report.survivors or any(s.listening for s in socket_files(target, [d / target.bindspace]))
        if not dry_run and not in_use and rundirs.remove_private_dir(d):
            report.removed_dirs.append(d)
    return report
