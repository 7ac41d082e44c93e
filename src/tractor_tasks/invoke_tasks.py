"""invoke front end: thin tasks over the library (a tasks.py shim loads `collection`).

The run tasks (test, smoke, rerun, affected) are built from options.RUN_OPTIONS
(read off RunOptions' fields): their keywords, defaults, help and short flags. Errors print one
line and exit 2 (bad usage) or 1 (a problem found). Heavy imports stay inside the
tasks so quick ones (lastfailed) start fast.
"""
from __future__ import annotations

import functools
import inspect
import shlex
from pathlib import Path

from invoke import Collection, Exit, Task, task

from . import _invoke_words
from .errors import INTERRUPTED, TaskError, usage
from .fsutil import shown
from .options import RUN_OPTIONS, RunOptions
from .output import say
from .rundirs import DURATIONS_DEFAULT, MATRIX_FILE, RunDir, State

ROOT_HELP = "the target checkout (default: see README, target resolution)"
# what `--help` calls a numeric option's value (invoke's own word is STRING)
METAVARS = {"seconds": "SECONDS", "bound": "SECONDS", "count": "N", "shards": "N|auto",
            "shard": "I/N"}


def _guard(fn, needs_stdout=False):
    """TaskError -> one line (control characters escaped: it may quote a ref, a path, a
    test id) and its exit code. A task whose whole answer is its stdout
    (`needs_stdout`) refuses to start without one, rather than answer into nothing."""
    @functools.wraps(fn)
    def body(c, *args, **kwargs):
        from .output import guard_std_fds
        if needs_stdout and _closed(1):
            raise Exit(f"error: stdout is closed; `invoke {fn.__name__.replace('_', '-')}` "
                       f"writes its answer there: give it one (e.g. > {MATRIX_FILE})", code=2)
        guard_std_fds()  # `invoke test >&-`: /dev/null in place of a closed stdout
        if any(a in ("-h", "--help") for a in [*args, *kwargs.values()]
               if isinstance(a, str)):
            # invoke gives a task's positional argument the next word, `--help` too
            import subprocess
            import sys
            name = fn.__name__.replace("_", "-")
            argv = sys.argv[1:]
            core = argv[:argv.index(name)] if name in argv else []   # -r DIR, -f FILE, ...
            raise Exit(code=subprocess.run([sys.executable, "-m", "invoke", *core, "--help",
                                            name]).returncode)
        try:
            return fn(c, *args, **kwargs)
        except TaskError as err:
            raise Exit(shown(str(err), one_line=True), code=err.code)
        except KeyboardInterrupt:  # before a run is supervised (venv sync, preflight)
            raise Exit("interrupted", code=INTERRUPTED)
    return body


def _closed(fd: int) -> bool:
    import os
    try:
        os.fstat(fd)
        return False
    except OSError:
        return True


def _task(help=None, klass=Task, positional=None, metavars=None, needs_stdout=False):
    if metavars:   # `--limit=N`, not invoke's `--limit=STRING`
        klass = _invoke_words.short_task({}, metavars)

    def deco(fn):
        return task(auto_shortflags=False, help=help or {}, klass=klass,
                    positional=positional)(_guard(fn, needs_stdout))
    return deco


def _target(c, root=None):
    from .target import resolve
    return resolve(Path(c.config.tractor_tasks.shim_dir), root)


def _extra(c) -> list[str]:
    return shlex.split(getattr(c, "remainder", "") or "")


def _run(c, words, values: dict, *, last_failed=False, resolved=None, task=None) -> None:
    from .gitref import BaselineMissing
    from .pipeline import execute, plan
    target = _target(c, values.get("root"))
    opts = RunOptions.parse(values, extra=_extra(c),
                            flag_names=_invoke_words.typed(task) if task else None)
    opts.last_failed = last_failed
    try:
        checked = plan(target, words, opts, resolved=resolved)
    except BaselineMissing as err:   # a CI job whose clone lacks its event's baseline
        from .pipeline import record_unrun
        from .status import Ending
        record_unrun(target, None, Ending.unstarted(err.code, str(err)))
        raise
    result = execute(checked)
    if result.code:
        raise Exit(code=result.code)


def _run_task(name: str, doc: str, *, words: bool = False, extra_params=(), extra_help=None,
              before=None, last_failed=False):
    """A task with every run option, e.g. `invoke test [TARGET ...] --tpt uds -n 2`."""
    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if words:
        params.append(inspect.Parameter("targets", inspect.Parameter.POSITIONAL_OR_KEYWORD))
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
               for n, d in extra_params]
    params += [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default)
               for o in RUN_OPTIONS]
    params.append(inspect.Parameter("root", inspect.Parameter.KEYWORD_ONLY, default=None))

    def body(c, targets=None, **values):
        words_given = list(targets or [])
        if before is not None:
            got = before(c, values)
            if got is None:
                return
            words_given = got
        _run(c, words_given, values, last_failed=last_failed, task=name)
    body.__name__ = body.__qualname__ = name
    body.__doc__ = doc
    body.__signature__ = inspect.Signature(params)
    help = {o.name: o.help for o in RUN_OPTIONS}
    help.update(extra_help or {})
    help["root"] = ROOT_HELP
    if words:
        help["targets"] = ("test file(s), dir(s), node id(s) or pattern(s); none = the whole "
                           "suite")
    shorts = {o.name: o.short for o in RUN_OPTIONS if o.short}
    metavars = {o.name: METAVARS[o.kind] for o in RUN_OPTIONS if o.kind in METAVARS}
    hidden = {o.name for o in RUN_OPTIONS if o.ignored}   # no-ops kept for old scripts
    klass = (_invoke_words.words_task if words else _invoke_words.short_task)(
        shorts, metavars, hidden)
    return task(auto_shortflags=False, help=help, klass=klass,
                positional=["targets"] if words else [], name=name)(_guard(body))


test = _run_task("test", """Run tests the spec's way, contained and bounded (see README).

    preflight, pytest -x --tb=short --no-header in its own namespaces, per-test and
    whole-run bounds (a hung test is dumped, ended and the rest resumes), results.

    invoke test [TARGET ...] [options] [-- pytest args]
    e.g. invoke test test_local.py --tpt uds; invoke test ipc/ -k cancel -- -v
    """, words=True)


def _smoke(c, values):
    return list(_target(c, values.get("root")).smoke)


smoke = _run_task("smoke", "Run the core smoke subset (spec section 7).", before=_smoke)

rerun = _run_task("rerun", "Rerun the last failures (pytest --lf), same options as `test`.",
                  before=lambda c, values: [], last_failed=True)


def _affected(c, values):
    from .selection import affected, resolve_words
    target = _target(c, values.get("root"))
    base, list_ = values.pop("base"), values.pop("list_")
    if base and not values.get("baseline"):
        values["baseline"] = base   # the verdict compares failures with the same base
    if not values.pop("map_", False):
        from .footprints import NO_FOOTPRINTS, affected_words
        from .selection import changed_files
        changed_files(target.root, base)   # a bad --base: one line, exit 2
        from .pipeline import pick_minor
        from .venv import venv_python
        python = venv_python(target, pick_minor(target, values.get("python")))
        words = affected_words(target, base, list_, python=python)
        if words is not NO_FOOTPRINTS:
            return words
        say("no footprints recorded yet: the change map decides")
    aff = affected(target, base)
    for line in aff.lines():
        say(line)
    if not aff.files:
        return None
    aff.check()
    if list_:
        for path in resolve_words(target, aff.words):
            say(path)
        return None
    return aff.words


affected = _run_task("affected", "Run the tests the change can break (their footprints, else the change map).",
                     extra_params=[("base", None), ("list_", False), ("map_", False)],
                     extra_help={"base": "also count commits since this ref (e.g. origin/main)",
                                 "list": "print the mapping and the test paths; run nothing",
                                 "map": "the change map only, not the recorded footprints"},
                     before=_affected)


@_task(help={"python": "Python minor, e.g. 3.13", "root": ROOT_HELP})
def quick(c, python=None, root=None):
    """Import check plus collect-only, printing the tail (spec section 7)."""
    from .pipeline import pick_minor, prepare_venv
    from .preflight import ImportProbe
    target = _target(c, root)
    minor = pick_minor(target, python)
    venv = prepare_venv(target, minor)
    res = ImportProbe(venv.python, target, collect=True).result()
    if not res.imported:
        raise TaskError(f"`import {target.package}` failed in {venv.path.name}: "
                        f"{res.import_error}; fix the import error before running tests")
    say(f"{target.package} imports from {res.import_path} ({res.import_seconds:.1f}s)")
    say("\n".join(res.tail_lines(3)))
    if not res.collected_ok:
        raise TaskError("collection failed (see above)")


@_task(help={"session": "a nox cell, e.g. \"tests-3.13(tpt='uds')\"",
             "all": "the target's cache and every cell's", "root": ROOT_HELP})
def lastfailed(c, session=None, all_=False, root=None):
    """List the last failures from pytest's cache, without collecting (spec section 7)."""
    from .lastfailed import lastfailed_sources, read_lastfailed
    target = _target(c, root)
    found = lastfailed_sources(target, session=session, every=all_)
    for label, path in found:
        ids = read_lastfailed(target, path)
        head = f"[{label}] " if len(found) > 1 or session else ""
        if ids is None:
            say(f"{head}no lastfailed cache ({path})")
        elif not ids:
            say(f"{head}no failures recorded")
        else:
            say(f"{head}{len(ids)} last-failed test(s):")
            for i in ids:
                say(f"  {i}")


@_task(help={"python": "Python minor, e.g. 3.13", "force": "sync even if up to date",
             "root": ROOT_HELP})
def venv(c, python=None, force=False, root=None):
    """Create or sync the target's py<MINOR> venv with uv (never .venv)."""
    import sys

    from .pipeline import pick_minor
    from .rundirs import State
    from .venv import ensure_venv, shell_command
    target = _target(c, root)
    minor = pick_minor(target, python)
    say(f"$ {shell_command(target, minor)}  (in {target.root})")
    with State(target).venv_lock(minor):
        result = ensure_venv(target, minor, force=force, stream=sys.stdout)
    say(result.line())


@_task(help={"python": "Python minor, e.g. 3.13", "json": "machine-readable output",
             "fix": "apply the safe fixes (venv sync, sweep) and check again",
             "collect": "run the collection check (--no-collect: skip it)",
             "fast": "skip the slow checks (import, collection): answers in well under 1s",
             "verbose": "list every leftover, not the first few", "root": ROOT_HELP})
def doctor(c, python=None, json=False, fix=False, collect=True, fast=False, verbose=False,
           root=None):
    """Preflight: interpreter, venv, imports, collection, registry, sockets, leaks."""
    from . import doctor as doc
    from .pipeline import pick_minor
    target = _target(c, root)
    minor = pick_minor(target, python)
    checks = doc.run_checks(target, minor, collect=collect, slow=not fast, verbose=verbose)
    if fix and doc.worth_fixing(checks):
        doc.fix(target, minor, checks,
                out=(lambda line: None) if json else (lambda line: say(line)))
        checks = doc.run_checks(target, minor, collect=collect, slow=not fast, verbose=verbose)
    say(doc.as_json(target, minor, checks) if json else doc.table(checks))
    if not doc.healthy(checks):
        raise Exit(code=1)


@_task(help={"dry_run": "show what would be ended/removed; change nothing",
             "grace": "seconds between SIGINT and SIGKILL (default 0.3)",
             "parent": "also end the descendants of this live pid (e.g. a hung pytest)",
             "shm": "also remove /dev/shm segments this checkout's runs left that no "
                    "process holds (see README: shared memory)",
             "root": ROOT_HELP}, metavars={"grace": "SECONDS", "parent": "PID"})
def clean(c, dry_run=False, grace=None, parent=None, shm=False, root=None):
    """Sweep: SIGINT, grace, SIGKILL this checkout's leaked actors; remove stale sockets."""
    from .options import count, seconds
    from .processes import pid_exists
    from .sweep import sweep
    target = _target(c, root)
    grace_s = seconds("--grace", grace, allow_zero=True)
    pid = count("--parent", parent)
    if pid is not None and (pid <= 0 or not pid_exists(pid)):
        raise usage(f"--parent {parent}: no such process; give the pid of a live "
                    "process (e.g. a hung pytest)")
    report = sweep(target, venv=target.first_venv(), grace=0.3 if grace_s is None else grace_s,
                   dry_run=dry_run, parent=pid)
    for line in report.lines():
        say(line)
    shm_ok = True
    if shm:
        from . import shm as shm_mod
        for line in shm_mod.remove(State(target).path, dry_run=dry_run):
            say(line)
            shm_ok = shm_ok and not line.startswith(("could not", "kept shared memory /"))
    if not dry_run:
        say("clean" if report.clean and shm_ok else "NOT clean: see above")
    if (not report.clean or not shm_ok) and not dry_run:
        raise Exit(code=1)


@_task(help={"trace": f"print the path of the newest run's timeline ({RunDir.TRACE}) instead",
             "root": ROOT_HELP})
def report(c, trace=False, root=None):
    """Print the matrix table again, from the cells' outcome files on disk.

    --trace: print the path of the newest run's timeline (trace.json) instead."""
    from .cells import read_rows, table_text
    from .rundirs import State
    target = _target(c, root)
    if trace:
        from .trace import newest
        path = newest(State(target).runs)
        if path is None:
            raise TaskError(f"no run with a timeline under {State(target).runs}; "
                            "run `invoke test` first")
        say(str(path))
        return
    bad: list[str] = []
    rows = read_rows(target, warn=bad.append)
    for line in bad:
        say(line, err=True)
    if rows:
        say(table_text(rows))
    elif not bad:
        say(f"no cell results under {State(target).cells}; run some nox "
            "sessions first")
    if bad:
        raise Exit(code=1)


@_task(help={"smoke": "include the smoke cells",
             "shards": "split every cell into N jobs (session, shard, of)", "root": ROOT_HELP},
       metavars={"shards": "N"}, needs_stdout=True)
def ci_matrix(c, smoke=False, shards=None, root=None):
    """Print the GitHub Actions matrix JSON, derived from `nox --list --json`."""
    from .ci import matrix_json
    from .options import shards as parse_shards
    n = parse_shards("--shards", shards)
    if n == "auto":
        raise usage("--shards for CI must be a number of jobs per cell, not auto")
    say(matrix_json(Path(c.config.tractor_tasks.shim_dir), root=root, smoke=smoke,
                    shards=n or 1))


@_task(help={"patterns": "node id globs (only * and ? are wild), e.g. 'test_rpc.py::*'; "
                         "none = every test", "limit": "rows per test (default 10)",
             "import": f"merge another history into this one, by run (a {State.HISTORY}, or "
                       "a directory of them, e.g. CI's artifacts); merging again adds nothing",
             "checkpoint": "fold the history's write-ahead log into its file (before a CI "
                           "cache or artifact saves it)",
             "root": ROOT_HELP}, klass=_invoke_words.words_task({}, {"limit": "N"}),
       positional=["patterns"])
def history(c, patterns=None, limit=None, root=None, import_=None, checkpoint=False):
    """Recent outcomes of tests across cells, from the results history.

    invoke history [GLOB ...] [--limit N]
    invoke history --import DIR     (merge CI's histories into this one)
    """
    from .history_view import show_history
    from .options import count
    target = _target(c, root)
    if import_ is not None or checkpoint:
        from .history_view import merge_histories
        merge_histories(target, import_, patterns)
        return
    n = 10 if limit is None else count("--limit", limit, least=1)
    n = min(n, 1_000_000)   # past any history's rows (SQLite's integers end at 2**63)
    for pattern in patterns or [None]:
        show_history(target, pattern, n)


@_task(help={"min_runs": "only tests with at least this many runs in a cell (default 3)",
             "junit": "first import a JUnit file (e.g. a CI artifact) into the history",
             "cell": "the cell the imported JUnit file belongs to, e.g. \"tests-3.13(tpt='tcp')\"",
             "quarantine": "write [[tool.tractor-tasks.quarantine]] entries instead (they run "
                           "and are reported, and never fail the run)",
             "root": ROOT_HELP}, metavars={"min_runs": "N"})
def flaky(c, min_runs=None, junit=None, cell=None, quarantine=False, root=None):
    """Rank tests by how often they flip per cell, with ready-to-paste entries.

    The entries are [[tool.tractor-tasks.flaky]] ones (--quarantine: quarantine ones)."""
    from .history_view import show_flaky
    from .options import count
    n = 3 if min_runs is None else count("--min-runs", min_runs, least=2)   # a flip: 2 runs
    show_flaky(_target(c, root), n, junit, cell, quarantine=quarantine)


@_task(help={"directory": "where the jobs' artifacts were downloaded",
             "durations_out": "also write a durations file for the next sharded run",
             "matrix": "the matrix the jobs ran (`invoke ci-matrix` output; default: the "
                       f"one {MATRIX_FILE} under DIRECTORY)",
             "history": f"merge every job's {State.HISTORY} under DIRECTORY into this file "
                        "(checkpointed, ready for the cache to save)",
             "root": ROOT_HELP})
def ci_report(c, directory, durations_out=None, matrix=None, history=None, root=None):
    """CI's last job: the verdict over every job of the matrix, with what broke by name.

    A job that reported nothing is named; then the table (shards added up) and each
    sharded cell's wall per job and the imbalance max/mean.

    Also written to $GITHUB_STEP_SUMMARY when set (under GitHub's 1 MiB). Exit 1 when a
    job has a regression, a new failure, a problem of its own (timeout, error, tests that
    never ran), no outcome, or an unreadable outcome.json; a bad junit.xml costs only its
    durations."""
    import os

    from .cells import table_markdown, table_text
    from .ci import report_dir, shard_walls
    from .fsutil import shown
    # warnings name artifact dirs: whatever CI's jobs called them
    rep = report_dir(Path(directory), warn=lambda line: say(line),
                     durations_out=Path(durations_out) if durations_out else None,
                     matrix=Path(matrix) if matrix else None,
                     history=Path(history) if history else None)
    for line in rep.lines():
        say(line)
    say(table_text(rep.rows))
    walls = shard_walls(rep.kept)
    if walls:
        say("shards (wall per job):")
        for line in walls:
            say(f"  {line}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        table = table_markdown(rep.rows) + ("".join(f"\n- shards: {shown(w)}" for w in walls))
        try:
            from .fsutil import append_text
            append_text(summary, rep.markdown(table))
        except OSError as err:
            say(f"note: could not append to GITHUB_STEP_SUMMARY ({err.strerror})")
    if rep.red:
        raise Exit(code=1)


@_task(help={"out": f"the file to write (default {DURATIONS_DEFAULT})",
             "python": "only this cell's minor", "tpt": "only this transport",
             "spawn": "only this spawn backend", "root": ROOT_HELP})
def durations(c, out=DURATIONS_DEFAULT, python=None, tpt=None, spawn=None,
              root=None):
    """Write recorded test durations and costs to a small JSON file (for CI shards).

    The median of recent runs per test (wall; CPU seconds and peak RSS where measured);
    commit the file so CI jobs balance their shards, heavy modules apart, without a
    history of their own."""
    from .history_view import export_durations
    target = _target(c, root)
    n, dest = export_durations(target, Path(out), minor=python, tpt=tpt, spawn=spawn)
    say(f"wrote durations of {n} test(s) to {dest}")


def collection(shim_file: str) -> Collection:
    """The tasks, bound to the directory of the tasks.py shim that loads them."""
    from .output import quiet_broken_pipe
    quiet_broken_pipe()
    ns = Collection(test, smoke, rerun, affected, quick, lastfailed, venv, doctor, clean,
                    report, ci_matrix, ci_report, history, flaky, durations)
    ns.configure({"tractor_tasks": {"shim_dir": str(Path(shim_file).resolve().parent)}})
    return ns
