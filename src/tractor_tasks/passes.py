"""The passes of one run: a pass is one contained, bounded pytest start; a lane is
passes until its selection has run (after a hang, the rest resumes in a fresh pass).
The pipeline runs one lane, the shard runner one lane per shard, and the verdict's
confirmation and baseline passes are lanes too: all through `PassRunner`.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import footprints, probelog, rundirs
from .command import ENV_SELECT, pytest_args, run_env, show
from .errors import TaskError
from .fsutil import atomic_write, write_json
from .options import RunOptions
from .results import Results, read_pass, stable_id
from .rundirs import PassDir, RunDir, State, pass_dirs
from .scope import ENV_RUN, RunMarker, ScopeView
from .status import Ending, Facts, RunStatus, Stop, TestOutcome, conclude, stop_of
from .supervise import PassOutcome, PassStart, Signals, keep_tmp_writes, run_pass
from .sweep import sweep
from .venv import prune_baseline_venvs, tree_venv, venv_python


@dataclass
class RunResult:
    """What a lane, the shards or a whole run give back: facts (what ran, how each test
    ended, how each pass and the run stopped); the run's status and exit code are
    decided once, at its end (`end`, status.conclude)."""
    results: Results | None = None
    run_dir: Path | None = None
    passes: list[PassOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shards: int = 0
    cut: str | None = None     # why tests of the selection may not have run (-x, ...)
    broken: list[str] = field(default_factory=list)   # passes that ended early, unasked
    unfinished: list[str] = field(default_factory=list)  # passes whose pytest ended
                                                         # without finishing its session
    stop: Stop | None = None   # the run's own stop (not a pass's): a stop request between
                               # passes, the whole-run bound after a hang
    verdict: object = None     # the verdict's Judgement
    ending: Ending | None = None   # the run's status and exit code: set by `end` only

    @property
    def status(self) -> RunStatus | None:
        return self.ending.status if self.ending else None

    @property
    def code(self) -> int | None:
        return self.ending.code if self.ending else None

    def stopped(self) -> Stop | None:
        """How the run was stopped (interrupted, out of time), by a pass or by itself."""
        return stop_of([*(o.stop for o in self.passes), *([self.stop] if self.stop else [])])

    def no_match(self) -> bool:
        """pytest ended on its own with 5 (no tests ran) and no test ran in the whole run:
        the selection (-k, ids, a file) matches nothing (status.conclude makes it bad
        usage; the summary says it in one line)."""
        finished = [o for o in self.passes if o.stop is Stop.FINISHED]
        return bool(finished) and finished[-1].returncode == 5 and not self.results.tests

    def unaccounted(self) -> list[str]:
        """Selected tests that never ran when nothing (-x, the hang limit, a stop)
        accounts for it: a pass that ended early unasked, a shard that could not start."""
        if self.cut and not self.broken:
            return []
        return self.results.not_run() if self.results else []

    def facts(self) -> Facts:
        finished = [o for o in self.passes if o.stop is Stop.FINISHED]
        r = self.results
        return Facts(
            stops=tuple(o.stop for o in self.passes), stop=self.stop,
            returncode=finished[-1].returncode if finished else None,
            unfinished=tuple(self.unfinished), broken=tuple(self.broken),
            tests=len(r.tests) if r else 0,
            failures=len(r.failures) if r else 0, failing=len(r.new_failures) if r else 0,
            unaccounted=len(self.unaccounted()),
            cut_short=bool(r and self.cut == "-x" and r.not_run()),
            leaks=r.leaks.count() if r else 0)

    def end(self, opts: RunOptions) -> Ending:
        """The run's status and exit code, from its facts (status.conclude decides)."""
        self.ending = conclude(self.facts(), strict=opts.strict,
                               fail_on_leak=opts.fail_on_leak)
        return self.ending


def command(p, pass_dir: Path, private: str, *, color: bool = False,
            select: Path | None = None, at: Path | None = None,
            venv: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The pytest argv and environment of one pass; `at` is another tree of the target
    (a baseline export) run with the target's own venv, or with `venv` (one synced from
    that tree's own lock), that tree imported first."""
    python = venv_python(p.target, p.minor) if venv is None else venv / "bin" / "python"
    venv = p.target.venv_dir(p.minor) if venv is None else venv
    argv = [str(python), "-m", "pytest",
            *pytest_args(p.target, p.paths, p.opts, cache_dir=p.cache_dir, color=color)]
    # the run's runtime and temp dirs are its own; so is its cache (tractor writes
    # hung-test dumps under $XDG_CACHE_HOME/tractor): kept with the pass's files
    extra = {"XDG_RUNTIME_DIR": private, "TMPDIR": private,
             "XDG_CACHE_HOME": str(PassDir(pass_dir).cache)}
    if select is not None:
        extra[ENV_SELECT] = str(select)
    env = run_env(p.target, venv, pass_dir, extra=extra)
    if at is not None:
        first = [str(at / "src")] if (at / "src").is_dir() else []
        env["PYTHONPATH"] = os.pathsep.join([*first, str(at), env["PYTHONPATH"]])
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the export is read-only
    env.update(footprints.recorder_env(p.target, pass_dir, at=at, base=env, minor=p.minor))
    return argv, env


class PassRunner:
    """What the passes of one run share: its plan, run dir, signals, deadline, output."""

    def __init__(self, p, run_dir: RunDir | None, signals: Signals, deadline: float,
                 out: Callable[[str], None]):
        self.p = p
        self.run_dir = run_dir
        self.signals = signals
        self.deadline = deadline
        self.out = out

    def test_bound(self, nodeid: str) -> float | None:
        return self.p.target.test_bound(nodeid, self.p.opts.test_timeout)

    def stop_now(self) -> Stop | None:
        """Why no more passes start: a stop was asked for, or the bound is spent."""
        if self.signals.count:
            return Stop.INTERRUPTED
        return Stop.TIMEOUT if time.monotonic() >= self.deadline else None

    def stopped(self) -> bool:
        """A stop was asked for, or the whole-run bound is spent: start no more passes."""
        return self.stop_now() is not None

    def import_check(self, at: Path, venv: Path | None = None) -> str | None:
        """Where `import <package>` resolves for a pass run at `at` (None: it failed)."""
        argv, env = command(self.p, at, str(at), at=at, venv=venv)
        code = f"import {self.p.target.package} as m; print(m.__file__)"
        try:
            out = subprocess.run([argv[0], "-c", code], cwd=at, env=env, capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    def baseline_venv(self, tree: Path, lock_hash: str) -> tuple[Path | None, str]:
        """A venv synced from `tree`'s own pyproject.toml and uv.lock (a baseline export
        whose lock differs from this tree's), kept by the lock's hash and reused; and
        what was done, in words. None (and why) when it could not be made."""
        state = State(self.p.target)
        try:
            dest = state.baseline_venv(lock_hash, self.p.target.venv_dir(self.p.minor).name)
            made = tree_venv(tree, dest, self.p.minor,
                             lock=state.venv_lock(f"base-{lock_hash}-{self.p.minor}"))
        except TaskError as err:
            return None, str(err)
        prune_baseline_venvs(state, keep=made.path)
        return made.path, f"{made.action} in {made.seconds:.1f}s at {made.path}"

    def one_pass(self, number: int, *, shard: int | None, only, skip, echo,
                 opts: RunOptions | None = None, extra_args=(), pass_dir: Path | None = None,
                 phase: str | None = None, at: Path | None = None,
                 venv: Path | None = None) -> tuple[PassOutcome, object]:
        """One contained, bounded pytest start (the shard plan's `--co` is one too);
        `at` runs it in another tree of the target (a baseline export). The caller asks
        `stop_now()` first: a stop between passes is the run's, not a pass."""
        p = self.p if opts is None else replace(self.p, opts=opts)
        pass_dir = pass_dir or self.run_dir.pass_dir(number, shard, phase)
        select = None
        if only is not None or skip:
            select = PassDir(pass_dir).select
            write_json(select, {"only": sorted(only) if only is not None else None,
                                 "skip": sorted(skip)})
        private = rundirs.make_private_dir(p.target)
        try:
            argv, env = command(p, pass_dir, str(private), select=select,
                                color=bool(echo and echo.tty), at=at, venv=venv)
            argv += list(extra_args)
            atomic_write(PassDir(pass_dir).command, show(argv, env) + "\n", replace_link=True)
            marker = RunMarker.parse(env[ENV_RUN])
            if echo is not None:
                echo(f"$ {show(argv, {})}" if number == 1 else
                     f"$ (pass {number}: the same command, resuming after the hung test)")
            try:
                outcome = run_pass(PassStart(
                    argv, number=number, cwd=at or p.target.root, env=env, pass_dir=pass_dir,
                    containment=p.containment, deadline=self.deadline,
                    test_bound=self.test_bound, signals=self.signals, echo=echo,
                    private=private, bindspace=p.target.bindspace,
                    interactive=p.opts.interactive,
                    log_max=int(p.target.output_log_max_mb * 2**20),
                    on_event=lambda line: self.out(("\n" if echo else "") + _label(shard)
                                                   + line),
                    leftovers=lambda: [proc for proc, _ in ScopeView(
                        p.target, private_dirs=(str(private),)).leaks(run=marker)],
                    shm_size=p.target.shm_size or None,
                    runaway=(p.target.runaway_cpu, p.target.runaway_seconds)))
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
        if outcome.stop is not Stop.FINISHED:  # what progress and the timeline read
            write_json(PassDir(pass_dir).stop, {"stop": outcome.stop.value,
                                                 "running": outcome.running,
                                                 "bound": outcome.bound})
        return outcome, read_pass(pass_dir, outcome.log)

    def lane(self, *, only, shard: int | None, echo, opts: RunOptions | None = None,
             phase: str | None = None, at: Path | None = None,
             venv: Path | None = None) -> RunResult:
        """Passes until the selection has run: after a hang, resume with the rest. What
        did not run is accounted for: `RunResult.cut` says why (-x, the hang limit, the
        whole-run bound), else `broken` names the pass that ended early."""
        p = self.p
        opts = opts or p.opts
        results = Results(p.target)
        passes: list[PassOutcome] = []
        skip: set[str] = set()
        notes: list[str] = []
        broken: list[str] = []
        unfinished: list[str] = []
        cut = None
        stop = None
        hangs = 0
        number = 1
        while True:
            stop = self.stop_now()
            if stop is not None:   # stopped between passes: start nothing more
                break
            outcome, log = self.one_pass(number, shard=shard, only=only, skip=skip, echo=echo,
                                         opts=opts, phase=phase, at=at, venv=venv)
            passes.append(outcome)
            where = f"{_label(shard)}{phase + ' ' if phase else ''}pass {number}"
            stopped = {Stop.HUNG: TestOutcome.HUNG, Stop.TIMEOUT: TestOutcome.TIMEOUT,
                       Stop.INTERRUPTED: TestOutcome.INTERRUPTED}.get(outcome.stop)
            if stopped is None and log.exitstatus is None and outcome.stop is Stop.FINISHED:
                # pytest ended without finishing its session (os._exit, a kill from
                # elsewhere): never a pass, and what it did not run is unaccounted for
                why = (f"{where}: pytest ended (exit status {outcome.returncode}) without "
                       "finishing its session"
                       + (f", during {log.running}" if log.running else ""))
                unfinished.append(why)
                broken.append(why)
                if log.running:
                    stopped = TestOutcome.INTERRUPTED
            results.add(log, stopped=stopped, where=where, dump=outcome.stacks,
                        dump_text=_dump_head(outcome.dump_text), bound=outcome.bound,
                        running=outcome.running if outcome.stop is Stop.HUNG else None)
            results.leaks.merge(outcome.leaks)
            # what the probe log's reader could not take: a log past its cap lost the
            # rest (those tests did not run as far as the run can tell), else a note
            notes += [f"warning: {where}: {problem}" for problem in log.problems]
            if log.over:
                broken.append(f"{where}: its probe log passed {probelog.cap_text()}; the "
                              "rest of it was not read")
            if outcome.stop is not Stop.HUNG:
                break
            hangs += 1
            skip |= log.done | {stable_id(outcome.running)}
            left = [n for n in map(stable_id, log.collected or []) if n not in skip]
            if opts.exitfirst:
                notes.append("-x: the run stops at the hung test (--no-x resumes after it)")
                cut = "-x"
                break
            if not left:
                break
            if hangs >= opts.max_hangs:
                notes.append(f"hang limit reached ({opts.max_hangs}, --max-hangs): "
                             f"{len(left)} test(s) did not run")
                cut = "--max-hangs"
                break
            if time.monotonic() >= self.deadline:
                notes.append(f"the whole-run bound expired after the hang: {len(left)} test(s) "
                             "did not run")
                stop = Stop.TIMEOUT
                break
            number += 1
        if opts.exitfirst and results.failures:
            cut = cut or "-x"
        return RunResult(results, passes=passes, notes=notes, cut=cut, broken=broken,
                         unfinished=unfinished, stop=stop)

    def retry(self, results: Results) -> list[str]:
        """Known-flaky failures once more, in a pass of their own; each outcome is
        reported (the run's result stands)."""
        ids = [t.nodeid for t in results.known_flaky]
        if self.stopped():
            return [f"{len(ids)} known-flaky failure(s) not retried: the run was stopped "
                    "or its time is spent"]
        opts = replace(self.p.opts, exitfirst=False, last_failed=False,
                       extra=[a for a in self.p.opts.extra if a not in ("--lf", "--last-failed")])
        number = len(pass_dirs(self.run_dir.path)) + 1
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

