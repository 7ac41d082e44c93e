"""The GitHub Actions matrix, derived from the nox sessions themselves.

It asks `nox --list --json` rather than recomputing the cells, so CI and
local runs never drift.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def matrix(shim_dir: Path, root: str | None = None, smoke: bool = False) -> dict:
    from .target import resolve
    target = resolve(shim_dir, root)
    include = []
    for s in nox_sessions(shim_dir, root):
        name, spec = s["session"], s.get("call_spec") or {}
        kind, _, minor = s["name"].partition("-")
        if kind == "smoke" and not smoke:
            continue
        include.append({"session": name, "python": minor,
                        "tpt": spec.get("tpt", target.transports[0]),
                        "spawn": spec.get("spawn", target.default_spawn_backend)})
    return {"include": include}


def matrix_json(shim_dir: Path, root: str | None = None, smoke: bool = False) -> str:
    return json.dumps(matrix(shim_dir, root, smoke))
