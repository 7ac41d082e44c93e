"""Shards: one request split into N contained runs in parallel, merged into one result.

Collect once (the same pytest arguments plus `--co`), plan N groups balanced by
recorded durations (history, or a durations file CI commits; a module stays in one
group), run each group as a lane of passes in its own thread (contained runs do
not see each other: own pids, network, runtime dir), show one progress line per
shard, and merge: one JUnit file, one lastfailed, one set of counts, history rows.
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from . import rundirs, shards as planner
from .errors import TaskError, usage
from .progress import Board
from .results import Results, read_pass, stable_id
from .rundirs import State
from .status import RunStatus, TestOutcome
from .supervise import Stop

COLLECT_TIMEOUT = 600


def collect(ctx) -> list[str]:
    """The node ids the request selects, in pytest's order (one `--co` run)."""
    from .pipeline import command
    p = ctx.p
    pass_dir = ctx.run_dir.path / "collect"
    pass_dir.mkdir(exist_ok=True)
    private = rundirs.make_private_dir(p.target)
    try:
        argv, env = command(p, pass_dir, str(private))
        argv += ["--co", "-q"]
        with open(pass_dir / "output.log", "wb") as log:
            try:
                done = subprocess.run(argv, cwd=p.target.root, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=COLLECT_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise TaskError(f"error: collecting the tests took over {COLLECT_TIMEOUT}s; "
                                f"see {pass_dir / 'output.log'}")
    finally:
        rundirs.remove_private_dir(private)
    collected = read_pass(pass_dir).collected
    if done.returncode not in (0, 5) or collected is None:
        raise TaskError(f"error: collection failed (pytest exit {done.returncode}); see "
                        f"{pass_dir / 'output.log'}")
    return list(dict.fromkeys(map(stable_id, collected)))


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
    tpt = p.opts.tpt or (p.cell.tpt if p.cell else "")
    spawn = p.opts.spawn or (p.cell.spawn if p.cell else "")
    return History(path).durations(minor=p.minor, tpt=tpt, spawn=spawn)


def run_shards(ctx):
    from .pipeline import RunResult
    p, out = ctx.p, ctx.out
    ids = collect(ctx)
    if not ids:
        raise usage("error: no tests were selected; nothing to split into shards")
    wanted = auto_shards(len(ids)) if p.opts.shards == "auto" else p.opts.shards
    if isinstance(wanted, int) and wanted > len(ids):
        raise usage(f"error: {wanted} shards for {len(ids)} test(s): give -n {len(ids)} or fewer")
    known = durations(p)
    groups = planner.plan(ids, known, wanted)
    if len(groups) < wanted:
        out(f"note: {len(groups)} shard(s), not {wanted}: the {len(ids)} tests are in "
            f"{len(groups)} module(s), and a module stays in one shard")
    for line in planner.describe(groups, known):
        out(line)
    lanes: list[RunResult | None] = [None] * len(groups)
    errors: list[BaseException] = []

    def lane(i: int, group: list[str]) -> None:
        try:
            lanes[i] = ctx.lane(only=set(group), shard=i + 1, echo=None)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

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
    if errors:
        raise errors[0]
    merged = Results(p.target)
    merged.collected = list(ids)
    passes, notes = [], []
    for i, res in enumerate(lanes):
        merged.tests.update(res.results.tests)
        merged.leaks.merge(res.results.leaks)
        if merged.lastfailed_before is None:
            merged.lastfailed_before = res.results.lastfailed_before
            merged.cachedir = res.results.cachedir
        passes += res.passes
        notes += [f"shard {i + 1}: {n}" for n in res.notes]
        logs = sorted((ctx.run_dir.path / f"shard-{i + 1}").glob("pass-*/output.log"))
        notes.append(f"shard {i + 1} output: {', '.join(str(x) for x in logs)}")
    merged.tests = {n: merged.tests[n] for n in ids if n in merged.tests} | \
        {n: t for n, t in merged.tests.items() if n not in ids}
    notes += _too_slow(merged, len(groups))
    stops = {o.stop for o in passes}
    status = (RunStatus.INTERRUPTED if Stop.INTERRUPTED in stops else
              RunStatus.TIMEOUT if Stop.TIMEOUT in stops else RunStatus.PASSED)
    return RunResult(0, status, merged, passes=passes, notes=notes, shards=len(groups))


def run_one_shard(ctx):
    """A CI job's share of a sharded cell: the same plan every job computes (collection
    and the durations file are the same), then only group I of N."""
    from .pipeline import RunResult
    i, n = ctx.p.opts.shard
    ids = collect(ctx)
    known = durations(ctx.p)
    groups = planner.plan(ids, known, n)
    if i > len(groups):
        ctx.out(f"note: shard {i}/{n} is empty: the {len(ids)} tests are in {len(groups)} "
                "module(s), and a module stays in one shard")
        return RunResult(0, RunStatus.PASSED, Results(ctx.p.target), shards=n)
    ctx.out(planner.describe(groups, known)[i - 1])
    result = ctx.lane(only=set(groups[i - 1]), shard=None, echo=ctx.out)
    result.results.collected = [x for x in result.results.collected if x in set(groups[i - 1])]
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
