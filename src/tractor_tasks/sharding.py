"""Shards: one request split into N contained runs in parallel, merged into one result.

Collect once (the same pytest arguments plus `--co`, contained and bounded like any
pass, before the run dir exists: a bad request writes nothing), plan N groups balanced by
recorded durations (history, or a durations file CI commits; a module stays in one
group), run each group as a lane of passes in its own thread (contained runs do
not see each other: own pids, network, runtime dir), show one progress line per
shard, and merge: one JUnit file, one lastfailed, one set of counts, history rows.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from . import shard_plan as planner
from .errors import TaskError, usage
from .progress import Board
from .results import Results, stable_id
from .rundirs import State
from .status import RunStatus, TestOutcome
from .passes import PassRunner, RunResult
from .status import Stop
from .supervise import PassOutcome

@dataclass
class ShardPlan:
    """What a sharded run will do, decided (and checked) before its run dir exists."""
    ids: list[str]                  # stable ids of the selected tests, pytest's order
    groups: list[list[str]]
    known: dict[str, float]
    collect_dir: Path               # the `--co` pass's files, kept in the run dir later
    stopped: PassOutcome | None = None   # collection interrupted or out of time

    def keep(self, run_dir: Path) -> None:
        shutil.move(str(self.collect_dir), str(run_dir / "collect"))
        self.collect_dir = run_dir / "collect"


def make_plan(ctx: PassRunner) -> ShardPlan:
    """Collect once (contained and bounded like any pass, the run's own arguments plus
    `--co`), then split; bad requests (more shards than tests, none selected) are usage
    errors raised before anything is kept."""
    p, out = ctx.p, ctx.out
    tmp = Path(tempfile.mkdtemp(prefix="tt-collect-"))
    outcome, log = ctx.one_pass(0, shard=None, only=None, skip=set(), echo=None,
                                extra_args=["--co", "-q"], pass_dir=tmp)
    if outcome.stop is not Stop.FINISHED:
        return ShardPlan([], [], {}, tmp, stopped=outcome)
    if outcome.returncode not in (0, 5) or log.collected is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TaskError(f"collecting the tests failed (pytest exit {outcome.returncode})"
                        "; run `invoke quick` to see why")
    ids = list(dict.fromkeys(map(stable_id, log.collected)))
    if not ids:
        shutil.rmtree(tmp, ignore_errors=True)
        raise usage("no tests were selected; nothing to split into shards")
    if p.opts.shard:
        wanted = p.opts.shard[1]
    else:
        wanted = auto_shards(len(ids)) if p.opts.shards == "auto" else p.opts.shards
        if wanted > len(ids):
            shutil.rmtree(tmp, ignore_errors=True)
            raise usage(f"{wanted} shards for {len(ids)} test(s): give -n {len(ids)} "
                        "or fewer")
    try:
        known = durations(p)
    except TaskError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    groups = planner.plan(ids, known, wanted)
    if len(groups) < wanted and not p.opts.shard:
        out(f"note: {len(groups)} shard(s), not {wanted}: the {len(ids)} tests are in "
            f"{len(groups)} module(s), and a module stays in one shard")
    return ShardPlan(ids, groups, known, tmp)


def auto_shards(tests: int) -> int:
    """From the cores and the headroom left by what else the machine runs."""
    cores = os.cpu_count() or 1
    headroom = cores - os.getloadavg()[0]
    return max(1, min(cores, int(headroom + 0.5), tests))


def durations(p) -> dict[str, float]:
    """From --durations-file, else the history. A CI job (--shard I/N) never reads the
    history: every job must compute the same plan, and each job's own results change
    the history; without a durations file its shards are balanced by test count."""
    from .history import History, load_durations
    if p.opts.durations_file:
        return load_durations(Path(p.opts.durations_file))
    if p.opts.shard:
        return {}
    path = State(p.target).history
    if not path.exists():
        return {}
    return History(path).durations(minor=p.minor, tpt=p.tpt, spawn=p.spawn)


def _stopped(plan: ShardPlan, ctx: PassRunner) -> RunResult:
    results = Results(ctx.p.target)
    return RunResult(0, RunStatus.decide([plan.stopped.stop], 0), results, passes=[plan.stopped],
                     notes=["stopped while collecting the tests for the shards"])


def run_shards(ctx: PassRunner, plan: ShardPlan) -> RunResult:
    p, out = ctx.p, ctx.out
    if plan.stopped is not None:
        return _stopped(plan, ctx)
    ids, groups, known = plan.ids, plan.groups, plan.known
    for line in planner.describe(groups, known):
        out(line)
    lanes: list[RunResult | None] = [None] * len(groups)
    errors: dict[int, BaseException] = {}

    def lane(i: int, group: list[str]) -> None:
        try:
            lanes[i] = ctx.lane(only=set(group), shard=i + 1, echo=None)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors[i] = err

    board = Board(out, [(f"shard {i + 1}/{len(groups)}", ctx.run_dir.path / f"shard-{i + 1}",
                         len(g)) for i, g in enumerate(groups)])
    threads = [threading.Thread(target=lane, args=(i, g), daemon=True, name=f"shard-{i + 1}")
               for i, g in enumerate(groups)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            board.tick()
            for t in threads:
                t.join(0.5 / len(threads))
    finally:
        board.close()
    if errors and not any(lanes):
        raise next(iter(errors.values()))
    result = merge(p.target, lanes, ids, errors=errors, run_dir=ctx.run_dir.path)
    result.notes += _too_slow(result.results, len(groups))
    return result


def merge(target, lanes: list[RunResult | None], ids: list[str], *,
          errors: dict | None = None, run_dir: Path | None = None) -> RunResult:
    """The shards' lanes -> one result: tests in the plan's order (ids), then any the plan
    did not know; leaks and passes added up; each shard's notes labelled with it, then
    where its pytest output is; a shard that could not start (None) is a broken part of
    the run (its tests never ran, and the run fails naming it)."""
    errors = errors or {}
    merged = Results(target)
    merged.collected = list(ids)
    passes, notes, broken, cut = [], [], [], None
    for i, res in enumerate(lanes):
        if res is None:  # this shard could not start; the others' results stand
            broken.append(f"shard {i + 1} could not start ({errors.get(i, 'no result')}); "
                          "its tests did not run")
            continue
        cut = cut or res.cut
        broken += [f"shard {i + 1}: {b}" if not b.startswith("shard") else b
                   for b in res.broken]
        merged.tests.update(res.results.tests)
        merged.leaks.merge(res.results.leaks)
        if merged.lastfailed_before is None:
            merged.lastfailed_before = res.results.lastfailed_before
            merged.cachedir = res.results.cachedir
        passes += res.passes
        notes += [f"shard {i + 1}: {n}" for n in res.notes]
        if run_dir is not None:
            logs = sorted((run_dir / f"shard-{i + 1}").glob("pass-*/output.log"))
            notes.append(f"shard {i + 1} output: {', '.join(str(x) for x in logs)}")
    merged.tests = {n: merged.tests[n] for n in ids if n in merged.tests} | \
        {n: t for n, t in merged.tests.items() if n not in ids}
    status = RunStatus.decide((o.stop for o in passes), 0)
    return RunResult(0, status, merged, passes=passes, notes=notes, shards=len(lanes),
                     cut=cut, broken=broken)


def run_one_shard(ctx: PassRunner, plan: ShardPlan) -> RunResult:
    """A CI job's share of a sharded cell: the same plan every job computes (collection
    and the durations file are the same), then only group I of N."""
    if plan.stopped is not None:
        return _stopped(plan, ctx)
    i, n = ctx.p.opts.shard
    if i > len(plan.groups):
        ctx.out(f"note: shard {i}/{n} is empty: the {len(plan.ids)} tests are in "
                f"{len(plan.groups)} module(s), and a module stays in one shard")
        return RunResult(0, RunStatus.PASSED, Results(ctx.p.target), shards=n)
    group = plan.groups[i - 1]
    ctx.out(planner.describe(plan.groups, plan.known)[i - 1])
    result = ctx.lane(only=set(group), shard=None, echo=ctx.out)
    result.results.collected = [x for x in result.results.collected if x in set(group)]
    result.shards = n
    return result


def _too_slow(results: Results, n: int) -> list[str]:
    """Say so when parallel shards seem to starve each other (timing failures pile up)."""
    slow = [t for t in results.failures
            if t.outcome is not TestOutcome.HUNG and "TooSlowError" in t.signature + t.text[-500:]]
    if n > 1 and len(slow) >= 3:
        return [f"note: {len(slow)} TooSlowError failures across {n} parallel shards: the "
                "machine may be too busy for them (load "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); try fewer shards"]
    return []
