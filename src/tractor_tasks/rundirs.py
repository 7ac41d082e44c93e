"""Where runs keep things: the target's state dir and each run's private dir.

This module owns every name of the on-disk layout (as pytest's cache provider owns
`.pytest_cache`): the others use its constants and paths, and a test
(tests/test_rundirs.py) fails on a file name spelled anywhere else in src/ (the
probe, which runs in the target's interpreter, keeps its own, checked equal to these).

    <target>/.tractor-tasks/          made at once, with .gitignore, CACHEDIR.TAG, README
        runs/<run id>/                one per run, locked while the run is going
            junit.xml outcome.json    the merged result; run.json summary.txt trace.json
            pass-1/ pass-2/ ...       one per pytest start (a resume after a hang starts
                                      another): command.txt output.log current
                                      results.jsonl (the probe's log: probelog.py
                                      reads it) session.json stacks*.txt tmp/ cache/
            shard-1/pass-1/ ...       when the run is split into shards (collect/: the
                                      plan's `--co` pass; units.json shard.json)
            confirm-1/ baseline/      the verdict's re-runs, each with its pass dirs
        last -> runs/<id>             the latest `invoke` run
        cells/<slug>/last -> ...      the latest run of a nox cell
        cells/<slug>/pytest-cache/    the cell's own pytest cache (its lastfailed)
        baseline/<commit>/            the verdict's read-only export of a baseline commit
        history.sqlite                the results history
        history.sqlite.pending-*.json rows kept while the history was locked
        venv-3.13.lock                cells of one minor sync their venv one at a time

Elsewhere: the durations file `invoke durations` writes, a venv's sync stamp and
bind-space cache, the user cache's interpreters.json, a baseline export's marker, the
CI matrix file, and pytest's own cache dir and lastfailed file (read only).

A private dir (`$TMPDIR/tt-XXXX`, short: UDS paths are length-capped) is each
run's XDG_RUNTIME_DIR and TMPDIR. A marker file in it names the target and the
supervisor, so the dirs of runs that are provably over (SIGKILLed supervisor) are
found again and removed, and nobody else's are touched.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


from .errors import TaskError
from .fsutil import atomic_write, open_lock

# `Target` (target.py) is named in annotations only, never imported: target.py imports
# what imports this module, and shutil and tempfile load only when used

STATE_DIR = ".tractor-tasks"      # <target>/.tractor-tasks: State
# the tool's own files outside the state dir, named here too
DURATIONS_DEFAULT = ".tractor-tasks-durations.json"  # `invoke durations`' file (committed)
VENV_STAMP = ".tractor-tasks-synced"        # in a venv: the lock it was synced from
BINDSPACE_CACHE = ".tractor-tasks-bindspace.json"  # in a venv, next to uv's files
INTERPRETERS_CACHE = "interpreters.json"    # in the user's cache dir: found interpreters
EXPORT_COMPLETE = ".tt-export-complete"     # in a baseline export: it is whole
MATRIX_FILE = "matrix.json"                 # the CI matrix job's output (an artifact)
PYTEST_CACHE = ".pytest_cache"              # pytest's cache dir when nothing moves it
LASTFAILED = ("v", "cache", "lastfailed")   # pytest's lastfailed file in a cache dir

KEEP_RUNS = 20
RUN_ID = re.compile(r"\d{8}-\d{6}-\d+-\d+")   # YYYYMMDD-HHMMSS-PID-N, as _new_run names them
PRIVATE_PREFIX = "tt-"
PRIVATE_MARKER = ".tractor-tasks-run"
_README = """This directory is made by tractor-tasks: run results, per-cell pytest caches and
the results history of this checkout. Nothing in it is meant to be committed; it is
safe to delete (the history goes with it).
"""


def lastfailed_path(cache_dir: Path) -> Path:
    """pytest's lastfailed file in a pytest cache dir."""
    return Path(cache_dir).joinpath(*LASTFAILED)


# -- files beside a history file (the state dir's, or a CI merge's) ------------------
HISTORY_GLOB = "*.sqlite"   # history files in a dir of CI artifacts
HISTORY_PENDING, HISTORY_CORRUPT, HISTORY_BAD = ".pending-", ".corrupt-", ".bad"


def history_pending(db: Path, key: str | None = None) -> Path:
    """Rows kept while the history was locked (`key`: a run id made safe); without a
    key, the glob pattern of them all (a name, for db.parent.glob)."""
    return db.with_name(f"{db.name}{HISTORY_PENDING}{'*' if key is None else key}.json")


def history_corrupt(db: Path, stamp: str) -> Path:
    """Where an unreadable history file is moved aside."""
    return db.with_name(f"{db.name}{HISTORY_CORRUPT}{stamp}")


def history_bad(path: Path) -> Path:
    """Where unreadable pending rows are moved aside."""
    return path.with_name(path.name + HISTORY_BAD)


class State:
    """The target's `.tractor-tasks` dir."""
    RUNS, CELLS, LAST, BASELINE = "runs", "cells", "last", "baseline"
    BASELINE_VENVS = "venvs"
    HISTORY, CELL_CACHE = "history.sqlite", "pytest-cache"
    GITIGNORE, CACHEDIR_TAG, README = ".gitignore", "CACHEDIR.TAG", "README.md"

    def __init__(self, target: Target):
        self.target = target
        self.path = target.root / STATE_DIR

    def check(self, slug: str | None = None, commit: str | None = None) -> None:
        """The state dir and the dirs in it we write to are real dirs of the target, never
        links: a run would write through one and its prune delete what is behind it.
        Refused with one line before anything is written."""
        paths = [self.path, self.runs, self.cells, self.baseline, self.baseline_venvs]
        if slug:
            paths += [self.cell_dir(slug), self.cell_cache(slug)]
        if commit:
            paths.append(self.baseline_dir(commit))
        for path in paths:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as err:
                raise TaskError(f"error: cannot look at {path} ({err.strerror or err})") from None
            if stat.S_ISLNK(st.st_mode):
                raise TaskError(f"error: {path} is a symlink; tractor-tasks keeps its state only "
                                "in real directories inside the target: remove the link "
                                f"(`rm {path}`) and rerun")
            if not stat.S_ISDIR(st.st_mode):
                raise TaskError(f"error: cannot make {path} (a file is in its place); move "
                                "what is in its way and rerun")

    def ensure(self, slug: str | None = None) -> Path:
        """Create it whole or not at all (a temp dir renamed into place)."""
        self.check(slug)
        try:
            return self._ensure()
        except OSError as err:
            raise TaskError(f"cannot make {self.path} ({err.strerror or err}); "
                            "move what is in its way or make the target writable") from None

    def _ensure(self) -> Path:
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(20, "a file is in its place")
        if self.path.is_dir():
            return self.path
        import shutil
        import tempfile
        tmp = Path(tempfile.mkdtemp(prefix=f"{STATE_DIR}-", dir=self.path.parent))
        atomic_write(tmp / self.GITIGNORE, "# created by tractor-tasks: never committed\n*\n")
        atomic_write(tmp / self.CACHEDIR_TAG, "Signature: 8a477f597d28d172789f06886806bc55\n"
                     "# This file is a cache directory tag created by tractor-tasks.\n")
        atomic_write(tmp / self.README, _README)
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(self.path)
        except OSError:  # someone else made it first
            shutil.rmtree(tmp, ignore_errors=True)
        return self.path

    @property
    def runs(self) -> Path:
        return self.path / self.RUNS

    def run_files(self, name: str, deep: bool = False) -> list[Path]:
        """A file of every run dir (`runs/*/<name>`; `deep`: at any depth in them)."""
        return sorted(self.runs.glob(f"**/{name}" if deep else f"*/{name}")) \
            if self.runs.is_dir() else []

    @property
    def cells(self) -> Path:
        return self.path / self.CELLS

    def cell_links(self) -> list[Path]:
        """Every cell's `last` link."""
        return sorted(self.cells.glob(f"*/{self.LAST}"))

    def cell_caches(self) -> list[Path]:
        """Every cell's own pytest cache dir."""
        return sorted(self.cells.glob(f"*/{self.CELL_CACHE}"))

    def cell_cache(self, slug: str) -> Path:
        """Kept across runs: a cell's own pytest cache (its lastfailed)."""
        return self.cell_dir(slug) / self.CELL_CACHE

    @property
    def baseline(self) -> Path:
        return self.path / self.BASELINE

    def baseline_dir(self, commit: str) -> Path:
        return self.baseline / commit

    @property
    def baseline_venvs(self) -> Path:
        """Venvs synced from a baseline's own uv.lock (when it differs from the tree's)."""
        return self.baseline / self.BASELINE_VENVS

    def baseline_venv(self, lock_hash: str, venv: str) -> Path:
        """`venv`: the name of the target's own venv for the minor (py313)."""
        return self.baseline_venvs / f"lock-{lock_hash}-{venv}"

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    def cell_dir(self, slug: str) -> Path:
        return self.cells / slug

    def last_link(self, slug: str | None = None) -> Path:
        return self.cell_dir(slug) / self.LAST if slug else self.path / self.LAST

    @contextmanager
    def venv_lock(self, minor: str):
        """Cells of one minor share one venv: sync it one at a time."""
        path = self.ensure() / f"venv-{minor}.lock"
        try:
            f = open_lock(path)  # a link planted there is refused, never written
        except OSError as err:
            raise TaskError(f"cannot write {path} ({err.strerror or err}); make the "
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
            if _locked(d / RunDir.LOCK):
                out.append(d)
        return out

    def new_run(self, slug: str | None = None) -> RunDir:
        """A fresh run dir, locked, and `last` pointed at it."""
        self.ensure(slug)
        link = self.last_link(slug)
        if os.path.lexists(link) and not link.is_symlink():
            raise TaskError(f"error: {link} is not the symlink tractor-tasks keeps there "
                            "(something replaced it); move it out of the way and rerun")
        try:
            return self._new_run(slug)
        except OSError as err:
            raise TaskError(f"cannot make a run dir in {self.runs} "
                            f"({err.strerror or err}); make the target writable") from None

    def _new_run(self, slug: str | None) -> RunDir:
        self.runs.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # the name is the run's id in the history, which CI jobs merge: the random part
        # keeps two jobs that start in the same second with the same pid apart
        for i in range(1000):
            path = self.runs / f"{stamp}-{os.getpid()}-{os.urandom(3).hex()}"
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

    def resolve_last(self, link: Path) -> Path | None:
        """Where a `last` link points, when that is a dir inside this state dir (a run
        dir of ours); None for anything else (a dangling link, one leading outside)."""
        try:
            dest = link.resolve(strict=True)
            base = self.path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return dest if dest.is_relative_to(base) and dest != base and dest.is_dir() else None

    def prune(self, keep: int = KEEP_RUNS) -> None:
        """Drop old run dirs: only what is provably one of ours (named as we name run dirs,
        a real dir with its lock or run.json in it), never a symlink, never through one,
        never a running one, never one a `last` link points at."""
        try:
            self.check()
        except TaskError:
            return
        if not self.runs.is_dir():
            return
        pointed = {p.resolve() for p in [self.last_link(), *self.cell_links()]
                   if p.is_symlink()}
        dirs = sorted((d for d in self.runs.iterdir() if _is_run_dir(d)),
                      key=lambda d: tuple(int(x) for x in d.name.split("-")))  # -10 after -9
        for d in dirs[:-keep] if keep else dirs:
            if d.resolve() in pointed or _locked(d / RunDir.LOCK):
                continue
            import shutil
            shutil.rmtree(d, ignore_errors=True)


def _is_run_dir(d: Path) -> bool:
    """A dir this tool made for a run: its name, a real dir, a run's own file in it."""
    if not RUN_ID.fullmatch(d.name):
        return False
    try:
        if not stat.S_ISDIR(os.lstat(d).st_mode):
            return False
        return any(stat.S_ISREG(os.lstat(d / name).st_mode)
                   for name in (RunDir.LOCK, RunDir.RUN) if os.path.lexists(d / name))
    except OSError:
        return False


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
        self._lock_file = open_lock(self.path / self.LOCK)
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
        base = self.shard_dir(shard) if shard else self.path
        if phase:
            base = base / phase
        d = base / f"{PASS_PREFIX}{number}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @staticmethod
    def confirm_phase(round_: int) -> str:
        """The verdict's confirming re-run dir name (`phase` of pass_dir)."""
        return f"{RunDir.CONFIRM_PREFIX}{round_}"

    @staticmethod
    def shard_dirs(run_dir: Path) -> list[Path]:
        return sorted(Path(run_dir).glob(f"{RunDir.SHARD_PREFIX}*"))

    @staticmethod
    def phase_dirs(run_dir: Path) -> list[Path]:
        """The verdict's phase dirs: confirm-N by number, the baseline, then the second
        opinion's alone-N by number and its baseline-2."""
        def numbered(prefix: str) -> list[Path]:
            def number(d: Path) -> int:
                tail = d.name[len(prefix):]
                return int(tail) if tail.isdigit() else 0
            return sorted(Path(run_dir).glob(f"{prefix}*"), key=number)
        base, again = (Path(run_dir) / RunDir.BASELINE_PHASE,
                       Path(run_dir) / f"{RunDir.BASELINE_PHASE}-2")
        return (numbered(RunDir.CONFIRM_PREFIX) + ([base] if base.is_dir() else [])
                + numbered(f"{RunDir.ALONE_PHASE}-")
                + ([again] if again.is_dir() else []))

    LOCK, COLLECT = "lock", "collect"   # held while the run goes; the -n/--shard `--co` pass
    SHARD_PREFIX, CONFIRM_PREFIX, BASELINE_PHASE = "shard-", "confirm-", "baseline"
    ALONE_PHASE = "alone"   # the second opinion: a regression in a pytest of its own
    JUNIT, OUTCOME, RUN, TRACE = "junit.xml", "outcome.json", "run.json", "trace.json"
    UNITS, CONTENTION, SHARD = "units.json", "contention.json", "shard.json"  # -n, CI jobs
    SUMMARY = "summary.txt"   # the run's printed summary (verdict, failures): a CI artifact

    @property
    def junit(self) -> Path:
        return self.path / self.JUNIT

    @property
    def outcome(self) -> Path:
        return self.path / self.OUTCOME

    @property
    def run_json(self) -> Path:
        return self.path / self.RUN

    @property
    def collect(self) -> Path:
        return self.path / self.COLLECT

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    def shard_dir(self, k: int) -> Path:
        return self.path / f"{self.SHARD_PREFIX}{k}"


class PassDir:
    """One pytest start's dir and the names of its files (spelled here only).
    The probe writes the first group with its own literals (a test checks they are
    these), the pass runner and the supervisor the rest."""
    SESSION, COLLECTED, RESULTS = "session.json", "collected.json", "results.jsonl"
    SCOPES = "scopes.json"
    CURRENT, FINISHED, PROBE_STACKS = "current", "finished.json", "stacks-*.txt"
    COMMAND, OUTPUT, SELECT, DUMP = "command.txt", "output.log", "select.json", "stacks.txt"
    STOP = "stop.json"    # how the pass ended (passes.py): hung, timeout, interrupted
    SHM_BEFORE, SHM_AFTER = "shm-before.json", "shm.json"   # a run on the host's /dev/shm
    FOOTPRINTS, PROCS = "footprints", "procs.json"   # the recorder's files; every process seen
    SHM_SEEN = "shm-seen.json"                               # ... what the run was seen holding
    # per-test CPU and RSS: the supervisor's samples; costs.jsonl is where an older
    # probe wrote its own (now "costs" events in results.jsonl)
    COSTS, TREE_COSTS = "costs.jsonl", "tree-costs.json"
    TMP, CACHE = "tmp", "cache"   # what a contained run wrote to /tmp; its XDG_CACHE_HOME

    def __init__(self, path: Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    session = property(lambda self: self.path / self.SESSION)
    collected = property(lambda self: self.path / self.COLLECTED)
    scopes = property(lambda self: self.path / self.SCOPES)
    results = property(lambda self: self.path / self.RESULTS)
    current = property(lambda self: self.path / self.CURRENT)
    finished = property(lambda self: self.path / self.FINISHED)
    command = property(lambda self: self.path / self.COMMAND)
    output = property(lambda self: self.path / self.OUTPUT)
    select = property(lambda self: self.path / self.SELECT)
    dump = property(lambda self: self.path / self.DUMP)
    stop = property(lambda self: self.path / self.STOP)
    costs = property(lambda self: self.path / self.COSTS)
    tree_costs = property(lambda self: self.path / self.TREE_COSTS)
    tmp = property(lambda self: self.path / self.TMP)
    cache = property(lambda self: self.path / self.CACHE)

    def probe_stacks(self) -> list[Path]:
        return sorted(self.path.glob(self.PROBE_STACKS))


PASS_PREFIX = "pass-"


def pass_dirs(lane: Path) -> list[Path]:
    """A lane's `pass-N` dirs (a run dir, a shard's, a verdict phase's), by number."""
    n = len(PASS_PREFIX)
    found = [d for d in lane.glob(f"{PASS_PREFIX}*") if d.name[n:].isdigit()]
    return sorted(found, key=lambda d: int(d.name[n:]))


# -- private dirs ---------------------------------------------------------------

def make_private_dir(target: Target) -> Path:
    """A new private runtime/temp dir for one pytest start, marked as ours."""
    import psutil  # here: `invoke lastfailed` starts without it
    import tempfile
    d = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))
    me = psutil.Process()
    atomic_write(d / PRIVATE_MARKER, json.dumps(
        {"root": str(target.root), "pid": me.pid, "create_time": me.create_time()}))
    return d


def _marker(d: Path) -> dict | None:
    try:
        data = json.loads((d / PRIVATE_MARKER).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _supervisor_alive(pid, create_time) -> bool:
    import psutil
    try:
        p = psutil.Process(int(pid))
        return abs(p.create_time() - float(create_time)) <= 0.01 and \
            p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError, TypeError):
        return False


def stale_private_dirs(target: Target) -> list[Path]:
    """Private dirs of this target's runs whose supervisor is gone."""
    out = []
    import tempfile
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
        import shutil
        shutil.rmtree(d, onerror=retry)
        if not d.exists():
            return True
    return False
