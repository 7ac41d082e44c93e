"""The checks before a run (spec sections 3 and 4), shared by the doctor and runs.

- scope: leftovers of earlier runs in scope, stale socket files, private dirs of
  runs that are over, and who holds the registry (tcp port, uds sentinel);
- the venv cases A/B/C (active venv, no venv, git worktree);
- the import and collection probe: one interpreter in the target's venv imports
  the package (saying where from), then collects, started in the background so
  the fast checks run meanwhile.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import rundirs
from .scope import ScopeView
from .sockets import Listener, SockFile, bindspace_dirs, registry_socket_paths, \
    socket_files, tcp_listeners, uds_has_listener, uds_holders, unix_listening
from .target import Target


@dataclass
class Holder:
    listener: Listener
    kind: str   # "leaked" (one of our leftovers), "live" (a live session of ours), "foreign"


@dataclass
class ScopeCheck:
    leaks: list = field(default_factory=list)          # (Proc, Leak)
    stale_sockets: list[SockFile] = field(default_factory=list)
    stale_dirs: list[Path] = field(default_factory=list)
    holders: list[Holder] = field(default_factory=list)

    @property
    def dirty(self) -> bool:
        return bool(self.leaks or self.stale_sockets or self.stale_dirs)

    def of(self, kind: str) -> list[Listener]:
        return [h.listener for h in self.holders if h.kind == kind]


def registry_holders(target: Target, view: ScopeView, dirs: list[Path]) -> list[Holder]:
    """Everything holding the target's registry address, tcp and uds, and whose it is."""
    found = tcp_listeners(target.registry_port, view.procs)
    listening = unix_listening()
    for path in registry_socket_paths(target, dirs):
        if path.exists() and uds_has_listener(path, listening):
            for pid in uds_holders(path) or [None]:
                found.append(Listener(f"uds {path}", pid, view.procs.get(pid) if pid else None))
    out = []
    for lst in found:
        if lst.proc is not None and view.leak(lst.proc):
            kind = "leaked"
        elif lst.proc is not None and view.in_scope(lst.proc):
            kind = "live"
        else:
            kind = "foreign"
        out.append(Holder(lst, kind))
    return out


def check_scope(target: Target, venv: Path | None = None) -> ScopeCheck:
    """The fast part: leftovers in scope, and who holds the registry."""
    stale_dirs = rundirs.stale_private_dirs(target)
    view = ScopeView(target, private_dirs=tuple(map(str, stale_dirs)))
    dirs = bindspace_dirs(target, venv)
    return ScopeCheck(leaks=view.leaks(),
                      stale_sockets=[s for s in socket_files(target, dirs) if s.stale],
                      stale_dirs=stale_dirs,
                      holders=registry_holders(target, view, dirs))


# -- import and collection ------------------------------------------------------

_SLOW = """
import sys, time
t0 = time.monotonic()
try:
    import {pkg} as m
except BaseException as e:
    print("TT-IMPORT-FAILED", type(e).__name__, e, flush=True)
    sys.exit(3)
print("TT-IMPORT", round(time.monotonic() - t0, 2), m.__file__, flush=True)
if {collect}:
    import pytest
    sys.exit(pytest.main([{tests!r}, "-q", "--co", "-p", "no:cacheprovider"]))
"""


@dataclass
class ProbeResult:
    imported: bool
    import_path: str | None
    import_seconds: float
    import_error: str
    collected_ok: bool | None   # None: not collected
    output: str
    seconds: float

    def tail_lines(self, n: int) -> list[str]:
        """The last n lines of pytest's output (our own TT-IMPORT lines left out)."""
        lines = [ln for ln in self.output.strip().splitlines() if ln.strip()
                 and not ln.startswith("TT-IMPORT")]
        return lines[-n:]

    def tail(self, n: int) -> str:
        return " | ".join(self.tail_lines(n))


class ImportProbe:
    """`import <package>` then (optionally) `pytest --co`, in the target's venv, in the
    background: start it, do other checks, then ask for `result()`."""

    def __init__(self, python: Path, target: Target, collect: bool):
        self.collect = collect
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(python), "-c", _SLOW.format(pkg=target.package, collect=collect,
                                             tests=target.tests_dir)],
            cwd=target.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self, timeout: float = 120) -> ProbeResult:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
            rc = self.proc.returncode
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            out, rc = f"timed out after {timeout:g}s\n{out}", -1
        head, _, _ = out.partition("\n")
        if head.startswith("TT-IMPORT "):
            _, took, path = head.split(" ", 2)
            return ProbeResult(True, path.strip(), float(took), "",
                               (rc == 0) if self.collect else None, out,
                               time.monotonic() - self.t0)
        error = next((ln for ln in out.splitlines() if ln.startswith("TT-IMPORT-FAILED")),
                     out.strip().splitlines()[-1] if out.strip() else "no output")
        return ProbeResult(False, None, 0.0, error.removeprefix("TT-IMPORT-FAILED ").strip(),
                           None, out, time.monotonic() - self.t0)
