"""The results history: every test outcome of every run and matrix cell, in one SQLite file.

Tests are keyed by their stable id (results.stable_id: memory addresses masked), on
the way in and on the way out, so a test matches itself in the next run.

It answers the questions a single run cannot: how long does a test usually take
(shard balancing), what did it do lately across cells (`recent`), and which tests
flip between passing and failing in a cell (`flaky`, with ready-to-paste rules).
The durations file it exports is durations.py's format; JUnit in and out is junit.py.

Several processes (matrix cells) write at once: WAL journal, a busy timeout, write
transactions taken with BEGIN IMMEDIATE and retried while the file is locked.
A connection is opened per operation, so a History survives fork(). A run whose
rows still meet a lock after the wait keeps them in a pending file beside the
database (`history.sqlite.pending-<run id>.json`); the next write that gets the lock
adds them and removes the file. Costs are clamped on write and on read: a negative,
infinite or absurd (10^6 s or more) duration counts as 0 when written and is left out
when read; such a CPU time, or a negative RSS, is unknown (NULL).
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import sqlite3
import stat
import statistics
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby, pairwise
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import durations as durations_file, rundirs
from .durations import TestCost, sane_seconds
from .errors import TaskError
from .results import stable_id
from .status import TestOutcome
from .target import id_glob_body, under_tests
from .fsutil import atomic_write

SCHEMA_VERSION = 4   # 2: verdict, work-tree state; 3: per-test cpu, rss; per-run cores, freq
                     # 4: per-run environment (interpreter, lock, image), machine class
APPLICATION_ID = 0x74727474  # "trtt": marks the file as a tractor-tasks history
# derived from the one vocabulary (status.py)
OUTCOMES = tuple(o.value for o in TestOutcome)
TIMED = tuple(o.value for o in TestOutcome if o.timed)   # durations that mean something
PASS = {o.value for o in TestOutcome if o.flip == "pass"}  # what a flip flips between
FAIL = {o.value for o in TestOutcome if o.flip == "fail"}

FOOTPRINTS_KEPT = 5   # footprints kept per test and cell
BUSY_SECONDS = 10.0   # sqlite's own wait for a lock, per statement
LOCK_SECONDS = 60.0   # our retries on top of it, per operation

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        run_id     TEXT PRIMARY KEY,
        started    REAL NOT NULL,
        finished   REAL NOT NULL,
        kind       TEXT NOT NULL,
        cell       TEXT NOT NULL DEFAULT '',
        minor      TEXT NOT NULL DEFAULT '',
        tpt        TEXT NOT NULL DEFAULT '',
        spawn      TEXT NOT NULL DEFAULT '',
        commit_sha TEXT,
        load       REAL,
        host       TEXT NOT NULL DEFAULT '',
        tree       TEXT NOT NULL DEFAULT '',
        cores      INTEGER,
        freq       REAL,
        environ    TEXT NOT NULL DEFAULT '',
        machine    TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS runs_started ON runs(started)",
    # minor/tpt/spawn/started are copied from the run: every per-test query is then
    # one index range on this table, no join needed.
    """CREATE TABLE IF NOT EXISTS results (
        id        INTEGER PRIMARY KEY,
        run_id    TEXT NOT NULL REFERENCES runs(run_id),
        nodeid    TEXT NOT NULL,
        minor     TEXT NOT NULL DEFAULT '',
        tpt       TEXT NOT NULL DEFAULT '',
        spawn     TEXT NOT NULL DEFAULT '',
        started   REAL NOT NULL,
        outcome   TEXT NOT NULL,
        duration  REAL NOT NULL,
        flaky     TEXT NOT NULL DEFAULT '',
        signature TEXT NOT NULL DEFAULT '',
        cpu       REAL,
        rss       INTEGER,
        verdict   TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS results_test ON results(nodeid, started)",
    "CREATE INDEX IF NOT EXISTS results_started ON results(started)",
    "CREATE INDEX IF NOT EXISTS results_run ON results(run_id)",
)
# what each version adds to the one before it (an old file is brought up to date in place;
# rows from before 3 have no costs: NULL, unknown)
_MIGRATIONS = {
    2: ("ALTER TABLE runs ADD COLUMN tree TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE results ADD COLUMN verdict TEXT NOT NULL DEFAULT ''"),
    3: ("ALTER TABLE results ADD COLUMN cpu REAL",
        "ALTER TABLE results ADD COLUMN rss INTEGER",
        "ALTER TABLE runs ADD COLUMN cores INTEGER",
        "ALTER TABLE runs ADD COLUMN freq REAL"),
    4: ("ALTER TABLE runs ADD COLUMN environ TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN machine TEXT NOT NULL DEFAULT ''"),
}


@dataclass
class RunRow:
    run_id: str            # unique (uuid hex)
    started: float         # unix time
    finished: float
    kind: str              # "run" (invoke), "cell" (nox), "shard", "import" (from JUnit)
    cell: str = ""         # nox session name when kind == "cell"
    minor: str = ""        # "3.13"
    tpt: str = ""          # "tcp" | "uds"
    spawn: str = ""        # "trio" | "mp_spawn" | ...
    commit: str | None = None
    load: float | None = None   # the machine's load during the run
    host: str = ""
    tree: str = ""         # "" for a clean work tree at `commit`, else a hash of its edits
    cores: int | None = None    # os.cpu_count() of the machine
    freq: float | None = None   # CPU frequency / its maximum (machine_freq()), None unknown
    environ: str = ""      # "python=3.13.1;lock=ab12..;image=ubuntu24/2025..": environment()
    machine: str = ""      # the machine class (ci_event.machine_class), "" unknown


@dataclass
class TestRow:
    __test__ = False       # not a pytest test class, despite the name
    nodeid: str
    outcome: str           # one of OUTCOMES
    duration: float
    flaky: str = ""        # "" or "known"
    signature: str = ""    # "trio.TooSlowError: deadline exceeded" (type + first message
                           # line; "HUNG" for a hang), "" for passes
    verdict: str = ""      # a failure's status.Verdict, "" for passes and old rows
    cpu: float | None = None   # CPU seconds of the test's process tree; None unknown
    rss: int | None = None     # peak RSS of the tree, bytes


@dataclass
class FlakyCandidate:
    """A test that flips between passing and failing in one cell."""
    nodeid: str
    cell: str                     # the cell's nox session name, else "3.13 tcp trio"
    minor: str
    tpt: str
    spawn: str
    flips: int                    # outcome changes between consecutive runs
    runs: int                     # passing and failing runs looked at
    signature: str                # the dominant failure signature
    signatures: tuple[str, ...] = ()  # every failure signature seen, newest first

    @property
    def rate(self) -> float:
        """Share of consecutive-run pairs that flipped: 1.0 alternates every run."""
        return self.flips / max(self.runs - 1, 1)


@dataclass
class Past:
    """One earlier outcome of a test, as the verdict reads it."""
    outcome: str
    signature: str
    commit: str | None
    tree: str
    kind: str
    verdict: str
    run_id: str
    started: float
    host: str
    environ: str = ""
    machine: str = ""


@dataclass(frozen=True)
class UnitCost:
    wall: float                  # predicted seconds
    rate: float | None           # CPU seconds per wall second; None: unmeasured
    rss: int | None = None       # the largest test's peak RSS
    tests: int = 0               # how many of its tests have a history


def aggregate(nodeids: Iterable[str], costs: dict[str, TestCost], *,
              unit: Callable[[str], str] | None = None) -> dict[str, UnitCost]:
    """Per-test costs (History.test_costs) -> per-unit predictions: per unit (a module
    by default: `unit` maps a node id to its unit), the predicted wall (the sum of its
    tests' medians) and CPU rate (CPU seconds per wall second, from the tests whose rows
    carry costs; None when none do: unmeasured). Tests without costs are left out of
    the sums; a unit none of whose tests has costs is left out."""
    unit = unit or (lambda nodeid: nodeid.split("::", 1)[0])
    groups: dict[str, list[TestCost]] = {}
    for nodeid in nodeids:
        if nodeid in costs:
            groups.setdefault(unit(nodeid), []).append(costs[nodeid])
    out = {}
    for name, cs in groups.items():
        measured = [c for c in cs if c.cpu is not None]
        wall_m = sum(c.wall for c in measured)
        rate = (sum(c.cpu for c in measured) / wall_m if wall_m > 0 else 0.0) \
            if measured else None
        rsses = [c.rss for c in cs if c.rss is not None]
        out[name] = UnitCost(sum(c.wall for c in cs), None if rate is None else round(rate, 3),
                             max(rsses) if rsses else None, len(cs))
    return out


def _cost(rows: list[tuple]) -> TestCost:
    cpus = [r[5] for r in rows if r[5] is not None]
    rsses = [r[6] for r in rows if r[6] is not None]
    return TestCost(statistics.median(r[4] for r in rows),
                    statistics.median(cpus) if cpus else None,
                    int(statistics.median(rsses)) if rsses else None)


def machine_freq(root: Path = Path("/sys/devices/system/cpu")) -> float | None:
    """The CPUs' current frequency against their maximum (mean over CPUs), where /sys
    exposes cpufreq; None elsewhere (VMs, containers often do not). A power-capped or
    throttled CPU shows as < 1, so a slow run can be told from a regression."""
    cur = maxi = 0.0
    for d in sorted(root.glob("cpu[0-9]*/cpufreq")):
        try:
            c = float((d / "scaling_cur_freq").read_text())
            m = float((d / "cpuinfo_max_freq").read_text())
        except (OSError, ValueError):
            continue
        if m > 0:
            cur, maxi = cur + c, maxi + m
    return round(cur / maxi, 3) if maxi else None


class _Corrupt(Exception):
    """The file is there but is not a readable SQLite database."""


class _StillLocked(TaskError):
    """Another writer held the file past our wait."""


class History:
    def __init__(self, path: Path, warn: Callable[[str], None] = lambda line: None):
        """Open (or create) the history at `path`.

        A file SQLite cannot read (garbage, truncated, failing its quick check) is moved
        aside to `<name>.corrupt-<timestamp>` with one warn() line and a fresh history
        starts; a history with a newer schema, a foreign SQLite file, a directory or an
        unreadable path is refused with a one-line TaskError: nothing is moved or lost.
        """
        self.path = Path(path)
        self.warn = warn
        self.lock_seconds = LOCK_SECONDS
        self._open()

    # -- opening ---------------------------------------------------------------

    def _open(self) -> None:
        self._check_real()
        if self.path.is_dir():
            raise TaskError(f"error: history {self.path} is a directory, not a database file; "
                            "move it aside (the next run starts a fresh one)", 1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TaskError(f"cannot create the history's dir {self.path.parent} "
                            f"({err.strerror or err})", 1)
        ident = _ident(self.path)
        try:
            self._guard(self._init_schema)
            return
        except _Corrupt as err:
            why = str(err)
        if _ident(self.path) == ident:  # else another process already moved it aside
            try:
                self._move_aside(why)
            except OSError as err:
                raise TaskError(f"history {self.path} is unreadable ({why}) and could "
                                f"not be moved aside ({err.strerror or err})", 1) from None
        try:
            self._guard(self._init_schema)
        except _Corrupt as err:
            raise TaskError(f"history {self.path} is unreadable even after moving the "
                            f"old file aside ({err})", 1) from None

    SIDES = ("-wal", "-shm", "-journal")   # the files SQLite keeps beside the database

    def _check_real(self) -> None:
        """The database, its side files and its dir are never links: SQLite would open
        and write what is behind one (an unrelated file made a database). Checked with
        lstat before every connection; a missing file is made here with O_NOFOLLOW|O_EXCL
        so SQLite opens the regular file we made. Refused with one line, nothing written."""
        for path in (self.path.parent, self.path, *(Path(f"{self.path}{s}") for s in self.SIDES)):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as err:
                raise TaskError(f"history {path}: {err.strerror or err}", 1) from None
            if stat.S_ISLNK(st.st_mode):
                raise TaskError(f"error: {path} is a symlink; the history is kept only in a "
                                f"real file, never written through a link: remove the link "
                                f"(`rm {path}`) and rerun", 1)
            if path != self.path.parent and not stat.S_ISREG(st.st_mode) \
                    and not (path == self.path and stat.S_ISDIR(st.st_mode)):
                raise TaskError(f"error: {path} is not a regular file (a FIFO, a device?); "
                                "move it aside and rerun", 1)
        if not os.path.lexists(self.path) and self.path.parent.is_dir():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                 | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644))
            except FileExistsError:
                self._check_real()   # made meanwhile: looked at again
            except OSError:
                pass                 # SQLite says why, in one line (_guard)

    def _init_schema(self) -> None:
        """Create the schema once; check an existing file is ours, current and intact."""
        try:
            with self._conn() as con:
                self._ensure_schema(con)
        except sqlite3.OperationalError:
            raise  # locked, cannot open: not the file's fault
        except sqlite3.DatabaseError as err:  # NOTADB, CORRUPT
            raise _Corrupt(str(err)) from None

    def _ensure_schema(self, con: sqlite3.Connection) -> None:
        version, app_id, tables = _header(con)
        if version == SCHEMA_VERSION and app_id == APPLICATION_ID:
            _quick_check(con)
            return
        self._check_foreign(version, app_id, tables)
        con.execute("PRAGMA journal_mode=WAL")  # persistent: set once, with the schema
        con.execute("BEGIN IMMEDIATE")
        version, app_id, tables = _header(con)  # another process may have won the race
        self._check_foreign(version, app_id, tables)
        if version == 0:
            for stmt in _SCHEMA:
                con.execute(stmt)
        else:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in _MIGRATIONS.get(step, ()):
                    con.execute(stmt)
        if version != SCHEMA_VERSION:
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.execute(f"PRAGMA application_id={APPLICATION_ID}")
        con.execute("COMMIT")

    def _check_foreign(self, version: int, app_id: int, tables: int) -> None:
        if version > SCHEMA_VERSION and app_id == APPLICATION_ID:
            raise TaskError(f"history {self.path} has schema version {version}, newer "
                            f"than this tractor-tasks knows ({SCHEMA_VERSION}); upgrade "
                            "tractor-tasks, or move it aside (the next run starts a fresh one)", 1)
        if tables and app_id != APPLICATION_ID:
            raise TaskError(f"error: {self.path} is an SQLite file but not a tractor-tasks "
                            "history; left as it is: move it aside (the next run starts a fresh one)", 1)

    def _move_aside(self, why: str) -> None:
        """Rename the unreadable file (and any -wal/-shm of it); never overwrite or delete."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = rundirs.history_corrupt(self.path, stamp)
        n = 0
        while any(Path(f"{dest}{s}").exists() for s in ("", "-wal", "-shm", "-journal")):
            n += 1
            dest = rundirs.history_corrupt(self.path, f"{stamp}-{n}")
        os.rename(self.path, dest)
        for suffix in ("-wal", "-shm", "-journal"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.rename(side, f"{dest}{suffix}")
        why = " ".join(why.split())  # one line, whatever sqlite said
        self.warn(f"warning: history {self.path} was unreadable ({why}); moved it aside to "
                  f"{dest.name} and started a fresh one")

    # -- connections, transactions, retries --------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        self._check_real()   # a link planted since the last connection is refused too
        con = sqlite3.connect(self.path, timeout=min(BUSY_SECONDS, self.lock_seconds),
                              isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL, much faster
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front (no upgrade deadlock)."""
        with self._conn() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def _guard(self, fn, *args):
        """Run fn, retrying while the file is locked; sqlite errors become one line."""
        deadline = time.monotonic() + self.lock_seconds
        delay = 0.01
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as err:
                if not _locked(err):
                    raise TaskError(f"history {self.path}: {err}", 1) from None
                if time.monotonic() > deadline:
                    raise _StillLocked(f"history {self.path} stayed locked for "
                                       f"{self.lock_seconds:.0f}s by another writer; try "
                                       "again", 1) from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
            except (_Corrupt, TaskError):
                raise
            except sqlite3.DatabaseError as err:
                raise TaskError(f"history {self.path} is damaged ({err}); move it "
                                "aside and the next run starts a fresh one", 1) from None

    # -- writing -------------------------------------------------------------------

    def record(self, run: RunRow, tests: Iterable[TestRow]) -> Path | None:
        """Store one run and its tests in one transaction; recording a run id again
        replaces it (so a retried or re-imported run is never counted twice). Then the
        rows earlier runs left pending are added. When the file stays locked past the
        wait, the rows go to a pending file instead: returns its path (None: stored)."""
        rows = [_result_row(run, t) for t in tests]  # before the lock: tests may be lazy
        try:
            self._guard(self._record, run, rows)
        except _StillLocked:
            return self._keep_pending(run, rows)
        self.merge_pending()
        return None

    # -- rows kept while the file was locked ----------------------------------------

    def _pending_name(self, run_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:120]
        return rundirs.history_pending(self.path, safe)

    def pending(self) -> list[Path]:
        try:
            return sorted(self.path.parent.glob(rundirs.history_pending(self.path).name))
        except OSError:
            return []

    def _keep_pending(self, run: RunRow, rows: list[tuple]) -> Path:
        from dataclasses import asdict
        path = self._pending_name(run.run_id)
        try:
            atomic_write(path, json.dumps({"run": asdict(run), "rows": rows}), code=1)
        except OSError as err:
            raise TaskError(f"history {self.path} stayed locked by another writer and its "
                            f"rows could not be kept in {path} ({err.strerror or err})",
                            1) from None
        return path

    def merge_pending(self) -> int:
        """Add the rows runs left pending while the file was locked (each file in one
        transaction, removed once stored); returns how many runs were added. Still
        locked: left for the next write. A pending file that cannot be read is moved
        aside (`.bad`), with one warn() line."""
        from .fsutil import read_bounded
        added = 0
        for path in self.pending():
            try:
                doc = json.loads(read_bounded(path))
                run = RunRow(**doc["run"])
                rows = [tuple(r) for r in doc["rows"]]
                if any(len(r) != 13 or r[0] != run.run_id for r in rows):
                    raise ValueError("rows of another run")
            except FileNotFoundError:
                continue   # another process merged it meanwhile
            except (OSError, ValueError, KeyError, TypeError) as err:
                self.warn(f"warning: pending history rows {path.name} are unreadable "
                          f"({err}); moved aside to {rundirs.history_bad(path).name}")
                try:
                    os.replace(path, rundirs.history_bad(path))
                except OSError:
                    pass
                continue
            try:
                self._guard(self._record, run, [_clamped(r) for r in rows])
            except _StillLocked:
                break
            try:
                os.unlink(path)
            except OSError:
                pass
            added += 1
        return added

    def _record(self, run: RunRow, rows: list[tuple]) -> None:
        with self._write() as con:
            con.execute("DELETE FROM results WHERE run_id = ?", (run.run_id,))
            con.execute(
                "INSERT OR REPLACE INTO runs (run_id, started, finished, kind, cell, minor, "
                "tpt, spawn, commit_sha, load, host, tree, cores, freq, environ, machine) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run.run_id, run.started, run.finished, run.kind, run.cell, run.minor,
                 run.tpt, run.spawn, run.commit, run.load, run.host, run.tree, run.cores,
                 run.freq, run.environ, run.machine))
            con.executemany(
                "INSERT INTO results (run_id, nodeid, minor, tpt, spawn, started, outcome, "
                "duration, flaky, signature, verdict, cpu, rss) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    # -- reading -------------------------------------------------------------------

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        def query():
            with self._conn() as con:
                return con.execute(sql, params).fetchall()
        return self._guard(query)

    def durations(self, nodeids: Iterable[str] | None = None, *, minor: str = "",
                  tpt: str = "", spawn: str = "", last: int = 5) -> dict[str, float]:
        """Per test, the median duration of its last `last` timed rows (passed, failed,
        error) in the given cell fields, or in any cell when that cell has none.

        Tests never seen are left out: the caller decides what unknown means.
        """
        wanted = list(nodeids) if nodeids is not None else None  # a retry re-reads it

        def query():
            with self._conn() as con:
                # rows stored before ids were normalized count under their stable id
                raw = ("SELECT DISTINCT nodeid FROM results" if wanted is None else
                       "SELECT DISTINCT nodeid FROM results WHERE nodeid LIKE '% at 0x%'")
                ids = {stable_id(n): [stable_id(n)] for n in wanted or ()}
                for (nodeid,) in con.execute(raw):
                    key = stable_id(nodeid)
                    if wanted is None or key in ids:
                        ids.setdefault(key, [key])
                        if nodeid != key:
                            ids[key].append(nodeid)
                out = {}
                for nodeid, raws in ids.items():
                    found = _last_durations(con, raws, minor, tpt, spawn, last)
                    if not found and (minor or tpt or spawn):
                        found = _last_durations(con, raws, "", "", "", last)
                    if found:
                        out[nodeid] = statistics.median(found)
                return out
        return self._guard(query)

    def test_costs(self, nodeids: Iterable[str] | None = None, *, minor: str = "",
                   tpt: str = "", spawn: str = "", last: int = 5) -> dict[str, TestCost]:
        """Per test, the medians of its last `last` timed rows in the cell (else in any
        cell, as durations() does): wall, and CPU and RSS where rows recorded them (rows
        from before schema 2 have none: cpu None means unknown, not free)."""
        wanted = set(map(stable_id, nodeids)) if nodeids is not None else None
        marks = ",".join("?" * len(TIMED))
        rows = _stable_rows(self._read(
            f"SELECT nodeid, minor, tpt, spawn, duration, cpu, rss, started, id FROM results "
            f"WHERE outcome IN ({marks})", TIMED), lambda r: (r[0], -r[7], -r[8]))
        # clamped on read too: rows written before the clamp, or by another tool
        rows = [(*r[:5], _sane_or(r[5], None), _sane_rss(r[6]), *r[7:]) for r in rows
                if sane_seconds(r[4])]
        out: dict[str, TestCost] = {}
        for nodeid, group in groupby(rows, key=lambda r: r[0]):
            if wanted is not None and nodeid not in wanted:
                continue
            group = list(group)
            mine = [r for r in group if (not minor or r[1] == minor) and
                    (not tpt or r[2] == tpt) and (not spawn or r[3] == spawn)] or group
            out[nodeid] = _cost(mine[:last])
        return out

    def recent(self, pattern: str | None = None, limit: int = 10, *,
               per_test: int | None = None) -> list[dict]:
        """Recent outcomes of the tests matching `pattern`, across cells, newest first:
        at most `limit` rows in all, or with `per_test` at most that many rows of each test.

        The pattern is a glob over node ids where only * and ? are wild ([params] stay
        literal); it matches the whole id or a tail of it after a "/" (so
        "test_x.py::test_y*" finds "tests/test_x.py::test_y[tcp]"). A bare name (no * ?,
        no "::" or "/") matches anywhere in the id: "test_parent_cancels" finds
        "tests/test_cancellation.py::test_parent_cancels[tcp]".
        """
        def query():
            with self._conn() as con:
                if pattern is not None:
                    bare = not re.search(r"[*?/]|::", pattern)
                    rx = re.compile(r".*" + re.escape(pattern) if bare else
                                    r"(?:.*/)?" + id_glob_body(pattern) + r"\Z", re.S)
                    con.create_function("idmatch", 1, lambda s: rx.match(s) is not None,
                                        deterministic=True)
                where = "WHERE idmatch(t.nodeid)" if pattern is not None else ""
                cols = ("t.nodeid, r.cell, t.minor, t.tpt, t.spawn, t.outcome, t.duration, "
                        "t.signature, t.flaky, r.commit_sha, t.started, t.run_id, t.verdict, "
                        "r.kind")
                if per_test is None:
                    cur = con.execute(f"SELECT {cols} FROM results t JOIN runs r USING (run_id) "
                                      f"{where} ORDER BY t.started DESC, t.id DESC LIMIT ?",
                                      (limit,))
                else:  # the newest `per_test` rows of every matching test
                    cur = con.execute(
                        f"SELECT * FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY "
                        "t.nodeid ORDER BY t.started DESC, t.id DESC) AS n, t.id AS i "
                        f"FROM results t JOIN runs r USING (run_id) {where}) WHERE n <= ? "
                        "ORDER BY started DESC, i DESC", (per_test,))
                keys = ("nodeid", "cell", "minor", "tpt", "spawn", "outcome", "duration",
                        "signature", "flaky", "commit", "time", "run_id", "verdict", "kind")
                return [dict(zip(keys, row)) for row in cur]
        return self._guard(query)

    def past(self, nodeids: Iterable[str], *, minor: str, tpt: str, spawn: str,
             last: int = 20) -> dict[str, list[Past]]:
        """Per test, its newest `last` rows in this cell (minor, tpt, spawn), newest first,
        with the commit and work-tree state of each run: what the verdict asks the history."""
        wanted = list(nodeids)

        def query():
            with self._conn() as con:
                out = {}
                for nodeid in wanted:
                    cur = con.execute(
                        "SELECT t.outcome, t.signature, r.commit_sha, r.tree, r.kind, "
                        "t.verdict, t.run_id, t.started, r.host, r.environ, r.machine "
                        "FROM results t "
                        "JOIN runs r USING (run_id) WHERE t.nodeid = ? AND t.minor = ? "
                        "AND t.tpt = ? AND t.spawn = ? ORDER BY t.started DESC, t.id DESC "
                        "LIMIT ?", (nodeid, minor, tpt, spawn, last))
                    rows = [Past(*row) for row in cur]
                    if rows:
                        out[nodeid] = rows
                return out
        return self._guard(query)

    def flaky(self, min_runs: int = 3, *, last: int = 30) -> list[FlakyCandidate]:
        """Tests ranked by how often they flip (passed <-> failed/error/hung/timeout)
        between consecutive runs of the same cell (minor, tpt, spawn).

        Only the newest `last` passing/failing runs per test and cell count, so a test
        fixed long ago drops off. Highest flip rate first; ties by flips, runs, node id, cell.
        """
        marks = ",".join("?" * len(PASS | FAIL))
        rows = _stable_rows(self._read(
            "SELECT nodeid, minor, tpt, spawn, outcome, signature, started, id FROM results "
            f"WHERE outcome IN ({marks})", tuple(sorted(PASS | FAIL))),
            lambda r: (*r[:4], r[6], r[7]))
        names = self._cell_names()
        found = []
        for (nodeid, minor, tpt, spawn), group in groupby(rows, key=lambda r: r[:4]):
            runs = list(group)[-last:]
            flips = sum((a[4] in PASS) != (b[4] in PASS) for a, b in pairwise(runs))
            if len(runs) < min_runs or not flips:
                continue
            sigs = tuple(r[5] for r in reversed(runs) if r[4] in FAIL and r[5])
            found.append(FlakyCandidate(
                nodeid, names.get((minor, tpt, spawn)) or _cell_label(minor, tpt, spawn),
                minor, tpt, spawn, flips, len(runs), _dominant(sigs), sigs))
        found.sort(key=lambda c: (-c.rate, -c.flips, -c.runs, c.nodeid, c.minor, c.tpt, c.spawn))
        return found

    def _cell_names(self) -> dict[tuple[str, str, str], str]:
        """(minor, tpt, spawn) -> the nox session name its newest run recorded."""
        rows = self._read("SELECT minor, tpt, spawn, cell FROM runs WHERE cell != '' "
                          "ORDER BY started")
        return {tuple(r[:3]): r[3] for r in rows}

    def clean_commits(self, *, minor: str, tpt: str, spawn: str, tree: str = "") -> set[str]:
        """The commits with a recorded run of this cell (minor, tpt, spawn) whose work
        tree was clean (`tree`: the run's state, "" or its verdict_env part): what the
        no-remote baseline rule looks for among HEAD's ancestors."""
        rows = self._read("SELECT DISTINCT commit_sha FROM runs WHERE minor = ? AND tpt = ? "
                          "AND spawn = ? AND tree = ? AND commit_sha IS NOT NULL "
                          "AND kind != 'baseline'", (minor, tpt, spawn, tree))
        return {r[0] for r in rows}

    # -- merging histories (CI artifacts, a CI cache) ------------------------------------

    def merge_from(self, paths: Iterable[Path]) -> tuple[int, int]:
        """Merge other histories (each a history.sqlite: a CI job's artifact, a restored
        cache) into this one, by run: a run id already here is left as it is, so merging
        the same file twice adds nothing. Files of any schema version up to ours are read
        (columns they lack are NULL/empty); a file that is not a tractor-tasks history is
        a one-line TaskError naming it, and nothing of it is merged. Returns (runs
        added, runs already here). The result is checkpointed (checkpoint())."""
        added = known = 0
        for path in paths:
            a, k = self._guard(self._merge_one, Path(path))
            added, known = added + a, known + k
        self.checkpoint()
        return added, known

    def _merge_one(self, path: Path) -> tuple[int, int]:
        if not path.is_file():
            raise TaskError(f"error: {path} is not a history file; give a {rundirs.State.HISTORY} "
                            "(or a directory holding them)", 2)
        if path.resolve() == self.path.resolve():
            return 0, 0
        try:
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_SECONDS)
        except sqlite3.Error as err:
            raise TaskError(f"error: cannot open history {path} ({err})", 1) from None
        try:
            try:
                version, app_id, _ = _header(src)
            except sqlite3.DatabaseError as err:
                raise TaskError(f"error: {path} is not a tractor-tasks history ({err}); "
                                "nothing of it merged", 1) from None
            if app_id != APPLICATION_ID or not 1 <= version <= SCHEMA_VERSION:
                raise TaskError(f"error: {path} is not a tractor-tasks history of schema "
                                f"1..{SCHEMA_VERSION} (application id {app_id:#x}, version "
                                f"{version}); nothing of it merged", 1)
            run_cols = _columns(src, "runs")
            res_cols = _columns(src, "results")
            runs = src.execute(f"SELECT {', '.join(_or_null(c, run_cols) for c in _RUN_COLS)} "
                               "FROM runs").fetchall()
            with self._write() as con:
                have = {r[0] for r in con.execute("SELECT run_id FROM runs")}
                new = [r for r in runs if r[0] not in have]
                con.executemany(f"INSERT INTO runs ({', '.join(_RUN_COLS)}) VALUES "
                                f"({','.join('?' * len(_RUN_COLS))})",
                                [tuple(_fill(c, v) for c, v in zip(_RUN_COLS, r)) for r in new])
                cols = ", ".join(_or_null(c, res_cols) for c in _RES_COLS)
                for r in new:
                    rows = src.execute(f"SELECT {cols} FROM results WHERE run_id = ?",
                                       (r[0],)).fetchall()
                    con.executemany(f"INSERT INTO results ({', '.join(_RES_COLS)}) VALUES "
                                    f"({','.join('?' * len(_RES_COLS))})",
                                    [tuple(_fill(c, v) for c, v in zip(_RES_COLS, row))
                                     for row in rows])
                # the new runs' footprints come along (a CI report's merged history is
                # what the cache saves: without them the next run has none)
                if new and src.execute("SELECT 1 FROM sqlite_master WHERE name='footprints'"
                                       ).fetchone():
                    con.execute(self._FOOTPRINTS)
                    for r in new:
                        con.executemany(
                            "INSERT OR REPLACE INTO footprints VALUES (?,?,?,?,?,?)",
                            src.execute("SELECT run_id, nodeid, cell, commit_sha, recorded, "
                                        "data FROM footprints WHERE run_id = ?", (r[0],)))
                    self._prune_footprints(con)
            return len(new), len(runs) - len(new)
        except sqlite3.DatabaseError as err:
            raise TaskError(f"error: history {path} is unreadable ({err}); nothing of it "
                            "merged", 1) from None
        finally:
            src.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file, so the file alone (what a CI
        cache or an artifact saves) holds every row."""
        def run():
            with self._conn() as con:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._guard(run)

    # -- export -------------------------------------------------------------

    def export_durations(self, path: Path, **cell) -> int:
        """Write the durations file (durations.py's format) for CI to commit; returns how
        many tests. `cell` takes durations()'s keywords (minor, tpt, spawn, last)."""
        found = self.durations(**cell)
        costs = self.test_costs(found, **cell)
        durations_file.write(path, found, costs)
        return len(found)

    # -- footprints (footprints.py): per test, the code it executed, by commit and cell.
    # Their own table, made on first use (older files simply have none yet).

    _FOOTPRINTS = ("CREATE TABLE IF NOT EXISTS footprints (run_id TEXT NOT NULL, "
                   "nodeid TEXT NOT NULL, cell TEXT NOT NULL, commit_sha TEXT, "
                   "recorded REAL NOT NULL, data BLOB NOT NULL, PRIMARY KEY (run_id, nodeid))")

    def record_footprints(self, run_id: str, commit: str | None, cell: str,
                          prints: dict) -> None:
        """{nodeid: footprints.Footprint} of one run; recording a run again replaces it."""
        now = time.time()
        rows = [(run_id, nodeid, cell, commit, now, fp.to_blob())
                for nodeid, fp in sorted(prints.items())]

        def write():
            with self._write() as con:
                con.execute(self._FOOTPRINTS)
                con.execute("DELETE FROM footprints WHERE run_id = ?", (run_id,))
                con.executemany("INSERT INTO footprints VALUES (?,?,?,?,?,?)", rows)
                self._prune_footprints(con)
        self._guard(write)

    @staticmethod
    def _prune_footprints(con) -> None:
        """Each test keeps its newest few per cell (selection reads the latest, the
        verdict's history rule those of its recent runs)."""
        con.execute(
            "DELETE FROM footprints WHERE rowid IN (SELECT rowid FROM (SELECT "
            "rowid, ROW_NUMBER() OVER (PARTITION BY nodeid, cell ORDER BY recorded "
            "DESC) AS n FROM footprints) WHERE n > ?)", (FOOTPRINTS_KEPT,))

    def latest_footprints(self, prefer: set[str] | None = None) -> list[tuple]:
        """[(nodeid, cell, commit, Footprint)]: each test's latest per cell; with
        `prefer` (commits, e.g. the ancestors of the base), the latest recorded at one
        of them when there is one (a run on another branch does not stand in for the
        code this branch left from)."""
        from .fprint import Footprint

        def query():
            with self._conn() as con:
                if not con.execute("SELECT 1 FROM sqlite_master WHERE name='footprints'"
                                   ).fetchone():
                    return []
                return con.execute(
                    "SELECT nodeid, cell, commit_sha, data FROM footprints "
                    "ORDER BY nodeid, cell, recorded DESC").fetchall()
        best: dict[tuple[str, str], tuple] = {}
        for n, c, sha, d in self._guard(query):
            key = (n, c)
            if key not in best or (prefer and sha in prefer and best[key][0] not in prefer):
                best[key] = (sha, d)
        return [(n, c, sha, Footprint.from_blob(d)) for (n, c), (sha, d) in sorted(best.items())]

    def footprint_commits(self) -> set[str]:
        """The commits the kept footprints were recorded at."""
        def query():
            with self._conn() as con:
                if not con.execute("SELECT 1 FROM sqlite_master WHERE name='footprints'"
                                   ).fetchone():
                    return []
                return con.execute("SELECT DISTINCT commit_sha FROM footprints").fetchall()
        return {c for (c,) in self._guard(query) if c}

    def footprints_of(self, nodeid: str, run_ids: Iterable[str]) -> dict:
        """{run_id: Footprint} of one test in the given runs (those that recorded one)."""
        from .fprint import Footprint
        wanted = list(run_ids)

        def query():
            with self._conn() as con:
                if not wanted or not con.execute(
                        "SELECT 1 FROM sqlite_master WHERE name='footprints'").fetchone():
                    return []
                marks = ",".join("?" * len(wanted))
                return con.execute(f"SELECT run_id, data FROM footprints WHERE nodeid = ? "
                                   f"AND run_id IN ({marks})", (nodeid, *wanted)).fetchall()
        return {r: Footprint.from_blob(d) for r, d in self._guard(query)}


# -- helpers: rows and queries ---------------------------------------------------------

def _ident(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _locked(err: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock: worth waiting for, unlike any other error."""
    name = getattr(err, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(err)


def _header(con: sqlite3.Connection) -> tuple[int, int, int]:
    version = con.execute("PRAGMA user_version").fetchone()[0]
    app_id = con.execute("PRAGMA application_id").fetchone()[0]
    tables = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return version, app_id, tables


def _quick_check(con: sqlite3.Connection) -> None:
    """Pages a truncated or scribbled-on file lost show up here, not at some later write."""
    problems = [r[0] for r in con.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise _Corrupt("; ".join(problems)[:200])


def _result_row(run: RunRow, t: TestRow) -> tuple:
    if t.outcome not in OUTCOMES:
        raise ValueError(f"outcome {t.outcome!r} of {t.nodeid} is not one of {OUTCOMES}")
    return _clamped((run.run_id, stable_id(t.nodeid), run.minor, run.tpt, run.spawn, run.started,
                     t.outcome, t.duration, t.flaky, t.signature, t.verdict, t.cpu, t.rss))


def _clamped(row: tuple) -> tuple:
    """A results row with sane costs: a duration that is not a number of seconds under
    MAX_SECONDS is 0; such a CPU time, or an RSS that is not a whole number of bytes
    0 or more, is unknown (None)."""
    *head, duration, flaky, sig, verdict, cpu, rss = row
    return (*head, _sane_or(duration, 0.0), flaky, sig, verdict, _sane_or(cpu, None),
            _sane_rss(rss))


def _sane_or(value, default):
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return value if sane_seconds(value) else default


def _sane_rss(value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value) if 0 <= value < 2 ** 53 else None


def _last_durations(con, nodeids: list[str], minor: str, tpt: str, spawn: str,
                    last: int) -> list[float]:
    """The newest `last` timed durations of a test stored under any of `nodeids` (its
    stable id and the raw ids of rows stored before ids were normalized)."""
    marks = ",".join("?" * len(TIMED))
    ids = ",".join("?" * len(nodeids))
    cur = con.execute(
        f"SELECT duration FROM results WHERE nodeid IN ({ids}) AND outcome IN ({marks}) "
        "AND (? = '' OR minor = ?) AND (? = '' OR tpt = ?) AND (? = '' OR spawn = ?) "
        "ORDER BY started DESC, id DESC LIMIT ?",
        (*nodeids, *TIMED, minor, minor, tpt, tpt, spawn, spawn, last))
    return [r[0] for r in cur if sane_seconds(r[0])]


def _stable_rows(rows: list[tuple], key) -> list[tuple]:
    """Rows whose first column is a node id, with it made stable (rows stored before ids
    were normalized join their test), sorted by `key`."""
    return sorted(((stable_id(r[0]), *r[1:]) for r in rows), key=key)


def _cell_label(minor: str, tpt: str, spawn: str) -> str:
    return " ".join(p for p in (minor, tpt, spawn) if p) or "any cell"


def _dominant(signatures: tuple[str, ...]) -> str:
    """The most common signature; ties go to the newest (signatures are newest first)."""
    if not signatures:
        return ""
    counts = Counter(signatures)
    return max(signatures, key=lambda s: (counts[s], -signatures.index(s)))


_RUN_COLS = ("run_id", "started", "finished", "kind", "cell", "minor", "tpt", "spawn",
             "commit_sha", "load", "host", "tree", "cores", "freq", "environ", "machine")
_RES_COLS = ("run_id", "nodeid", "minor", "tpt", "spawn", "started", "outcome", "duration",
             "flaky", "signature", "cpu", "rss", "verdict")
_NOT_NULL = {"cell", "minor", "tpt", "spawn", "host", "tree", "environ", "machine", "flaky",
             "signature", "verdict"}


def _columns(con, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def _or_null(col: str, have: set[str]) -> str:
    return col if col in have else "NULL"


def _fill(col: str, value):
    return "" if value is None and col in _NOT_NULL else value


# -- flaky rules -----------------------------------------------------------------------------

def flaky_toml(candidates: Iterable[FlakyCandidate], tests_dir: str = "tests", *,
               table: str = "flaky") -> str:
    """Ready-to-paste [[tool.tractor-tasks.flaky]] entries, one per (test glob, error).

    Param variants of one test share an entry; a test flipping in several cells gets one
    entry whose note names each cell. A candidate with no failure signature gets a
    comment, not a match-everything rule.
    """
    entries: dict[tuple[str, str], list[str]] = {}
    skipped = []
    for c in candidates:
        if not c.signature:
            skipped.append(f"# {c.nodeid}: no failure signature recorded, no entry")
            continue
        key = (_test_glob(c.nodeid, tests_dir), _error_regex(c.signatures or (c.signature,)))
        note = f"flips {c.flips} of {c.runs} runs in {c.cell}"
        if note not in entries.setdefault(key, []):
            entries[key].append(note)
    out = []
    for (test, error), notes in entries.items():
        out += [f"[[tool.tractor-tasks.{table}]]", f"test = {_toml_str(test)}",
                f"error = {_toml_str(error)}", f"note = {_toml_str('; '.join(notes))}", ""]
    return "\n".join(out + skipped).rstrip("\n") + "\n" if out or skipped else ""


def _test_glob(nodeid: str, tests_dir: str) -> str:
    """Relative to the tests dir, the [params] part collapsed to *."""
    rel = under_tests(nodeid, tests_dir) or nodeid
    bracket = rel.find("[", max(rel.find("::"), 0))
    if rel.endswith("]") and bracket > 0:
        rel = rel[:bracket] + "*"
    return rel


def _error_regex(signatures: tuple[str, ...]) -> str:
    """The dominant exception type, unqualified (trio.TooSlowError -> TooSlowError, which a
    search finds in either spelling), plus the message head all its failures share (from
    two failures on: one says nothing about which part of its message is stable)."""
    kind = _dominant(signatures).split(":", 1)[0].strip()
    same = [s for s in signatures if s.split(":", 1)[0].strip() == kind]
    messages = [s.split(":", 1)[1].strip() if ":" in s else "" for s in same]
    head = _stable_head(messages) if len(messages) >= 2 else ""
    if re.fullmatch(r"[A-Za-z_][\w.]*", kind):
        kind = kind.rsplit(".", 1)[-1]
    return _literal(kind) + (_literal(": " + head) if head else "")


def _literal(text: str) -> str:
    """re.escape, minus its needless escaping of spaces (easier to read in a TOML file)."""
    return re.escape(text).replace("\\ ", " ")


def _stable_head(messages: list[str]) -> str:
    """The shared prefix, cut before any digit (pids, ports, addresses) and back to a whole
    word; "" when under 4 characters."""
    head = os.path.commonprefix(messages)
    digit = re.search(r"\d", head)
    if digit:
        head = head[:digit.start()]
    if any(m != head for m in messages) and not head.endswith(" "):  # cut mid-word
        head = head[:head.rfind(" ") + 1] if " " in head else ""
    head = head.strip()
    return head if len(head) >= 4 else ""


def _toml_str(s: str) -> str:
    """A TOML literal string when it can be (regexes keep single backslashes), else a basic
    one (JSON's escapes are TOML's, bar DEL)."""
    if "'" not in s and not re.search(r"[\x00-\x1f\x7f]", s):
        return f"'{s}'"
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")
