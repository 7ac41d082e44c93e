"""invoke front end: thin tasks over the library (a tasks.py shim loads `collection`).

Every task takes `--root PATH` to point at another target. Errors print one
line and exit 2 (bad usage) or 1 (a problem found). Heavy imports stay inside
the tasks so quick ones (lastfailed) start fast.
"""
from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path

from invoke import Collection, Exit, Task, task
from invoke.parser import Argument
from invoke.parser.parser import ParseMachine

from .errors import TaskError, usage


# -- `invoke test [TARGET ...]`: invoke has no optional or variadic positional --

class _Words(Argument):
    """A positional that takes every bare word until the task's flags end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.words: list[str] = []
        self.open = True

    @property
    def value(self):
        return None if self.open else list(self.words)

    @value.setter
    def value(self, word):
        self.words.append(word)


class _WordsTask(Task):
    def get_arguments(self, *args, **kwargs):
        out = []
        for arg in super().get_arguments(*args, **kwargs):
            if arg.positional:
                arg = _Words(names=arg.names, kind=str, positional=True, help=arg.help)
            out.append(arg)
        return out


_complete_context = ParseMachine.complete_context


def _close_words(self):
    if self.context:
        for arg in self.context.positional_args:
            if isinstance(arg, _Words):
                arg.open = False
    _complete_context(self)


ParseMachine.complete_context = _close_words


def _task(help=None, words: str | None = None):
    """@task with auto short flags off, TaskError -> one line + exit code."""
    def deco(fn):
        @functools.wraps(fn)
        def body(c, *args, **kwargs):
            try:
                return fn(c, *args, **kwargs)
            except TaskError as err:
                raise Exit(str(err), code=err.code)
        opts = dict(auto_shortflags=False, help=help or {})
        if words:
            opts.update(positional=[words], klass=_WordsTask)
        return task(**opts)(body)
    return deco


def _target(c, root=None):
    from .target import resolve
    return resolve(Path(c.config.tractor_tasks.shim_dir), root)


def _extra(c) -> list[str]:
    return shlex.split(getattr(c, "remainder", "") or "")


def _float(name: str, value, default=None):
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        raise usage(f"error: --{name} must be a number of seconds, got {value!r}")


def _int(name: str, value):
    if value in (None, ""):
        return None
    if not str(value).isdigit():
        raise usage(f"error: --{name} must be a pid, got {value!r}")
    return int(value)


RUN_HELP = {
    "targets": "test file(s), dir(s), node id(s) or pattern(s); none = the whole suite",
    "k": "pytest -k expression",
    "tpt": "transport: tcp or uds (default: the plugin's, tcp)",
    "spawn": "spawn backend: trio, mp_spawn, mp_forkserver",
    "ll": "tractor log level (--ll)",
    "tpdb": "enable tractor's multi-process debugger (--tpdb)",
    "python": "Python minor whose py<MINOR> venv to use, e.g. 3.13",
    "timeout": "wall-clock bound in seconds (default 600 full suite, 120 one file)",
    "dry_run": "print the exact command and environment; run nothing",
    "sweep": "sweep in-scope leftovers before the run (--no-sweep: stop instead)",
    "no_x": "do not stop at the first failure (drop the default -x)",
    "retry_flaky": "rerun known-flaky failures once and report both outcomes",
    "isolate_net": "run pytest in a private network namespace (unshare -rn), if available",
    "root": "the target checkout (default: see README, target resolution)",
}


def _run(c, words, *, root, k=None, tpt=None, spawn=None, ll=None, tpdb=False, python=None,
         timeout=None, dry_run=False, sweep=True, no_x=False, retry_flaky=False,
         isolate_net=False, last_failed=False):
    from .command import Request
    from .runner import execute, pick_minor
    from .selection import resolve_words

    target = _target(c, root)
    req = Request(paths=[], keyword=k, tpt=tpt, spawn=spawn, loglevel=ll, tpdb=tpdb,
                  exitfirst=not no_x, extra=_extra(c), last_failed=last_failed)
    req.check(target)
    req.paths = resolve_words(target, words)
    minor = pick_minor(target, python)
    timeout_s = _float("timeout", timeout)
    wrapper = None
    if isolate_net:
        from .nox_sessions import netns_wrapper
        wrapper = netns_wrapper()
        if wrapper is None:
            print("--isolate-net is not available here (unshare -rn failed); running without it")
    from .runner import ensure_state_dir
    run_dir = ensure_state_dir(target) / "last" if not dry_run else target.state_dir / "last"
    result = execute(target, req, minor=minor, run_dir=run_dir,
                     timeout=timeout_s, dry_run=dry_run, allow_sweep=sweep,
                     retry_flaky=retry_flaky, wrapper=wrapper)
    if result.code:
        raise Exit(code=result.code)


@_task(help=RUN_HELP, words="targets")
def test(c, targets=None, k=None, tpt=None, spawn=None, ll=None, tpdb=False, python=None,
         timeout=None, dry_run=False, sweep=True, no_x=False, retry_flaky=False,
         isolate_net=False, root=None):
    """Run tests the spec's way: preflight, pytest -x --tb=short --no-header, sweep, report.

    invoke test [TARGET ...] [options] [-- pytest args]
    e.g. invoke test test_local.py --tpt uds; invoke test ipc/ -k cancel -- -v
    """
    _run(c, targets or [], root=root, k=k, tpt=tpt, spawn=spawn, ll=ll, tpdb=tpdb,
         python=python, timeout=timeout, dry_run=dry_run, sweep=sweep, no_x=no_x,
         retry_flaky=retry_flaky, isolate_net=isolate_net)


_NO_TARGETS = {k: v for k, v in RUN_HELP.items() if k != "targets"}


@_task(help=_NO_TARGETS)
def smoke(c, k=None, tpt=None, spawn=None, ll=None, tpdb=False, python=None, timeout=None,
          dry_run=False, sweep=True, no_x=False, retry_flaky=False, isolate_net=False,
          root=None):
    """Run the core smoke subset (spec section 7)."""
    target = _target(c, root)
    _run(c, list(target.smoke), root=root, k=k, tpt=tpt, spawn=spawn, ll=ll, tpdb=tpdb,
         python=python, timeout=timeout, dry_run=dry_run, sweep=sweep, no_x=no_x,
         retry_flaky=retry_flaky, isolate_net=isolate_net)


@_task(help=_NO_TARGETS)
def rerun(c, k=None, tpt=None, spawn=None, ll=None, tpdb=False, python=None, timeout=None,
          dry_run=False, sweep=True, no_x=False, retry_flaky=False, isolate_net=False,
          root=None):
    """Rerun the last failures (pytest --lf), same flags as `test`."""
    _run(c, [], root=root, k=k, tpt=tpt, spawn=spawn, ll=ll, tpdb=tpdb, python=python,
         timeout=timeout, dry_run=dry_run, sweep=sweep, no_x=no_x, retry_flaky=retry_flaky,
         isolate_net=isolate_net, last_failed=True)


@_task(help={**_NO_TARGETS, "base": "also count commits since this ref (e.g. origin/main)",
             "list": "print the mapping and the test paths; run nothing"})
def affected(c, base=None, list_=False, k=None, tpt=None, spawn=None, ll=None, tpdb=False,
             python=None, timeout=None, dry_run=False, sweep=True, no_x=False,
             retry_flaky=False, isolate_net=False, root=None):
    """Run the tests that the changed files map to (spec section 6)."""
    from .selection import changed_files, existing_words, map_changes

    target = _target(c, root)
    files = changed_files(target.root, base)
    if not files:
        print("no changed files" + (f" since {base}" if base else "") + "; nothing to run")
        return
    aff = map_changes(target, files)
    words, missing = existing_words(target, aff.tests)
    for f, tests in aff.mapped.items():
        print(f"{f} -> {' '.join(tests)}")
    if aff.fell_back:
        print(f"not in the change map, so the fallback ({' '.join(aff.fallback)}) runs for: "
              + ", ".join(aff.fell_back))
    for w in missing:
        print(f"note: {w} (from the change map) does not exist in this checkout; skipped")
    if not words:
        raise TaskError("error: the changed files map to no test that exists here")
    if list_:
        from .selection import resolve_words
        for path in resolve_words(target, words):
            print(path)
        return
    _run(c, words, root=root, k=k, tpt=tpt, spawn=spawn, ll=ll, tpdb=tpdb, python=python,
         timeout=timeout, dry_run=dry_run, sweep=sweep, no_x=no_x, retry_flaky=retry_flaky,
         isolate_net=isolate_net)


@_task(help={"python": "Python minor, e.g. 3.13", "root": RUN_HELP["root"]})
def quick(c, python=None, root=None):
    """Import check plus collect-only, printing the tail (spec section 7)."""
    import subprocess

    from .runner import pick_minor, prepare_venv
    target = _target(c, root)
    minor = pick_minor(target, python)
    venv = prepare_venv(target, minor)
    py = str(venv.python)
    imp = subprocess.run([py, "-c", f"import {target.package}; print({target.package})"],
                         cwd=target.root, capture_output=True, text=True)
    print((imp.stdout or imp.stderr).strip().splitlines()[-1] if (imp.stdout or imp.stderr)
          else "")
    if imp.returncode:
        raise TaskError(f"error: `import {target.package}` failed in {venv.path.name}; fix the "
                        "import error before running tests")
    col = subprocess.run([py, "-m", "pytest", target.tests_dir, "-x", "-q", "--co"],
                         cwd=target.root, capture_output=True, text=True)
    print("\n".join((col.stdout + col.stderr).strip().splitlines()[-3:]))
    if col.returncode:
        raise TaskError("error: collection failed (see above)")


@_task(help={"session": "a nox cell, e.g. \"tests-3.13(tpt='uds')\"",
             "all": "the target's cache and every cell's", "root": RUN_HELP["root"]})
def lastfailed(c, session=None, all_=False, root=None):
    """List the last failures from pytest's cache, without collecting (spec section 7)."""
    from .results import lastfailed_path, read_lastfailed

    target = _target(c, root)
    sources: list[tuple[str, Path]] = []
    if session:
        from .cells import Cell
        cell = Cell.from_name(target, session)
        if not cell.dir(target).is_dir():
            known = sorted(p.name for p in (target.state_dir / "cells").glob("*")) or ["none"]
            raise usage(f"error: no runs recorded for cell {cell.name!r}; cells run so far: "
                        + ", ".join(known))
        sources.append((cell.name, lastfailed_path(cell.cache_dir(target))))
    else:
        sources.append((".pytest_cache", lastfailed_path(target.root / ".pytest_cache")))
        if all_:
            for cache in sorted((target.state_dir / "cells").glob("*/pytest-cache")):
                sources.append((cache.parent.name, lastfailed_path(cache)))
    for label, path in sources:
        ids = read_lastfailed(target, path)
        head = f"[{label}] " if len(sources) > 1 or session else ""
        if ids is None:
            print(f"{head}no lastfailed cache ({path})")
        elif not ids:
            print(f"{head}no failures recorded")
        else:
            print(f"{head}{len(ids)} last-failed test(s):")
            for i in ids:
                print(f"  {i}")


@_task(help={"python": "Python minor, e.g. 3.13", "force": "sync even if up to date",
             "root": RUN_HELP["root"]})
def venv(c, python=None, force=False, root=None):
    """Create or sync the target's py<MINOR> venv with uv (never .venv)."""
    from .runner import pick_minor, venv_lock
    from .venv import ensure_venv, shell_command
    target = _target(c, root)
    minor = pick_minor(target, python)
    print(f"$ {shell_command(target, minor)}  (in {target.root})")
    with venv_lock(target, minor):
        result = ensure_venv(target, minor, force=force, stream=sys.stdout)
    print(result.line())


@_task(help={"python": "Python minor, e.g. 3.13", "json": "machine-readable output",
             "fix": "apply the safe fixes (venv sync, sweep) and check again",
             "collect": "run the collection check (--no-collect: skip it)",
             "fast": "skip the slow checks (import, collection): answers in well under 1s",
             "root": RUN_HELP["root"]})
def doctor(c, python=None, json=False, fix=False, collect=True, fast=False, root=None):
    """Preflight: interpreter, venv, imports, collection, registry, sockets, leaks."""
    from . import doctor as doc
    from .runner import pick_minor, prepare_venv
    from .sweep import sweep

    target = _target(c, root)
    minor = pick_minor(target, python)
    checks = doc.run_checks(target, minor, collect=collect, slow=not fast)
    if fix and not doc.healthy(checks):
        names = {ch.name for ch in checks if ch.status in (doc.FAIL, doc.WARN)}
        if names & {"venv", "import", "collection"} or any(n.startswith("active") for n in names):
            prepare_venv(target, minor, out=lambda line: None if json else print(line))
        if names & {"registry", "sockets", "processes"}:
            report = sweep(target)
            if not json:
                for line in report.lines():
                    print(f"fix: {line}")
        checks = doc.run_checks(target, minor, collect=collect, slow=not fast)
    print(doc.as_json(target, minor, checks) if json else doc.table(checks))
    if not doc.healthy(checks):
        raise Exit(code=1)


@_task(help={"dry_run": "show what would be ended/removed; change nothing",
             "grace": "seconds between SIGINT and SIGKILL (default 0.3)",
             "parent": "also end the descendants of this live pid (e.g. a hung pytest)",
             "root": RUN_HELP["root"]})
def clean(c, dry_run=False, grace=None, parent=None, root=None):
    """Sweep: SIGINT, grace, SIGKILL this checkout's leaked actors; remove stale sockets."""
    from .sweep import sweep
    target = _target(c, root)
    grace_s = _float("grace", grace, 0.3)
    if grace_s < 0:
        raise usage("error: --grace must be 0 or more seconds")
    report = sweep(target, grace=grace_s, dry_run=dry_run, parent=_int("parent", parent))
    for line in report.lines():
        print(line)
    if not dry_run:
        print("clean" if report.clean else "NOT clean: see above")
    if not report.clean and not dry_run:
        raise Exit(code=1)


@_task(help={"root": RUN_HELP["root"]})
def report(c, root=None):
    """Print the matrix table again from the cells' files on disk."""
    from .cells import read_rows, table_text
    target = _target(c, root)
    rows = read_rows(target)
    if not rows:
        print(f"no cell results under {target.state_dir / 'cells'}; run some nox sessions first")
        return
    print(table_text(rows))


@_task(help={"smoke": "include the smoke cells", "root": RUN_HELP["root"]})
def ci_matrix(c, smoke=False, root=None):
    """Print the GitHub Actions matrix JSON, derived from `nox --list --json`."""
    from .ci import matrix_json
    print(matrix_json(Path(c.config.tractor_tasks.shim_dir), root=root, smoke=smoke))


def collection(shim_file: str) -> Collection:
    """The tasks, bound to the directory of the tasks.py shim that loads them."""
    ns = Collection(test, smoke, rerun, affected, quick, lastfailed, venv, doctor, clean,
                    report, ci_matrix)
    ns.configure({"tractor_tasks": {"shim_dir": str(Path(shim_file).resolve().parent)}})
    return ns
