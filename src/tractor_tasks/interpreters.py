"""Find a Python interpreter for a minor (e.g. "3.13") that really runs.

Looked for, in order: the running interpreter, `python3.X` on PATH (pyenv
shims skipped: they only exec a pyenv version, and exit 127 when it is not
selected), `~/.pyenv/versions/3.X.*`, and uv's own discovery (`uv python
find`, with pyenv shims hidden from it since they trip it up). Each candidate
is run once to prove it is that minor; the answer is remembered per file
(path, size, mtime) in the user cache dir.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import TaskError, usage

_MINOR_RE = re.compile(r"3\.\d{1,2}")

# A target's venv for a minor is the directory py<MINOR> at its top (3.13: py313): its
# name is spelled (venv_name) and read (VENV_NAME, minor_of_venv) here only.
VENV_NAME = r"py3\d+"


def venv_name(minor: str) -> str:
    """The venv directory's name for a minor: "3.13" -> "py313"."""
    return "py" + minor.replace(".", "")


def minor_of_venv(name: str) -> str | None:
    """The minor a venv directory's name stands for ("py313" -> "3.13"), else None."""
    return f"{name[2]}.{name[3:]}" if re.fullmatch(VENV_NAME, name) else None


@dataclass(frozen=True)
class Interpreter:
    minor: str
    path: Path
    source: str  # how it was found: running, PATH, pyenv, uv

    def __str__(self) -> str:
        return f"{self.path} ({self.source})"


def check_minor(minor: str) -> str:
    minor = str(minor).strip()
    minor = minor_of_venv(minor) or minor  # accept py313
    if not _MINOR_RE.fullmatch(minor):
        raise usage(f"{minor!r} is not a Python minor; write it like 3.13")
    return minor


def _reports_minor(path: str | Path, minor: str) -> bool:
    """Run it: shims that exit 127, broken symlinks and wrong versions all say no."""
    try:
        out = subprocess.run(
            [str(path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == minor


def _pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _version_key(p: Path):
    return tuple(int(x) if x.isdigit() else -1 for x in re.split(r"[.\-]", p.name))


def _path_without_shims() -> str:
    shims = str(_pyenv_root() / "shims")
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and os.path.realpath(d) != os.path.realpath(shims))


def _is_pyenv_shim(path: str) -> bool:
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(_pyenv_root() / "shims")


def _candidates(minor: str):
    if "%d.%d" % sys.version_info[:2] == minor:
        base = getattr(sys, "_base_executable", None) or sys.executable
        yield Path(base), "running"
    exe = shutil.which(f"python{minor}")
    if exe and not _is_pyenv_shim(exe):  # a shim execs a pyenv version: looked at next
        yield Path(exe), "PATH"
    versions = _pyenv_root() / "versions"
    if versions.is_dir():
        for d in sorted(versions.glob(f"{minor}.*"), key=_version_key, reverse=True):
            if re.fullmatch(re.escape(minor) + r"\.\d+", d.name):
                yield d / "bin" / f"python{minor}", "pyenv"
    uv = _uv_binary()
    if uv:
        try:
            out = subprocess.run([uv, "python", "find", minor], capture_output=True, text=True,
                                 timeout=20, env={**os.environ, "PATH": _path_without_shims()})
            if out.returncode == 0 and out.stdout.strip():
                yield Path(out.stdout.strip()), "uv"
        except (OSError, subprocess.TimeoutExpired):
            pass


def _cache_file() -> Path:
    import platformdirs
    from .rundirs import INTERPRETERS_CACHE
    return Path(platformdirs.user_cache_dir("tractor-tasks")) / INTERPRETERS_CACHE


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _verified(path: Path, minor: str) -> bool:
    """Run it once; remember the answer for this exact file (path, size, mtime)."""
    try:
        key = _stat_key(path)
    except OSError:
        return False
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if known.get(key) == minor:
        return True
    if not _reports_minor(path, minor):
        return False
    known[key] = minor
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        from .fsutil import atomic_write
        atomic_write(cache, json.dumps(known))
    except (OSError, TaskError):
        pass
    return True


@lru_cache(maxsize=None)
def find_python(minor: str) -> Interpreter | None:
    minor = check_minor(minor)
    for path, source in _candidates(minor):
        path = Path(os.path.realpath(path))  # python and python3.11 are one interpreter
        if path.exists() and _verified(path, minor):
            return Interpreter(minor, path, source)
    return None


def require_python(minor: str) -> Interpreter:
    found = find_python(check_minor(minor))
    if found is None:
        raise TaskError(
            f"no Python {minor} interpreter on this machine (looked at PATH, "
            f"{_pyenv_root()}/versions and uv); get one with `uv python install {minor}` "
            f"or `pyenv install {minor}`")
    return found


def _uv_binary() -> str | None:
    """uv from PATH, else the binary the `uv` wheel installs beside this interpreter."""
    exe = shutil.which("uv")
    if exe:
        return exe
    try:
        from uv import find_uv_bin
        return find_uv_bin()
    except Exception:
        return None


def uv_binary() -> str:
    exe = _uv_binary()
    if not exe:
        raise TaskError("uv is not installed; run `python -m pip install uv`")
    return exe
