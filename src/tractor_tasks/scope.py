"""Scope: which processes are this target's, and which of those are leftovers.

*In scope* means provably of this checkout, for one of these reasons (`Why`):
  - PRIVATE_DIR: its cwd is inside a private dir a run of ours made for itself;
  - MARKER_AT_ROOT: its cwd is the target root and it carries a process marker
    (tractor: the `_subactor[...]` title, `tractor._child`, `subint-forkserv`);
  - RUN_MARKER: a tractor-tasks run of this target started it (TRACTOR_TASKS_RUN
    in its environment names the run and the target);
  - VENV: it carries a marker and runs on this checkout's `py<MINOR>/` venv (its
    memory maps or command line point there), whatever its cwd and environment
    say: what a bare `pytest` of tractor's debugger tests leaves behind.

An in-scope process is a *leftover* (`Leak`) when nothing alive owns it:
  - RUN_OVER: the run that made it (private dir, run marker) has ended;
  - SUPERVISOR_GONE: the run marker's supervisor is dead;
  - ORPHANED: its actor tree hangs off init or a subreaper;
  - DESCENDANT: it descends from a parent pid the caller names;
  - SEEN_UNDER_PYTEST: the run's supervisor saw it under its pytest.
A live test session of this checkout is never a leftover.

A process *carries a marker* only when it is a Python process (its executable, read
from /proc, not its argv, is a Python interpreter, or a libpython is mapped) whose
command line or name holds one: a `tail -f sample_actors._child.log` or a
`vim notes_subactor[x].txt` in the target is never taken for an actor.

This module only decides; sweep.py acts. The rules work on any `{pid: Proc}`
map, so they are table-tested over synthetic trees as well as real ones.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .interpreters import VENV_NAME
from .processes import Proc, own_lineage, snapshot
from .target import Target

ENV_RUN = "TRACTOR_TASKS_RUN"  # "<supervisor pid>:<create time>:<pass token>:<target root>"
# Parents that adopt orphans: pid 1 and the usual subreapers.
REAPER_NAMES = frozenset({"systemd", "init", "tini", "dumb-init", "docker-init",
                          "s6-svscan", "runit", "launchd"})


class Why(Enum):
    PRIVATE_DIR = "cwd is in this run's private dir"
    MARKER_AT_ROOT = "cwd is the target, marker"
    RUN_MARKER = "started by tractor-tasks run"
    VENV = "runs on this checkout's venv, marker"


class LeakKind(Enum):
    RUN_OVER = "the run is over"
    SUPERVISOR_GONE = "the run's supervisor is gone"
    ORPHANED = "orphaned"
    DESCENDANT = "descends from pid"
    SEEN_UNDER_PYTEST = "descended from this run's pytest; the run is over"
    UNDER_LEFTOVER = "descends from a leftover (ended with it)"


@dataclass(frozen=True)
class InScope:
    why: Why
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.why.value} {self.detail}".strip()


@dataclass(frozen=True)
class Leak:
    scope: InScope | None
    kind: LeakKind
    detail: str = ""

    def __str__(self) -> str:
        head = f"{self.scope}; " if self.scope else ""
        return f"{head}{self.kind.value} {self.detail}".strip()


@dataclass(frozen=True)
class RunMarker:
    """Names one pytest start: its supervisor (alive or not) and a token of its own,
    so shards of one supervisor never take each other for "a run that is over"."""
    pid: int
    create_time: float
    token: str
    root: str

    @classmethod
    def parse(cls, raw: str | None) -> RunMarker | None:
        try:
            pid, ctime, token, root = (raw or "").split(":", 3)
            return cls(int(pid), float(ctime), token, root)
        except ValueError:
            return None

    def same_pass(self, other: RunMarker) -> bool:
        return (self.pid, self.create_time, self.token) == (other.pid, other.create_time,
                                                            other.token)

    def __str__(self) -> str:
        return f"{self.pid}:{self.create_time}:{self.token}:{self.root}"


def make_run_marker(root: Path) -> str:
    import uuid

    import psutil
    me = psutil.Process()
    return str(RunMarker(me.pid, me.create_time(), uuid.uuid4().hex[:12], str(root)))


@dataclass
class ScopeView:
    """One look at the machine from one target's point of view."""
    target: Target
    procs: dict[int, Proc] = field(default_factory=snapshot)
    private_dirs: tuple[str, ...] = ()
    own: set[int] = field(default_factory=own_lineage)

    def __post_init__(self):
        self.root = str(self.target.root)
        self.private_dirs = tuple(str(d).rstrip(os.sep) for d in self.private_dirs)
        # this checkout's venvs: <root>/py313/... (never another checkout's)
        self._venv = re.compile(re.escape(self.root + os.sep) + VENV_NAME + "/")
        self._cache: dict[int, InScope | None] = {}

    # -- in scope -------------------------------------------------------------

    def marker(self, p: Proc) -> str | None:
        """The marker it carries: in its command line or name, and a Python process."""
        found = next((m for m in self.target.process_markers
                      if m in p.cmdline or m in p.name), None)
        return found if found is not None and p.is_python() else None

    def in_scope(self, p: Proc) -> InScope | None:
        if p.pid not in self._cache:
            self._cache[p.pid] = self._in_scope(p)
        return self._cache[p.pid]

    def _in_scope(self, p: Proc) -> InScope | None:
        if p.pid in self.own or p.zombie:
            return None
        if p.cwd and any(p.cwd == d or p.cwd.startswith(d + os.sep) for d in self.private_dirs):
            return InScope(Why.PRIVATE_DIR)
        marker = self.marker(p)
        if marker and p.cwd == self.root:
            return InScope(Why.MARKER_AT_ROOT, repr(marker))
        if p.cwd == self.root or (p.cwd or "").startswith(self.root + os.sep) or marker:
            run = self.run_marker(p)
            if run and run.root == self.root:
                return InScope(Why.RUN_MARKER, str(run.pid))
        if marker and (self._venv.search(p.cmdline)
                       or any(self._venv.match(f) for f in p.mapped_files())):
            return InScope(Why.VENV, repr(marker))
        return None

    def run_marker(self, p: Proc) -> RunMarker | None:
        return RunMarker.parse(p.environ().get(ENV_RUN))

    def alive(self, pid: int, create_time: float) -> bool:
        """As of this view: that process exists (same create time) and is not a zombie."""
        p = self.procs.get(pid)
        return p is not None and not p.zombie and abs(p.create_time - create_time) <= 0.01

    def ancestors(self, p: Proc):
        seen = set()
        while p.ppid and p.ppid in self.procs and p.ppid not in seen:
            seen.add(p.ppid)
            p = self.procs[p.ppid]
            yield p

    # -- leftovers ------------------------------------------------------------

    def leak(self, p: Proc, parent: int | None = None,
             run: RunMarker | None = None) -> Leak | None:
        """Why this process is a leftover, or None. `run` is a finished run's marker."""
        scope = self.in_scope(p)
        if scope is None:
            return None
        if scope.why is Why.PRIVATE_DIR:
            return Leak(scope, LeakKind.RUN_OVER)
        if parent is not None:
            if any(a.pid == parent for a in self.ancestors(p)):
                return Leak(scope, LeakKind.DESCENDANT, str(parent))
            return None
        marker = self.run_marker(p)
        if marker and marker.root == self.root:
            if run and marker.same_pass(run):
                return Leak(scope, LeakKind.RUN_OVER)
            if not self.alive(marker.pid, marker.create_time):
                return Leak(scope, LeakKind.SUPERVISOR_GONE)
            return None  # a live run's: its own supervisor ends it
        # climb through this tree's own actors: who is above the topmost one?
        owner = next((a for a in self.ancestors(p) if self.in_scope(a) is None), None)
        if owner is None or owner.pid == 1 or owner.name in REAPER_NAMES:
            adopter = f"pid {owner.pid} {owner.name}" if owner else "nothing"
            return Leak(scope, LeakKind.ORPHANED,
                        f"(its tree's parent is gone; adopted by {adopter})")
        return None

    def leaks(self, parent: int | None = None, run: RunMarker | None = None
              ) -> list[tuple[Proc, Leak]]:
        out = []
        for p in self.procs.values():
            why = self.leak(p, parent, run)
            if why:
                out.append((p, why))
        return out
