"""nox front end: one session per cell, each a thin call into pipeline.execute.

Sessions use `venv_backend="none"`: the tests run in the target's own py<MINOR>
uv venv (shared with the developer's shell), so nox makes no venv at all. Names
carry the minor explicitly (`tests-3.13(tpt='uds')`): cells.py spells them
(`session_name`, `PARAMS`), this module only defines the sessions. posargs go to pytest,
except the cell's own options (options.RUN_OPTIONS, parsed with argparse:
`--cell-timeout 30` and `--cell-timeout=30` alike).
"""
from __future__ import annotations

import atexit
import functools
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from .cells import PARAMS, Cell, append_step_summary, read_rows, session_name, table_text
from .errors import TaskError
from .fsutil import shown
from .interpreters import venv_name
from .output import say
from .status import Ending, RunStatus
from .target import Target, resolve

ENV_INVOCATION = "TRACTOR_TASKS_NOX_INVOCATION"


@dataclass(frozen=True)
class NoxArgs:
    """What nox's own command line says about this process (read once)."""
    worker: bool     # a parallel worker (nox starts them with --parallel-worker)
    listing: bool    # nox -l / --list: define the sessions, run nothing
    parallel: bool   # -j/--parallel (or NOX_PARALLEL)

    @classmethod
    def parse(cls, argv: list[str], env) -> NoxArgs:
        return cls(worker="--parallel-worker" in argv,
                   listing="-l" in argv or "--list" in argv,
                   parallel=any(a in ("-j", "--parallel")
                                or a.startswith(("--parallel=", "-j")) and a != "-j1"
                                for a in argv) or bool(env.get("NOX_PARALLEL")))


@functools.cache
def nox_args() -> NoxArgs:
    return NoxArgs.parse(sys.argv, os.environ)


def _missing_interpreter(minor: str) -> Exception:
    """nox's own exception for a missing interpreter: nox skips the session locally and
    fails it with --error-on-missing-interpreters (the default when CI is set)."""
    from nox.virtualenv import InterpreterNotFound

    class Missing(InterpreterNotFound):
        def __init__(self):
            super().__init__(minor)
            self.args = (f"no Python {minor} interpreter on this machine; get one with "
                         f"`uv python install {minor}` or `pyenv install {minor}`",)
    return Missing()


def _follow_parent() -> None:
    """A parallel worker (its own session, its stdout a pipe to nox) hears nothing when
    nox itself dies: ask the kernel for a SIGHUP then, so the cell stops its run."""
    if not nox_args().worker:
        return
    from .contain import set_parent_death_signal
    import signal
    set_parent_death_signal(signal.SIGHUP)
    if os.getppid() == 1:  # nox died before we asked
        os.kill(os.getpid(), signal.SIGHUP)


def run_cell(session, target: Target, cell: Cell) -> None:
    from .interpreters import find_python
    from .options import cell_options
    from .output import Output
    from .pipeline import execute, plan

    from .pipeline import record_unrun
    invocation = os.environ.get(ENV_INVOCATION)
    if find_python(cell.minor) is None:
        missing = _missing_interpreter(cell.minor)
        record_unrun(target, cell, Ending.unstarted(0, str(missing)), invocation)
        raise missing
    worker = nox_args().worker
    try:
        opts = cell_options(list(session.posargs))
        words = target.smoke if cell.kind == "smoke" else ()
        p = plan(target, words, opts, cell=cell, invocation=invocation)
        _follow_parent()
        out = Output()
        result = execute(p, out=out) if not worker else _quiet(p, out)
    except TaskError as err:
        record_unrun(target, cell, Ending.unstarted(err.code, str(err)), invocation)
        from .gitref import BaselineMissing
        if isinstance(err, BaselineMissing):
            # a CI job whose clone lacks its event's baseline: loud, and exit 2 (nox's
            # own session error would be 1, the code of failing tests)
            say(str(err), one_line=True, err=True)
            raise SystemExit(err.code)
        session.error(shown(str(err), one_line=True))
    if result.status is RunStatus.INTERRUPTED:
        raise KeyboardInterrupt
    if result.code:
        session.error(f"{cell.name}: {result.status} (exit {result.code})")


def _quiet(p, out):
    """A parallel worker: nox buffers its output until the cell ends, so pytest's own
    output goes to the pass's file only and a progress line is printed every 15 s
    (what nox's live status board shows on a terminal)."""
    import threading

    from .pipeline import execute
    from .progress import cell_lanes, snapshot
    from .rundirs import State
    stop = threading.Event()
    logs: dict = {}   # each pass's probe-log reader, kept between ticks (reads what is new)

    def tick():
        while not stop.wait(15):
            for label, path, _ in cell_lanes(State(p.target).path, p.invocation or ""):
                if label == p.cell.name:
                    out.line(f"progress: {snapshot(label, path, logs=logs).line()}")

    threading.Thread(target=tick, daemon=True).start()
    try:
        return execute(p, out=out, echo=False)
    finally:
        stop.set()


def _describe(kind: str, minor: str, target: Target) -> str:
    if kind == "tests":
        return (f"{target.tests_dir}/ in {venv_name(minor)}/ with the "
                f"{target.default_spawn_backend} spawn backend over the cell's transport.")
    if kind == "backends":
        return (f"{target.tests_dir}/ in {venv_name(minor)}/ with the cell's spawn backend and "
                "transport.")
    return f"The smoke subset ({', '.join(target.smoke)}) in {venv_name(minor)}/."


def _define(nox, target: Target, minor: str) -> None:
    tpts = [nox.param(t, tags=[t]) for t in target.transports]

    def tests(session, tpt):
        run_cell(session, target, Cell("tests", minor, tpt, target.default_spawn_backend))
    tests.__doc__ = _describe("tests", minor, target)
    nox.session(name=session_name("tests", minor), venv_backend="none", allow_parallel=True,
                tags=["tests", target.default_spawn_backend, venv_name(minor)])(
        nox.parametrize(list(PARAMS["tests"]), tpts)(tests))

    others = [s for s in target.spawn_backends if s != target.default_spawn_backend]
    if others:
        def backends(session, spawn, tpt):
            run_cell(session, target, Cell("backends", minor, tpt, spawn))
        backends.__doc__ = _describe("backends", minor, target)
        combos = [nox.param(s, t, tags=[s, t]) for s in others for t in target.transports]
        nox.session(name=session_name("backends", minor), venv_backend="none",
                    allow_parallel=True, tags=["backends", venv_name(minor)])(
            nox.parametrize(list(PARAMS["backends"]), combos)(backends))

    def smoke(session):
        run_cell(session, target, Cell("smoke", minor, target.transports[0],
                                        target.default_spawn_backend))
    smoke.__doc__ = _describe("smoke", minor, target)
    nox.session(name=session_name("smoke", minor), venv_backend="none", allow_parallel=True,
                tags=["smoke", venv_name(minor)])(smoke)


def _report(target: Target, invocation: str, stop_progress) -> None:
    from .output import Output
    if stop_progress is not None:
        stop_progress.set()
    out = Output()
    rows = read_rows(target, invocation, warn=lambda line: out.line(line))
    if not rows:
        return
    out.line("\n" + table_text(rows))
    note = append_step_summary(rows)
    if note:
        out.line(note)


def register(shim_file: str) -> Target:
    """Define every cell's session for the target the shim points at."""
    import nox

    try:
        target = resolve(Path(shim_file).resolve().parent)
    except TaskError as err:
        say(str(err), one_line=True, err=True)
        raise SystemExit(err.code)
    for minor in target.pythons:
        _define(nox, target, minor)
    args = nox_args()
    if not args.worker and not args.listing:
        invocation = os.environ.setdefault(ENV_INVOCATION, uuid.uuid4().hex)
        stop = None
        if args.parallel and not sys.stdout.isatty():
            from .output import Output
            from .progress import watch_cells
            from .rundirs import State
            stop = watch_cells(State(target).path, invocation, Output())
        atexit.register(_report, target, invocation, stop)
    return target
