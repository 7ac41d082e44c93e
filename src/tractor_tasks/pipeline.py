"""One run, start to finish: the library entry both front ends call.

words + options -> checks (before anything is written) -> venv -> preflight
(sweep) -> run dir -> passes (a pass per pytest start: a hang is dumped, ended
and recorded, and the rest resumes in a fresh pass) or N shards of passes in
parallel -> one merged result (JUnit, lastfailed, history, outcome.json) -> the
summary (report.py) -> exit code.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import contain, errors, rundirs
from .cells import Cell
from .command import ENV_SELECT, check_names, pytest_args, run_env, show
from .errors import TaskError, usage
from .interpreters import check_minor, find_python
from .options import RunOptions
from .output import Output
from .preflight import check_scope
from .results import Results, read_pass, stable_id
from .rundirs import RunDir, State
from .scope import ENV_RUN, RunMarker, ScopeView
from .selection import is_single_file, resolve_words
from .status import RunStatus, TestOutcome
from .supervise import PassOutcome, Signals, Stop, keep_tmp_writes, run_pass
from .sweep import sweep
from .target import Target
from .venv import VenvResult, ensure_venv, venv_python, worktree_check


# -- before the run ------------------------------------------------------------

def pick_minor(target: Target, requested: str | None = None, env: dict | None = None) -> str:
    """--python, else the active py<MINOR> venv's, else this interpreter's, else the first
    configured minor with an interpreter on this machine."""
    env = os.environ if env is None else env
    if requested is not None:
        minor = check_minor(requested)
        if minor not in target.pythons:
            raise usage(f"error: Python {minor} is not one of the target's minors "
                        f"({', '.join(target.pythons)}); pick one of those or set "
                        "[tool.tractor-tasks] pythons")
        return minor
    active = Path(env.get("VIRTUAL_ENV") or "/").name
    if active.startswith("py3") and active[2:].isdigit():
        minor = f"3.{active[3:]}"
        if minor in target.pythons:
            return minor
    here = "%d.%d" % sys.version_info[:2]
    if here in target.pythons:
        return here
    for minor in target.pythons:
        if find_python(minor):
            return minor
    raise TaskError(f"error: none of the target's Python minors ({', '.join(target.pythons)}) "
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
        raise TaskError(f"error: {wt.detail}; run `{wt.fix}`")
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
        raise TaskError("error: leftovers from an earlier run are in scope (listed above); "
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

    @property
    def slug(self) -> str | None:
        return self.cell.slug if self.cell else None


def plan(target: Target, words, opts: RunOptions, *, cell: Cell | None = None,
         invocation: str | None = None, resolved: list[str] | None = None) -> Plan:
    """Check the whole request; raise a one-line TaskError before anything is written."""
    if target.config_file is None:
        raise usage(f"error: {target.root} has no pyproject.toml, so it is no project whose "
                    "venv and tests can run; point --root at a checkout")
    if cell is not None:  # a cell is its transport and backend
        opts = replace(opts, tpt=cell.tpt, spawn=cell.spawn)
    check_names(target, opts)
    paths = resolved if resolved is not None else resolve_words(target, words)
    minor = cell.minor if cell else pick_minor(target, opts.python)
    if (opts.shards not in (None, 1) or opts.shard) and opts.interactive:
        raise usage("error: a debugger (--tpdb, --pdb) needs the terminal: it cannot run in "
                    "shards; drop --shards/-n")
    if opts.shards not in (None, 1) and opts.shard:
        raise usage("error: --shard I/N runs one shard (a CI job); --shards N runs them all "
                    "here: give one of them")
    if opts.durations_file and not Path(opts.durations_file).is_file():
        what = "is a directory" if Path(opts.durations_file).is_dir() else "no such file"
        raise usage(f"error: --durations-file {opts.durations_file}: {what}; give the JSON "
                    "file `invoke durations` writes")
    containment = contain.detect("auto" if opts.contain else "off")
    timeout = opts.timeout or (target.timeout_file if is_single_file(paths)
                               else target.timeout_full)
    return Plan(target, paths, opts, minor, containment, timeout, cell,
                cell.cache_dir(target) if cell else None, invocation)


@dataclass
class RunResult:
    code: int
    status: RunStatus
    results: Results | None = None
    run_dir: Path | None = None
    passes: list[PassOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shards: int = 0


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
    return RunResult(0, RunStatus.PASSED)


def command(p: Plan, pass_dir: Path, private: str, *, color: bool = False,
            select: Path | None = None) -> tuple[list[str], dict[str, str]]:
    venv = p.target.venv_dir(p.minor)
    argv = [str(venv_python(p.target, p.minor)), "-m", "pytest",
            *pytest_args(p.target, p.paths, p.opts, cache_dir=p.cache_dir, color=color)]
    # the run's runtime and temp dirs are its own; so is its cache (tractor writes
    # hung-test dumps under $XDG_CACHE_HOME/tractor): kept with the pass's files
    extra = {"XDG_RUNTIME_DIR": private, "TMPDIR": private,
             "XDG_CACHE_HOME": str(pass_dir / "cache")}
    if select is not None:
        extra[ENV_SELECT] = str(select)
    return argv, run_env(p.target, venv, pass_dir, extra=extra)


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
    t0 = time.monotonic()
    with Signals(p.opts.interactive) as signals:
        ctx = _Ctx(p, None, signals, t0 + p.timeout, out)
        shard_plan = None
        if p.opts.shard or p.opts.shards not in (None, 1):
            from .sharding import make_plan
            shard_plan = make_plan(ctx)  # checked before anything is kept
        state = State(p.target)
        others = state.running()
        run_dir = ctx.run_dir = state.new_run(p.slug)
        try:
            if others and p.cell is None:
                out(f"note: another run of this checkout is going ({others[-1].name}); this "
                    f"one keeps its own files in {run_dir.path}")
            _write_json(run_dir.path / "run.json", {
                "cell": p.cell.name if p.cell else None, "invocation": p.invocation,
                "started": time.time(), "pid": os.getpid()})
            if shard_plan is not None:
                from .sharding import run_one_shard, run_shards
                shard_plan.keep(run_dir.path)
                result = (run_one_shard if p.opts.shard else run_shards)(ctx, shard_plan)
            else:
                result = ctx.lane(only=None, shard=None, echo=out if echo else None)
            if (p.opts.retry_flaky and result.results and result.results.known_flaky
                    and result.status in (RunStatus.PASSED, RunStatus.FAILED)
                    and not signals.count):
                result.notes += ctx.retry(result.results)
            if signals.count and result.status is not RunStatus.INTERRUPTED:
                result.status = RunStatus.INTERRUPTED  # a stop request between passes
                result.passes.append(PassOutcome(0, run_dir.path, Stop.INTERRUPTED, None, 0.0))
            result.results.seconds = time.monotonic() - t0
            result.run_dir = run_dir.path
            finish(p, result, run_dir, out)
            from . import report
            for line in report.render(p, result):
                out(line)
            return result
        finally:
            run_dir.close()


class _Ctx:
    """What the passes of one run share."""

    def __init__(self, p: Plan, run_dir: RunDir, signals: Signals, deadline: float, out):
        self.p = p
        self.run_dir = run_dir
        self.signals = signals
        self.deadline = deadline
        self.out = out

    def test_bound(self, nodeid: str) -> float | None:
        return self.p.target.test_bound(nodeid, self.p.opts.test_timeout)

    def one_pass(self, number: int, *, shard: int | None, only, skip, echo,
                 opts: RunOptions | None = None, extra_args=(), pass_dir: Path | None = None
                 ) -> tuple[PassOutcome, object]:
        """One contained, bounded pytest start (the shard plan's `--co` is one too)."""
        p = self.p if opts is None else replace(self.p, opts=opts)
        pass_dir = pass_dir or self.run_dir.pass_dir(number, shard)
        if self.signals.count or time.monotonic() >= self.deadline:
            # stopped between passes: start nothing more
            stop = Stop.INTERRUPTED if self.signals.count else Stop.TIMEOUT
            return PassOutcome(number, pass_dir, stop, None, 0.0), read_pass(pass_dir)
        select = None
        if only is not None or skip:
            select = pass_dir / "select.json"
            _write_json(select, {"only": sorted(only) if only is not None else None,
                                 "skip": sorted(skip)})
        private = rundirs.make_private_dir(p.target)
        try:
            argv, env = command(p, pass_dir, str(private), select=select,
                                color=bool(echo and echo.tty))
            argv += list(extra_args)
            (pass_dir / "command.txt").write_text(show(argv, env) + "\n")
            marker = RunMarker.parse(env[ENV_RUN])
            if echo is not None:
                echo(f"$ {show(argv, {})}" if number == 1 else
                     f"$ (pass {number}: the same command, resuming after the hung test)")
            try:
                outcome = run_pass(
                    argv, number=number, cwd=p.target.root, env=env, pass_dir=pass_dir,
                    containment=p.containment, deadline=self.deadline,
                    test_bound=self.test_bound, signals=self.signals, echo=echo,
                    private=private, bindspace=p.target.bindspace,
                    interactive=p.opts.interactive,
                    on_event=lambda line: self.out(("\n" if echo else "") + _label(shard)
                                                   + line),
                    leftovers=lambda: [proc for proc, _ in ScopeView(
                        p.target, private_dirs=(str(private),)).leaks(run=marker)],
                    shm_size=p.target.shm_size or None,
                    runaway=(p.target.runaway_cpu, p.target.runaway_seconds))
            except TaskError:
                if not self.signals.count:
                    raise
                # Ctrl-C reached unshare before it could start pytest: nothing ran
                outcome = PassOutcome(number, pass_dir, Stop.INTERRUPTED, None, 0.0)
            swept = sweep(p.target, run=marker, runtime_dir=private,
                          private_dirs=[private], descendants=outcome.seen, stale_dirs=False)
            kept = keep_tmp_writes(private, pass_dir)
            if kept is not None:
                outcome.teardown.append(f"what the run wrote to its own /tmp is kept in {kept}")
        finally:
            rundirs.remove_private_dir(private)
        if swept.acted:
            outcome.teardown += [f"sweep: {line}" for line in swept.lines()]
        return outcome, read_pass(pass_dir)

    def lane(self, *, only, shard: int | None, echo, opts: RunOptions | None = None
             ) -> RunResult:
        """Passes until the selection has run: after a hang, resume with the rest."""
        p = self.p
        opts = opts or p.opts
        results = Results(p.target)
        passes: list[PassOutcome] = []
        skip: set[str] = set()
        notes: list[str] = []
        hangs = 0
        number = 1
        while True:
            outcome, log = self.one_pass(number, shard=shard, only=only, skip=skip, echo=echo,
                                         opts=opts)
            passes.append(outcome)
            where = f"{_label(shard)}pass {number}".strip()
            stopped = {Stop.HUNG: TestOutcome.HUNG, Stop.TIMEOUT: TestOutcome.TIMEOUT,
                       Stop.INTERRUPTED: TestOutcome.INTERRUPTED}.get(outcome.stop)
            if stopped is None and log.running and log.exitstatus is None:
                stopped = TestOutcome.INTERRUPTED  # pytest was killed from elsewhere
            results.add(log, stopped=stopped, where=where, dump=outcome.stacks,
                        dump_text=_dump_head(outcome.dump_text), bound=outcome.bound,
                        running=outcome.running if outcome.stop is Stop.HUNG else None)
            results.leaks.merge(outcome.leaks)
            if outcome.stop is not Stop.HUNG:
                break
            hangs += 1
            skip |= log.done | {stable_id(outcome.running)}
            left = [n for n in map(stable_id, log.collected or []) if n not in skip]
            if opts.exitfirst:
                notes.append("-x: the run stops at the hung test (--no-x resumes after it)")
                break
            if not left:
                break
            if hangs >= opts.max_hangs:
                notes.append(f"hang limit reached ({opts.max_hangs}, --max-hangs): "
                             f"{len(left)} test(s) did not run")
                break
            if time.monotonic() >= self.deadline:
                notes.append(f"the whole-run bound expired after the hang: {len(left)} test(s) "
                             "did not run")
                passes.append(PassOutcome(number + 1, outcome.dir, Stop.TIMEOUT, None, 0.0))
                break
            number += 1
        return RunResult(0, _status(passes, results, opts), results, passes=passes,
                         notes=notes)

    def retry(self, results: Results) -> list[str]:
        """Known-flaky failures once more, in a pass of their own; each outcome is
        reported (the run's result stands)."""
        ids = [t.nodeid for t in results.known_flaky]
        opts = replace(self.p.opts, exitfirst=False, last_failed=False,
                       extra=[a for a in self.p.opts.extra if a not in ("--lf", "--last-failed")])
        number = len(list(self.run_dir.path.glob("pass-*"))) + 1
        _, log = self.one_pass(number, shard=None, only=set(ids), skip=set(), echo=None,
                               opts=opts)
        lines = [f"retrying {len(ids)} known-flaky failure(s) once (pass {number}):"]
        again = {stable_id(k): t for k, t in log.tests.items()}
        for nodeid in ids:
            t = again.get(stable_id(nodeid))
            verdict = ("passed on retry" if t and t.outcome is TestOutcome.PASSED else
                       f"{t.outcome} again" if t else "did not run")
            lines.append(f"  retry: {nodeid}: {verdict}")
        return lines


def _label(shard: int | None) -> str:
    return f"shard {shard}: " if shard else ""


def _dump_head(text: str, lines: int = 120) -> str:
    body = text.strip().splitlines()
    return "\n".join(body[:lines]) + (f"\n... ({len(body) - lines} more lines)"
                                      if len(body) > lines else "")


def _status(passes: list[PassOutcome], results: Results, opts: RunOptions) -> RunStatus:
    stops = {o.stop for o in passes}
    if Stop.INTERRUPTED in stops:
        return RunStatus.INTERRUPTED
    if Stop.TIMEOUT in stops:
        return RunStatus.TIMEOUT
    return RunStatus.FAILED if exit_code(passes, results, opts) else RunStatus.PASSED


def exit_code(passes: list[PassOutcome], results: Results, opts: RunOptions) -> int:
    """0 passed; 1 new failures or hangs (known-flaky ones aside), a known-flaky failure
    -x stopped at, pytest failing on its own, or a leak with --fail-on-leak; 2 bad
    usage; 124 the whole-run bound; 130 interrupted; pytest's 3 and 5 pass through."""
    stops = [o.stop for o in passes]
    if Stop.INTERRUPTED in stops:
        return errors.INTERRUPTED
    if Stop.TIMEOUT in stops:
        return errors.TIMEOUT
    # pytest's own exit status counts only where pytest ended on its own: a pass ended
    # for a hang exits however our teardown made it (2 after its SIGINT, -9 after SIGKILL)
    finished = [o for o in passes if o.stop is Stop.FINISHED]
    rc = (finished[-1].returncode if finished else 0) or 0
    if rc == 2:
        return errors.INTERRUPTED  # pytest itself was interrupted
    if rc == 4:
        return errors.USAGE        # pytest rejected the command line
    if results.new_failures:
        return errors.PROBLEM
    if opts.fail_on_leak and results.leaks:
        return errors.PROBLEM
    if results.known_flaky:
        cut = opts.exitfirst and not results.hung
        return errors.PROBLEM if cut else 0
    if Stop.HUNG in stops:
        return 0 if results.hung and all(t.flaky for t in results.hung) else errors.PROBLEM
    if rc < 0:
        return errors.PROBLEM      # pytest was killed by a signal
    return errors.PROBLEM if rc == 1 else rc


# -- after the run ----------------------------------------------------------------

def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def finish(p: Plan, result: RunResult, run_dir: RunDir, out) -> None:
    """Merged JUnit, lastfailed, outcome.json and a history row; then the exit code."""
    results = result.results
    result.code = exit_code(result.passes, results, p.opts)
    result.status = (result.status if result.status in (RunStatus.INTERRUPTED,
                                                        RunStatus.TIMEOUT)
                     else RunStatus.FAILED if result.code else RunStatus.PASSED)
    results.write_junit(run_dir.junit)
    if any(o.stop is not Stop.FINISHED for o in result.passes) or len(result.passes) > 1 \
            or result.shards:
        results.write_lastfailed()  # pytest could not write it whole itself
    counts = results.counts()
    _write_json(run_dir.outcome, {
        "cell": p.cell.name if p.cell else None, "minor": p.minor,
        "tpt": p.opts.tpt or (p.cell.tpt if p.cell else None),
        "spawn": p.opts.spawn or (p.cell.spawn if p.cell else None),
        "status": result.status.value, "code": result.code,
        "seconds": round(results.seconds, 2), "finished": time.time(),
        "invocation": p.invocation, "containment": p.containment.mode,
        "passes": len(result.passes), "shards": result.shards,
        "shard": "%d/%d" % p.opts.shard if p.opts.shard else None,
        "counts": {k.value: v for k, v in counts.items()},
        # what the matrix report shows (skipped counts xfailed too, as pytest's JUnit does)
        "summary": {"passed": counts[TestOutcome.PASSED],
                    "new_failures": len(results.new_failures),
                    "known_flaky": len(results.known_flaky),
                    "hung": counts[TestOutcome.HUNG],
                    "skipped": counts[TestOutcome.SKIPPED] + counts[TestOutcome.XFAILED],
                    "leaked": results.leaks.count(), "collected": len(results.collected)},
        "hung": [t.nodeid for t in results.hung],
        "leaks": results.leaks.as_dict(),
    })
    _record_history(p, result, out)


def _record_history(p: Plan, result: RunResult, out) -> None:
    try:
        from .history import History, RunRow, TestRow
        from .selection import head_commit
        results = result.results
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
        row = RunRow(run_id=result.run_dir.name, started=time.time() - results.seconds,
                     finished=time.time(),
                     kind="cell" if p.cell else ("shard" if result.shards else "run"),
                     cell=p.cell.name if p.cell else "", minor=p.minor,
                     tpt=p.opts.tpt or (p.cell.tpt if p.cell else "") or p.target.transports[0],
                     spawn=p.opts.spawn or (p.cell.spawn if p.cell else "")
                     or p.target.default_spawn_backend,
                     commit=head_commit(p.target.root), load=round(load, 2),
                     host=os.uname().nodename)
        tests = [TestRow(key, t.outcome.value, round(t.duration, 3),
                         "known" if t.flaky else "", t.signature)
                 for key, t in results.tests.items()]
        History(State(p.target).history, warn=out).record(row, tests)
    except TaskError as err:
        out(f"note: the results history was not updated: {err}")
