"""One run, start to finish: the library entry both front ends call.

words + options -> checks (before anything is written) -> venv -> preflight
(sweep) -> run dir -> passes (a pass per pytest start: a hang is dumped, ended
and recorded, and the rest resumes in a fresh pass) or N shards of passes in
parallel -> facts (what ran, how each test ended, how each pass and the run
stopped) -> the verdict on the failures -> one reduction of the facts to the run's
status and exit code (status.conclude, through RunResult.end) -> one merged result
(JUnit, lastfailed, history, outcome.json) -> the summary (report.py).
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import contain, gitref
from .command import check_names, show
from .errors import TaskError, usage
from .fsutil import atomic_write, write_json
from .interpreters import check_minor, find_python, minor_of_venv
from .options import RunOptions
from .output import Output
from .preflight import check_scope
from .rundirs import RunDir, State
from .scope import ENV_RUN
from .selection import is_single_file, resolve_words
from .status import Ending, Stop
from .passes import PassRunner, RunResult, command
from .supervise import Signals
from .sweep import sweep
from .target import Target
from .venv import VenvResult, ensure_venv, worktree_check

if TYPE_CHECKING:   # a cell's run imports cells itself; `invoke test` never needs it
    from .cells import Cell


# -- before the run ------------------------------------------------------------

def pick_minor(target: Target, requested: str | None = None, env: dict | None = None) -> str:
    """--python, else the active py<MINOR> venv's, else this interpreter's, else the first
    configured minor with an interpreter on this machine."""
    env = os.environ if env is None else env
    if requested is not None:
        minor = check_minor(requested)
        if minor not in target.pythons:
            raise usage(f"Python {minor} is not one of the target's minors "
                        f"({', '.join(target.pythons)}); pick one of those or set "
                        "[tool.tractor-tasks] pythons")
        return minor
    minor = minor_of_venv(Path(env.get("VIRTUAL_ENV") or "/").name)
    if minor in target.pythons:
        return minor
    here = "%d.%d" % sys.version_info[:2]
    if here in target.pythons:
        return here
    for minor in target.pythons:
        if find_python(minor):
            return minor
    raise TaskError(f"none of the target's Python minors ({', '.join(target.pythons)}) "
                    f"is installed here; get one with `uv python install {target.pythons[-1]}`")


def prepare_venv(target: Target, minor: str, out=print) -> VenvResult:
    with State(target).venv_lock(minor):
        result = ensure_venv(target, minor)
    if result.action != "up to date":
        out(result.line())
    return result


def preflight(target: Target, minor: str, *, allow_sweep: bool, out) -> None:
    """The cheap worktree check, then leftovers of earlier runs (swept, or stop)."""
    wt = worktree_check(target, minor, None)  # spec case C, the cheap half (no import)
    if wt and wt.status == "fail":
        raise TaskError(f"{wt.detail}; run `{wt.fix}`")
    pre = check_scope(target, target.venv_dir(minor))
    for lst in pre.of("foreign"):
        out(f"preflight: warning: registry {lst.describe()}, outside this checkout; tests that "
            "bind the default registry may fail (not touched; contained runs are not affected)")
    for lst in pre.of("live"):
        out(f"preflight: warning: registry {lst.describe()}, a live test session of this "
            "checkout; stop it or run `invoke clean --parent <its pytest pid>`")
    if not pre.dirty:
        return
    for p, why in pre.leaks:
        out(f"preflight: leftover {p.describe()}: {why}")
    for s in pre.stale_sockets:
        out(f"preflight: stale socket {s.path}")
    for d in pre.stale_dirs:
        out(f"preflight: private dir of a run that is over: {d}")
    if not allow_sweep:
        raise TaskError("leftovers from an earlier run are in scope (listed above); "
                        "run `invoke clean`, or drop --no-sweep to sweep them first")
    for line in sweep(target, venv=target.venv_dir(minor)).lines():
        out(f"preflight: {line}")


# -- the run --------------------------------------------------------------------

@dataclass
class Plan:
    """A checked request: everything a run needs, decided before anything is written."""
    target: Target
    paths: list[str]
    opts: RunOptions
    minor: str
    containment: contain.Containment
    timeout: float
    cell: Cell | None = None
    cache_dir: Path | None = None
    invocation: str | None = None
    choice: gitref.Choice | None = None   # --baseline REF, checked up front (the default
                                          # is chosen only when there are failures)

    @property
    def slug(self) -> str | None:
        return self.cell.slug if self.cell else None

    @property
    def tpt(self) -> str:
        """The run's transport: the one asked for (a cell's own), else the target's
        first (the plugin's default). outcome.json, the history and the shard plan's
        durations all use this one."""
        return self.opts.tpt or self.target.transports[0]

    @property
    def spawn(self) -> str:
        """The run's spawn backend: the one asked for (a cell's own), else the default."""
        return self.opts.spawn or self.target.default_spawn_backend


def plan(target: Target, words, opts: RunOptions, *, cell: Cell | None = None,
         invocation: str | None = None, resolved: list[str] | None = None) -> Plan:
    """Check the whole request; raise a one-line TaskError before anything is written."""
    if target.config_file is None:
        raise usage(f"{target.root} has no pyproject.toml, so it is no project whose "
                    "venv and tests can run; point --root at a checkout")
    if cell is not None:  # a cell is its transport and backend
        opts = replace(opts, tpt=cell.tpt, spawn=cell.spawn)
    check_names(target, opts)
    paths = resolved if resolved is not None else resolve_words(target, words)
    minor = cell.minor if cell else pick_minor(target, opts.python)
    if (opts.shards not in (None, 1) or opts.shard) and opts.interactive:
        raise usage("a debugger (--tpdb, --pdb) needs the terminal: it cannot run in "
                    "shards; drop --shards/-n")
    if opts.shards not in (None, 1) and opts.shard:
        raise usage("--shard I/N runs one shard (a CI job); -n/--shards N runs them all "
                    "here: give one of them")
    if opts.durations_file and not Path(opts.durations_file).is_file():
        from .fsutil import what_is
        what = what_is(opts.durations_file)   # a FIFO is not "no such file"
        raise usage(f"--durations-file {opts.durations_file}: {what}; give the JSON "
                    "file `invoke durations` writes")
    choice = None
    if not opts.dry_run and (opts.baseline is not None or _in_ci()):
        # --baseline is checked up front; in CI the event's baseline too, so a clone
        # that lacks it stops the job at once (BaselineMissing, exit 2)
        choice = gitref.choose(target.root, opts.baseline)
    containment = contain.detect("auto" if opts.contain else "off")
    timeout = opts.timeout or (target.timeout_file if is_single_file(paths)
                               else target.timeout_full)
    return Plan(target, paths, opts, minor, containment, timeout, cell,
                cell.cache_dir(target) if cell else None, invocation, choice)


def _in_ci() -> bool:
    from .ci_event import detect
    return detect(os.environ) is not None


def dry_run(p: Plan, out) -> RunResult:
    argv, env = command(p, Path("<run dir>/pass-1"), "<private dir>")
    env.pop(ENV_RUN)
    out(f"cd {p.target.root}")
    out(show(argv, env))
    out(f"(bounds: {p.timeout:g}s for the run, "
        + (f"{p.opts.test_timeout:g}s" if p.opts.test_timeout else
           f"{p.target.timeout_test:g}s" if p.target.timeout_test else "no per-test bound")
        + f" per test; {p.containment.note}; the run also carries {ENV_RUN} to mark its "
        "processes)")
    result = RunResult()
    result.end(p.opts)
    return result


def execute(p: Plan, *, out: Output | None = None, echo: bool = True) -> RunResult:
    """Run a checked plan: venv, preflight, passes or shards, results, summary.
    `echo=False` keeps pytest's own output in the pass's file only."""
    out = out or Output()
    if p.opts.dry_run:
        return dry_run(p, out)
    prepare_venv(p.target, p.minor, out=out)
    preflight(p.target, p.minor, allow_sweep=p.opts.sweep, out=out)
    if p.containment.mode != "namespaces":
        out(f"note: {p.containment.note}")
    from .footprints import off_why
    why = off_why(p.minor)
    if why and not why.endswith("=0"):   # asked for by name: nothing to say
        out(f"note: no footprints this run ({why}); `invoke affected` uses the change map "
            "for what they would have selected")
    t0 = time.monotonic()
    with Signals(p.opts.interactive) as signals:
        ctx = PassRunner(p, None, signals, t0 + p.timeout, out)
        shard_plan = None
        warm_after_run()
        if p.opts.shard or p.opts.shards not in (None, 1):
            from .sharding import make_plan
            shard_plan = make_plan(ctx)  # checked before anything is kept
            if not p.opts.shard and shard_plan.stop is None and shard_plan.workers == 1:
                # one worker: a lane per module would only add pytest starts
                out("parallel: 1 worker, so the tests run in one pytest, as a serial run's do")
                shutil.rmtree(shard_plan.collect_dir, ignore_errors=True)
                shard_plan = None
        state = State(p.target)
        others = state.running()
        run_dir = ctx.run_dir = state.new_run(p.slug)
        try:
            if others and p.cell is None:
                out(f"note: another run of this checkout is going ({others[-1].name}); this "
                    f"one keeps its own files in {run_dir.path}")
            write_json(run_dir.run_json, {
                "cell": p.cell.name if p.cell else None, "invocation": p.invocation,
                "started": time.time(), "pid": os.getpid()})
            if shard_plan is not None:
                from .sharding import run_one_shard
                from .workers import run_shards
                shard_plan.keep(run_dir.path)
                result = (run_one_shard if p.opts.shard else run_shards)(ctx, shard_plan)
            else:
                result = ctx.lane(only=None, shard=None, echo=out if echo else None)
            if result.stopped() is None and not signals.count:
                result.verdict = _judge(p, ctx, result, parallel=bool(
                    result.shards and result.shards > 1 and not p.opts.shard) or bool(others),
                    out=out)
            if (p.opts.retry_flaky and result.results and result.results.known_flaky
                    and result.stopped() is None and not signals.count):
                result.notes += ctx.retry(result.results)
            if signals.count:
                result.stop = Stop.INTERRUPTED  # a stop request, between passes too
            result.results.seconds = time.monotonic() - t0
            result.run_dir = run_dir.path
            finish(p, result, run_dir, out)
            from . import trace
            trace.write(run_dir.path, result.results)
            from . import report
            lines = report.render(p, result)
            for line in lines:
                out(line)
            try:  # what CI keeps of the run beside outcome.json (best effort)
                atomic_write(run_dir.summary, "\n".join(lines) + "\n", replace_link=True)
            except OSError:
                pass
            return result
        finally:
            run_dir.close()


VERDICT_SHARE = 0.25  # of the whole-run bound, for the verdict's own passes


def _judge(p: Plan, runner: PassRunner, result: RunResult, *, parallel: bool, out):
    """The verdict on the run's failures (verdict.py); its own passes join the run's.
    A run without failures asks nothing of git or the history here."""
    if not result.results.failures:
        return None
    from . import verdict
    from .history import History
    history = None
    try:
        history = History(State(p.target).history, warn=out)
    except TaskError as err:
        out(f"note: the verdict runs without the results history: {err}")
    # the verdict's passes get time of their own past the run's bound (a quarter of it):
    # a suite that used up its bound still has its failures judged, and running out of
    # that time leaves failures unconfirmed, it does not make the run a timeout
    runner.deadline = max(runner.deadline, time.monotonic() + p.timeout * VERDICT_SHARE)
    choice = p.choice
    if choice is None and result.results.failures:
        choice = gitref.choose(p.target.root, None)  # the default: git asked only now
    if choice is not None and choice.ancestor:
        recorded = set()
        if history is not None:
            try:
                recorded = history.clean_commits(minor=p.minor, tpt=p.tpt, spawn=p.spawn,
                                                 tree=gitref.env_state(p.target.verdict_env))
            except TaskError:
                pass
        choice = gitref.resolve_ancestor(p.target.root, choice, recorded)
    j = verdict.judge(runner, result.results, history=history, choice=choice,
                      confirm=p.opts.confirm, parallel=parallel)
    for o in j.passes:
        if o.stop is Stop.INTERRUPTED:
            result.passes.append(o)  # a Ctrl-C during the verdict's passes stops the run
    return j


# -- after the run ----------------------------------------------------------------


def finish(p: Plan, result: RunResult, run_dir: RunDir, out) -> None:
    """The run's end (its status and exit code, decided once from its facts), then the
    merged JUnit, lastfailed, outcome.json and history rows."""
    results = result.results
    result.end(p.opts)
    from .junit import write_junit
    write_junit(results, run_dir.junit)
    if any(o.stop is not Stop.FINISHED for o in result.passes) or len(result.passes) > 1 \
            or result.shards or result.unfinished or result.stop:
        from . import lastfailed
        lastfailed.write(results)  # pytest could not write it whole itself
    from .outcome import of_run
    write_json(run_dir.outcome, of_run(p, result, result.unaccounted()).to_json())
    _record_history(p, result, out)


def _record_history(p: Plan, result: RunResult, out) -> None:
    try:
        from .history import History, RunRow, TestRow, machine_freq
        from .selection import head_commit
        from .verdict import environment, machine
        results = result.results
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
        row = RunRow(run_id=result.run_dir.name, started=time.time() - results.seconds,
                     finished=time.time(),
                     kind="cell" if p.cell else ("shard" if result.shards else "run"),
                     cell=p.cell.name if p.cell else "", minor=p.minor, tpt=p.tpt,
                     spawn=p.spawn, commit=head_commit(p.target.root), load=round(load, 2),
                     host=os.uname().nodename, tree=gitref.tree_state(p.target.root)
                     if gitref.is_repo(p.target.root) else "",
                     cores=os.cpu_count(), freq=machine_freq(),
                     environ=environment(p.target, p.minor), machine=machine())
        tests = [TestRow(key, t.outcome.value, round(t.duration, 3),
                         "known" if t.flaky else "", t.signature,
                         t.verdict.value if t.verdict else "", cpu=t.cpu, rss=t.rss)
                 for key, t in results.tests.items()]
        history = History(State(p.target).history, warn=out)
        kept = history.record(row, tests)
        if kept is not None:
            out(f"note: the results history is locked by another writer; this run's rows "
                f"are kept in {kept.name} and the next run that gets the lock adds them")
        _record_footprints(history, row, result.run_dir, out)
    except TaskError as err:
        out(f"note: the results history was not updated: {err}")
    except Exception as err:  # noqa: BLE001 - the history must never cost the run its end
        out(f"note: the results history was not updated ({type(err).__name__}: {err})")


def _record_footprints(history, row, run_dir, out) -> None:
    """Each test's footprint (footprints.py) into the history, by commit and cell."""
    from . import footprints
    prints = footprints.of_run(run_dir)
    if not prints:
        if os.environ.get(footprints.ENV_OFF, "").strip() != "0":
            out("footprints: nothing was recorded in this run; `affected` keeps to the "
                "change map for its tests")
        return
    blind = sorted({b for fp in prints.values() for b in fp.blind})
    if blind:
        out(f"footprints: {len(blind)} process(es) could not be recorded; their tests are "
            f"always selected by `affected` (e.g. {blind[0]})")
    history.record_footprints(row.run_id, row.commit, row.cell or
                              f"{row.minor}/{row.tpt}/{row.spawn}", prints)


# what only the end of a run needs (the verdict, the history, the JUnit file, the
# timeline, the summary): imported in a thread while pytest runs, which leaves the GIL
# free while it waits, so a short run's start-up does not pay for them
AFTER_RUN = ("xml.etree.ElementTree", "sqlite3", "tractor_tasks.history",
             "tractor_tasks.verdict", "tractor_tasks.outcome", "tractor_tasks.trace",
             "tractor_tasks.junit",
             "tractor_tasks.report", "tractor_tasks.shard_plan")


def warm_after_run() -> threading.Thread:
    def load():
        import importlib
        for name in AFTER_RUN:
            try:
                importlib.import_module(name)
            except Exception:   # the main thread's own import says what is wrong
                return
    t = threading.Thread(target=load, name="tt-warm-imports", daemon=True)
    t.start()
    return t


def record_unrun(target: Target, cell: Cell | None, ending: Ending,
                 invocation: str | None = None) -> Path | None:
    """A cell (or an `invoke` run: `cell` None) that errored before running, or was
    skipped (its minor is missing), still gets a run dir whose outcome.json says so: the
    matrix table and the CI report show it. Best effort: when the state dir itself is
    the problem, nothing is written."""
    from .outcome import Outcome
    try:
        run_dir = State(target).new_run(cell.slug if cell else None)
    except TaskError:
        return None
    try:
        write_json(run_dir.run_json, {"cell": cell.name if cell else None,
                                       "invocation": invocation,
                                       "started": time.time(), "pid": os.getpid()})
        write_json(run_dir.outcome, Outcome(
            status=ending.status.value, code=ending.code, cell=cell.name if cell else None,
            minor=cell.minor if cell else "", tpt=cell.tpt if cell else None,
            spawn=cell.spawn if cell else None, invocation=invocation, note=ending.why,
            reason=ending.why).to_json())
        return run_dir.path
    except (TaskError, OSError):
        return None
    finally:
        run_dir.close()
