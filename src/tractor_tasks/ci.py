"""CI: the GitHub Actions matrix, derived from the nox sessions themselves (it asks
`nox --list --json` rather than recomputing the cells, so CI and local runs never
drift), expanded into shards when asked, and the merge of the jobs' results.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .cells import Cell
from .errors import TaskError
from .rundirs import RunDir


def nox_sessions(shim_dir: Path, root: str | None = None) -> list[dict]:
    env = dict(os.environ)
    if root:
        env["TRACTOR_TASKS_ROOT"] = str(Path(root).resolve())
    out = subprocess.run([sys.executable, "-m", "nox", "--list", "--json",
                          "-f", str(shim_dir / "noxfile.py")],
                         cwd=shim_dir, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise TaskError(f"`nox --list --json` failed in {shim_dir}: {tail}")
    return json.loads(out.stdout)


GITHUB_MAX_JOBS = 256  # jobs a GitHub Actions matrix may generate per workflow run


def matrix(shim_dir: Path, root: str | None = None, smoke: bool = False,
           shards: int = 1) -> dict:
    from .target import resolve
    target = resolve(shim_dir, root)
    include = []
    for s in nox_sessions(shim_dir, root):
        cell = Cell.parse(s["session"], target)
        if cell.kind == "smoke" and not smoke:
            continue
        row = {"session": cell.name, "python": cell.minor, "tpt": cell.tpt, "spawn": cell.spawn}
        if shards > 1 and cell.kind != "smoke":
            include += [{**row, "shard": i, "of": shards} for i in range(1, shards + 1)]
        else:
            include.append(row)
    if len(include) > GITHUB_MAX_JOBS:
        raise TaskError(f"error: {len(include)} jobs, past GitHub Actions' limit of "
                        f"{GITHUB_MAX_JOBS} jobs per matrix; pass --shards {_fitting(include, shards)} "
                        "or fewer", 2)
    return {"include": include}


def _fitting(include: list[dict], shards: int) -> int:
    """The most shards per cell whose matrix stays within GitHub's job limit."""
    sharded = len({r["session"] for r in include if "shard" in r})
    single = len(include) - sharded * shards
    return max((GITHUB_MAX_JOBS - single) // max(sharded, 1), 1)


def matrix_json(shim_dir: Path, root: str | None = None, smoke: bool = False,
                shards: int = 1) -> str:
    return json.dumps(matrix(shim_dir, root, smoke, shards))


# -- the merge job: every job's outcome.json (and JUnit) -> one table -------------------

def read_outcomes(paths: list[Path], warn=lambda line: None) -> list[tuple[Path, dict]]:
    """The outcome files that are good, each checked (cells.read_outcome); a bad one is
    one warn() line naming it, and left out."""
    from .cells import Row, read_outcome
    good = []
    for path in sorted(paths):
        try:
            rec = read_outcome(path)
            Row.of(path, rec)
        except TaskError as err:
            warn(str(err))
            continue
        good.append((path, rec))
    return good


def merge_outcomes(paths: list[Path], warn=lambda line: None, *,
                   outcomes: list[tuple[Path, dict]] | None = None):
    """Rows of the matrix with a cell's shards added up (counts summed, the worst status,
    the longest shard's time: they ran side by side)."""
    from .cells import Row
    from .status import worst
    cells: dict[str, list[Row]] = {}
    for path, rec in read_outcomes(paths, warn) if outcomes is None else outcomes:
        row = Row.of(path, rec)
        cells.setdefault(row.cell, []).append(row)
    out = []
    for name, rows in cells.items():
        status = worst(r.status for r in rows)
        out.append(Row(name, status, *(sum(getattr(r, k) for r in rows) for k in (
            "passed", "failed", "known_flaky", "hung", "skipped", "leaked")),
            max(r.seconds for r in rows),
            *(sum(getattr(r, k) for r in rows) for k in ("pre_existing", "flaky"))))
    return out


def shard_walls(paths: list[Path]) -> list[str]:
    """Per sharded cell, one line: each job's real wall (and its plan's prediction, from
    the shard.json beside its outcome.json), and the imbalance max/mean of the walls (1.00
    is a perfect split; the cell's wall is its slowest job)."""
    from .fsutil import read_text_bounded
    cells: dict[str, list[tuple[str, float, float | None]]] = {}
    for path in sorted(paths):
        try:  # artifacts: bounded, regular files only, links not followed
            rec = json.loads(read_text_bounded(path))
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("shard"), str) or \
                not isinstance(rec.get("seconds", 0), (int, float)):
            continue
        try:
            planned = json.loads(read_text_bounded(path.with_name(RunDir.SHARD))).get(
                "predicted")
            planned = float(planned) if isinstance(planned, (int, float)) else None
        except (OSError, ValueError, AttributeError):
            planned = None
        cells.setdefault(rec.get("cell") or "?", []).append(
            (rec["shard"], float(rec.get("seconds") or 0.0), planned))
    lines = []
    for cell, jobs in sorted(cells.items()):
        jobs.sort(key=lambda j: int(str(j[0]).split("/")[0]))
        walls = [w for _, w, _ in jobs]
        mean = sum(walls) / len(walls)
        parts = [f"{shard} {wall:.0f}s" + (f" (predicted {planned:.0f}s)" if planned else "")
                 for shard, wall, planned in jobs]
        lines.append(f"{cell}: " + ", ".join(parts)
                     + f"; imbalance {max(walls) / mean if mean else 1.0:.2f} (max/mean)")
    return lines


def report_dir(directory: Path, *, durations_out: Path | None = None, warn=print) -> list:
    """The final CI job: the jobs' artifacts (each a cell's `last/` dir with outcome.json
    and junit.xml) -> the matrix rows; optionally a durations file from their JUnit."""
    if not directory.is_dir():
        raise TaskError(f"error: {directory} is not a directory of job artifacts", 2)
    if durations_out is not None:
        from .fsutil import check_destination
        check_destination(durations_out)  # refused before anything is read or printed
    outcomes = sorted(directory.rglob(RunDir.OUTCOME))
    if not outcomes:
        raise TaskError(f"no outcome.json under {directory}; upload each job's "
                        "`.tractor-tasks/cells/*/last/` as an artifact", 1)
    good = read_outcomes(outcomes, warn)
    rows = merge_outcomes(outcomes, warn, outcomes=good)
    if durations_out is not None:
        import tempfile

        from .history import History
        with tempfile.TemporaryDirectory() as tmp:
            history = History(Path(tmp) / "h.sqlite")
            for outcome, rec in good:
                junit = outcome.with_name("junit.xml")
                if not os.path.lexists(junit):
                    continue
                try:  # a bad JUnit file costs its durations only, not the report
                    history.import_junit(junit, minor=rec.get("minor") or "",
                                         tpt=rec.get("tpt") or "", spawn=rec.get("spawn") or "",
                                         cell=rec.get("cell") or "", follow=False)
                except TaskError as err:
                    warn(f"skipped: {str(err).removeprefix('error: ')}")
            n = history.export_durations(durations_out)
        warn(f"wrote durations of {n} test(s) to {durations_out}")
    return rows
