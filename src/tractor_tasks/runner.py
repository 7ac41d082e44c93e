"""One run of the target's tests, start to finish; both front ends call this.

request -> selection -> preflight (venv, sweep) -> pytest argv -> supervised
run -> sweep -> results (JUnit, flaky classification) -> exit code.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import errors
from .command import Request, pytest_args, run_env, show
from .errors import TaskError, usage
from .interpreters import check_minor, find_python
from .results import Summary, read_junit, read_probe, render, write_junit
from .scope import ENV_RUN, ScopeView, registry_listeners, run_marker, socket_files
from .selection import is_single_file
from .supervise import Outcome, supervise
from .sweep import SweepReport, sweep
from .target import Target
from .venv import VenvResult, ensure_venv, venv_python, worktree_check


def say(line: str = "") -> None:
    print(line, flush=True)


def ensure_state_dir(target: Target) -> Path:
    """<target>/.tractor-tasks, ignoring itself in git like .pytest_cache does."""
    d = target.state_dir
    d.mkdir(exist_ok=True)
    ignore = d / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by tractor-tasks: run artifacts, never committed\n*\n")
    return d


def fresh_dir(path: Path) -> Path:
    """An empty artifact dir of ours (under the state dir), made anew."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def pick_minor(target: Target, requested: str | None = None, env: dict | None = None) -> str:
    """--python, else the active py<MINOR> venv's, else this interpreter's, else the first
    configured minor with an interpreter on this machine."""
    env = os.environ if env is None else env
    if requested:
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


@contextmanager
def venv_lock(target: Target, minor: str):
    """Cells of one minor share one venv: sync it one at a time."""
    lock = ensure_state_dir(target) / f"venv-{minor}.lock"
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_venv(target: Target, minor: str, out=say) -> VenvResult:
    with venv_lock(target, minor):
        result = ensure_venv(target, minor)
    if result.action != "up to date":
        out(result.line())
    return result


# -- preflight --------------------------------------------------------------

@dataclass
class Preflight:
    leaks: list = field(default_factory=list)
    stale_sockets: list = field(default_factory=list)
    foreign_holders: list = field(default_factory=list)  # registry held outside scope
    live_holders: list = field(default_factory=list)     # held by a live session of ours
    leaked_holders: list = field(default_factory=list)   # held by one of the leaks

    @property
    def dirty(self) -> bool:
        return bool(self.leaks or self.stale_sockets)


def check_scope(target: Target) -> Preflight:
    """The fast part of the doctor: leftovers in scope, and who holds the registry."""
    view = ScopeView(target)
    pre = Preflight(leaks=view.leaks())
    pre.stale_sockets = [s for s in socket_files(target) if s.stale]
    for lst in registry_listeners(target, view):
        if lst.leaked:
            pre.leaked_holders.append(lst)
            continue
        (pre.live_holders if lst.in_scope else pre.foreign_holders).append(lst)
    return pre


def preflight(target: Target, minor: str, *, allow_sweep: bool = True,
              grace: float = 0.3, out=say) -> None:
    """Before a run: the cheap worktree check, then leftovers of earlier runs (swept)."""
    wt = worktree_check(target, minor, None)  # spec case C, the cheap half (no import)
    if wt and wt.status == "fail":
        raise TaskError(f"error: {wt.detail}; run `{wt.fix}`")
    pre = check_scope(target)
    for lst in pre.foreign_holders:
        out(f"preflight: warning: registry {lst.describe()}, outside this checkout; tests that "
            "bind the default registry may fail (not touched)")
    for lst in pre.live_holders:
        out(f"preflight: warning: registry {lst.describe()}, a live test session of this "
            "checkout; stop it or run `invoke clean --parent <its pytest pid>`")
    if not pre.dirty:
        return
    for p in pre.leaks:
        out(f"preflight: leftover {p.describe()}: {p.why}")
    for s in pre.stale_sockets:
        out(f"preflight: stale socket {s.path}")
    if not allow_sweep:
        raise TaskError("error: leftovers from an earlier run are in scope (listed above); "
                        "run `invoke clean`, or drop --no-sweep to sweep them first")
    report = sweep(target, grace=grace)
    for line in report.lines():
        out(f"preflight: {line}")


# -- the run ----------------------------------------------------------------

@dataclass
class RunResult:
    code: int
    outcome: Outcome | None = None
    summary: Summary | None = None


def default_timeout(target: Target, paths: list[str]) -> float:
    return target.timeout_file if is_single_file(paths) else target.timeout_full


def exit_code(outcome: Outcome, summary: Summary, exitfirst: bool) -> int:
    """0 passed; 1 new failures (or a known-flaky one that -x stopped at, or a failure
    pytest reported but recorded nowhere); 2 bad usage; 124 timeout; 130 interrupted;
    pytest's own 3 (internal error) and 5 (no tests collected) pass through."""
    if outcome.status == "interrupted":
        return errors.INTERRUPTED
    if outcome.status == "timeout":
        return errors.TIMEOUT
    rc = outcome.returncode or 0
    if rc < 0:
        return errors.PROBLEM  # pytest was killed by a signal
    if rc == 2:
        return errors.INTERRUPTED  # pytest itself was interrupted
    if rc == 4:
        return errors.USAGE  # pytest rejected the command line
    if summary.new_failures:
        return errors.PROBLEM
    if summary.known_flaky:
        return errors.PROBLEM if exitfirst else 0
    return errors.PROBLEM if rc == 1 else rc


@dataclass
class _Pass:
    """One pytest invocation, supervised, swept and read."""
    outcome: Outcome
    summary: Summary
    swept: SweepReport


def _command(target: Target, req: Request, minor: str, run_dir: Path, cache_dir: Path | None,
             wrapper: list[str] | None, private: str) -> tuple[list[str], dict[str, str]]:
    argv = [*(wrapper or []), str(venv_python(target, minor)), "-m", "pytest",
            *pytest_args(target, req, junit=run_dir / "junit.xml", cache_dir=cache_dir)]
    env = run_env(target, target.venv_dir(minor), run_dir,
                  extra={"XDG_RUNTIME_DIR": private, "TMPDIR": private})
    return argv, env


def _one_pass(target: Target, req: Request, *, minor: str, run_dir: Path,
              cache_dir: Path | None, timeout: float, wrapper: list[str] | None,
              grace: float, out) -> _Pass:
    """Run pytest once in its own private runtime/temp dir, then sweep what it left.

    The private dir (short: UDS paths are length-capped) keeps the run's socket
    files and tmp_path dirs apart from everyone else's; anything still running
    with its cwd in there, or that descended from this pytest, is the run's.
    """
    private = Path(tempfile.mkdtemp(prefix="tt-"))
    try:
        argv, env = _command(target, req, minor, run_dir, cache_dir, wrapper, str(private))
        (run_dir / "command.txt").write_text(show(argv, env) + "\n")
        out(f"$ {show(argv, {})}")

        def on_timeout(hung):
            out(f"\nTIMEOUT after {timeout:g}s" + (f" in {hung}" if hung else "")
                + ": dumping stacks, tearing the run down")

        outcome = supervise(argv, cwd=target.root, env=env, timeout=timeout,
                            probe_dir=run_dir, grace=grace, on_timeout=on_timeout,
                            interactive=req.interactive)
        swept = sweep(target, run=run_marker(env), runtime_dir=private, private_dirs=[private],
                      descendants=outcome.descendants, verify=False)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    junit = run_dir / "junit.xml"
    summary = read_junit(target, junit)
    if not summary.found:  # pytest was stopped before it wrote JUnit: use the probe's log
        summary = read_probe(target, run_dir / "results.jsonl")
        if summary.found:
            write_junit(summary, junit)
            out(f"(pytest ended before writing its JUnit file; {junit.name} was rebuilt from "
                f"the {summary.total} test reports it had made)")
    return _Pass(outcome, summary, swept)


def execute(target: Target, req: Request, *, minor: str, run_dir: Path,
            cache_dir: Path | None = None, timeout: float | None = None,
            wrapper: list[str] | None = None, dry_run: bool = False, allow_sweep: bool = True,
            retry_flaky: bool = False, grace: float = 8.0, out=say) -> RunResult:
    """Run the request once (plus a flaky retry if asked); print and return the result."""
    req.check(target)
    timeout = timeout or default_timeout(target, req.paths)
    if dry_run:
        argv, env = _command(target, req, minor, run_dir, cache_dir, wrapper,
                             "<private temp dir>")
        env.pop(ENV_RUN)
        out(f"cd {target.root}")
        out(show(argv, env))
        out(f"(timeout {timeout:g}s; the run also carries {ENV_RUN} to mark its processes)")
        return RunResult(0)

    prepare_venv(target, minor, out=out)
    preflight(target, minor, allow_sweep=allow_sweep, out=out)
    fresh_dir(run_dir)
    run = _one_pass(target, req, minor=minor, run_dir=run_dir, cache_dir=cache_dir,
                    timeout=timeout, wrapper=wrapper, grace=grace, out=out)
    outcome, summary, swept = run.outcome, run.summary, run.swept
    result = RunResult(0, outcome, summary)

    if outcome.teardown:
        out("")  # pytest may have left its progress line open
    for note in outcome.teardown:
        out(f"teardown: {note}")
    if swept.processes or swept.removed_sockets:
        for line in swept.lines():
            out(f"sweep: {line}")
    if outcome.status == "timeout":
        out(f"TIMEOUT: {outcome.hung_test or 'no test was running (session setup/teardown)'}"
            f"; stacks in {outcome.stacks}")
    elif outcome.status == "interrupted":
        out("INTERRUPTED" + (f" during {outcome.hung_test}" if outcome.hung_test else ""))
    elif (outcome.returncode or 0) < 0:
        out(f"pytest was killed by signal {-outcome.returncode}"
            + (f" during {outcome.hung_test}" if outcome.hung_test else ""))

    for line in render(summary):
        out(line)
    if retry_flaky and summary.known_flaky and outcome.status == "finished":
        ids = [f.nodeid for f in summary.known_flaky]
        out(f"retrying {len(ids)} known-flaky failure(s) once:")
        retry_req = Request(paths=ids, tpt=req.tpt, spawn=req.spawn, loglevel=req.loglevel,
                            exitfirst=False, extra=[a for a in req.extra if a != "--lf"])
        again = _one_pass(target, retry_req, minor=minor, run_dir=fresh_dir(run_dir / "retry"),
                          cache_dir=cache_dir, timeout=timeout, wrapper=wrapper, grace=grace,
                          out=out)
        failed_again = {f.nodeid for f in again.summary.failures}
        for nodeid in ids:
            verdict = "failed again" if nodeid in failed_again else (
                "passed on retry" if again.outcome.status == "finished" else again.outcome.status)
            out(f"  retry: {nodeid}: {verdict}")
    result.code = exit_code(outcome, summary, req.exitfirst)
    if result.code == 1 and not summary.new_failures and summary.known_flaky:
        out("only known-flaky failures, but -x stopped the run there: the rest did not run "
            "(use --no-x to run past them)")
    return result
