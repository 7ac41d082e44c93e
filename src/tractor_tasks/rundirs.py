"""Where runs keep things: the target's state dir and each run's private dir.

One object owns the on-disk layout (as pytest's cache provider does):

    <target>/.tractor-tasks/          made at once, with .gitignore, CACHEDIR.TAG, README
        runs/<run id>/                one per run, locked while the run is going
            junit.xml outcome.json    the merged result
            pass-1/ pass-2/ ...       one per pytest start (a resume after a hang starts
                                      another): command.txt output.log current
                                      results.jsonl session.json stacks*.txt
            shard-1/pass-1/ ...       when the run is split into shards
        last -> runs/<id>             the latest `invoke` run
        cells/<slug>/last -> ...      the latest run of a nox cell
        cells/<slug>/pytest-cache/    the cell's own pytest cache (its lastfailed)
        history.sqlite                the results history
        venv-3.13.lock                cells of one minor sync their venv one at a time

A private dir (`$TMPDIR/tt-XXXX`, short: UDS paths are length-capped) is each
run's XDG_RUNTIME_DIR and TMPDIR. A marker file in it names the target and the
supervisor, so the dirs of runs that are provably over (SIGKILLed supervisor) are
found again and removed, and nobody else's are touched.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from .errors import TaskError
from .target import Target

KEEP_RUNS = 20
PRIVATE_PREFIX = "tt-"
PRIVATE_MARKER = ".tractor-tasks-run"
_README = """This directory is made by tractor-tasks: run results, per-cell pytest caches and
the results history of this checkout. Nothing in it is meant to be committed; it is
safe to delete (the history goes with it).
"""


class State:
    """The target's `.tractor-tasks` dir."""

    def __init__(self, target: Target):
        self.target = target
        self.path = target.state_dir

    def ensure(self) -> Path:
        """Create it whole or not at all (a temp dir renamed into place)."""
        try:
            return self._ensure()
        except OSError as err:
            raise TaskError(f"error: cannot make {self.path} ({err.strerror or err}); "
                            "move what is in its way or make the target writable") from None

    def _ensure(self) -> Path:
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(20, "a file is in its place")
        if self.path.is_dir():
            return self.path
        tmp = Path(tempfile.mkdtemp(prefix=".tractor-tasks-", dir=self.path.parent))
        (tmp / ".gitignore").write_text("# created by tractor-tasks: never committed\n*\n")
        (tmp / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n"
                                          "# This file is a cache directory tag created by "
                                          "tractor-tasks.\n")
        (tmp / "README.md").write_text(_README)
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(self.path)
        except OSError:  # someone else made it first
            shutil.rmtree(tmp, ignore_errors=True)
        return self.path

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    @property
    def history(self) -> Path:
        return self.path / "history.sqlite"

    def cell_dir(self, slug: str) -> Path:
        return self.path / "cells" / slug

    def last_link(self, slug: str | None = None) -> Path:
        return self.cell_dir(slug) / "last" if slug else self.path / "last"

    @contextmanager
    def venv_lock(self, minor: str):
        """Cells of one minor share one venv: sync it one at a time."""
        path = self.ensure() / f"venv-{minor}.lock"
        try:
            f = open(path, "w")
        except OSError as err:
            raise TaskError(f"error: cannot write {path} ({err.strerror or err}); make the "
                            "target writable") from None
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def running(self) -> list[Path]:
        """Run dirs whose run is going right now (their lock is held)."""
        out = []
        for d in sorted(self.runs.glob("*")) if self.runs.is_dir() else []:
            if _locked(d / "lock"):
                out.append(d)
        return out

    def new_run(self, slug: str | None = None) -> RunDir:
        """A fresh run dir, locked, and `last` pointed at it."""
        self.ensure()
        try:
            return self._new_run(slug)
        except OSError as err:
            raise TaskError(f"error: cannot make a run dir in {self.runs} "
                            f"({err.strerror or err}); make the target writable") from None

    def _new_run(self, slug: str | None) -> RunDir:
        self.runs.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            path = self.runs / f"{stamp}-{os.getpid()}-{i}"
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        run = RunDir(path, slug)
        run.lock()
        link = self.last_link(slug)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".last-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(path, link.parent))
        os.replace(tmp, link)
        self.prune()
        return run

    def prune(self, keep: int = KEEP_RUNS) -> None:
        """Drop old run dirs: never a running one, never one a `last` link points at."""
        if not self.runs.is_dir():
            return
        pointed = {p.resolve() for p in [self.last_link(), *self.path.glob("cells/*/last")]
                   if p.is_symlink()}
        dirs = sorted(self.runs.iterdir())
        for d in dirs[:-keep] if keep else dirs:
            if d.resolve() in pointed or _locked(d / "lock"):
                continue
            shutil.rmtree(d, ignore_errors=True)


def _locked(lock: Path) -> bool:
    try:
        with open(lock, "r") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


@dataclass
class RunDir:
    path: Path
    slug: str | None = None
    _lock_file: object = None

    def lock(self) -> None:
        self._lock_file = open(self.path / "lock", "w")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def pass_dir(self, number: int, shard: int | None = None, phase: str | None = None
                 ) -> Path:
        """`pass-N`, under `shard-K/` for a shard and under the verdict's phase dir
        (`confirm-N/`, `baseline/`) for its passes."""
        base = self.path / f"shard-{shard}" if shard else self.path
        if phase:
            base = base / phase
        d = base / f"pass-{number}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def junit(self) -> Path:
        return self.path / "junit.xml"

    @property
    def outcome(self) -> Path:
        return self.path / "outcome.json"


# -- private dirs ---------------------------------------------------------------

def make_private_dir(target: Target) -> Path:
    """A new private runtime/temp dir for one pytest start, marked as ours."""
    d = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))
    me = psutil.Process()
    (d / PRIVATE_MARKER).write_text(json.dumps(
        {"root": str(target.root), "pid": me.pid, "create_time": me.create_time()}))
    return d


def _marker(d: Path) -> dict | None:
    try:
        data = json.loads((d / PRIVATE_MARKER).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _supervisor_alive(pid, create_time) -> bool:
    try:
        p = psutil.Process(int(pid))
        return abs(p.create_time() - float(create_time)) <= 0.01 and \
            p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError, TypeError):
        return False


def stale_private_dirs(target: Target) -> list[Path]:
    """Private dirs of this target's runs whose supervisor is gone."""
    out = []
    base = Path(tempfile.gettempdir())
    try:
        candidates = sorted(base.glob(f"{PRIVATE_PREFIX}*"))
    except OSError:
        return []
    for d in candidates:
        try:
            if d.is_symlink() or not d.is_dir():
                continue
        except OSError:
            continue
        data = _marker(d)
        if data and data.get("root") == str(target.root) and \
                not _supervisor_alive(data.get("pid"), data.get("create_time")):
            out.append(d)
    return out


def remove_private_dir(d: Path) -> bool:
    """Remove a private dir, only when its marker is there (it is one of ours). The
    overlay's work dir inside it is left mode 000 by the kernel: made ours again first."""
    if _marker(d) is None:
        return False

    def retry(func, path, exc):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)
        except OSError:
            pass
    for _ in range(2):
        shutil.rmtree(d, onerror=retry)
        if not d.exists():
            return True
    return False
