"""The one vocabulary of statuses: what happened to a test (`TestOutcome`), what a
failure means (`Verdict`), how a pass stopped (`Stop`), how a run ended (`RunStatus`)
and a doctor check (`Check`). The summary, outcome.json, the JUnit file, the
history, the doctor and the matrix report all use these values (they are `str`
enums, so they print and serialise as their plain names), and every property a
reader needs (rank, JUnit element, counts as failed, which side of a flip) lives
here: adding an outcome or a verdict touches this file and the places that render
it, nothing else.

And the one place a run's end is decided: the lanes and passes give facts (`Facts`:
how each pass stopped, the run-level stop, pytest's own exit status, passes whose
pytest ended without finishing its session, the verdict's counts), and `conclude`
reduces them, with the options that change the rule (--strict, --fail-on-leak), to
the run's status and exit code (`Ending`). The CI merge ranks statuses with `worst`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from . import errors


class TestOutcome(StrEnum):
    """What happened to one test."""
    __test__ = False  # not a pytest test class, despite the name
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"
    HUNG = "hung"                # the per-test bound ended it
    INTERRUPTED = "interrupted"  # running when the run was interrupted
    TIMEOUT = "timeout"          # running when the whole-run bound expired

    @property
    def rank(self) -> int:
        """How a test's reports combine (setup, call, teardown; passes): the worst wins."""
        return _RANK[self]

    @property
    def bad(self) -> bool:
        """Counts as a failure: gets a verdict, goes into lastfailed."""
        return self in (TestOutcome.FAILED, TestOutcome.ERROR, TestOutcome.HUNG)

    @property
    def cut(self) -> bool:
        """Ended by a stop of the whole run, not by anything of its own."""
        return self in (TestOutcome.INTERRUPTED, TestOutcome.TIMEOUT)

    @property
    def clean(self) -> bool:
        """Leaves lastfailed (pytest's rule: passed or skipped)."""
        return self in (TestOutcome.PASSED, TestOutcome.SKIPPED, TestOutcome.XFAILED,
                        TestOutcome.XPASSED)

    @property
    def timed(self) -> bool:
        """Its duration says how long the test takes (shard balancing)."""
        return self in (TestOutcome.PASSED, TestOutcome.FAILED, TestOutcome.ERROR)

    @property
    def flip(self) -> str | None:
        """Which side of a pass/fail flip it is on in the history, None for neither."""
        if self is TestOutcome.PASSED:
            return "pass"
        if self in (TestOutcome.FAILED, TestOutcome.ERROR, TestOutcome.HUNG,
                    TestOutcome.TIMEOUT):
            return "fail"
        return None

    @property
    def junit(self) -> str | None:
        """Its JUnit child element: failure, error, skipped, or none (passed)."""
        return _JUNIT[self]

    @property
    def signature_word(self) -> str | None:
        """The history signature of an outcome that has no traceback of its own."""
        return self.upper() if self in (TestOutcome.HUNG, TestOutcome.INTERRUPTED,
                                        TestOutcome.TIMEOUT) else None


_RANK = {TestOutcome.PASSED: 0, TestOutcome.SKIPPED: 1, TestOutcome.XFAILED: 1,
         TestOutcome.XPASSED: 1, TestOutcome.ERROR: 3, TestOutcome.FAILED: 4,
         TestOutcome.TIMEOUT: 5, TestOutcome.INTERRUPTED: 5, TestOutcome.HUNG: 6}
_JUNIT = {TestOutcome.PASSED: None, TestOutcome.XPASSED: None, TestOutcome.FAILED: "failure",
          TestOutcome.ERROR: "error", TestOutcome.HUNG: "error",
          TestOutcome.INTERRUPTED: "error", TestOutcome.TIMEOUT: "error",
          TestOutcome.SKIPPED: "skipped", TestOutcome.XFAILED: "skipped"}


class Verdict(StrEnum):
    """What a failure (failed, error, hung) means for the developer who ran it."""
    REGRESSION = "regression"          # fails alone again, and not at the baseline (or
                                       # fails there differently)
    NEW = "new"                        # fails (confirmed, or unconfirmed), nothing known
                                       # about it at the baseline
    PRE_EXISTING = "pre-existing"      # fails at the baseline with the same signature, or
                                       # did in most recent runs at ancestor commits
    FLAKY = "flaky"                    # passed when re-run alone, or flips in the history
    LOAD_SENSITIVE = "load-sensitive"  # failed in a parallel run, passed alone
    KNOWN_FLAKY = "known-flaky"        # matches the config's flaky list
    QUARANTINED = "quarantined"        # listed in the config's quarantine

    @property
    def fails_run(self) -> bool:
        """Makes the run fail (without --strict every other verdict is reported only)."""
        return self in (Verdict.REGRESSION, Verdict.NEW)

    @property
    def order(self) -> int:
        """Where its list stands in the summary: what needs action first."""
        return list(Verdict).index(self)



class Stop(StrEnum):
    """How one pytest start (a pass) ended."""
    FINISHED = "finished"        # pytest exited on its own
    HUNG = "hung"                # the per-test bound expired: dumped and ended
    TIMEOUT = "timeout"          # the whole-run bound expired
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP


class RunStatus(StrEnum):
    """How a run (an invoke run, a nox cell, a shard) ended."""
    PASSED = "passed"            # no regression or new failure, everything selected ran
    FAILED = "failed"            # regressions or new failures, tests that did not run, or
                                 # pytest failed on its own
    TIMEOUT = "timeout"          # the whole-run bound expired
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP
    ERROR = "error"              # the run could not start (bad usage, venv, preflight)
    SKIPPED = "skipped"          # e.g. a cell whose Python minor is missing here

    @property
    def rank(self) -> int:
        """How the statuses of a cell's shards combine: the lowest (the worst) wins."""
        return _RUN_RANK.index(self)

    @property
    def fails_run(self) -> bool:
        """A job (a cell, a CI shard) that ended so fails the CI run: all but passed and
        skipped (a skipped cell, e.g. a Python minor missing there, is only a note)."""
        return self not in (RunStatus.PASSED, RunStatus.SKIPPED)


_RUN_RANK = (RunStatus.INTERRUPTED, RunStatus.TIMEOUT, RunStatus.ERROR, RunStatus.FAILED,
             RunStatus.SKIPPED, RunStatus.PASSED)


def worst(statuses) -> RunStatus:
    """The status of runs side by side (a cell's CI shards): the worst of theirs."""
    return min(map(RunStatus, statuses), key=lambda s: s.rank)


def stored(value) -> RunStatus:
    """A status read back from an outcome.json (ValueError: not one of ours)."""
    return RunStatus(value)


def job_fails(status: RunStatus, code: int | None) -> bool:
    """Whether a job's own ending fails the CI run that ran it (the report job's rule):
    its status, or a non-zero exit code of a job that was not skipped."""
    return status.fails_run or (status is not RunStatus.SKIPPED and code not in (0, None))


def stop_of(stops) -> Stop | None:
    """How a run stopped from its passes' stops and its own: an interruption wins over
    the whole-run bound; None when nothing stopped it (hangs are the passes' own)."""
    stops = set(stops)
    for stop in (Stop.INTERRUPTED, Stop.TIMEOUT):
        if stop in stops:
            return stop
    return None


@dataclass(frozen=True)
class Facts:
    """What a run's passes, lanes and verdict found: plain values, no decision."""
    stops: tuple[Stop, ...] = ()     # how each pass (a pytest start) stopped
    stop: Stop | None = None         # the run's own stop: a stop request between passes,
                                     # the whole-run bound after a hang, a stopped verdict
    returncode: int | None = None    # pytest's exit status, of the last pass that pytest
                                     # ended on its own (None: no such pass)
    unfinished: tuple[str, ...] = ()  # passes whose pytest ended without finishing its
                                      # session (os._exit, a kill from elsewhere)
    broken: tuple[str, ...] = ()     # why selected tests did not run, unasked
    tests: int = 0                   # tests with an outcome
    failures: int = 0                # failed, errored and hung tests
    failing: int = 0                 # of them, those that fail the run without --strict
                                     # (regressions and new ones)
    unaccounted: int = 0             # selected tests that never ran, nothing accounting
    cut_short: bool = False          # -x stopped the run at a failure, tests left unrun
    leaks: int = 0


@dataclass(frozen=True)
class Ending:
    """How a run ended: its status, its exit code (errors.py's), and why in one line."""
    status: RunStatus
    code: int
    why: str = ""

    @classmethod
    def no_outcome(cls) -> Ending:
        """A CI job that reported nothing (cancelled, timed out or never started)."""
        return cls(RunStatus.ERROR, errors.PROBLEM,
                   "no outcome (cancelled, timed out or never started)")

    @classmethod
    def unstarted(cls, code: int, why: str) -> Ending:
        """A run (a nox cell) that never ran: skipped (code 0, e.g. its Python minor is
        missing here) or an error before it could start (bad usage, venv, preflight)."""
        return cls(RunStatus.ERROR if code else RunStatus.SKIPPED, code, why)


def conclude(facts: Facts, *, strict: bool = False, fail_on_leak: bool = False) -> Ending:
    """The one place a run's status and exit code are decided, from its facts.

    130 interrupted; 124 the whole-run bound; pytest interrupted on its own (its exit
    status 2) 130 and its usage error (4, no test ran) 2; 1 when pytest ended without its
    session finish (never a pass: no verdict excuses it), for regressions or new failures
    (every failure, --strict), selected tests that never ran with nothing to account
    for them, a leak with --fail-on-leak, an explained failure -x stopped the run at, a
    hang with no hung test, pytest killed by a signal or failing on its own; 0 when
    every failure is explained (pre-existing, flaky, load-sensitive, known-flaky,
    quarantined) and all of the selection ran or is accounted for; 2 when pytest's 5
    says the selection matched no test; pytest's 3 passes through."""
    stop = stop_of((*facts.stops, *([facts.stop] if facts.stop else [])))
    if stop is Stop.INTERRUPTED:
        return Ending(RunStatus.INTERRUPTED, errors.INTERRUPTED, "interrupted")
    if stop is Stop.TIMEOUT:
        return Ending(RunStatus.TIMEOUT, errors.TIMEOUT, "the whole-run bound expired")
    # pytest's own exit status counts only where pytest ended on its own: a pass ended
    # for a hang exits however our teardown made it (2 after its SIGINT, -9 after SIGKILL)
    rc = facts.returncode or 0
    if rc == 2 and not facts.broken and not facts.unfinished:
        return _failed(errors.INTERRUPTED, "pytest was interrupted (exit status 2)")
    if rc == 4 and not facts.tests:  # a test's os._exit(4) is no usage error
        return _failed(errors.USAGE, "pytest rejected its command line (exit status 4)")
    if rc == 5 and not facts.tests:
        return _failed(errors.USAGE, "the selection matched no test (pytest's exit status 5)")
    if facts.unfinished:
        return _failed(errors.PROBLEM, facts.unfinished[0])
    failing = facts.failures if strict else facts.failing
    if failing:
        return _failed(errors.PROBLEM, f"{failing} failure(s) fail the run"
                       + (" (--strict)" if strict else ""))
    if facts.unaccounted:
        return _failed(errors.PROBLEM, f"{facts.unaccounted} selected test(s) never ran "
                       "and nothing accounts for it")
    if fail_on_leak and facts.leaks:
        return _failed(errors.PROBLEM, f"{facts.leaks} leak(s) (--fail-on-leak)")
    if facts.failures:  # every one explained
        if facts.cut_short:
            return _failed(errors.PROBLEM, "-x stopped the run at an explained failure: "
                           "the rest did not run")
        return Ending(RunStatus.PASSED, 0, f"{facts.failures} failure(s), every one explained")
    if Stop.HUNG in facts.stops:
        return _failed(errors.PROBLEM, "a pass hung with no hung test")
    if rc < 0:
        return _failed(errors.PROBLEM, f"pytest was killed by signal {-rc}")
    if rc:
        return _failed(errors.PROBLEM if rc == 1 else rc, f"pytest exit status {rc}")
    return Ending(RunStatus.PASSED, 0)


def _failed(code: int, why: str) -> Ending:
    return Ending(RunStatus.FAILED, code, why)


class Check(StrEnum):
    """A doctor check."""
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"
