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


def nox_sessions(shim_dir: Path, root: str | None = None) -> list[dict]:
    env = dict(os.environ)
    if root:
        env["TRACTOR_TASKS_ROOT"] = str(Path(root).resolve())
    out = subprocess.run([sys.executable, "-m", "nox", "--list", "--json",
                          "-f", str(shim_dir / "noxfile.py")],
                         cwd=shim_dir, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise TaskError(f"error: `nox --list --json` failed in {shim_dir}: {tail}")
    return json.loads(out.stdout)


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
    return {"include": include}


def matrix_json(shim_dir: Path, root: str | None = None, smoke: bool = False,
                shards: int = 1) -> str:
    return json.dumps(matrix(shim_dir, root, smoke, shards))


# -- the merge job: every job's outcome.json (and JUnit) -> one table -------------------

_WORST = ("interrupted", "timeout", "error", "failed", "skipped", "passed")


def merge_outcomes(paths: list[Path], warn=lambda line: None):
    """Rows of the matrix with a cell's shards added up (counts summed, the worst status,
    the longest shard's time: they ran side by side)."""
    from .cells import Row, _row
    from .status import RunStatus
    cells: dict[str, list[Row]] = {}
    for path in sorted(paths):
        try:
            row = _row(path)
        except TaskError as err:
            warn(str(err))
            continue
        cells.setdefault(row.cell, []).append(row)
    out = []
    for name, rows in cells.items():
        worst = min((r.status.value for r in rows), key=_WORST.index)
        out.append(Row(name, RunStatus(worst), *(sum(getattr(r, k) for r in rows) for k in (
            "passed", "failed", "known_flaky", "hung", "skipped", "leaked")),
            max(r.seconds for r in rows)))
    return out


def shard_walls(paths: list[Path]) -> list[str]:
    """Per sharded cell, one line: each job's real wall (and its plan's prediction, from
    the shard.json beside its outcome.json), and the imbalance max/mean of the walls (1.00
    is a perfect split; the cell's wall is its slowest job)."""
    cells: dict[str, list[tuple[str, float, float | None]]] = {}
    for path in sorted(paths):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or not rec.get("shard"):
            continue
        try:
            planned = json.loads(path.with_name("shard.json").read_text()).get("predicted")
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
    outcomes = sorted(directory.rglob("outcome.json"))
    if not outcomes:
        raise TaskError(f"error: no outcome.json under {directory}; upload each job's "
                        "`.tractor-tasks/cells/*/last/` as an artifact", 1)
    rows = merge_outcomes(outcomes, warn)
    if durations_out is not None:
        import tempfile

        from .history import History
        with tempfile.TemporaryDirectory() as tmp:
            history = History(Path(tmp) / "h.sqlite")
            for outcome in outcomes:
                junit = outcome.with_name("junit.xml")
                try:
                    rec = json.loads(outcome.read_text())
                except (OSError, ValueError):
                    continue
                if junit.is_file() and isinstance(rec, dict):
                    history.import_junit(junit, minor=rec.get("minor") or "",
                                         tpt=rec.get("tpt") or "", spawn=rec.get("spawn") or "",
                                         cell=rec.get("cell") or "")
            n = history.export_durations(durations_out)
        warn(f"wrote durations of {n} test(s) to {durations_out}")
    return rows
