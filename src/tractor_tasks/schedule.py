"""The scheduling decisions of a local parallel run, pure: no processes, no threads.

A run is a queue of units (a module by default, kept whole: its module fixtures are
set up once) fed to N workers as they free up. Each unit has a predicted wall and
CPU rate (CPU seconds per wall second of its process tree, from the history) and
may be marked heavy in the config. Admission by predicted CPU demand:

- the queue is ordered longest predicted first, ties by name: the same history
  gives the same order, and the same completions the same assignment (a unit goes
  to the lowest-numbered free worker);
- a unit runs *alone* when its rate is about a core or more (>= ALONE_RATE), when
  the config marks it heavy, or when it was never measured (rate None: admitted as
  if heavy until measured). Nothing else starts while it runs; at the head of the
  queue it waits for the running units to drain;
- any other unit starts while the running units' rates plus its own stay within
  cores x target utilization; units that do not fit are passed over for smaller
  ones behind them (backfill), but a head unit passed over `patience` times stops
  the backfill until it fits (no starvation);
- with nothing running the head always starts (progress is guaranteed);
- `reserved` (the CPUs other work kept busy when the run started)
  comes off the budget, down to half of it, so a busy machine gets fewer units at once.

`Scheduler` holds the state and takes a clock (seconds; tests give a fake one);
`simulate` plays a whole run on predicted walls with a fake clock.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

ALONE_RATE = 0.9        # "about a core or more": such a unit runs alone
# cores x this is the CPU the admitted units may use together. Measured on the bundled
# sample (2 cores, history of a serial run): the light modules use 0.55-0.65 of a core
# (test_rpc.py, devx/test_debugger.py), the actor-spawning ones about 1.0 (they run
# alone). 0.75 x 2 = 1.5 cores lets two light ones pair (1.2) but not three, and keeps
# a quarter of the machine for the timers and IPC wake-ups deadline tests depend on.
DEFAULT_TARGET = 0.75


@dataclass(frozen=True)
class Unit:
    name: str
    tests: tuple[str, ...]
    wall: float                 # predicted seconds
    rate: float | None = None   # predicted CPU rate (cores); None: never measured
    heavy: bool = False         # marked heavy in the config

    @property
    def alone(self) -> bool:
        return self.heavy or self.rate is None or self.rate >= ALONE_RATE

    def demand(self, cores: float) -> float:
        """The CPU it is admitted with: its rate, or the whole machine when alone."""
        return float(cores) if self.alone else float(self.rate)

    def why_alone(self) -> str:
        if self.heavy:
            return "marked heavy"
        if self.rate is None:
            return "not measured yet"
        return f"uses {self.rate:.2f} cores" if self.alone else ""


def order(units: Iterable[Unit]) -> list[Unit]:
    """Longest predicted first, ties by name."""
    return sorted(units, key=lambda u: (-u.wall, u.name))


@dataclass
class Running:
    unit: Unit
    worker: int
    started: float


class Scheduler:
    def __init__(self, units: Iterable[Unit], *, workers: int, cores: float,
                 target: float = DEFAULT_TARGET, clock: Callable[[], float] = time.monotonic,
                 patience: int | None = None, reserved: float = 0.0):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers!r}")
        self.queue: list[Unit] = order(units)
        self.workers = workers
        self.cores = float(cores)
        self.target = float(target)
        self.reserved = max(float(reserved), 0.0)   # CPU others use already (their load)
        self.clock = clock
        self.running: dict[int, Running] = {}
        self.patience = 2 * workers if patience is None else patience
        self._passed: dict[str, int] = {}
        self.closed = False

    @property
    def budget(self) -> float:
        """cores x target, less what the machine was already busy with, but at least
        half of it (other work cannot make a parallel run serial)."""
        full = self.cores * self.target
        return max(full - self.reserved, full / 2)

    def load(self) -> float:
        """The admitted CPU demand of what runs now."""
        return sum(r.unit.demand(self.cores) for r in self.running.values())

    def free(self) -> list[int]:
        return [w for w in range(1, self.workers + 1) if w not in self.running]

    def done(self) -> bool:
        return not self.running and (self.closed or not self.queue)

    def admit(self) -> list[Running]:
        """Start what may start now: (worker, unit) records, lowest free worker first."""
        started = []
        while not self.closed and self.queue and self.free():
            i = self._pick()
            if i is None:
                break
            unit = self.queue.pop(i)
            run = Running(unit, self.free()[0], self.clock())
            self.running[run.worker] = run
            started.append(run)
        return started

    def _pick(self) -> int | None:
        if not self.running:
            return 0
        if any(r.unit.alone for r in self.running.values()):
            return None
        load = self.load()
        head = self.queue[0]
        if head.alone:
            return None  # drain for it
        for i, unit in enumerate(self.queue):
            if unit.alone:
                continue
            if load + unit.rate <= self.budget + 1e-9:
                if i:
                    self._passed[head.name] = self._passed.get(head.name, 0) + 1
                return i
            if i == 0 and self._passed.get(head.name, 0) >= self.patience:
                return None  # the head has waited long enough: no more backfill
        return None

    def finish(self, worker: int) -> Running:
        """The unit on `worker` ended (however it ended)."""
        return self.running.pop(worker)

    def requeue(self, unit: Unit) -> None:
        """Put (the rest of) a unit back, in its place by the order."""
        self.queue = order([*self.queue, unit])

    def close(self) -> list[Unit]:
        """Start nothing more (a stop request, the run's bound); what is left is returned."""
        self.closed = True
        left, self.queue = self.queue, []
        return left

    def status(self) -> str:
        """One line: the admitted load against the budget, what runs, what waits."""
        now = self.clock()
        parts = [f"admitted {self.load():.2f} of {self.budget:.2f} cores "
                 f"({self.cores:g} x {self.target:g}"
                 + (f" - {self.reserved:.1f} load not ours" if self.reserved else "") + ")"]
        waiting = len(self.queue)
        if waiting:
            parts.append(f"{waiting} unit(s) waiting")
        if any(r.unit.alone for r in self.running.values()):
            alone = next(r.unit for r in self.running.values() if r.unit.alone)
            parts.append(f"{alone.name} runs alone ({alone.why_alone()}, "
                         f"{int(now - self.running_since(alone))}s)")
        return " · ".join(parts)

    def running_since(self, unit: Unit) -> float:
        return next(r.started for r in self.running.values() if r.unit is unit)


@dataclass
class Slot:
    """One unit's place in a simulated run."""
    unit: str
    worker: int
    start: float
    end: float


def simulate(units: Iterable[Unit], *, workers: int, cores: float,
             target: float = DEFAULT_TARGET) -> list[Slot]:
    """Play a run on the predicted walls with a fake clock: every unit's worker and
    (start, end). Deterministic: the same units give the same slots."""
    now = [0.0]
    sched = Scheduler(units, workers=workers, cores=cores, target=target,
                      clock=lambda: now[0])
    slots: dict[int, Slot] = {}
    out: list[Slot] = []
    while not sched.done():
        for run in sched.admit():
            slots[run.worker] = Slot(run.unit.name, run.worker, now[0], now[0] + run.unit.wall)
        if not sched.running:
            break
        worker = min(slots, key=lambda w: (slots[w].end, w))
        now[0] = slots[worker].end
        sched.finish(worker)
        out.append(slots.pop(worker))
    return sorted(out, key=lambda s: (s.start, s.worker))


def auto_workers(units: list[Unit], cores: float, target: float = DEFAULT_TARGET) -> int:
    """`-n auto`: as many workers as the budget holds of a typical light unit (the median
    rate of the measured light ones), at least 1, at most 2 x cores and the unit count.
    With no measured light unit: the cores (the first run measures them)."""
    import statistics   # here: the config (target.py) imports this module's default
    light = [u.rate for u in units if not u.alone]
    cap = max(1, min(len(units), int(2 * cores)))
    if not light:
        return max(1, min(int(cores), len(units)))
    typical = max(statistics.median(light), 0.05)
    return max(1, min(cap, math.floor(cores * target / typical)))


@dataclass
class Plan:
    """What the run will do, for its first lines."""
    units: list[Unit] = field(default_factory=list)
    workers: int = 1

    def lines(self, cores: float, target: float) -> list[str]:
        alone = [u for u in self.units if u.alone]
        light = [u for u in self.units if not u.alone]
        line = (f"parallel: {len(self.units)} unit(s) (modules) on {self.workers} worker(s), "
                f"admitted by CPU demand within {cores:g} cores x {target:g}; "
                f"~{sum(u.wall for u in self.units):.0f}s of tests")
        out = [line]
        if alone:
            names = ", ".join(f"{u.name} ({u.why_alone()})" for u in alone[:5])
            more = f", +{len(alone) - 5} more" if len(alone) > 5 else ""
            out.append(f"parallel: {len(alone)} run alone: {names}{more}")
        if light:
            out.append(f"parallel: {len(light)} may overlap (rates "
                       f"{min(u.rate for u in light):.2f}-{max(u.rate for u in light):.2f})")
        return out
