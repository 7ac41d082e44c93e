"""Parallel runs planned: one request split into contained runs side by side.

Collect once (the same pytest arguments plus `--co`, contained and bounded like any
pass, before the run dir exists: a bad request writes nothing), then either
- locally (`-n N|auto`, `--shards N`): a queue of units (modules, kept whole, short
  light ones batched) for N workers, with the costs from the history or a durations
  file; workers.py runs them and merges the lanes; or
- as a CI job (`--shard I/N`): the static plan (shard_plan.py) every job computes
  alike from the durations file, and only group I of it (run_one_shard, here).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import schedule
from . import shard_plan as planner
from .errors import TaskError, usage
from .history import TestCost
from .passes import PassRunner, RunResult
from .results import Results, stable_id
from .fsutil import atomic_write
from .rundirs import RunDir, State
from .status import Stop
from .supervise import PassOutcome


@dataclass
class ShardPlan:
    """What a parallel run will do, decided (and checked) before its run dir exists."""
    ids: list[str]                  # stable ids of the selected tests, pytest's order
    groups: list[list[str]]         # --shard I/N: the static plan's groups
    known: dict[str, float]         # predicted seconds per test
    collect_dir: Path               # the `--co` pass's files, kept in the run dir later
    stopped: PassOutcome | None = None   # the collection pass, interrupted or out of time
    stop: Stop | None = None        # why it stopped, or why collection never started
    units: list[schedule.Unit] = field(default_factory=list)   # -n: the queue's units
    workers: int = 0

    def keep(self, run_dir: Path) -> None:
        shutil.move(str(self.collect_dir), str(run_dir / RunDir.COLLECT))
        self.collect_dir = run_dir / RunDir.COLLECT


def make_plan(ctx: PassRunner) -> ShardPlan:
    """Collect once (contained and bounded like any pass, the run's own arguments plus
    `--co`), then split; bad requests (more shards than tests, none selected) are usage
    errors raised before anything is kept."""
    p, out = ctx.p, ctx.out
    tmp = Path(tempfile.mkdtemp(prefix="tt-collect-"))
    stop = ctx.stop_now()
    if stop is not None:
        return ShardPlan([], [], {}, tmp, stop=stop)
    outcome, log = ctx.one_pass(0, shard=None, only=None, skip=set(), echo=None,
                                extra_args=["--co", "-q"], pass_dir=tmp)
    if outcome.stop is not Stop.FINISHED:
        return ShardPlan([], [], {}, tmp, stopped=outcome, stop=outcome.stop)
    if outcome.returncode not in (0, 5) or log.collected is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TaskError(f"collecting the tests failed (pytest exit {outcome.returncode})"
                        "; run `invoke quick` to see why")
    ids = list(dict.fromkeys(map(stable_id, log.collected)))
    if not ids:
        shutil.rmtree(tmp, ignore_errors=True)
        raise usage("no tests were selected; nothing to split into shards")
    if not p.opts.shard and p.opts.shards != "auto" and p.opts.shards > len(ids):
        shutil.rmtree(tmp, ignore_errors=True)
        raise usage(f"{p.opts.shards} shards for {len(ids)} test(s): give "
                    f"-n {len(ids)} or fewer")
    try:
        found = costs(p)
    except TaskError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    known = {k: c.wall for k, c in found.items()}
    target = p.target
    if p.opts.shard:
        heavy = heavy_modules(ids, found, target)
        if log.scopes is None:
            # every job must compute the same plan: one that could not read what the
            # others split by must not plan without it
            shutil.rmtree(tmp, ignore_errors=True)
            raise TaskError("the collection recorded no fixture scopes (the probe could "
                            "not write them), so this CI job cannot compute the plan the other "
                            "jobs do; run the job again")
        whole = splittable(log.scopes, ids)
        groups = planner.plan(ids, known, p.opts.shard[1], heavy=heavy, splittable=whole)
        spread = Counter(m for g in groups for m in {planner.module_of(t) for t in g})
        cut = sorted(m for m, shards in spread.items() if shards > 1)
        if cut:
            out(f"shard plan: split at test boundaries (no module- or class-scoped fixture "
                f"shared): {', '.join(cut)}")
        return ShardPlan(ids, groups, known, tmp)
    units = make_units(ids, found, target)
    cores = os.cpu_count() or 1
    if p.opts.shards == "auto":
        workers = schedule.auto_workers(units, cores, target.parallel_target_util)
        out(f"-n auto: {workers} worker(s) (from {cores} core(s) and the recorded CPU rates)")
    else:
        workers = min(p.opts.shards, len(units))
        if workers < p.opts.shards:
            out(f"note: {workers} worker(s), not {p.opts.shards}: the {len(ids)} tests are in "
                f"{len(units)} module(s), and a module stays whole")
    return ShardPlan(ids, [], known, tmp, units=units, workers=workers)


def splittable(scopes: dict | None, ids: list[str]) -> set[str]:
    """Modules the static plan may split: the probe reported each, and none of its tests
    uses a module- or class-scoped fixture. Nothing is split when the probe said nothing
    (an older probe, a collection it could not read)."""
    if not scopes:
        return set()
    modules = {planner.module_of(t) for t in ids}
    return {m for m in modules
            if isinstance(scopes.get(m), list) and not scopes[m]}


def costs(p) -> dict[str, TestCost]:
    """From --durations-file, else the history. A CI job (--shard I/N) never reads the
    history: every job must compute the same plan, and each job's own results change
    the history; without a durations file its shards are balanced by test count."""
    from .durations import load_costs
    from .history import History
    if p.opts.durations_file:
        return load_costs(Path(p.opts.durations_file))
    if p.opts.shard:
        return {}
    path = State(p.target).history
    if not path.exists():
        return {}
    return History(path).test_costs(minor=p.minor, tpt=p.tpt, spawn=p.spawn)


SHORT = 0.5        # seconds: a measured unit shorter than this is admitted at most at
SHORT_RATE = 0.5   # this rate (its CPU ticks over a few ms say little, and it ends soon)


def make_units(ids: list[str], found: dict[str, TestCost], target) -> list[schedule.Unit]:
    """One unit per module, its tests in pytest's order; predicted wall from the tests'
    (unknown ones at the median of the known), CPU rate from the measured ones (None if
    none were: such a unit runs alone until measured; a unit under SHORT seconds at most
    SHORT_RATE)."""
    from .history import aggregate
    est = planner.estimates(ids, {k: c.wall for k, c in found.items()})
    agg = aggregate(ids, found, unit=planner.module_of)
    members: dict[str, list[str]] = {}
    for nodeid in ids:
        members.setdefault(planner.module_of(nodeid), []).append(nodeid)
    units = []
    for name, tests in members.items():
        wall = round(sum(est[t] for t in tests), 3)
        rate = agg[name].rate if name in agg else None
        if rate is not None and wall < SHORT:
            rate = min(rate, SHORT_RATE)  # too short to measure a rate, or to starve anyone
        units.append(schedule.Unit(name, tuple(tests), wall, rate, target.is_heavy(name)))
    return batch(units)


BATCH = 2.0   # seconds: short light units are run together up to this much (a lane costs
              # a pytest start, about a second on the sample)


def batch(units: list[schedule.Unit]) -> list[schedule.Unit]:
    """Short light units (measured, under SHORT seconds, not alone) joined in pytest's
    order into batches of up to BATCH predicted seconds: one pytest start each. Modules
    stay whole; the batch's rate is its members' CPU over its wall."""
    out, cur = [], []

    def flush():
        if len(cur) == 1:
            out.append(cur[0])
        elif cur:
            wall = sum(u.wall for u in cur)
            rate = (sum(u.wall * u.rate for u in cur) / wall) if wall else max(u.rate for u in cur)
            out.append(schedule.Unit(" + ".join(u.name for u in cur),
                                     tuple(t for u in cur for t in u.tests), round(wall, 3),
                                     round(rate, 3)))
        cur.clear()

    for unit in units:
        if unit.alone or unit.wall >= SHORT:
            out.append(unit)
            continue
        if cur and sum(u.wall for u in cur) + unit.wall > BATCH:
            flush()
        cur.append(unit)
    flush()
    return out


def heavy_modules(ids: list[str], found: dict[str, TestCost], target) -> set[str]:
    """Modules the static plan keeps apart: marked heavy, or measured at about a core."""
    return {u.name for u in make_units(ids, found, target)
            if u.heavy or (u.rate is not None and u.rate >= schedule.ALONE_RATE)}


def stopped_result(plan: ShardPlan, ctx: PassRunner) -> RunResult:
    return RunResult(Results(ctx.p.target), passes=[plan.stopped] if plan.stopped else [],
                     stop=plan.stop, notes=["stopped while collecting the tests for the shards"])


def run_one_shard(ctx: PassRunner, plan: ShardPlan) -> RunResult:
    """A CI job's share of a sharded cell: the same plan every job computes (collection
    and the durations file are the same), then only group I of N. At its end the job
    says its predicted and its real wall (also in shard.json, which `ci-report` reads)."""
    if plan.stop is not None:
        return stopped_result(plan, ctx)
    i, n = ctx.p.opts.shard
    if i > len(plan.groups):
        ctx.out(f"note: shard {i}/{n} is empty: the {len(plan.ids)} tests are in "
                f"{len(plan.groups)} group(s) (modules, or parts of a module split at "
                f"test boundaries)")
        return RunResult(Results(ctx.p.target), shards=n)
    group = plan.groups[i - 1]
    ctx.out(planner.describe(plan.groups, plan.known)[i - 1])
    predicted = planner.predicted(group, plan.known, plan.ids)
    t0 = time.monotonic()
    result = ctx.lane(only=set(group), shard=None, echo=ctx.out)
    real = time.monotonic() - t0
    result.results.collected = [x for x in result.results.collected if x in set(group)]
    result.shards = n
    result.notes.append(f"shard {i}/{n}: predicted ~{predicted:.0f}s, took {real:.0f}s"
                        + (f" ({real / predicted:.2f} of the prediction)" if predicted else ""))
    atomic_write(ctx.run_dir.path / RunDir.SHARD, json.dumps({
        "shard": f"{i}/{n}", "predicted": round(predicted, 2), "seconds": round(real, 2),
        "tests": len(group)}))
    return result
