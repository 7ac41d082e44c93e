"""`invoke doctor`: every preflight check as one table (or JSON), and `--fix`.

The slow part (import, collection) starts first in the background and runs while
the fast checks are done, so the doctor takes about as long as collection alone.
Long lists (23 orphans after a killed run) are summarised in the table: a count
and the first few; `--json` and `--verbose` give them all.
"""
from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass, field

from . import contain, shm
from .interpreters import find_python
from .preflight import ImportProbe, check_scope
from .rundirs import State
from .status import Check as S
from .sweep import sweep
from .target import Target
from .venv import active_venv_check, is_fresh, shell_command, venv_python, worktree_check

SHOWN = 3  # items per check in the table


@dataclass
class Check:
    name: str
    status: S
    detail: str
    fix: str = ""
    items: list[str] = field(default_factory=list)  # the full list behind a summary


def _listed(items: list[str], verbose: bool, short: list[str] | None = None) -> str:
    """All items (verbose, or a few), else a count and the first few in short form."""
    if verbose or len(items) <= SHOWN:
        return "; ".join(items)
    short = short or items
    return f"{len(items)}: " + ", ".join(short[:SHOWN]) + f", ... (+{len(items) - SHOWN} " \
        "more: --verbose or --json lists all, with why)"


def run_checks(target: Target, minor: str, *, collect: bool = True, slow: bool = True,
               verbose: bool = False) -> list[Check]:
    """All checks; `collect=False` skips collection, `slow=False` import and collection."""
    checks: list[Check] = []
    python = venv_python(target, minor)
    venv = target.venv_dir(minor)
    probe = ImportProbe(python, target, collect and slow) if python.exists() and slow else None

    interp = find_python(minor)
    checks.append(Check("python", S.OK if interp else S.FAIL,
                        f"{minor}: {interp}" if interp else f"no Python {minor} on this machine",
                        "" if interp else f"uv python install {minor}"))
    fix_venv = f"invoke venv --python {minor}  (= {shell_command(target, minor)})"
    if not python.exists():
        checks.append(Check("venv", S.FAIL, f"{venv} does not exist", fix_venv))
    elif interp and not is_fresh(target, interp):
        checks.append(Check("venv", S.WARN, f"{venv.name}/ exists but was not synced by "
                            "tractor-tasks from the current pyproject/uv.lock", fix_venv))
    else:
        checks.append(Check("venv", S.OK, f"{venv.name}/ up to date"))
    act = active_venv_check(target, minor)
    checks.append(Check(f"active venv ({act.case})", S.FAIL if act.status == "fail"
                        else S(act.status), act.detail, act.fix))
    checks.append(_containment())
    checks.append(_sigint())

    pre = check_scope(target, venv if python.exists() else None)
    if not pre.holders:
        checks.append(Check("registry", S.OK, f"tcp :{target.registry_port} free, no live "
                            f"registry@{target.registry_port}.sock"))
    for h in pre.holders:
        lst = h.listener
        if h.kind == "leaked":
            checks.append(Check("registry", S.FAIL, f"{lst.describe()} (leaked)", "invoke clean"))
        elif h.kind == "live":
            checks.append(Check("registry", S.FAIL, lst.describe(),
                                f"stop the session, or `invoke clean --parent {lst.pid}`"))
        else:
            checks.append(Check("registry", S.FAIL, lst.describe(),
                                f"outside this checkout: stop pid {lst.pid} yourself if it is "
                                "yours"))
    socks = [str(s.path) for s in pre.stale_sockets]
    dirs = [f"{d} (a run that is over)" for d in pre.stale_dirs]
    checks.append(Check("sockets", S.FAIL if socks or dirs else S.OK,
                        _listed(socks + dirs, verbose) if socks or dirs
                        else "no stale socket files or private dirs",
                        "invoke clean" if socks or dirs else "", socks + dirs))
    procs = [f"{p.describe()}: {why}" for p, why in pre.leaks]
    checks.append(Check("processes", S.FAIL if procs else S.OK,
                        _listed(procs, verbose, [p.describe(width=36) for p, _ in pre.leaks])
                        if procs
                        else "no leaked actor processes of this checkout",
                        "invoke clean" if procs else "", procs))
    checks.append(_shm(target, verbose))

    import_path = None
    if probe is None:
        if slow:
            checks.append(Check("import", S.SKIP, "no venv yet", fix_venv))
            if collect:
                checks.append(Check("collection", S.SKIP, "no venv yet", fix_venv))
    else:
        res = probe.result()
        if res.imported:
            import_path = res.import_path
            checks.append(Check("import", S.OK, f"{target.package} from {import_path} "
                                f"({res.import_seconds:.1f}s)"))
            if collect:
                ok = res.collected_ok
                checks.append(Check("collection", S.OK if ok else S.FAIL,
                                    f"{res.tail(1)} ({res.seconds:.1f}s)" if ok else res.tail(5),
                                    "" if ok else "fix the collection errors above"))
        else:
            checks.append(Check("import", S.FAIL, f"import {target.package}: {res.import_error}",
                                "fix the import error before running tests"))
            if collect:
                checks.append(Check("collection", S.SKIP, "not run: the import failed"))
    wt = worktree_check(target, minor, import_path)
    if wt:
        checks.append(Check("worktree (C)", S.FAIL if wt.status == "fail" else S(wt.status),
                            wt.detail, wt.fix))
    return checks


def _shm(target: Target, verbose: bool) -> Check:
    """Shared memory in the host's /dev/shm that no process holds: this checkout's
    orphans (seen held by its recorded runs: `invoke clean --shm` removes them) and
    everyone else's (reported, never removed). A warning: they cost memory, not runs."""
    census = shm.orphans(State(target).path)
    ours = [f"{s.describe()}: held by a run of this checkout" for s in census.ours]
    others = [f"{s.describe()}: held by no process, not shown to be this checkout's"
              for s in census.others]
    if not ours and not others:
        return Check("shm", S.OK, "no shared memory segment in /dev/shm without a holder")
    fix = ("invoke clean --shm" if ours else
           "not this checkout's to remove: remove them yourself if they are yours")
    return Check("shm", S.WARN, _listed(ours + others, verbose,
                                         [s.describe() for s in census.ours + census.others]),
                 fix, ours + others)


def _containment() -> Check:
    c = contain.detect()
    return Check("containment", S.OK if c.mode == "namespaces" else S.WARN, c.note,
                 "" if c.mode == "namespaces" else "see README: contained runs")


def _sigint() -> Check:
    """A shell that ignores SIGINT (nohup, a background job of a script) passes that on
    to pytest, and tractor's tests that SIGINT themselves then hang. Runs reset it."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return Check("sigint", S.WARN, "this shell ignores SIGINT: a bare pytest started from it "
                     "hangs in tractor's signal tests (tractor-tasks runs reset it)",
                     "run from an interactive shell, or through invoke/nox")
    return Check("sigint", S.OK, "SIGINT is delivered normally")


def healthy(checks: list[Check]) -> bool:
    return all(c.status != S.FAIL for c in checks)


def needs(checks: list[Check]) -> set[str]:
    """What `--fix` may do about the failures: 'venv' (sync it), 'sweep', and 'shm'
    (remove this checkout's orphan segments, as `invoke clean --shm`)."""
    names = {c.name for c in checks if c.status in (S.FAIL, S.WARN)}
    out = set()
    if names & {"venv", "import", "collection"} or any(n.startswith("active") for n in names):
        out.add("venv")
    if names & {"sockets", "processes"} or any(c.name == "registry" and c.fix == "invoke clean"
                                               for c in checks if c.status == S.FAIL):
        out.add("sweep")
    if any(c.name == "shm" and c.fix == "invoke clean --shm" for c in checks):
        out.add("shm")
    return out


def worth_fixing(checks: list[Check]) -> bool:
    """Whether `--fix` has work: a failed check, or this checkout's orphan shared memory
    (a warning alone, which the README promises `--fix` removes)."""
    return not healthy(checks) or "shm" in needs(checks)


def fix(target: Target, minor: str, checks: list[Check], out) -> None:
    """The safe fixes: sync the venv; sweep this checkout's leftovers (never a holder
    outside it); remove its orphan shared memory segments."""
    from .pipeline import prepare_venv
    todo = needs(checks)
    if "venv" in todo:
        prepare_venv(target, minor, out=out)
    if "sweep" in todo:
        venv = target.venv_dir(minor)
        for line in sweep(target, venv=venv if venv.exists() else None).lines():
            out(f"fix: {line}")
    if "shm" in todo:
        for line in shm.remove(State(target).path):
            out(f"fix: {line}")


def table(checks: list[Check]) -> str:
    w_name = max(len(c.name) for c in checks)
    w_status = 6
    lines = [f"{'check':{w_name}}  {'status':{w_status}}  detail"]
    for c in checks:
        lines.append(f"{c.name:{w_name}}  {c.status.value:{w_status}}  {c.detail}")
        if c.fix and c.status in (S.FAIL, S.WARN, S.SKIP):
            lines.append(f"{'':{w_name}}  {'':{w_status}}  -> fix: {c.fix}")
    return "\n".join(lines)


def as_json(target: Target, minor: str, checks: list[Check]) -> str:
    return json.dumps({"target": str(target.root), "python": minor, "ok": healthy(checks),
                       "checks": [{**asdict(c), "status": c.status.value} for c in checks]},
                      indent=2)
