"""The target's `py<MINOR>` uv venvs (never `.venv`), and the active-venv checks.

`UV_PROJECT_ENVIRONMENT=py313 uv sync` in the target, with an interpreter we
found ourselves. A stamp inside the venv remembers what it was synced from
(pyproject.toml, uv.lock, interpreter), so a second `ensure_venv` is a quick
no-op. With a uv.lock present the sync runs `--locked`: tractor-tasks never
rewrites a target's lock file.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import TaskError
from .fsutil import atomic_write
from .rundirs import VENV_STAMP
from .interpreters import Interpreter, minor_of_venv, require_python, uv_binary
from .target import Target

STAMP = VENV_STAMP


def venv_python(target: Target, minor: str) -> Path:
    return target.venv_dir(minor) / "bin" / "python"


def sync_command(target: Target, interp: Interpreter) -> tuple[list[str], dict[str, str]]:
    """The exact uv command (and env) that makes/syncs the venv for a minor."""
    cmd = [uv_binary(), "sync", "--python", str(interp.path)]
    if (target.root / "uv.lock").exists():
        cmd.append("--locked")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = target.venv_dir(interp.minor).name
    return cmd, env


def shell_command(target: Target, minor: str) -> str:
    """What a person would type in the target to make the venv."""
    return f"UV_PROJECT_ENVIRONMENT={target.venv_dir(minor).name} uv sync"


def _fingerprint(target: Target, interp: Interpreter) -> str:
    return _fingerprint_of(target.root, interp)


def _fingerprint_of(root: Path, interp: Interpreter) -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "uv.lock"):
        try:
            h.update((root / name).read_bytes())
        except FileNotFoundError:
            h.update(b"-")
    h.update(str(interp.path).encode())
    return h.hexdigest()


def is_fresh(target: Target, interp: Interpreter) -> bool:
    stamp = target.venv_dir(interp.minor) / STAMP
    try:
        return (json.loads(stamp.read_text()).get("fingerprint") == _fingerprint(target, interp)
                and venv_python(target, interp.minor).exists())
    except (OSError, ValueError):
        return False


@dataclass
class VenvResult:
    path: Path
    python: Path
    action: str  # "up to date", "created", "synced"
    seconds: float
    interpreter: Interpreter

    def line(self) -> str:
        return (f"venv {self.path.name}: {self.action} ({self.seconds:.1f}s) "
                f"with {self.interpreter}")


def ensure_venv(target: Target, minor: str, *, force: bool = False,
                stream=None) -> VenvResult:
    """Create or sync the target's py<MINOR> venv; a no-op when it is already fresh."""
    interp = require_python(minor)
    t0 = time.monotonic()
    vdir = target.venv_dir(interp.minor)
    if not force and is_fresh(target, interp):
        return VenvResult(vdir, venv_python(target, minor), "up to date",
                          time.monotonic() - t0, interp)
    existed = vdir.exists()
    cmd, env = sync_command(target, interp)
    out = subprocess.run(cmd, cwd=target.root, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if stream is not None and out.stdout:
        stream.write(out.stdout)
    if out.returncode != 0:
        tail = out.stdout.strip().splitlines()[-1:] or ["(no output)"]
        hint = ("; the lock file is out of date: run `uv lock` in the target"
                if "--locked" in cmd and "lock" in out.stdout.lower() else "")
        raise TaskError(f"`{shell_command(target, minor)}` failed in {target.root}: "
                        f"{tail[0]}{hint}")
    atomic_write(vdir / STAMP, json.dumps({"fingerprint": _fingerprint(target, interp),
                                           "python": str(interp.path)}), replace_link=True)
    return VenvResult(vdir, venv_python(target, minor), "synced" if existed else "created",
                      time.monotonic() - t0, interp)


def tree_venv(tree: Path, dest: Path, minor: str, lock=None) -> VenvResult:
    """A venv at `dest` synced from another tree's own pyproject.toml and uv.lock (a
    baseline export whose lock differs from the target's): `uv sync --locked
    --no-install-project`, the export being read-only and imported first by PYTHONPATH.
    A stamp makes a second call a no-op; `lock` (a context manager) serializes runs
    that would sync the same one. TaskError, one line, when uv cannot."""
    interp = require_python(minor)
    if not (tree / "uv.lock").is_file():
        raise TaskError(f"{tree.name} has no uv.lock to sync from")
    t0 = time.monotonic()
    stamp = dest / STAMP
    want = _fingerprint_of(tree, interp)
    from contextlib import nullcontext
    with lock if lock is not None else nullcontext():
        try:
            if (json.loads(stamp.read_text()).get("fingerprint") == want
                    and (dest / "bin" / "python").exists()):
                os.utime(dest)  # the newest used is the last pruned
                return VenvResult(dest, dest / "bin" / "python", "up to date",
                                  time.monotonic() - t0, interp)
        except (OSError, ValueError):
            pass
        existed = dest.exists()
        dest.parent.mkdir(parents=True, exist_ok=True)
        cmd = [uv_binary(), "sync", "--locked", "--no-install-project", "--python",
               str(interp.path)]
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env["UV_PROJECT_ENVIRONMENT"] = str(dest)
        try:
            out = subprocess.run(cmd, cwd=tree, env=env, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=900)
        except subprocess.TimeoutExpired:
            raise TaskError("`uv sync` of its uv.lock did not finish in 900s") from None
        if out.returncode != 0:
            tail = [ln for ln in out.stdout.strip().splitlines() if ln.strip()][-1:]
            raise TaskError(f"`uv sync --locked` of its uv.lock failed: "
                            f"{tail[0] if tail else 'no output'}")
        atomic_write(stamp, json.dumps({"fingerprint": want, "python": str(interp.path),
                                        "from": str(tree)}), replace_link=True)
    return VenvResult(dest, dest / "bin" / "python", "synced" if existed else "created",
                      time.monotonic() - t0, interp)


def prune_baseline_venvs(state, keep: Path, most: int = 2) -> None:
    """Keep the newest few baseline venvs (each is a whole venv); `keep` always."""
    import shutil
    try:
        dirs = sorted((d for d in state.baseline_venvs.iterdir()
                       if d.is_dir() and not d.is_symlink()),
                      key=lambda d: d.stat().st_mtime, reverse=True)
    except OSError:
        return
    for d in dirs[most:]:
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)


# -- active venv and worktree checks (spec section 3) ------------------------

def git_worktree(root: Path) -> Path | None:
    """The main checkout's .git dir when `root` is a linked git worktree, else None."""
    dotgit = root / ".git"
    if dotgit.is_file():
        text = dotgit.read_text().strip()
        if text.startswith("gitdir:"):
            return Path(text.split(":", 1)[1].strip())
    return None


@dataclass
class VenvCheck:
    status: str  # ok | warn | fail
    case: str    # A, B, C
    detail: str
    fix: str = ""


def active_venv_check(target: Target, minor: str, env: dict | None = None) -> VenvCheck:
    """Spec section 3, cases A/B: is a py<MINOR> venv of this target (or worktree) active?"""
    env = os.environ if env is None else env
    active = env.get("VIRTUAL_ENV", "")
    want = target.venv_dir(minor)
    if active:
        path = Path(active).resolve()
        if path.parent == target.root and minor_of_venv(path.name):
            return VenvCheck("ok", "A", f"active venv {path}")
        return VenvCheck("warn", "A", f"active venv {path} is not a py<MINOR> venv of this target;"
                         f" runs use {want}/bin/python anyway", "")
    if venv_python(target, minor).exists():
        return VenvCheck("ok", "B", f"no venv active; runs use {want}/bin/python")
    return VenvCheck("fail", "B", f"no venv active and {want.name}/ does not exist",
                     f"invoke venv --python {minor}  (= {shell_command(target, minor)})")


def editable_origin(target: Target, minor: str) -> Path | None:
    """Where the venv's install of the target project points (editable installs only)."""
    name = _project_name(target)
    if not name:
        return None
    norm = name.replace("-", "_").lower()
    for site in (target.venv_dir(minor) / "lib").glob("python3*/site-packages"):
        for info in site.glob("*.dist-info"):
            if info.name.split("-")[0].lower().replace(".", "_") != norm:
                continue
            try:
                data = json.loads((info / "direct_url.json").read_text())
            except (OSError, ValueError):
                return None
            if data.get("dir_info", {}).get("editable") and data.get("url", "").startswith("file://"):
                return Path(data["url"][len("file://"):])
    return None


def _project_name(target: Target) -> str | None:
    import tomllib
    try:
        return tomllib.loads((target.root / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, KeyError, ValueError):
        return None


def worktree_check(target: Target, minor: str, import_path: str | None) -> VenvCheck | None:
    """Spec section 3, case C: in a git worktree the package must import from here."""
    if git_worktree(target.root) is None:
        return None
    fix = f"{shell_command(target, minor)}  (in {target.root})"
    origin = editable_origin(target, minor)
    if origin is not None and Path(origin).resolve() != target.root:
        return VenvCheck("fail", "C", f"editable install points at {origin}, outside this "
                         "worktree", fix)
    if import_path and not Path(import_path).resolve().is_relative_to(target.root):
        return VenvCheck("fail", "C", f"{target.package} imports from {import_path}, outside "
                         "this worktree", fix)
    return VenvCheck("ok", "C", f"worktree: {target.package} imports from this worktree")
