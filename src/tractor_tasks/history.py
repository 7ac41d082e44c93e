"""The results history: every test outcome of every run and matrix cell, in one SQLite file.

It answers the questions a single run cannot: how long does a test usually take
(shard balancing), what did it do lately across cells (`recent`), and which tests
flip between passing and failing in a cell (`flaky`, with ready-to-paste rules).

Several processes (matrix cells) write at once: WAL journal, a busy timeout, write
transactions taken with BEGIN IMMEDIATE and retried while the file is locked.
A connection is opened per operation, so a History survives fork().
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import sqlite3
import statistics
import time
import xml.etree.ElementTree as ET
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby, pairwise
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import TaskError
from .status import TestOutcome
from .target import id_glob_body, under_tests
from .fsutil import atomic_write

SCHEMA_VERSION = 3   # 2: verdict, work-tree state; 3: per-test cpu, rss; per-run cores, freq
APPLICATION_ID = 0x74727474  # "trtt": marks the file as a tractor-tasks history
# derived from the one vocabulary (status.py)
OUTCOMES = tuple(o.value for o in TestOutcome)
TIMED = tuple(o.value for o in TestOutcome if o.timed)   # durations that mean something
PASS = {o.value for o in TestOutcome if o.flip == "pass"}  # what a flip flips between
FAIL = {o.value for o in TestOutcome if o.flip == "fail"}

MAX_SECONDS = 1e6     # a test duration past this (11 days) is junk: what a durations file refuses
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
        freq       REAL)""",
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

@dataclass(frozen=True)
class TestCost:
    __test__ = False
    wall: float
    cpu: float | None = None     # None: no row measured it
    rss: int | None = None


@dataclass(frozen=True)
class UnitCost:
    wall: float                  # predicted seconds
    rate: float | None           # CPU seconds per wall second; None: unmeasured
    rss: int | None = None       # the largest test's peak RSS
    tests: int = 0               # how many of its tests have a history


def aggregate(nodeids: Iterable[str], costs: dict[str, TestCost], *,
              unit: Callable[[str], str] | None = None) -> dict[str, UnitCost]:
    """Per-test costs -> per-unit predictions (see History.unit_costs)."""
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
        self._open()

    # -- opening ---------------------------------------------------------------

    def _open(self) -> None:
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
        dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 0
        while any(Path(f"{dest}{s}").exists() for s in ("", "-wal", "-shm", "-journal")):
            n += 1
            dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
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
        con = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
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
        deadline = time.monotonic() + LOCK_SECONDS
        delay = 0.01
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as err:
                if not _locked(err):
                    raise TaskError(f"history {self.path}: {err}", 1) from None
                if time.monotonic() > deadline:
                    raise TaskError(f"history {self.path} stayed locked for "
                                    f"{LOCK_SECONDS:.0f}s by another writer; try again",
                                    1) from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
            except (_Corrupt, TaskError):
                raise
            except sqlite3.DatabaseError as err:
                raise TaskError(f"history {self.path} is damaged ({err}); move it "
                                "aside and the next run starts a fresh one", 1) from None

    # -- writing -------------------------------------------------------------------

    def record(self, run: RunRow, tests: Iterable[TestRow]) -> None:
        """Store one run and its tests in one transaction; recording a run id again
        replaces it (so a retried or re-imported run is never counted twice)."""
        rows = [_result_row(run, t) for t in tests]  # before the lock: tests may be lazy
        self._guard(self._record, run, rows)

    def _record(self, run: RunRow, rows: list[tuple]) -> None:
        with self._write() as con:
            con.execute("DELETE FROM results WHERE run_id = ?", (run.run_id,))
            con.execute(
                "INSERT OR REPLACE INTO runs (run_id, started, finished, kind, cell, minor, "
                "tpt, spawn, commit_sha, load, host, tree, cores, freq) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run.run_id, run.started, run.finished, run.kind, run.cell, run.minor,
                 run.tpt, run.spawn, run.commit, run.load, run.host, run.tree, run.cores,
                 run.freq))
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
                ids = (wanted if wanted is not None else
                       [r[0] for r in con.execute("SELECT DISTINCT nodeid FROM results")])
                out = {}
                for nodeid in ids:
                    found = _last_durations(con, nodeid, minor, tpt, spawn, last)
                    if not found and (minor or tpt or spawn):
                        found = _last_durations(con, nodeid, "", "", "", last)
                    if found:
                        out[nodeid] = statistics.median(found)
                return out
        return self._guard(query)

    def test_costs(self, nodeids: Iterable[str] | None = None, *, minor: str = "",
                   tpt: str = "", spawn: str = "", last: int = 5) -> dict[str, TestCost]:
        """Per test, the medians of its last `last` timed rows in the cell (else in any
        cell, as durations() does): wall, and CPU and RSS where rows recorded them (rows
        from before schema 2 have none: cpu None means unknown, not free)."""
        wanted = set(nodeids) if nodeids is not None else None
        marks = ",".join("?" * len(TIMED))
        rows = self._read(
            f"SELECT nodeid, minor, tpt, spawn, duration, cpu, rss FROM results "
            f"WHERE outcome IN ({marks}) ORDER BY nodeid, started DESC, id DESC", TIMED)
        out: dict[str, TestCost] = {}
        for nodeid, group in groupby(rows, key=lambda r: r[0]):
            if wanted is not None and nodeid not in wanted:
                continue
            group = list(group)
            mine = [r for r in group if (not minor or r[1] == minor) and
                    (not tpt or r[2] == tpt) and (not spawn or r[3] == spawn)] or group
            out[nodeid] = _cost(mine[:last])
        return out

    def unit_costs(self, nodeids: Iterable[str], *, unit: Callable[[str], str] | None = None,
                   **cell) -> dict[str, UnitCost]:
        """Per unit (a module by default: `unit` maps a node id to its unit), the
        predicted wall (the sum of its tests' medians) and CPU rate (CPU seconds per wall
        second, from the tests whose rows carry costs; None when none do: unmeasured).
        Tests never seen are left out of the sums; a unit none of whose tests were
        seen is left out. `cell` takes test_costs()'s keywords."""
        ids = list(nodeids)
        return aggregate(ids, self.test_costs(ids, **cell), unit=unit)

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
                        "t.verdict, t.run_id, t.started, r.host FROM results t "
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
        rows = self._read(
            "SELECT nodeid, minor, tpt, spawn, outcome, signature FROM results "
            f"WHERE outcome IN ({marks}) ORDER BY nodeid, minor, tpt, spawn, started, id",
            tuple(sorted(PASS | FAIL)))
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

    # -- import / export -------------------------------------------------------------

    def import_junit(self, path: Path, *, minor: str = "", tpt: str = "", spawn: str = "",
                     cell: str = "", commit: str | None = None,
                     root: Path | None = None, follow: bool = True) -> int:
        """Record a pytest JUnit file (e.g. a CI artifact) as one run; returns the test count.

        The run id is a hash of the file and the cell, so importing the same file twice
        replaces, not doubles. `root` (the dir pytest ran in) makes node ids exact when the
        file has no `file` attributes (pytest's default xunit2 family has none). The file
        is read bounded (fsutil.read_bounded: a regular file, a symlink only with `follow`).
        """
        from .fsutil import NotRegular, read_bounded
        path = Path(path)
        try:
            data = read_bounded(path, follow=follow)
            tree = ET.ElementTree(ET.fromstring(data))
        except NotRegular as err:
            raise TaskError(f"error: JUnit file {path} is {err.strerror}; nothing recorded", 1)
        except OSError as err:
            raise TaskError(f"cannot read JUnit file {path} ({err.strerror or err})", 1)
        except ET.ParseError as err:
            raise TaskError(f"{path} is not valid JUnit XML ({err}); nothing recorded", 1)
        top = tree.getroot()
        if top.tag not in ("testsuites", "testsuite"):
            raise TaskError(f"{path} is XML but not JUnit (root <{top.tag}>); "
                            "nothing recorded", 1)
        cases = list(top.iter("testcase"))
        named = [c for c in cases if (c.get("classname") or "").strip(". ")
                 or (c.get("name") or "").strip(". ")]
        if len(named) < len(cases):
            self.warn(f"note: {len(cases) - len(named)} testcase(s) of {path} have no classname "
                      "and no name; skipped")
        bad_times = sum(_seconds(c.get("time")) != _float(c.get("time")) for c in named)
        if bad_times:
            self.warn(f"note: {bad_times} testcase time(s) of {path} are not a number of "
                      f"seconds under {MAX_SECONDS:g}; counted as 0")
        tests = [_junit_test(case, root) for case in named]
        started, finished, host = _junit_times(top, path)
        run_id = hashlib.sha256(data + repr((minor, tpt, spawn, cell, commit)).encode())
        self.record(RunRow(run_id.hexdigest()[:32], started, finished, "import", cell=cell,
                           minor=minor, tpt=tpt, spawn=spawn, commit=commit, host=host), tests)
        return len(tests)

    def export_durations(self, path: Path, **cell) -> int:
        """Write {"version": 2, "durations": {nodeid: seconds}, "costs": {nodeid: {"cpu":
        seconds, "rss": bytes}}} for CI to commit (costs only for tests whose rows
        measured them); returns how many tests. `cell` takes durations()'s keywords
        (minor, tpt, spawn, last). load_durations() reads this and the version-1 shape."""
        found = self.durations(**cell)
        costs = self.test_costs(found, **cell)
        doc = {"version": 2, "durations": {k: round(v, 3) for k, v in sorted(found.items())},
               "costs": {k: {"cpu": round(c.cpu, 3), "rss": c.rss}
                         for k, c in sorted(costs.items()) if c.cpu is not None}}
        path = Path(path)
        try:  # a reader never sees half a file; a FIFO, device or link is refused
            atomic_write(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        except OSError as err:
            raise TaskError(f"error: cannot write durations file {path} "
                            f"({err.strerror or err})", 1) from None
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
                # each test keeps its newest few per cell (selection reads the latest,
                # the verdict's history rule those of its recent runs)
                con.execute(
                    "DELETE FROM footprints WHERE rowid IN (SELECT rowid FROM (SELECT "
                    "rowid, ROW_NUMBER() OVER (PARTITION BY nodeid, cell ORDER BY recorded "
                    "DESC) AS n FROM footprints) WHERE n > ?)", (FOOTPRINTS_KEPT,))
        self._guard(write)

    def latest_footprints(self) -> list[tuple]:
        """[(nodeid, cell, commit, Footprint)]: each test's latest per cell."""
        from .footprints import Footprint

        def query():
            with self._conn() as con:
                if not con.execute("SELECT 1 FROM sqlite_master WHERE name='footprints'"
                                   ).fetchone():
                    return []
                return con.execute(
                    "SELECT f.nodeid, f.cell, f.commit_sha, f.data FROM footprints f "
                    "JOIN (SELECT nodeid, cell, MAX(recorded) AS r FROM footprints "
                    "GROUP BY nodeid, cell) g ON f.nodeid = g.nodeid AND f.cell = g.cell "
                    "AND f.recorded = g.r ORDER BY f.nodeid, f.cell").fetchall()
        return [(n, c, sha, Footprint.from_blob(d)) for n, c, sha, d in self._guard(query)]

    def footprints_of(self, nodeid: str, run_ids: Iterable[str]) -> dict:
        """{run_id: Footprint} of one test in the given runs (those that recorded one)."""
        from .footprints import Footprint
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
    return (run.run_id, t.nodeid, run.minor, run.tpt, run.spawn, run.started, t.outcome,
            float(t.duration), t.flaky, t.signature, t.verdict,
            None if t.cpu is None else float(t.cpu), None if t.rss is None else int(t.rss))


def _last_durations(con, nodeid: str, minor: str, tpt: str, spawn: str, last: int) -> list[float]:
    marks = ",".join("?" * len(TIMED))
    cur = con.execute(
        f"SELECT duration FROM results WHERE nodeid = ? AND outcome IN ({marks}) "
        "AND (? = '' OR minor = ?) AND (? = '' OR tpt = ?) AND (? = '' OR spawn = ?) "
        "ORDER BY started DESC, id DESC LIMIT ?",
        (nodeid, *TIMED, minor, minor, tpt, tpt, spawn, spawn, last))
    return [r[0] for r in cur if sane_seconds(r[0])]


def _cell_label(minor: str, tpt: str, spawn: str) -> str:
    return " ".join(p for p in (minor, tpt, spawn) if p) or "any cell"


def _dominant(signatures: tuple[str, ...]) -> str:
    """The most common signature; ties go to the newest (signatures are newest first)."""
    if not signatures:
        return ""
    counts = Counter(signatures)
    return max(signatures, key=lambda s: (counts[s], -signatures.index(s)))


# -- helpers: JUnit -------------------------------------------------------------------------

_WRAPPED = re.compile(r'failed on (?:setup|teardown) with "(.*)"\Z', re.S)


def signature(message: str, text: str = "") -> str:
    """The first line of a failure's message ("trio.TooSlowError: deadline exceeded"), else
    its traceback's first E line: the same head line the probe-based results record, so
    imported and run rows of one failure share a signature."""
    head = (message or "").strip()
    wrapped = _WRAPPED.match(head)  # a setup/teardown error, as pytest's junitxml words it
    if wrapped:
        head = wrapped.group(1).strip()
    if not head:
        e_lines = [ln[1:].strip() for ln in (text or "").splitlines() if ln.startswith("E ")]
        head = next((ln for ln in e_lines if ln), "")
    return head.splitlines()[0].strip()[:200] if head else ""


def _junit_test(case: ET.Element, root: Path | None) -> TestRow:
    nodeid = junit_nodeid(case.get("classname", ""), case.get("name", ""), case.get("file"), root)
    duration = _seconds(case.get("time"))
    failed, errored, skipped = case.find("failure"), case.find("error"), case.find("skipped")
    bad = failed if failed is not None else errored
    if bad is not None:
        outcome = "failed" if failed is not None else "error"
        return TestRow(nodeid, outcome, duration,
                       signature=signature(bad.get("message", ""), bad.text or ""))
    if skipped is not None:
        outcome = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
        return TestRow(nodeid, outcome, duration)
    return TestRow(nodeid, "passed", duration)


def junit_nodeid(classname: str, name: str, file: str | None = None,
                 root: Path | None = None) -> str:
    """pytest's node id back from JUnit: classname "tests.test_x.TestC" + name "test_y[p]"
    -> "tests/test_x.py::TestC::test_y[p]".

    The module part is, in order: the `file` attribute; the longest dotted prefix that is
    a .py file under `root`; else the prefix up to the first Capitalised (class) part.
    """
    parts = [p for p in classname.split(".") if p]
    if not parts:  # a collection error: the name is the dotted module
        parts, name = name.split("."), ""
    if file:
        mod = list(Path(file).with_suffix("").parts)
        rest = parts[len(mod):] if parts[:len(mod)] == mod else []
        return "::".join([Path(file).as_posix(), *rest, *([name] if name else [])])
    cut = _module_cut(parts, root)
    module = "/".join(parts[:cut]) + ".py"
    return "::".join([module, *parts[cut:], *([name] if name else [])])


def _module_cut(parts: list[str], root: Path | None) -> int:
    if root is not None:
        for i in range(len(parts), 0, -1):
            if (Path(root) / Path(*parts[:i]).with_suffix(".py")).is_file():
                return i
    for i, part in enumerate(parts):
        if i and part[:1].isupper():
            return i
    return len(parts)


def _float(value: str | None) -> float | None:
    try:
        return float(value or 0)
    except ValueError:
        return None


def _seconds(value: str | None) -> float:
    """A JUnit time attribute; a missing, garbled or absurd one (negative, not finite,
    MAX_SECONDS or more: what a durations file refuses) counts as 0, not as a bad file."""
    seconds = _float(value)
    return seconds if seconds is not None and 0 <= seconds < MAX_SECONDS else 0.0


def sane_seconds(value) -> bool:
    """A duration the history keeps and exports (rows stored before imports were checked
    may hold 1e300)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and 0 <= value < MAX_SECONDS


def _junit_times(top: ET.Element, path: Path) -> tuple[float, float, str]:
    """(started, finished, host) from the testsuite attributes, else the file's mtime."""
    suites = [top] if top.tag == "testsuite" else list(top.iter("testsuite"))
    seconds = sum(_seconds(s.get("time")) for s in suites)
    stamps = []
    for s in suites:
        try:
            stamp = datetime.fromisoformat(s.get("timestamp") or "").timestamp()
        except (ValueError, OverflowError, OSError):
            continue
        if 0 <= stamp < 1e11:  # within years 1970..5138: else junk, the mtime stands
            stamps.append(stamp)
    host = next((s.get("hostname") for s in suites if s.get("hostname")), "")
    if stamps:
        return min(stamps), min(stamps) + seconds, host
    mtime = path.stat().st_mtime
    return mtime - seconds, mtime, host


# -- the committed durations file and flaky rules --------------------------------------------

def load_durations(path: Path) -> dict[str, float]:
    """The durations file export_durations() wrote (version 1 or 2); a bad file is one
    line, code 1."""
    return {k: c.wall for k, c in load_costs(path).items()}


def load_costs(path: Path) -> dict[str, TestCost]:
    """Per test, the wall (and from a version-2 file the CPU and RSS) of a durations file;
    a version-1 file gives walls only (cpu None: unmeasured)."""
    from .fsutil import read_text_bounded
    path = Path(path)
    try:
        doc = json.loads(read_text_bounded(path, follow=True))
    except OSError as err:
        raise TaskError(f"cannot read durations file {path} ({err.strerror or err})", 1)
    except ValueError as err:
        raise TaskError(f"durations file {path} is not valid JSON ({err}); "
                        "re-export it", 1)
    ok = (isinstance(doc, dict) and doc.get("version") in (1, 2)
          and isinstance(doc.get("durations"), dict)
          and all(isinstance(k, str) and sane_seconds(v) for k, v in doc["durations"].items()))
    costs = doc.get("costs", {}) if ok and doc.get("version") == 2 else {}
    ok = ok and isinstance(costs, dict) and all(
        isinstance(c, dict) and sane_seconds(c.get("cpu"))
        and (c.get("rss") is None or (isinstance(c["rss"], int) and c["rss"] >= 0))
        for c in costs.values())
    if not ok:
        raise TaskError(f'error: durations file {path} is not {{"version": 2, "durations": '
                        '{nodeid: seconds}, "costs": {nodeid: {"cpu", "rss"}}} (or version 1 '
                        'without costs); re-export it with `invoke durations`', 1)
    return {k: TestCost(float(v), float(costs[k]["cpu"]) if k in costs else None,
                        costs[k].get("rss") if k in costs else None)
            for k, v in doc["durations"].items()}


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
