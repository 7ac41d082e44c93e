"""Run pytest under a wall-clock bound; on timeout or interrupt, dump and tear down.

tractor forbids pytest-timeout's global cap, so the bound comes from out
here. The child keeps our process group, so a terminal Ctrl-C reaches pytest
and its actors directly (as when pytest runs bare); a signal sent only to us
(a parent tool, `kill`, nox's SIGTERM to a parallel worker) is forwarded.

Teardown ladder: give pytest a moment to finish on its own SIGINT, SIGINT it,
wait `grace`, SIGKILL the whole tree (captured before anything dies, so
orphans are known). The caller then sweeps everything the run started.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .sweep import Proc, end_processes, send_signal, tree_of, wait_gone

SIGUSR1_BIT = 1 << (signal.SIGUSR1 - 1) if hasattr(signal, "SIGUSR1") else 0


@dataclass
class Outcome:
    status: str                    # finished | timeout | interrupted
    returncode: int | None
    seconds: float
    hung_test: str | None = None   # from the probe's "current" file
    stacks: Path | None = None     # the stack report written on timeout
    teardown: list[str] = field(default_factory=list)
    descendants: list[Proc] = field(default_factory=list)  # every process seen under pytest


def current_test(probe_dir: Path) -> str | None:
    try:
        text = (probe_dir / "current").read_text().strip()
    except OSError:
        return None
    return text or None


def _handles_sigusr1(pid: int) -> bool:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & SIGUSR1_BIT)
    except (OSError, ValueError):
        pass
    return False


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def dump_stacks(procs: list[Proc], probe_dir: Path) -> Path:
    """Python stacks of a hung tree: py-spy when installed, else wchan + SIGUSR1 dumps.

    SIGUSR1 goes only to processes whose signal mask shows a handler for it
    (the probe installs one in pytest): for the others it would be fatal.
    """
    report = probe_dir / "stacks.txt"
    pyspy = shutil.which("py-spy")
    parts, asked = [], []
    for p in procs:
        head = f"=== pid {p.pid} ppid {p.ppid}: {p.cmdline or p.name}"
        if pyspy:
            out = subprocess.run([pyspy, "dump", "--pid", str(p.pid)], capture_output=True,
                                 text=True, timeout=30)
            if out.returncode == 0:
                parts.append(f"{head} (py-spy)\n{out.stdout.rstrip()}")
                continue
        kernel = _read(f"/proc/{p.pid}/stack")
        parts.append(f"{head}\nwchan: {_read(f'/proc/{p.pid}/wchan')}"
                     + (f"\nkernel stack:\n{kernel}" if kernel not in ("?", "") else ""))
        if _handles_sigusr1(p.pid) and send_signal(p, signal.SIGUSR1):
            asked.append(p.pid)
    if asked:
        time.sleep(0.5)  # let the handlers write
        for dump in sorted(probe_dir.glob("stacks-*.txt")):
            text = dump.read_text().strip()
            if text:
                parts.append(f"=== SIGUSR1 dump {dump.name}\n{text}")
    report.write_text("\n\n".join(parts) + "\n")
    return report


class _Signals:
    """SIGINT/SIGTERM to us, counted, while a run is supervised (main thread only).

    Interactive runs (a debugger REPL in pytest) leave Ctrl-C to pytest: there
    it means "interrupt the REPL", not "stop the run".
    """

    def __init__(self, interactive: bool = False):
        self.count = 0
        self.last: int | None = None
        self.interactive = interactive
        self._old: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._on)
        return self

    def _on(self, signum, frame):
        if self.interactive and signum == signal.SIGINT:
            return
        self.count += 1
        self.last = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _wait(proc: subprocess.Popen, seconds: float, signals: _Signals | None = None) -> bool:
    """Wait for exit; a further interrupt to us cuts the wait short.

    With a pidfd (Linux) the exit is seen the moment it happens; elsewhere by
    polling. Signals to us wake the wait within 0.1 s either way.
    """
    deadline = time.monotonic() + seconds
    seen = signals.count if signals else 0
    pidfd = getattr(proc, "_tt_pidfd", None)
    while True:
        if proc.poll() is not None:
            return True
        left = deadline - time.monotonic()
        if left <= 0 or (signals and signals.count != seen):
            return False
        if pidfd is not None:
            select.select([pidfd], [], [], min(0.1, left))
        else:
            time.sleep(min(0.02, left))


def _open_pidfd(proc: subprocess.Popen) -> None:
    try:
        proc._tt_pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        proc._tt_pidfd = None


def _close_pidfd(proc: subprocess.Popen) -> None:
    if getattr(proc, "_tt_pidfd", None) is not None:
        os.close(proc._tt_pidfd)
        proc._tt_pidfd = None


def _teardown(proc: subprocess.Popen, signals: _Signals, grace: float,
              expect_exit: bool) -> list[str]:
    """End pytest and everything under it; returns what was done."""
    notes = []
    tree = tree_of(proc.pid)
    polite = signals.last != signal.SIGTERM
    if polite and expect_exit and _wait(proc, 1.0, signals):
        notes.append("pytest stopped on its own after the interrupt")
    if polite and proc.poll() is None and signals.count < 2:
        os.kill(proc.pid, signal.SIGINT)
        notes.append(f"SIGINT -> pytest pid {proc.pid}")
        if _wait(proc, grace, signals):
            notes.append("pytest exited after SIGINT")
    known = {t.pid for t in tree}
    tree += [p for p in tree_of(proc.pid) if p.pid not in known]
    left = wait_gone(tree, 0)
    if left:
        _, killed, survivors = end_processes(left, 0.2 if polite else 0.05)
        if killed:
            notes.append(f"SIGKILL -> {len(killed)} process(es) of the run: "
                         + ", ".join(map(str, killed)))
        if survivors:
            notes.append(f"still alive: {survivors}")
    proc.wait()
    return notes


def supervise(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float,
              probe_dir: Path, grace: float = 8.0, on_timeout=None,
              interactive: bool = False) -> Outcome:
    """Run `argv`, bounded by `timeout` seconds; tear down on timeout or interrupt."""
    t0 = time.monotonic()
    with _Signals(interactive) as signals:
        proc = subprocess.Popen(argv, cwd=cwd, env=env)
        _open_pidfd(proc)
        try:
            return _supervise(proc, signals, t0, timeout, probe_dir, grace, on_timeout)
        finally:
            _close_pidfd(proc)


def _supervise(proc, signals, t0, timeout, probe_dir, grace, on_timeout) -> Outcome:
    seen: dict[tuple[int, float], Proc] = {}

    def look():  # remember everything that runs under pytest, to sweep it after
        for p in tree_of(proc.pid)[1:]:
            seen.setdefault((p.pid, p.create_time), p)

    def done(status, hung=None, stacks=None, notes=()):
        return Outcome(status, proc.returncode, time.monotonic() - t0, hung, stacks,
                       list(notes), list(seen.values()))

    next_look = 0.0
    while not _wait(proc, 0.1, signals):
        if time.monotonic() >= next_look:
            look()
            next_look = time.monotonic() + 0.5
        if signals.count:
            look()
            notes = _teardown(proc, signals, grace, expect_exit=True)
            return done("interrupted", current_test(probe_dir), None, notes)
        if time.monotonic() - t0 > timeout:
            look()
            hung = current_test(probe_dir)
            if on_timeout:
                on_timeout(hung)
            stacks = dump_stacks(tree_of(proc.pid), probe_dir)
            notes = _teardown(proc, signals, grace, expect_exit=False)
            return done("timeout", hung, stacks, notes)
    killed = (proc.returncode or 0) < 0
    return done("finished", current_test(probe_dir) if killed else None)
