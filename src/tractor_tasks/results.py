"""Results: the probe's logs -> one outcome per test, merged over passes and shards.

The probe's log, as probelog.py reads it, is the single source (exact node ids,
written as each report happens, so it survives a killed pytest). The test running when a pass was
stopped gets the stop's outcome (hung, interrupted, timeout), never "passed".
From the merged results come the counts and the flaky classification (the JUnit file
is junit.py's, pytest's lastfailed cache lastfailed.py's).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .leaks import Leaks
from .probelog import ProbeLog, Session, read_json
from .rundirs import PassDir
from .status import TestOutcome as O, Verdict
from .target import FlakyRule, Target, id_glob

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable_id(nodeid: str) -> str:
    """A node id without the memory addresses some parametrize ids carry: tractor has
    `test_simple_rpc[server_func=<function simple_rpc at 0x7f66...>]`, a different id in
    every pytest process. Passes, shards and the history match tests by this."""
    return _ADDRESS.sub("", nodeid)


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class
    nodeid: str
    outcome: O
    duration: float = 0.0
    message: str = ""      # the failure's head line ("trio.TooSlowError", "HUNG after 30s")
    text: str = ""         # its short traceback, or the hang's dump
    flaky: FlakyRule | None = None
    dump: Path | None = None
    where: str = ""        # "pass 2", "shard 1 pass 1": where it ran
    # costs (probe + supervisor, see _costs) and, for a parallel run, its company
    cpu: float | None = None     # CPU seconds of the process tree over the test
    rss: int | None = None       # peak RSS of the tree, bytes
    window: tuple[float, float] | None = None   # (start, stop) unix time
    load: float | None = None    # 1-min load average when it finished
    parallel: bool = False       # ran in a parallel run (-n/--shards)
    alongside: list[str] = field(default_factory=list)  # what other workers ran meanwhile
    # the verdict (verdict.py) on a failure: its class, why, the re-runs behind it
    verdict: Verdict | None = None
    why: str = ""
    reruns: list[TestResult] = field(default_factory=list)   # confirmation, alone
    baseline: TestResult | None = None                       # at the baseline commit
    cause: list[str] = field(default_factory=list)           # likely-cause lines

    @property
    def signature(self) -> str:
        """Exception type and first message line, for the history and flaky ranking."""
        if self.outcome.signature_word:
            return self.outcome.signature_word
        return self.message.splitlines()[0][:200] if self.message else ""

    def short(self, lines: int = 12) -> str:
        body = self.text.strip().splitlines()
        return "\n".join(body[-lines:]) if body else self.message


@dataclass
class PassLog:
    """What the probe wrote for one pytest start, as results (probelog.py read it)."""
    dir: Path
    collected: list[str] | None = None
    scopes: dict[str, list[str]] | None = None   # module -> its module/class fixtures
    tests: dict[str, TestResult] = field(default_factory=dict)
    session: Session | None = None
    exitstatus: int | None = None
    running: str | None = None   # the test that had started and not finished
    problems: list[str] = field(default_factory=list)   # what the reader could not take
    over: bool = False           # its log passed the reader's cap: the rest was not read

    @property
    def done(self) -> set[str]:
        """Stable ids of the tests this pass finished."""
        return {stable_id(k) for k in self.tests if k != self.running}


_GUTTER = re.compile(r"^[\s|+]*")      # an exception group's `  | ` and `  +-+---` margins
_RULE = re.compile(r"^[\s|+\-=~^]*$")   # a line of only those: decoration, not a message
_EXC = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Cancelled|Group|Warning)"
                  r"\b(:.*)?$")          # `trio.TooSlowError`, `KeyError: 'k'`


def _head(longrepr: str) -> str:
    """The first `E ` line of a traceback, else its last line that names an exception
    (an exception group's traceback has `| ` margins and ends in `+------` rules, and
    tractor adds notes such as "( ^^^ this exc was collapsed from a group ^^^ )" after
    it), else its last line that says something."""
    lines = longrepr.splitlines()
    e = next((ln[1:].strip() for ln in lines if ln.startswith("E ")), "")
    if e:
        return e
    said = [_GUTTER.sub("", ln).strip() for ln in reversed(lines)
            if not _RULE.match(ln) and "Exception Group Traceback" not in ln]
    return next((ln for ln in said if _EXC.match(ln)), said[0] if said else
                (lines[-1].strip() if lines else ""))


def read_pass(pass_dir: Path, log: ProbeLog | None = None) -> PassLog:
    """One pass's results from its probe log: `log` the reader the supervisor kept
    during the pass (what it read stays read, whatever a test did to the files since),
    else one made here."""
    log = (log or ProbeLog(pass_dir)).finish()
    out = PassLog(Path(pass_dir), list(log.collected) if log.collected is not None else None,
                  log.scopes, session=log.session, exitstatus=log.exitstatus,
                  running=log.running, problems=log.problems(), over=log.over)
    for nodeid, (outcome, failing) in log.outcomes().items():
        t = TestResult(nodeid, outcome, sum(r.duration for r in log.reports[nodeid]))
        if failing is not None:
            t.text = failing.longrepr
            t.message = _head(t.text)
        out.tests[nodeid] = t
    _costs(log, out.tests)
    return out


def _costs(log: ProbeLog, tests: dict[str, TestResult]) -> None:
    """The probe's per-test costs (pytest + reaped children) and the supervisor's samples
    of the live tree: each undercounts differently, so CPU is the larger of the two, RSS
    the tree's summed peak when sampled, else the probe's largest single process."""
    for nodeid, c in log.costs.items():
        t = tests.get(nodeid)
        if t is not None:
            t.window, t.cpu, t.rss, t.load = (c.start, c.stop), c.cpu, c.rss, c.load
    tree = read_json(PassDir(log.dir).tree_costs, {}) or {}
    for nodeid, rec in tree.items() if isinstance(tree, dict) else ():
        t = tests.get(nodeid)
        if t is None or not isinstance(rec, dict):
            continue
        try:
            cpu, rss = float(rec.get("cpu") or 0.0), int(rec.get("rss") or 0)
        except (ValueError, TypeError, OverflowError):
            continue
        t.cpu = max(t.cpu or 0.0, cpu)
        if rss:
            t.rss = rss


@dataclass
class Results:
    """One outcome per test over every pass (and shard) of a run, keyed by stable id
    (the exact id of its last report is in TestResult.nodeid)."""
    target: Target
    tests: dict[str, TestResult] = field(default_factory=dict)
    collected: list[str] = field(default_factory=list)   # stable ids, pytest's order
    leaks: Leaks = field(default_factory=Leaks)
    lastfailed_before: dict | None = None
    cachedir: str = ""
    seconds: float = 0.0

    def add(self, log: PassLog, *, stopped: O | None = None, where: str = "",
            dump: Path | None = None, dump_text: str = "", bound: float | None = None,
            running: str | None = None) -> None:
        """Fold one pass in; `stopped` is what the running test gets when the pass was
        ended from outside (a hang, an interrupt, the whole-run bound). `running` is the
        test the stop was decided on (the hung one): pytest may have moved on since."""
        running = running or log.running
        if self.lastfailed_before is None and log.session is not None:
            self.lastfailed_before = dict(log.session.lastfailed_before)
            self.cachedir = log.session.cachedir
        known = set(self.collected)
        for nodeid in map(stable_id, log.collected or ()):
            if nodeid not in known:
                known.add(nodeid)
                self.collected.append(nodeid)
        for nodeid, t in log.tests.items():
            if nodeid == running and stopped is not None:
                continue
            t.where = where
            self.tests[stable_id(nodeid)] = t
        if stopped is O.INTERRUPTED:  # what the interrupt itself made fail is interrupted
            for nodeid, t in log.tests.items():
                if t.outcome.bad and "KeyboardInterrupt" in t.text and nodeid != running:
                    t.outcome = O.INTERRUPTED
                    t.message = "INTERRUPTED: failed with the run's KeyboardInterrupt"
        if running and stopped is not None:
            prev = log.tests.get(running)
            res = TestResult(running, stopped, where=where, dump=dump)
            if stopped is O.HUNG:
                res.message = f"HUNG: no report for {bound:g}s (the per-test bound)"
                res.text = dump_text
            else:
                res.message = f"{stopped.upper()}: the run was stopped while this test ran"
            if prev is not None:
                res.duration = prev.duration
            self.tests[stable_id(running)] = res
        for t in self.tests.values():
            if t.outcome.bad and t.flaky is None:
                t.flaky = classify(self.target, t)

    # -- views ------------------------------------------------------------------

    def counts(self) -> dict[O, int]:
        out = dict.fromkeys(O, 0)
        for t in self.tests.values():
            out[t.outcome] += 1
        return out

    def counts_line(self) -> str:
        parts = [f"{n} {k}" for k, n in self.counts().items() if n]
        return ", ".join(parts) or "no tests ran"

    @property
    def failures(self) -> list[TestResult]:
        return [t for t in self.tests.values() if t.outcome.bad]

    @property
    def new_failures(self) -> list[TestResult]:
        """Failures that fail the run: by their verdict once judged (regressions, new),
        before that every one not on the known-flaky list."""
        return [t for t in self.failures
                if (t.verdict.fails_run if t.verdict is not None else t.flaky is None)]

    @property
    def known_flaky(self) -> list[TestResult]:
        return [t for t in self.failures if t.flaky is not None]

    @property
    def hung(self) -> list[TestResult]:
        return [t for t in self.tests.values() if t.outcome is O.HUNG]

    def not_run(self) -> list[str]:
        return [n for n in self.collected if n not in self.tests]


def classify(target: Target, t: TestResult) -> FlakyRule | None:
    """The known-flaky rule a failure matches (id glob AND error signature), if any.
    A hang's signature is `HUNG`, so an entry with error = "HUNG" covers a known hanger."""
    return match_rule(target.flaky, target, t)


def match_rule(rules, target: Target, t: TestResult) -> FlakyRule | None:
    """The first rule (flaky or quarantine) whose test glob matches the failure and whose
    error regex, when it has one, is found in its signature, message or traceback."""
    rel = target.relative_id(t.nodeid)
    haystack = f"{t.signature}\n{t.message}\n{t.text}"
    for rule in rules:
        pattern = id_glob(rule.test)
        if (pattern.match(rel) or pattern.match(t.nodeid)) and \
                (not rule.error or re.search(rule.error, haystack)):
            return rule
    return None
