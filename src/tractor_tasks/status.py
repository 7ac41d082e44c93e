"""The one vocabulary of statuses: what happened to a test (`TestOutcome`), what a
failure means (`Verdict`), how a pass stopped (`Stop`), how a run ended (`RunStatus`)
and a doctor check (`Check`). The summary, outcome.json, the JUnit file, the
history, the doctor and the matrix report all use these values (they are `str`
enums, so they print and serialise as their plain names), and every property a
reader needs (rank, JUnit element, counts as failed, which side of a flip) lives
here: adding an outcome or a verdict touches this file and the places that render
it, nothing else.
"""
from __future__ import annotations

from enum import StrEnum


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

    @property
    def meaning(self) -> str:
        """The summary's words after the count."""
        return _MEANING[self]


_MEANING = {Verdict.REGRESSION: "regressions", Verdict.NEW: "new",
            Verdict.PRE_EXISTING: "pre-existing", Verdict.FLAKY: "flaky",
            Verdict.LOAD_SENSITIVE: "load-sensitive", Verdict.KNOWN_FLAKY: "known-flaky",
            Verdict.QUARANTINED: "quarantined"}


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

    @classmethod
    def decide(cls, stops, code: int) -> RunStatus:
        """The one place a run's status is decided: from its passes' stops and its exit
        code (errors.py's codes)."""
        stops = set(stops)
        if Stop.INTERRUPTED in stops:
            return cls.INTERRUPTED
        if Stop.TIMEOUT in stops:
            return cls.TIMEOUT
        return cls.FAILED if code else cls.PASSED


class Check(StrEnum):
    """A doctor check."""
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"
