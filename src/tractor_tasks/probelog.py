"""The probe's log, read in one place: typed events, read as the run goes.

The probe (probe/_tractor_tasks_probe.py) writes one event stream per pass,
`results.jsonl`: the session, the collection, each test's start, reports and costs,
the session's finish. `ProbeLog` reads it incrementally (it keeps its offset; `poll()`
gives the events written since the last call and folds them into what it knows):
the supervisor's watchdog and runaway watch and the progress lines read it as the
run goes, results.py and the trace at the end (`finish()`). The snapshot files the
probe also writes (session.json, collected.json, scopes.json, finished.json,
current) and an older pass's costs.jsonl stand in for what a stream does not carry.

Everything here is within a test's reach ($TRACTOR_TASKS_PROBE_DIR), so a file is
opened without following a link (O_NOFOLLOW) and without blocking (O_NONBLOCK: a FIFO
never holds open()), read only when fstat says it is a regular file, and read with a
cap: MAX_LOG (64 MiB) of a stream per pass, MAX_JSON of a snapshot file. Past the cap
the rest is not read and `problems` says so in one line (the pass runner records it
as the run's problem: what was not read did not run, as far as the run can tell). A
line that is not UTF-8 or not a JSON record is skipped and counted, never raised.
The supervisor creates `results.jsonl` itself before pytest starts and keeps it open
(`ProbeLog(dir, create=True)`), as the probe keeps its own fd: a test that removes
or replaces the file, or its whole dir, costs nothing that was written.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .rundirs import PassDir
from .status import TestOutcome as O

MAX_LOG = 64 * 2**20      # bytes of one stream read per pass; the rest is not read
MAX_JSON = 16 * 2**20     # bytes of a snapshot file (collected.json of a huge suite)
MAX_TEXT = 4 * 2**20      # bytes of a probe stack dump shown in a hang's report
_CHUNK = 4 * 2**20
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def cap_text() -> str:
    """MAX_LOG as a person reads it ("64 MiB")."""
    return f"{MAX_LOG >> 20} MiB" if MAX_LOG >= 2**20 else f"{MAX_LOG} bytes"


# -- safe reads ---------------------------------------------------------------------

def open_safely(path: Path | str) -> int:
    """A read fd on `path`: its last component not followed when a link (ELOOP), never
    blocking (a FIFO), and only a regular file (else OSError EINVAL, the fd closed)."""
    fd = os.open(path, _READ)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_capped(path: Path | str, cap: int) -> tuple[bytes, bool]:
    """Up to `cap` bytes of a regular file, and whether it held more (OSError: absent,
    a link, a FIFO, a device, a dir)."""
    with os.fdopen(open_safely(path), "rb") as f:
        data = f.read(cap + 1)
    return data[:cap], len(data) > cap


def read_json(path: Path | str, default=None, cap: int = MAX_JSON):
    """A small JSON file in a test's reach, or `default` when it is absent, not a
    regular file, over `cap`, not UTF-8 or not JSON."""
    try:
        data, over = read_capped(path, cap)
        return default if over else json.loads(data.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return default


def read_text(path: Path | str, cap: int = MAX_TEXT) -> str:
    """A text file in a test's reach (a stack dump): its first `cap` bytes, a cut said
    in it, "" when it cannot be read safely."""
    try:
        data, over = read_capped(path, cap)
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return text + (f"\n... (cut at {cap >> 20} MiB)" if over else "")


# -- events -------------------------------------------------------------------------

def _num(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _str(value) -> str:
    return value if isinstance(value, str) else ""


MAX_SECONDS = 1e7          # a duration or CPU time past this (115 days) is not one
MAX_LONGREPR = 64 * 1024   # characters of a failure's text kept (the probe writes 8000)


def _amount(value) -> float | None:
    """A duration or CPU seconds: finite, clamped to [0, MAX_SECONDS]."""
    got = _num(value)
    return None if got is None else min(max(got, 0.0), MAX_SECONDS)


@dataclass(frozen=True)
class Session:
    """pytest configured: its pid, rootdir, cache dir and the lastfailed cache before."""
    pid: int | None = None
    rootdir: str = ""
    cachedir: str = ""
    lastfailed_before: dict = field(default_factory=dict)
    started: float | None = None


@dataclass(frozen=True)
class Collected:
    """The node ids that will run, in order."""
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Scopes:
    """Per module, its module- and class-scoped fixtures (None: unknown, keep it whole)."""
    modules: dict


@dataclass(frozen=True)
class TestStart:
    __test__ = False
    nodeid: str
    at: float


@dataclass(frozen=True)
class Report:
    """One setup/call/teardown report (or a collection error, when="collect")."""
    nodeid: str
    when: str
    outcome: str
    duration: float = 0.0
    at: float | None = None
    start: float | None = None     # when its test started
    load: float | None = None      # the machine's 1-min load then
    cpu: float | None = None       # pytest's CPU seconds so far (with reaped children)
    xfail: bool = False
    longrepr: str = ""


@dataclass(frozen=True)
class Costs:
    """A test's logfinish: its window and what it cost (pytest + reaped children)."""
    nodeid: str
    start: float
    stop: float
    cpu: float
    rss: int | None = None
    load: float | None = None


@dataclass(frozen=True)
class Finished:
    """pytest finished its session."""
    exitstatus: int | None


@dataclass(frozen=True)
class Stopped:
    """The pass was ended from outside (stop.json, written by the pass runner)."""
    stop: str
    running: str | None = None
    bound: float | None = None


Event = Union[Session, Collected, Scopes, TestStart, Report, Costs, Finished, Stopped]


def parse(rec) -> Event | None:
    """One record of the stream as its event; None when it is not one (wrong types)."""
    if not isinstance(rec, dict):
        return None
    kind = rec.get("event", "report")
    nodeid = rec.get("nodeid")
    if kind == "report":
        if not isinstance(nodeid, str) or not isinstance(rec.get("when"), str) \
                or not isinstance(rec.get("outcome"), str):
            return None
        return Report(nodeid, rec["when"], rec["outcome"], _amount(rec.get("duration")) or 0.0,
                      _num(rec.get("at")), _num(rec.get("start")), _num(rec.get("load")),
                      _amount(rec.get("cpu")), bool(rec.get("xfail")),
                      _str(rec.get("longrepr"))[-MAX_LONGREPR:])
    if kind == "start":
        at = _num(rec.get("at"))
        return TestStart(nodeid, at) if isinstance(nodeid, str) and at is not None else None
    if kind == "costs":
        start, stop, cpu = _num(rec.get("start")), _num(rec.get("stop")), _amount(rec.get("cpu"))
        if not isinstance(nodeid, str) or None in (start, stop, cpu):
            return None
        rss = rec.get("rss")
        ok = isinstance(rss, int) and not isinstance(rss, bool) and 0 <= rss < 2**63
        return Costs(nodeid, start, max(start, stop), cpu, rss if ok else None,
                     _num(rec.get("load")))
    if kind == "session":
        before = rec.get("lastfailed_before")
        pid = rec.get("pid")
        return Session(pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                       _str(rec.get("rootdir")), _str(rec.get("cachedir")),
                       before if isinstance(before, dict) else {}, _num(rec.get("started")))
    if kind == "collected":
        ids = rec.get("ids")
        ok = isinstance(ids, list) and all(isinstance(i, str) for i in ids)
        return Collected(tuple(ids)) if ok else None
    if kind == "scopes":
        return Scopes(rec["modules"]) if isinstance(rec.get("modules"), dict) else None
    if kind == "finished":
        status = rec.get("exitstatus")
        return Finished(status if isinstance(status, int) and not isinstance(status, bool)
                        else None)
    return None


def outcome_of(reports: list[Report]) -> tuple[O | None, Report | None]:
    """One test's outcome from its reports (the worst wins), and the failing report.
    None when no report decides it yet (only a passing setup: the test was cut off)."""
    best, failing = None, None
    for rec in reports:
        if rec.outcome == "failed":
            new = O.FAILED if rec.when == "call" else O.ERROR
        elif rec.outcome == "skipped":
            new = O.XFAILED if rec.xfail else O.SKIPPED
        elif rec.when == "call":
            new = O.XPASSED if rec.xfail else O.PASSED
        else:
            continue
        if best is None or new.rank > best.rank:
            best = new
            failing = rec if rec.outcome == "failed" else failing
    return best, failing


# -- the incremental reader ---------------------------------------------------------

class _Stream:
    """One JSON-lines file read from where the last read ended, up to MAX_LOG."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self.ident: tuple[int, int] | None = None
        self.offset = 0
        self.buf = b""
        self.over = False
        self.refused = ""      # why the file at the name could not be opened
        self.not_utf8 = 0
        self.not_json = 0

    def create(self) -> None:
        """Make the (empty) file and keep it open, before anything else can."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError:
            return   # there already: opened (safely) by the first read
        self._keep(fd)

    def _keep(self, fd: int) -> None:
        st = os.fstat(fd)
        self.fd, self.ident, self.kept = fd, (st.st_dev, st.st_ino), True

    kept = False   # the fd stays open between reads (the supervisor's own, made first)

    def _open(self) -> bool:
        """The fd to read: the kept one, else the file at the name opened safely for
        this read (a reader by name holds no fd between reads: progress reads many
        passes), as long as it is the file read before."""
        if self.fd is not None:
            return True
        try:
            fd = open_safely(self.path)
        except FileNotFoundError:
            return False
        except OSError as err:
            if not self.refused:
                self.refused = ("a link (not followed)" if err.errno == errno.ELOOP else
                                "not a regular file" if err.errno == errno.EINVAL else
                                err.strerror or str(err))
            return False
        st = os.fstat(fd)
        if self.ident is not None and (st.st_dev, st.st_ino) != self.ident:
            os.close(fd)   # another file put at the name since: what was read stays
            self.swapped = True
            return False
        self.fd, self.ident = fd, (st.st_dev, st.st_ino)
        return True

    swapped = False

    def read(self, final: bool = False) -> list[dict]:
        """The records completed since the last read (`final`: a last line cut short
        by a kill too, when it parses)."""
        if self.over or not self._open():
            return []
        try:
            return self._read(final)
        finally:
            if not self.kept:
                self.close()

    def _read(self, final: bool) -> list[dict]:
        chunks, room = [], MAX_LOG - self.offset
        while room > 0:
            try:
                data = os.pread(self.fd, min(room, _CHUNK), self.offset)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
            self.offset += len(data)
            room -= len(data)
        if room <= 0:
            try:
                self.over = bool(os.pread(self.fd, 1, self.offset))
            except OSError:
                pass
        data = self.buf + b"".join(chunks)
        cut = data.rfind(b"\n") + 1
        lines, self.buf = data[:cut].split(b"\n")[:-1], data[cut:]
        if (final or self.over) and self.buf:
            lines.append(self.buf)   # a cut-short last line: parsed if it can be
            self.buf = b""
            last_cut = True
        else:
            last_cut = False
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                self.not_utf8 += 1
                continue
            try:
                rec = json.loads(text)
            except (ValueError, RecursionError):
                if not (last_cut and i == len(lines) - 1):   # a kill cuts the last one
                    self.not_json += 1
                continue
            out.append(rec)
        return out

    def replaced(self) -> bool:
        """The name no longer holds the file read (removed, or something else put there)."""
        if self.swapped:
            return True
        if self.ident is None:
            return False
        try:
            st = os.lstat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.ident

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ProbeLog:
    """What the probe wrote for one pytest start, read as it grows.

    `poll()` reads what is new and returns it as events; the fields hold everything
    read so far. `finish()` is the last read (pytest has ended)."""

    def __init__(self, pass_dir: Path, *, create: bool = False):
        self.dir = Path(pass_dir)
        files = PassDir(self.dir)
        self.session: Session | None = None
        self.collected: tuple[str, ...] | None = None
        self.scopes: dict | None = None
        self.finished: Finished | None = None
        self.stopped: Stopped | None = None
        self.reports: dict[str, list[Report]] = {}      # nodeid -> its reports, in order
        self.costs: dict[str, Costs] = {}
        self.starts: dict[str, float] = {}               # nodeid -> when it started
        self._running: tuple[str, float] | None = None   # started, not finished
        self._stream = _Stream(files.results)
        self._old_costs = _Stream(files.costs)           # a pass from before the stream
        self.final = False
        self.moved = False     # the stream's name lost the file read (finish() tells)
        self.unknown = 0       # JSON records that are no event of the probe's
        if create:
            self._stream.create()

    # -- reading --

    def poll(self) -> list[Event]:
        """The events written since the last call, folded in."""
        got = [parse(rec) for rec in self._stream.read(self.final)]
        new = [ev for ev in got if ev is not None]
        self.unknown += len(got) - len(new)
        for ev in new:
            self._fold(ev)
        if self.stopped is None:
            data = read_json(PassDir(self.dir).stop, cap=2**20) \
                if os.path.lexists(PassDir(self.dir).stop) else None
            if isinstance(data, dict) and isinstance(data.get("stop"), str):
                running = data.get("running")
                self.stopped = Stopped(data["stop"], running if isinstance(running, str)
                                       else None, _num(data.get("bound")))
                new.append(self.stopped)
        return new

    def finish(self) -> ProbeLog:
        """The last read: the rest of the stream, then the snapshot files for what the
        stream did not carry (an older pass dir). Returns itself."""
        if self.final:
            return self
        self.final = True
        self.poll()
        files = PassDir(self.dir)
        if self.session is None:
            got = parse({**d, "event": "session"}) if isinstance(
                d := read_json(files.session), dict) else None
            self.session = got
        if self.collected is None:
            got = parse({"event": "collected", "ids": read_json(files.collected)})
            self.collected = got.ids if got is not None else None
        if self.scopes is None:
            got = parse({"event": "scopes", "modules": read_json(files.scopes)})
            self.scopes = got.modules if got is not None else None
        if self.finished is None:
            d = read_json(files.finished)
            if isinstance(d, dict) and "exitstatus" in d:
                self.finished = parse({**d, "event": "finished"})
        if not self.costs:
            for rec in self._old_costs.read(final=True):
                ev = parse({**rec, "event": "costs"}) if isinstance(rec, dict) else None
                if ev is not None:
                    self._fold(ev)
            self._old_costs.close()
        self.moved = self._stream.replaced()
        self._stream.close()
        return self

    def close(self) -> None:
        """Let the files go (finish() does; for a pass that never started)."""
        self._stream.close()
        self._old_costs.close()

    def _fold(self, ev: Event) -> None:
        if isinstance(ev, Report):
            self.reports.setdefault(ev.nodeid, []).append(ev)
        elif isinstance(ev, TestStart):
            self.starts[ev.nodeid] = ev.at
            self._running = (ev.nodeid, ev.at)
        elif isinstance(ev, Costs):
            self.costs[ev.nodeid] = ev
            if self._running is not None and self._running[0] == ev.nodeid:
                self._running = None
        elif isinstance(ev, Session):
            self.session = ev
        elif isinstance(ev, Collected):
            self.collected = ev.ids
        elif isinstance(ev, Scopes):
            self.scopes = ev.modules
        elif isinstance(ev, Finished):
            self.finished = ev

    # -- what it says --

    @property
    def current(self) -> tuple[str | None, float | None]:
        """(node id, since) of the test running now, or (None, None) between tests. From
        the stream's starts and logfinishes; a stream without any (an older pass) falls
        back on the probe's `current` file."""
        if self.starts:
            return self._running if self._running is not None else (None, None)
        data = read_json(PassDir(self.dir).current, {}, cap=2**20)
        if isinstance(data, dict) and isinstance(data.get("nodeid"), str):
            return data["nodeid"], _num(data.get("since")) or 0.0
        return None, None

    @property
    def running(self) -> str | None:
        """The test that had started and not finished."""
        return self.current[0]

    def last_write(self) -> float | None:
        """When the probe last wrote any of its files (their mtimes; links not followed)."""
        times = []
        for name in (PassDir.RESULTS, PassDir.FINISHED, PassDir.CURRENT, PassDir.SESSION):
            try:
                times.append(os.lstat(self.dir / name).st_mtime)
            except OSError:
                continue
        return max(times, default=None)

    @property
    def exitstatus(self) -> int | None:
        return self.finished.exitstatus if self.finished is not None else None

    def outcomes(self) -> dict[str, tuple[O, Report | None]]:
        """nodeid -> (its outcome, its failing report) for every test a report decides."""
        out = {}
        for nodeid, recs in self.reports.items():
            got, failing = outcome_of(recs)
            if got is not None:
                out[nodeid] = (got, failing)
        return out

    @property
    def over(self) -> bool:
        """The stream passed MAX_LOG: the rest of it was not read."""
        return self._stream.over

    def problems(self) -> list[str]:
        """One line per thing the reader could not take as the probe wrote it, but the
        cap (`over`: the caller says what it cost)."""
        s, name = self._stream, PassDir.RESULTS
        out = []
        if s.refused and s.fd is None:
            out.append(f"{name} is {s.refused}: not read (a test replaced it?)")
        if s.not_utf8:
            out.append(f"{s.not_utf8} line(s) of {name} not UTF-8: skipped")
        if s.not_json:
            out.append(f"{s.not_json} line(s) of {name} not JSON records: skipped")
        if self.unknown:
            out.append(f"{self.unknown} record(s) of {name} not the probe's: skipped")
        if self.moved:
            out.append(f"{name} was removed or replaced during the pass (a test's doing?): "
                       + ("what the probe wrote was read from the file both kept open"
                          if s.kept else "what was read before stands"))
        return out

