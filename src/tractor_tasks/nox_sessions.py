"""nox front end: one session per cell, each a thin call into runner.execute.

Sessions use `venv_backend="none"`: the tests run in the target's own
py<MINOR> uv venv (shared with the developer's shell), so nox makes no venv
at all. Names carry the minor explicitly (`tests-3.13(tpt='uds')`).

posargs go to pytest, except these, which the cell takes for itself:
  --isolate-net / --no-isolate-net   run in a private network namespace
  --cell-timeout=SECONDS             the cell's wall-clock bound
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import uuid
from functools import lru_cache
from pathlib import Path

from .cells import Cell, read_rows, table_markdown, table_text, write_outcome
from .command import Request
from .errors import TaskError
from .target import Target, resolve

ENV_INVOCATION = "TRACTOR_TASKS_NOX_INVOCATION"
ENV_ISOLATE = "TRACTOR_TASKS_ISOLATE_NET"
ENV_TIMEOUT = "TRACTOR_TASKS_TIMEOUT"


@lru_cache(maxsize=1)
def netns_wrapper() -> list[str] | None:
    """`unshare -rn` with loopback up, when this machine allows it (checked once)."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not (unshare and ip):
        return None
    wrapper = [unshare, "-rn", "sh", "-c", f'{ip} link set lo up && exec "$@"', "netns"]
    try:
        ok = subprocess.run([*wrapper, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return wrapper if ok else None


def _take(posargs: list[str]) -> tuple[list[str], bool | None, float | None]:
    """Split the cell's own options out of posargs; the rest goes to pytest."""
    rest, isolate, timeout = [], None, None
    for arg in posargs:
        if arg == "--isolate-net":
            isolate = True
        elif arg == "--no-isolate-net":
            isolate = False
        elif arg.startswith("--cell-timeout="):
            try:
                timeout = float(arg.split("=", 1)[1])
            except ValueError:
                raise TaskError(f"error: {arg!r} needs a number of seconds", 2)
        else:
            rest.append(arg)
    return rest, isolate, timeout


def _missing_is_error(session) -> bool:
    config = getattr(getattr(session, "_runner", None), "global_config", None)
    flag = getattr(config, "error_on_missing_interpreters", None)
    return bool(os.environ.get("CI")) if flag is None else bool(flag)


def run_cell(session, target: Target, cell: Cell) -> None:
    from .interpreters import find_python
    from .runner import execute
    from .selection import resolve_words

    if find_python(cell.minor) is None:
        msg = (f"no Python {cell.minor} interpreter on this machine; get one with "
               f"`uv python install {cell.minor}` or `pyenv install {cell.minor}`")
        if _missing_is_error(session):
            session.error(msg)
        session.skip(msg)
    try:
        pytest_extra, isolate, timeout = _take(list(session.posargs))
        if isolate is None:
            isolate = os.environ.get(ENV_ISOLATE, "") not in ("", "0")
        if timeout is None and os.environ.get(ENV_TIMEOUT):
            _, _, timeout = _take([f"--cell-timeout={os.environ[ENV_TIMEOUT]}"])
        wrapper = None
        if isolate:
            wrapper = netns_wrapper()
            print(f"{cell.name}: " + ("own network namespace (unshare -rn)" if wrapper else
                  "--isolate-net is not available on this machine (unshare -rn failed); "
                  "running without it"), flush=True)
        words = target.smoke if cell.kind == "smoke" else ()
        req = Request(paths=resolve_words(target, words), tpt=cell.tpt, spawn=cell.spawn,
                      exitfirst=False, extra=pytest_extra)
        cell.dir(target).mkdir(parents=True, exist_ok=True)
        result = execute(target, req, minor=cell.minor, run_dir=cell.run_dir(target),
                         cache_dir=cell.cache_dir(target), timeout=timeout, wrapper=wrapper)
    except TaskError as err:
        session.error(str(err))
    status = {0: "passed", 124: "timeout", 130: "interrupted"}.get(result.code, "failed")
    write_outcome(target, cell, status=status, code=result.code,
                  seconds=result.outcome.seconds if result.outcome else 0.0,
                  invocation=os.environ.get(ENV_INVOCATION))
    if result.code == 130:
        raise KeyboardInterrupt
    if result.code:
        session.error(f"{cell.name}: {status} (exit {result.code})")


def _py(minor: str) -> str:
    return "py" + minor.replace(".", "")


def _describe(kind: str, minor: str, target: Target) -> str:
    if kind == "tests":
        return (f"{target.tests_dir}/ in {_py(minor)}/ with the {target.default_spawn_backend} "
                "spawn backend over the cell's transport.")
    if kind == "backends":
        return f"{target.tests_dir}/ in {_py(minor)}/ with the cell's spawn backend and transport."
    return f"The smoke subset ({', '.join(target.smoke)}) in {_py(minor)}/."


def _define(nox, target: Target, minor: str) -> None:
    tpts = [nox.param(t, tags=[t]) for t in target.transports]

    def tests(session, tpt):
        run_cell(session, target, Cell("tests", minor, tpt, target.default_spawn_backend))
    tests.__doc__ = _describe("tests", minor, target)
    nox.session(name=f"tests-{minor}", venv_backend="none", allow_parallel=True,
                tags=["tests", target.default_spawn_backend, _py(minor)])(
        nox.parametrize("tpt", tpts)(tests))

    others = [s for s in target.spawn_backends if s != target.default_spawn_backend]
    if others:
        def backends(session, spawn, tpt):
            run_cell(session, target, Cell("backends", minor, tpt, spawn))
        backends.__doc__ = _describe("backends", minor, target)
        combos = [nox.param(s, t, tags=[s, t]) for s in others for t in target.transports]
        nox.session(name=f"backends-{minor}", venv_backend="none", allow_parallel=True,
                    tags=["backends", _py(minor)])(
            nox.parametrize(["spawn", "tpt"], combos)(backends))

    def smoke(session):
        run_cell(session, target, Cell("smoke", minor, target.transports[0],
                                        target.default_spawn_backend))
    smoke.__doc__ = _describe("smoke", minor, target)
    nox.session(name=f"smoke-{minor}", venv_backend="none", allow_parallel=True,
                tags=["smoke", _py(minor)])(smoke)


def _report(target: Target, invocation: str) -> None:
    rows = read_rows(target, invocation)
    if not rows:
        return
    print("\n" + table_text(rows), flush=True)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write("\n### tractor-tasks matrix\n\n" + table_markdown(rows))


def register(shim_file: str) -> Target:
    """Define every cell's session for the target the shim points at."""
    import nox

    try:
        target = resolve(Path(shim_file).resolve().parent)
    except TaskError as err:
        print(err, file=sys.stderr)
        raise SystemExit(err.code)
    for minor in target.pythons:
        _define(nox, target, minor)
    if "--parallel-worker" not in sys.argv:
        invocation = os.environ.setdefault(ENV_INVOCATION, uuid.uuid4().hex)
        atexit.register(_report, target, invocation)
    return target
