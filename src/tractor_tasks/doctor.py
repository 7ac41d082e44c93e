"""`invoke doctor`: every preflight check of spec sections 3 and 4, as one table.

The slow checks (import, collection) start first as subprocesses and run while
the fast ones (interpreter, venv, registry, sockets, processes) are done, so
the doctor takes about as long as the collection alone.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .interpreters import find_python
from .runner import check_scope
from .target import Target
from .venv import (active_venv_check, is_fresh, shell_command, venv_python,
                   worktree_check)

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"

# The slow part, in the target's venv: one interpreter imports the package
# (reporting where from), then collects, so the package is imported once.
_SLOW = """
import sys, time
t0 = time.monotonic()
try:
    import {pkg} as m
except BaseException as e:
    print("TT-IMPORT-FAILED", type(e).__name__, e, flush=True)
    sys.exit(3)
print("TT-IMPORT", round(time.monotonic() - t0, 2), m.__file__, flush=True)
if {collect}:
    import pytest
    sys.exit(pytest.main([{tests!r}, "-q", "--co", "-p", "no:cacheprovider"]))
"""


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


class _Probe:
    """A slow check running in the background."""

    def __init__(self, argv: list[str], cwd: Path):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def result(self, timeout: float = 120) -> tuple[int, str, float]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            return -1, f"timed out after {timeout:g}s\n{out}", time.monotonic() - self.t0
        return self.proc.returncode, out, time.monotonic() - self.t0


def _tail(text: str, n: int) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def run_checks(target: Target, minor: str, *, collect: bool = True,
               slow: bool = True) -> list[Check]:
    """All checks; `collect=False` skips collection, `slow=False` import and collection."""
    checks: list[Check] = []
    python = venv_python(target, minor)
    have_venv = python.exists()
    probe = None
    collect = collect and slow
    if have_venv and slow:  # start the slow part first: it runs while the rest is checked
        probe = _Probe([str(python), "-c", _SLOW.format(pkg=target.package, collect=collect,
                                                       tests=target.tests_dir)], target.root)

    interp = find_python(minor)
    checks.append(Check("python", OK if interp else FAIL,
                        f"{minor}: {interp}" if interp else f"no Python {minor} on this machine",
                        "" if interp else f"uv python install {minor}"))
    fix_venv = f"invoke venv --python {minor}  (= {shell_command(target, minor)})"
    if not have_venv:
        checks.append(Check("venv", FAIL, f"{target.venv_dir(minor)} does not exist", fix_venv))
    elif interp and not is_fresh(target, interp):
        checks.append(Check("venv", WARN, f"{target.venv_dir(minor).name}/ exists but was not "
                            "synced by tractor-tasks from the current pyproject/uv.lock", fix_venv))
    else:
        checks.append(Check("venv", OK, f"{target.venv_dir(minor).name}/ up to date"))
    act = active_venv_check(target, minor)
    checks.append(Check(f"active venv ({act.case})", act.status if act.status != "fail" else FAIL,
                        act.detail, act.fix))

    pre = check_scope(target)
    holders = pre.foreign_holders + pre.live_holders
    if not holders and not pre.leaked_holders:
        checks.append(Check("registry", OK, f"tcp :{target.registry_port} free, no live "
                            f"registry@{target.registry_port}.sock"))
    for lst in holders:
        fix = (f"stop the session, or `invoke clean --parent {lst.pid}`" if lst in pre.live_holders
               else f"outside this checkout: stop pid {lst.pid} yourself if it is yours")
        checks.append(Check("registry", FAIL, lst.describe(), fix))
    for lst in pre.leaked_holders:
        checks.append(Check("registry", FAIL, f"{lst.describe()} (leaked)", "invoke clean"))
    stale = pre.stale_sockets
    checks.append(Check("sockets", FAIL if stale else OK,
                        ", ".join(str(s.path) for s in stale) if stale else "no stale socket files",
                        "invoke clean" if stale else ""))
    checks.append(Check("processes", FAIL if pre.leaks else OK,
                        "; ".join(f"{p.describe()}: {p.why}" for p in pre.leaks)
                        if pre.leaks else "no leaked actor processes of this checkout",
                        "invoke clean" if pre.leaks else ""))

    import_path = None
    if probe is None:
        if slow:
            checks.append(Check("import", SKIP, "no venv yet", fix_venv))
            if collect:
                checks.append(Check("collection", SKIP, "no venv yet", fix_venv))
    else:
        rc, out, secs = probe.result()
        head, _, rest = out.partition("\n")
        if head.startswith("TT-IMPORT "):
            _, took, import_path = head.split(" ", 2)
            checks.append(Check("import", OK, f"{target.package} from {import_path} "
                                f"({float(took):.1f}s)"))
            if collect:
                checks.append(Check("collection", OK if rc == 0 else FAIL,
                                    f"{_tail(rest, 1)} ({secs:.1f}s)" if rc == 0 else _tail(rest, 5),
                                    "" if rc == 0 else "fix the collection errors above"))
        else:
            checks.append(Check("import", FAIL, f"import {target.package}: {_tail(out, 1)}",
                                "fix the import error before running tests"))
            if collect:
                checks.append(Check("collection", SKIP, "not run: the import failed"))
    wt = worktree_check(target, minor, import_path)
    if wt:
        checks.append(Check("worktree (C)", wt.status if wt.status != "fail" else FAIL,
                            wt.detail, wt.fix))
    return checks


def healthy(checks: list[Check]) -> bool:
    return all(c.status != FAIL for c in checks)


def table(checks: list[Check]) -> str:
    w_name = max(len(c.name) for c in checks)
    w_status = 6
    lines = [f"{'check':{w_name}}  {'status':{w_status}}  detail"]
    for c in checks:
        lines.append(f"{c.name:{w_name}}  {c.status:{w_status}}  {c.detail}")
        if c.fix and c.status in (FAIL, WARN, SKIP):
            lines.append(f"{'':{w_name}}  {'':{w_status}}  -> fix: {c.fix}")
    return "\n".join(lines)


def as_json(target: Target, minor: str, checks: list[Check]) -> str:
    return json.dumps({"target": str(target.root), "python": minor, "ok": healthy(checks),
                       "checks": [asdict(c) for c in checks]}, indent=2)
