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
