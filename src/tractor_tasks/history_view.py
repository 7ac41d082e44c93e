"""`invoke history` and `invoke flaky`: the results history, as text."""
from __future__ import annotations

import time
from pathlib import Path

from .errors import TaskError, usage
from .output import say
from .history import History, flaky_toml
from .rundirs import State
from .target import Target


def _open(target: Target, create: bool = False) -> History | None:
    path = State(target).history
    if not path.exists() and not create:
        return None
    if create:
        State(target).ensure()
    return History(path, warn=lambda line: say(line, err=True))


def export_durations(target: Target, out: Path, *, minor: str | None = None,
                     tpt: str | None = None, spawn: str | None = None) -> tuple[int, Path]:
    """`invoke durations`: the names checked, then the history's durations (of one cell's
    fields when given) written to `out` (relative to the target); (tests, file)."""
    from .command import check_names
    from .interpreters import check_minor
    from .options import RunOptions
    if minor is not None:
        check_minor(minor)
    check_names(target, RunOptions(tpt=tpt, spawn=spawn))
    path = State(target).history
    if not path.exists():
        raise TaskError("no results history yet; run the tests once (invoke test, or "
                        "a nox cell) and try again")
    dest = out if out.is_absolute() else target.root / out
    from .fsutil import check_destination
    check_destination(dest)  # a FIFO, a device, a link: refused, never replaced
    n = History(path).export_durations(dest, minor=minor or "", tpt=tpt or "",
                                       spawn=spawn or "")
    return n, dest


def show_history(target: Target, pattern: str | None, limit: int) -> None:
    history = _open(target)
    rows = history.recent(pattern, per_test=limit) if history else []
    if not rows:
        say("no results recorded" + (f" for {pattern!r}" if pattern else "")
            + "; runs and nox cells record them as they finish")
        return
    by_test: dict[str, list[dict]] = {}
    for row in rows:
        by_test.setdefault(row["nodeid"], []).append(row)
    for nodeid, runs in sorted(by_test.items()):
        runs = runs[:limit]
        trail = "".join("." if r["outcome"] == "passed" else
                        "s" if r["outcome"] in ("skipped", "xfailed") else
                        "H" if r["outcome"] == "hung" else "F" for r in reversed(runs))
        say(f"{nodeid}  {trail}  (oldest -> newest)")
        for r in runs:
            when = _when(r["time"])
            cell = r["cell"] or f"{r['minor']} {r['tpt']} {r['spawn']}".strip()
            sig = f"  {r['signature']}" if r["signature"] else ""
            commit = (r["commit"] or "")[:9] + (" (baseline)" if r["kind"] == "baseline" else "")
            verdict = f"[{r['verdict']}]" if r["verdict"] else ""
            say(f"  {when}  {cell:32}  {r['outcome']:8} {verdict:16} "
                f"{r['duration']:7.2f}s  {commit}{sig}")


def _when(stamp) -> str:
    """A row's time as local time; "????-??-?? ??:??" for one no clock can show (a row
    imported before times were checked)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
    except (OverflowError, OSError, ValueError, TypeError):
        return "????-??-?? ??:??"


def show_flaky(target: Target, min_runs: int, junit: str | None, cell: str | None, *,
               quarantine: bool = False) -> None:
    """Tests ranked by how often they flip, with ready-to-paste entries: known-flaky
    ones (test glob and error), or with `quarantine` quarantine ones (the test runs and
    is reported, and never fails the run)."""
    if cell and not junit:
        raise usage("--cell names the cell of an imported JUnit file; give --junit FILE")
    if junit:
        from .cells import Cell
        c = Cell.of_matrix(cell, target) if cell else None
        if c is None:
            raise usage("--junit needs --cell \"tests-3.13(tpt='tcp')\" (which cell "
                        "the file is from)")
        from .junit import import_junit
        history = _open(target, create=True)
        n = import_junit(history, Path(junit), minor=c.minor, tpt=c.tpt, spawn=c.spawn,
                         cell=c.name, root=target.root, follow=True)
        say(f"imported {n} test result(s) from {junit} as {c.name}")
    history = _open(target)
    found = history.flaky(min_runs=min_runs) if history else []
    if not found:
        say(f"no test flips between passing and failing in any cell (at least {min_runs} "
            "runs per cell)")
        return
    for c in found:
        say(f"{c.rate:4.0%}  {c.flips}/{c.runs - 1} flips  {c.cell:32}  {c.nodeid}"
            + (f"  [{c.signature}]" if c.signature else ""))
    say("\n# ready to paste into [tool.tractor-tasks] of pyproject.toml:\n")
    say(flaky_toml(found, target.tests_dir, table="quarantine" if quarantine else "flaky"), end="")



def merge_histories(target: Target, source: str | None, patterns=None) -> None:
    """`invoke history --import SRC` (a history file, or every history.sqlite under a
    directory) and `--checkpoint`: one line saying what was merged."""
    if patterns:
        raise usage("--import/--checkpoint take no test patterns; run `invoke history "
                    "GLOB` on its own")
    if source is not None:
        src = Path(source)
        if not src.is_absolute():
            src = Path.cwd() / src
        if src.is_dir():
            from .rundirs import HISTORY_GLOB
            files = sorted(p for p in src.rglob(HISTORY_GLOB) if p.is_file())
            if not files:
                raise usage(f"--import {source}: no {HISTORY_GLOB} history under it; give the "
                            "directory CI's history artifacts were downloaded to")
        elif src.is_file():
            files = [src]
        else:
            raise usage(f"--import {source}: no such file or directory")
    hist = _open(target, create=True)
    if source is None:
        hist.checkpoint()
        say(f"history {hist.path}: checkpointed")
        return
    added, known = hist.merge_from(files)
    say(f"history {hist.path}: merged {added} run(s) from {len(files)} file(s)"
        + (f"; {known} already here" if known else ""))
