"""The verdict's passes: failures re-run alone (confirmation) and run at the baseline
commit (its tree exported read-only, the target's own venv), through the runner
interface (runner.Runner). Each returns what it found and what it did (a Phase); the
verdict (verdict.py) decides what that means.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import gitref
from .results import Results, TestResult, stable_id
from .rundirs import RunDir, State
from .runner import Runner
from .shard_plan import module_of
from .status import TestOutcome as O


@dataclass
class Phase:
    """What one of the verdict's phases did besides the outcomes: its passes, its notes,
    whether a stop cut it short."""
    passes: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: bool = False


def quiet_opts(opts):
    """A confirmation or baseline pass: every selected test runs (no -x, no --lf), and
    pytest's cache is left as the run made it."""
    extra = [a for a in opts.extra if a not in ("--lf", "--last-failed", "-x", "--exitfirst")]
    return replace(opts, exitfirst=False, last_failed=False, extra=[*extra, "-p",
                                                                    "no:cacheprovider"])


def _by_module(tests: list[TestResult]) -> dict[str, list[TestResult]]:
    groups: dict[str, list[TestResult]] = {}
    for t in tests:
        groups.setdefault(module_of(stable_id(t.nodeid)), []).append(t)
    return groups


class Progress:
    """The verdict's passes as they go, one line: the phase, what runs now, how many
    are left and the time since the phase began. On a terminal it is redrawn in place
    every second; in a CI log (no terminal) it is a plain line at each step and every
    `every` seconds while one step runs."""

    def __init__(self, out, phase: str, t0: float | None = None, every: float = 30.0):
        import threading
        self.out = out
        self.phase = phase
        self.t0 = time.monotonic() if t0 is None else t0
        self.every = every
        self.now = ""
        self._stop = threading.Event()
        self._thread = None
        self.tty = bool(getattr(out, "tty", False)) and hasattr(out, "status")

    def line(self) -> str:
        return f"verdict: {self.phase}: {self.now} · {time.monotonic() - self.t0:.0f}s"

    def _draw(self, plain: bool) -> None:
        if self.out is None:
            return
        if self.tty:
            self.out.status([self.line()])
        elif plain:
            self.out(self.line())

    def step(self, now: str) -> None:
        """A new step starts: `now` says what runs and how many are left."""
        import threading
        self.now = now
        self._draw(plain=True)
        if self._thread is None and self.out is not None:
            self._thread = threading.Thread(target=self._tick, daemon=True,
                                            name="tt-verdict-progress")
            self._thread.start()

    def _tick(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(1.0):
            if self.tty:
                self._draw(plain=False)
            elif time.monotonic() - last >= self.every:
                last = time.monotonic()
                self._draw(plain=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.tty:
            self.out.status([])


def confirm(runner: Runner, tests: list[TestResult], times: int,
            t0: float | None = None) -> Phase:
    """Each test re-run alone, `times` rounds, a module's tests in one pytest start: its
    re-runs appended to the test's `reruns`."""
    j = Phase()
    opts = quiet_opts(runner.p.opts)
    steps = [(r, module, group) for r in range(times)
             for module, group in _by_module(tests).items()]
    progress = Progress(runner.out, "re-running failures alone", t0)
    try:
        for n, (r, module, group) in enumerate(steps, 1):
            if runner.stopped():
                j.notes.append("verdict: stopped before every failure was re-run")
                j.stopped = True
                return j
            left = sum(len(g) for _, _, g in steps[n - 1:])
            progress.step(f"{module} ({len(group)} test{'s' * (len(group) != 1)}"
                          + (f", round {r + 1} of {times}" if times > 1 else "")
                          + f") · step {n} of {len(steps)} · {left} test run(s) left")
            lane = runner.lane(only={stable_id(t.nodeid) for t in group}, shard=None,
                               echo=None, opts=opts, phase=RunDir.confirm_phase(n))
            j.passes += lane.passes
            for t in group:
                again = lane.results.tests.get(stable_id(t.nodeid))
                t.reruns.append(again or TestResult(t.nodeid, O.INTERRUPTED,
                                                    message="did not run when re-run alone"))
    finally:
        progress.close()
    return j


def alone(runner: Runner, tests: list[TestResult], what: str
          ) -> tuple[dict[str, TestResult | None], Phase]:
    """Each test in a pytest start of its own (the second opinion on a regression: no
    other failure beside it to slow it down): its outcome by stable id (None: it did not
    report); a test the runner stopped before is left out."""
    j = Phase()
    opts = quiet_opts(runner.p.opts)
    got: dict[str, TestResult | None] = {}
    progress = Progress(runner.out, what)
    try:
        for n, t in enumerate(tests, 1):
            if runner.stopped():
                j.stopped = True
                j.notes.append(f"verdict: stopped before {what} was done")
                break
            key = stable_id(t.nodeid)
            progress.step(f"{key} in a pytest of its own · {n} of {len(tests)}")
            lane = runner.lane(only={key}, shard=None, echo=None, opts=opts,
                               phase=f"{RunDir.ALONE_PHASE}-{n}")
            j.passes += lane.passes
            got[key] = lane.results.tests.get(key)
    finally:
        progress.close()
    return got, j


def lock_change(target, base) -> str | None:
    """The hash (environment-style, 12 hex) of the baseline's own uv.lock when it
    differs from this tree's; "" when this tree has a lock and the baseline none; None
    when they are the same (or the target has no lock)."""
    lock = target.root / "uv.lock"
    if not lock.is_file():
        return None
    there = gitref.blob(target.root, base.commit, "uv.lock")
    if there is None:
        return ""
    mine = lock_hash(lock.read_bytes())
    theirs = lock_hash(there)
    return None if theirs == mine else theirs


def lock_hash(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()[:12]


def with_lock(environ: str, lock: str | None) -> str:
    """The environment string with its lock part replaced (a baseline's own lock)."""
    if not lock:
        return environ
    parts = [p for p in (environ or "").split(";") if p and not p.startswith("lock=")]
    return ";".join([*parts, f"lock={lock}"])


def at_baseline(runner: Runner, tests: list[TestResult], base, history,
                environ: str = "", phase: str = RunDir.BASELINE_PHASE,
                lock: str | None = None) -> tuple[dict[str, TestResult], Phase]:
    """Run the tests at the baseline commit: its tree exported read-only, the export
    imported first, with the target's own venv, or, when the baseline's uv.lock differs
    (`lock`: its hash, see lock_change), a venv synced from that lock; record the
    outcomes for the next run. Their outcomes there by stable id, and what the phase
    did."""
    j = Phase()
    p = runner.p
    target = p.target
    state = State(target)
    dest = state.baseline_dir(base.commit)
    try:
        state.check(commit=base.commit)  # a link there is refused, never written through
        root = gitref.export(target.root, base.commit, dest)
    except Exception as err:  # noqa: BLE001 - one line, and the verdict goes on without it
        j.notes.append(f"verdict: could not export {base.name} ({err}); no baseline run")
        return {}, j
    _prune_exports(dest.parent, keep={base.commit})
    first = phase == RunDir.BASELINE_PHASE  # what is said once, not again per phase
    venv = None
    if lock is not None:
        if lock:
            venv, did = runner.baseline_venv(root, lock)
        else:
            did = f"{base.name} has no uv.lock"
        if first:
            j.notes.append(
                f"verdict: uv.lock differs between {base.name} and this tree: the baseline "
                + (f"ran in a venv synced from its own lock ({did})" if venv is not None
                   else f"ran with this tree's venv: its own could not be made ({did})"))
    if venv is not None:
        environ = with_lock(environ, lock)
    where = runner.import_check(root, venv) if first else None
    if where is not None:
        j.notes.append(f"verdict: baseline {base.name} ({base.why}) exported to {root}; "
                       f"`import {target.package}` there resolves to {where}")
    opts = quiet_opts(p.opts)
    ids = {stable_id(t.nodeid) for t in tests}
    progress = Progress(runner.out, f"at the baseline {base.name}")
    progress.step(f"{len(ids)} test(s) of {len(_by_module(tests))} module(s) in one pytest "
                  "start")
    try:
        lane = runner.lane(only=ids, shard=None, echo=None, opts=opts, phase=phase, at=root,
                           venv=venv)
    finally:
        progress.close()
    j.passes += lane.passes
    found = {k: v for k, v in lane.results.tests.items() if k in ids}
    if history is not None and lane.results.tests and not runner.stopped():
        _record_baseline(history, p, base, runner, lane.results, environ, phase)
    return found, j


def _record_baseline(history, p, base, runner: Runner, results: Results, environ: str = "",
                     phase: str = RunDir.BASELINE_PHASE) -> None:
    from .ci_event import machine_class
    from .history import RunRow, TestRow
    now = time.time()
    row = RunRow(run_id=f"{runner.run_dir.path.name}-{phase}", started=now, finished=now,
                 kind="baseline", cell=p.cell.name if p.cell else "", minor=p.minor,
                 tpt=p.tpt, spawn=p.spawn, commit=base.commit, host=os.uname().nodename,
                 tree=gitref.env_state(p.target.verdict_env), environ=environ,
                 machine=machine_class())
    tests = [TestRow(k, t.outcome.value, round(t.duration, 3), "", t.signature)
             for k, t in results.tests.items()]
    try:
        history.record(row, tests)
    except Exception:  # noqa: BLE001 - the history is a cache: the verdict stands
        pass


def _prune_exports(parent: Path, keep: set[str], most: int = 3) -> None:
    """Keep the newest few exports (each is a whole tree)."""
    try:
        dirs = sorted((d for d in parent.iterdir() if d.is_dir() and not d.is_symlink()
                       and re.fullmatch(r"[0-9a-f]{40}", d.name)),
                      key=lambda d: d.stat().st_mtime, reverse=True)
    except OSError:
        return
    for d in dirs[most:]:
        if d.name not in keep:
            gitref.remove_export(d)
