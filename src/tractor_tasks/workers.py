"""The local parallel run (`-n N|auto`, `--shards N`): the plan's queue of units fed to
N workers as they free up, admitted by predicted CPU demand (schedule.py decides).
Each unit runs as a lane of passes of its own (`PassRunner.lane`, contained, bounded,
resumed after a hang) in its worker's thread; a unit whose pytest died mid-way has its
remaining tests queued again once, then reported not run. One progress line per
worker, and the merge: one set of results (one JUnit file, one lastfailed, one set of
counts, history rows, written by the pipeline); every failure of a parallel run
carries what ran alongside it (contention.json).
"""
from __future__ import annotations

import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import schedule
from . import shard_plan as planner
from .fsutil import atomic_write
from .passes import PassRunner, RunResult
from .probelog import ProbeLog
from .progress import Board
from .results import Results
from .rundirs import PASS_PREFIX, PassDir, RunDir
from .sharding import ShardPlan, stopped_result
from .status import Stop, TestOutcome, stop_of


@dataclass
class Lane:
    """One unit's lane: where it ran and how it ended."""
    number: int                 # its dir: shard-<number>/pass-*
    unit: schedule.Unit
    worker: int
    started: float              # unix time
    ended: float | None = None
    result: RunResult | None = None
    error: BaseException | None = None

    def remaining(self) -> list[str]:
        done = set(self.result.results.tests) if self.result and self.result.results else set()
        return [t for t in self.unit.tests if t not in done]

    def as_dict(self) -> dict:
        return {"lane": self.number, "unit": self.unit.name, "worker": self.worker,
                "tests": len(self.unit.tests), "predicted": self.unit.wall,
                "rate": self.unit.rate, "alone": self.unit.alone,
                "started": self.started, "ended": self.ended,
                "error": str(self.error) if self.error else None}


def run_shards(ctx: PassRunner, plan: ShardPlan, *, lane_fn=None) -> RunResult:
    """The local parallel run: the scheduler's queue fed to the workers, then the merge.
    `lane_fn(ctx, unit_tests, lane_number)` runs one unit (default: a real lane; the
    fast tests give a fake at the process boundary)."""
    p, out = ctx.p, ctx.out
    if plan.stop is not None:
        return stopped_result(plan, ctx)
    lane_fn = lane_fn or _real_lane(plan)
    cores = os.cpu_count() or 1
    target = p.target.parallel_target_util
    reserved = busy_elsewhere(cores)
    sched = schedule.Scheduler(plan.units, workers=plan.workers, cores=cores, target=target,
                               reserved=reserved)
    for line in schedule.Plan(plan.units, plan.workers).lines(cores, target):
        out(line)
    if reserved:
        out(f"parallel: the machine is already busy ({reserved:g} runnable task(s) not "
            f"ours): the budget is {sched.budget:.2f} cores")
    lanes: list[Lane] = []
    threads: dict[int, tuple[threading.Thread, Lane]] = {}
    notes: list[str] = []
    again: set[str] = set()       # units whose rest was queued once already
    lost: list[str] = []          # tests reported not run, and why

    def body(lane: Lane) -> None:
        try:
            lane.result = lane_fn(ctx, lane.unit.tests, lane.number)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            lane.error = err
        finally:
            lane.ended = time.time()

    def board_lines() -> list[tuple[str, Path, int]]:
        return [(f"worker {w}/{plan.workers}: {lane.unit.name}",
                 ctx.run_dir.shard_dir(lane.number), len(lane.unit.tests))
                for w, (_, lane) in sorted(threads.items())]

    board = Board(out, board_lines, header=sched.status)
    try:
        while not sched.done():
            if ctx.signals.count or time.monotonic() >= ctx.deadline:
                for unit in sched.close():
                    lost.append(f"{unit.name}: {len(unit.tests)} test(s) did not run (the run "
                                "was stopped)")
            for run in sched.admit():
                lane = Lane(len(lanes) + 1, run.unit, run.worker, time.time())
                lanes.append(lane)
                th = threading.Thread(target=body, args=(lane,), daemon=True,
                                      name=f"worker-{run.worker}")
                threads[run.worker] = (th, lane)
                th.start()
            _write_units(ctx, lanes)
            board.tick()
            for w, (th, lane) in list(threads.items()):
                th.join(0.2 / max(len(threads), 1))
                if th.is_alive():
                    continue
                del threads[w]
                sched.finish(w)
                _after(ctx, sched, lane, again, notes, lost)
    finally:
        board.close()
        _write_units(ctx, lanes)
    if all(lane.result is None for lane in lanes) and any(lane.error for lane in lanes):
        raise next(lane.error for lane in lanes if lane.error)
    merged = _merge(ctx, plan, lanes, notes)
    attribute(merged, lanes, parallel=plan.workers > 1)
    _write_contention(ctx, merged)
    busy: dict[int, list[Lane]] = {}
    for lane in lanes:
        busy.setdefault(lane.worker, []).append(lane)
    for w, ran in sorted(busy.items()):
        seconds = sum((x.ended or x.started) - x.started for x in ran)
        notes.append(f"worker {w}: {len(ran)} unit(s), {sum(len(x.unit.tests) for x in ran)} "
                     f"test(s), busy {seconds:.0f}s")
    notes.append(f"per-unit output: {ctx.run_dir.shard_dir('<lane>')}/{PASS_PREFIX}*/"
                 f"{PassDir.OUTPUT} ({RunDir.UNITS} maps each lane to its unit and worker)")
    notes += _too_slow(merged, plan.workers)
    passes = [o for lane in lanes if lane.result for o in lane.result.passes]
    # a pass whose pytest died goes last: the exit code reads the last finished pass's
    # status, as it would in a serial run that died there
    passes.sort(key=lambda o: o.stop is Stop.FINISHED and (o.returncode or 0) < 0)
    stop = stop_of(lane.result.stop for lane in lanes if lane.result and lane.result.stop)
    # a lane whose pytest ended without finishing its session fails the run, even when
    # every test of it ran (its last one called os._exit) or its rest ran elsewhere
    unfinished = [f"{lane.unit.name}: {u}" for lane in lanes if lane.result
                  for u in lane.result.unfinished]
    # what did not run is accounted for as a lane's is: `cut` (-x, the hang limit) says
    # why, `broken` names the lanes that ended early unasked (their rest, if it then ran
    # elsewhere, leaves nothing unaccounted) and the tests reported not run
    cut = next((lane.result.cut for lane in lanes if lane.result and lane.result.cut), None)
    missing = set(merged.not_run())
    broken = [f"{lane.unit.name}: {b}" for lane in lanes if lane.result
              and missing & set(lane.unit.tests) for b in lane.result.broken]
    broken += [f"{lane.unit.name} could not run ({lane.error})" for lane in lanes
               if lane.error is not None]
    broken += lost
    return RunResult(merged, passes=passes, notes=notes, shards=plan.workers, cut=cut,
                     broken=broken, unfinished=unfinished, stop=stop)


def busy_elsewhere(cores: int, samples: int = 5) -> float:
    """What else keeps the CPUs busy right before our workers start: the kernel's count
    of runnable tasks (/proc/loadavg's 4th field) less ourselves, the median of a few
    samples 0.1 s apart, at most the cores. Not the 1-min load average: that still
    carries a run that just ended (a serial run right before, say) for a minute."""
    seen = []
    for k in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        seen.append(max(running - 1, 0))
        if k + 1 < samples:
            time.sleep(0.1)
    return float(min(statistics.median(seen), cores))


def _real_lane(plan: ShardPlan):
    """A unit's lane: its passes collect only the unit's module files (pytest would
    otherwise import every test module of the selection to run one: on the sample that
    was most of a lane's start), then select its tests as any pass does."""
    session = ProbeLog(plan.collect_dir).finish().session
    rootdir = Path(session.rootdir) if session is not None and session.rootdir else None

    def lane(ctx: PassRunner, tests, number: int) -> RunResult:
        files = sorted({planner.module_of(t) for t in tests})
        if rootdir is not None and all((rootdir / f).is_file() for f in files):
            ctx = PassRunner(replace(ctx.p, paths=[str(rootdir / f) for f in files]),
                             ctx.run_dir, ctx.signals, ctx.deadline, ctx.out)
        return ctx.lane(only=set(tests), shard=number, echo=None)
    return lane


def _after(ctx: PassRunner, sched: schedule.Scheduler, lane: Lane, again: set[str],
           notes: list[str], lost: list[str]) -> None:
    """A unit's lane ended: if its pytest died (or the lane failed) before all its tests
    ran, queue the rest once more on any worker; a second time, report them not run.
    What we stopped ourselves (a stop request, the run's bound, -x, the hang limit) is
    not queued again: those tests are not run, and the run says why."""
    res = lane.result
    rest = lane.remaining()
    if res is not None:
        notes.extend(f"{lane.unit.name}: {n}" for n in res.notes)
        if ctx.p.opts.exitfirst and res.results.failures:
            for unit in sched.close():
                lost.append(f"{unit.name}: {len(unit.tests)} test(s) did not run (-x)")
    if not rest:
        return
    why = (f"its lane failed ({lane.error})" if lane.error is not None else
           _died(res) or "")
    ours = (ctx.signals.count or time.monotonic() >= ctx.deadline or ctx.p.opts.exitfirst
            or (res is not None and (res.cut or res.stop is not None)))
    if ours or not why:
        if not ours:
            lost.append(f"{lane.unit.name}: {len(rest)} test(s) did not run (pytest ended "
                        "without running them)")
        return
    base = lane.unit.name.removesuffix(" (rest)")
    if base in again or sched.closed:
        lost.append(f"{lane.unit.name}: {len(rest)} test(s) did not run ({why}, twice): "
                    + ", ".join(rest[:5]) + (" ..." if len(rest) > 5 else ""))
        return
    again.add(base)
    share = lane.unit.wall * len(rest) / max(len(lane.unit.tests), 1)
    sched.requeue(replace(lane.unit, name=f"{base} (rest)", tests=tuple(rest),
                          wall=round(share, 3)))
    notes.append(f"worker {lane.worker}: {why} in {lane.unit.name}; its {len(rest)} remaining "
                 "test(s) were queued again")


def _died(res: RunResult | None) -> str:
    """Why a lane's pytest ended before its tests did (exit by a signal, no exit status)."""
    if res is None or not res.passes:
        return ""
    last = res.passes[-1]
    if last.stop is Stop.FINISHED and last.returncode is not None and last.returncode < 0:
        return f"pytest died (signal {-last.returncode})"
    if last.stop is Stop.FINISHED:
        return f"pytest exited early (exit {last.returncode})"
    return ""


def _merge(ctx: PassRunner, plan: ShardPlan, lanes: list[Lane], notes: list[str]) -> Results:
    merged = Results(ctx.p.target)
    merged.collected = list(plan.ids)
    for lane in lanes:  # in start order: a unit's rest (later) overrides nothing it ran
        res = lane.result
        if res is None:
            continue
        merged.tests.update(res.results.tests)
        merged.leaks.merge(res.results.leaks)
        if merged.lastfailed_before is None:
            merged.lastfailed_before = res.results.lastfailed_before
            merged.cachedir = res.results.cachedir
    ids = plan.ids
    merged.tests = {n: merged.tests[n] for n in ids if n in merged.tests} | \
        {n: t for n, t in merged.tests.items() if n not in ids}
    return merged


def attribute(results: Results, lanes: list[Lane], *, parallel: bool) -> None:
    """Contention: every test of a parallel run is marked `parallel`; each failure gets
    `alongside`, the tests other lanes ran during its time window (the probe's start and
    stop; a test without them, like a hung one, takes its lane's window)."""
    if not parallel:
        return
    spans: list[tuple[int, str, float, float]] = []
    home: dict[str, Lane] = {}
    for lane in lanes:
        if lane.result is None:
            continue
        for key, t in lane.result.results.tests.items():
            home[key] = lane
            if t.window is not None:
                spans.append((lane.number, key, *t.window))
    for key, t in results.tests.items():
        t.parallel = True
        if not t.outcome.bad:
            continue
        lane = home.get(key)
        window = t.window or ((lane.started, lane.ended or time.time()) if lane else None)
        if window is None:
            continue
        start, stop = window
        t.alongside = sorted({k for n, k, a, b in spans
                              if (lane is None or n != lane.number) and a < stop and start < b})


def _write_contention(ctx: PassRunner, results: Results) -> None:
    """contention.json: per failure of the run, what `attribute` recorded (parallel,
    alongside, load, cpu, window), for people and for re-reading after the run."""
    data = {k: {"parallel": t.parallel, "alongside": t.alongside, "load": t.load,
                "cpu": t.cpu, "window": t.window}
            for k, t in results.tests.items() if t.outcome.bad}
    path = ctx.run_dir.path / RunDir.CONTENTION
    atomic_write(path, json.dumps(data, indent=1), replace_link=True)


def _write_units(ctx: PassRunner, lanes: list[Lane]) -> None:
    path = ctx.run_dir.path / RunDir.UNITS
    atomic_write(path, json.dumps([lane.as_dict() for lane in lanes], indent=1),
                 replace_link=True)


def _too_slow(results: Results, n: int) -> list[str]:
    """Say so when parallel workers seem to starve each other (timing failures pile up)."""
    slow = [t for t in results.failures
            if t.outcome is not TestOutcome.HUNG and "TooSlowError" in t.signature + t.text[-500:]]
    if n > 1 and len(slow) >= 3:
        return [f"note: {len(slow)} TooSlowError failures across {n} parallel workers: the "
                "machine may be too busy for them (load "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); try fewer workers or a "
                "lower parallel_target_util"]
    return []
