"""One pytest start, supervised: bounds from outside pytest, dumps, teardown, leaks.

tractor forbids pytest-timeout (both its methods break trio), so both bounds come
from out here: the whole run's wall clock, and a per-test bound read off the
probe's log as it grows (probelog.py: which test runs, since when). On a stall:
dump first (stacks.py: py-spy for every process of the run, SIGUSR1 to those with a
handler), then end the run's processes; the caller records the test as HUNG and
resumes the rest. While it runs, each tick samples the run's processes once
(sampling.py: per-test CPU and RSS). `run_pass` takes one PassStart; the watch loop
one Watch.

pytest runs contained (contain.py): its own namespaces where the machine allows,
else under our subreaper. It keeps our process group, so a terminal's Ctrl-C
reaches it and its actors directly, as when pytest runs bare; a signal sent to us
alone (SIGTERM from nox, SIGHUP from a closed terminal) is acted on here.

When pytest exits, and before anything is torn down, what the run left is counted
(processes, listeners, socket files, shared memory): leaks are an outcome, not a
silent sweep. While it runs, processes that keep a core busy after their test ended
are runaways (stalls.py), and a hang's dump starts with the stalls /proc shows (a
writer blocked on a pipe nobody drains).
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from . import footprints, shm, stalls
from .contain import Containment, Launched, launch
from .output import Output, Tee
from .processes import Proc
from .leaks import Leaks, runaway_text
from .probelog import ProbeLog, Report
from .rundirs import PassDir
from .sampling import TreeCost, proc_samples
from .stacks import dump_stacks
from .status import Stop

@dataclass
class PassOutcome:
    number: int
    dir: Path
    stop: Stop
    returncode: int | None
    seconds: float
    running: str | None = None     # the test running when the pass was stopped
    bound: float | None = None     # the per-test bound that expired
    stacks: Path | None = None
    dump_text: str = ""
    teardown: list[str] = field(default_factory=list)
    leaks: Leaks = field(default_factory=Leaks)
    seen: list[Proc] = field(default_factory=list)   # every process seen in the run
    log: ProbeLog | None = None    # the probe's log as read during the pass (kept open)


class Signals:
    """SIGINT/SIGTERM/SIGHUP to us, counted, while runs are supervised (main thread).

    Interactive runs (a debugger REPL in pytest) leave Ctrl-C to pytest: there it
    means "interrupt the REPL", not "stop the run".
    """

    def __init__(self, interactive: bool = False):
        self.count = 0
        self.last: int | None = None
        self.interactive = interactive
        self._old: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._old[sig] = signal.signal(sig, self._on)
        return self

    def _on(self, signum, frame):
        if self.interactive and signum == signal.SIGINT:
            return
        self.count += 1
        self.last = signum

    @property
    def polite(self) -> bool:
        """A Ctrl-C: give pytest its chance to stop cleanly. SIGTERM/SIGHUP: be quick."""
        return self.last == signal.SIGINT

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# -- one pass -------------------------------------------------------------------

def _procs(members: list[psutil.Process]) -> list[Proc]:
    return [p for p in map(Proc.of, members) if p is not None]


ENV_KEEP = "TRACTOR_TASKS_KEEP_PATHS"


def keep_paths() -> list[str]:
    """Dirs under /tmp a contained run writes through to (besides the target and its
    private dir): os.pathsep-separated in TRACTOR_TASKS_KEEP_PATHS."""
    return [p for p in os.environ.get(ENV_KEEP, "").split(os.pathsep) if p]


def keep_tmp_writes(private: Path, pass_dir: Path) -> Path | None:
    """What a contained run wrote to its own /tmp, kept with the pass's files."""
    upper = private / ".tmp" / "upper"
    try:
        if not upper.is_dir() or not any(upper.iterdir()):
            return None
        dest = PassDir(pass_dir).tmp
        shutil.move(str(upper), str(dest))
        return dest
    except OSError:
        return None


def census(run: Launched, private: Path, bindspace: str, seen: dict,
           leftovers: Callable[[], list[Proc]], pass_dir: Path | None = None) -> Leaks:
    """What is left of the run right after pytest exited, before any teardown.

    Contained, that is everything still in its namespace (its own /dev/shm included).
    Otherwise the run's own tree plus what escaped it that we can still tell: processes
    seen under pytest, the target's leftovers by the scope rules (`leftovers`), and the
    segments that appeared in the host's /dev/shm that nobody outside the run holds
    (recorded in `pass_dir`, see shm.py)."""
    leaks = Leaks()
    members = run.members()
    found = {p.pid: p for p in _procs(members)}
    leaks.shm = shm_left(run, pass_dir, members)
    if run.containment.mode != "namespaces":
        for p in [*seen.values(), *leftovers()]:
            if p.pid not in found and p.pid != run.main_pid and p.alive():
                found[p.pid] = p
    for p in sorted(found.values(), key=lambda p: p.pid):
        leaks.processes.append((p.pid, p.title))
    leaks.listeners = [f"tcp {ip}:{port}" for ip, port in run.tcp_listeners()]
    space = private / bindspace
    try:
        leaks.sockets = sorted(str(s) for s in space.glob("*.sock") if s.is_socket())
    except OSError:
        pass
    return leaks


def shm_left(run: Launched, pass_dir: Path | None, members=None) -> list[tuple[str, int]]:
    """(name, bytes) of the shared memory the run has left: all of its own /dev/shm, or
    what appeared in the host's that nobody outside the run holds (recorded, shm.py)."""
    own_shm = run.shm_root()
    if own_shm is not None:
        return [(s.name, s.size) for _, s in sorted(shm.segments(own_shm).items())]
    if pass_dir is not None and (pass_dir / shm.BEFORE).exists():
        members = run.members() if members is None else members
        return [(s.name, s.size) for s, _ in
                shm.appeared(pass_dir, own={p.pid for p in members},
                             seen=getattr(run, "shm_seen", None))]
    return []


@dataclass
class PassStart:
    """One supervised pytest start, all it needs (run_pass's one argument).

    `log_max`: pytest's output goes to the pass's output.log, capped at that many bytes
    (its head and tail kept, the cut said in it). `shm_size`: contained, the size of
    the run's own /dev/shm (None: the host's). `runaway`: (fraction of a core, seconds)
    past which a process still busy after its test ended is a runaway (seconds 0: not
    watched). `leftovers`: the target's leftovers by the scope rules (for the census)."""
    argv: list[str]
    number: int
    cwd: Path
    env: dict[str, str]
    pass_dir: Path
    containment: Containment
    deadline: float
    test_bound: Callable[[str], float | None]
    signals: Signals
    echo: Output | None
    private: Path
    bindspace: str
    grace: float = 8.0
    interactive: bool = False
    on_event: Callable[[str], None] = lambda s: None
    leftovers: Callable[[], list[Proc]] = list
    shm_size: str | None = "25%"
    runaway: tuple[float, float] = (0.8, 10.0)
    log_max: int | None = None


@dataclass
class Watch:
    """One pass being watched: the start, the launched run, the outcome being filled in,
    every process seen in it, and the runaway watch."""
    start: PassStart
    run: Launched
    outcome: PassOutcome
    t0: float
    seen: dict = field(default_factory=dict)
    runaways: stalls.RunawayWatch | None = None
    plist: footprints.ProcList | None = None   # what footprints need of the processes


def run_pass(start: PassStart) -> PassOutcome:
    """Run pytest once; return how it ended. Never leaves a process of the run alive."""
    argv, number, cwd, env, pass_dir = start.argv, start.number, start.cwd, start.env, \
        start.pass_dir
    containment, echo, private = start.containment, start.echo, start.private
    interactive, on_event, shm_size = start.interactive, start.on_event, start.shm_size
    t0 = time.monotonic()
    log = ProbeLog(pass_dir, create=True)   # made and kept open before pytest can touch it
    read_fd = write_fd = None
    if not interactive:  # a debugger REPL needs the real terminal
        read_fd, write_fd = os.pipe()
    shm.record_before(pass_dir)   # dropped below when the run gets its own /dev/shm
    try:
        run = launch(argv, cwd=cwd, env=env, containment=containment, stdout=write_fd,
                     private_tmp=str(private),
                     keep=[str(cwd), str(pass_dir), *keep_paths()], private_shm=shm_size)
    except BaseException:
        log.close()
        raise
    finally:
        if write_fd is not None:
            os.close(write_fd)
    if getattr(run, "shm_private", False):
        (pass_dir / shm.BEFORE).unlink(missing_ok=True)
    elif getattr(run, "shm_note", ""):
        on_event(f"note: the run uses the host's /dev/shm ({run.shm_note})")
    tee = None
    if read_fd is not None:
        tee = Tee(read_fd, PassDir(pass_dir).output, echo, max_bytes=start.log_max)
        tee.start()
    outcome = PassOutcome(number, pass_dir, Stop.FINISHED, None, 0.0, log=log)
    w = Watch(start, run, outcome, t0,
              runaways=stalls.RunawayWatch(*start.runaway, main_pid=run.main_pid),
              plist=footprints.ProcList(start.env))   # what footprints need of the processes
    try:
        _watch(w)
        outcome.leaks.runaway += w.runaways.found
    finally:
        if w.plist is not None:
            w.plist.write()
        if run.poll() is None or run.members():
            outcome.teardown += run.end(grace=0.2)
        run.close()
        if tee is not None:
            tee.join(10)
    outcome.seconds = time.monotonic() - t0
    outcome.seen = list(w.seen.values())
    return outcome


def _watch(w: Watch) -> None:
    run, outcome, seen, runaways, plist = w.run, w.outcome, w.seen, w.runaways, w.plist
    pass_dir, on_event = w.start.pass_dir, w.start.on_event
    costs = TreeCost()
    # on the host's /dev/shm: which segments the run's processes hold, look by look
    # (without containment only a segment seen held by the run is the run's: shm.py)
    host_shm = run.shm_root() is None and (pass_dir / shm.BEFORE).exists()
    if host_shm:
        run.shm_seen = {}

    def look():
        members = run.members()
        procs = _procs(members)
        for p in procs:
            seen.setdefault((p.pid, p.create_time), p)
        if host_shm:
            shm.note_seen(pass_dir, run.shm_seen, [m.pid for m in members])
        watching = runaways is not None and runaways.on
        samples = proc_samples(members, runaways=watching)   # one read per process per tick
        now = time.time()
        if plist is not None:
            plist.update(procs, now)
        if watching:
            for r in runaways.update(now, [(s.pid, s.started, s.title, s.cpu)
                                           for s in samples if s.started is not None]):
                on_event(f"RUNAWAY: {runaway_text(r)}")
        costs.sample(samples, outcome.log.current[0], now)

    try:
        _watch_loop(w, look)
    finally:
        costs.write(pass_dir)


def _watch_loop(w: Watch, look: Callable[[], None]) -> None:
    run, outcome, runaways, start = w.run, w.outcome, w.runaways, w.start
    pass_dir, signals, grace, on_event = start.pass_dir, start.signals, start.grace, \
        start.on_event
    next_look = 0.0
    log = outcome.log
    watching = runaways is not None and runaways.on
    while True:
        exited = run.wait(0.1)
        now = time.monotonic()
        for ev in log.poll():   # what the probe wrote since the last tick
            if watching and isinstance(ev, Report):
                runaways.note_report(ev)
        if signals.count:  # any stop request during the run, this pass or before it
            look()
            outcome.stop = Stop.INTERRUPTED
            outcome.running = log.current[0]
            outcome.leaks.shm = shm_left(run, pass_dir)
            outcome.teardown += _interrupt(run, signals, grace)
            outcome.returncode = run.poll()
            return
        if exited:
            look()
            outcome.returncode = run.poll()
            outcome.leaks = census(run, start.private, start.bindspace, w.seen,
                                   start.leftovers, pass_dir)
            outcome.teardown += run.end(grace=0.3)
            return
        if now >= next_look:
            look()
            next_look = now + 0.5
        nodeid, since = log.current
        if watching:
            runaways.note_test(nodeid, since)
        bound = start.test_bound(nodeid) if nodeid else None
        if bound and since and time.time() - since > bound:
            look()
            outcome.stop, outcome.running, outcome.bound = Stop.HUNG, nodeid, bound
            on_event(f"HUNG: {nodeid} ran past its {bound:g}s bound: dumping stacks, ending "
                     "this pass")
            outcome.stacks, outcome.dump_text = dump_stacks(_procs(run.members()), pass_dir,
                                                            run.tmp_root(), run.main_pid)
            outcome.leaks.shm = shm_left(run, pass_dir)
            outcome.teardown += run.end(grace=0.3)
            outcome.returncode = run.poll()
            return
        if now >= start.deadline:
            look()
            outcome.stop, outcome.running = Stop.TIMEOUT, nodeid
            on_event("TIMEOUT" + (f" in {nodeid}" if nodeid else "")
                     + ": the whole-run bound expired: dumping stacks, tearing the run down")
            outcome.stacks, outcome.dump_text = dump_stacks(_procs(run.members()), pass_dir,
                                                            run.tmp_root(), run.main_pid)
            outcome.leaks.shm = shm_left(run, pass_dir)
            outcome.teardown += _stop_pytest(run, signals, grace)
            outcome.returncode = run.poll()
            return


def _stop_pytest(run: Launched, signals: Signals, grace: float) -> list[str]:
    """SIGINT pytest, give it `grace` to finish cleanly (a second interrupt cuts it
    short), then end everything of the run."""
    notes = []
    if run.poll() is None and run.signal_command(signal.SIGINT):
        notes.append(f"SIGINT -> pytest pid {run.main_pid}")
        count = signals.count
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and signals.count == count:
            if run.wait(0.1):
                notes.append("pytest exited after SIGINT")
                break
    return notes + run.end(grace=0.2 if signals.polite or not signals.count else 0.05)


def _interrupt(run: Launched, signals: Signals, grace: float) -> list[str]:
    notes = []
    if signals.polite:
        # a terminal's Ctrl-C reached pytest too: let it stop on its own first
        if run.wait(1.0):
            notes.append("pytest stopped on its own after the interrupt")
        elif signals.count < 2:
            return notes + _stop_pytest(run, signals, grace)
    return notes + run.end(grace=0.2 if signals.polite else 0.05)
