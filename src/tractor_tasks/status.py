"""One vocabulary of statuses: the summary, outcome.json, the history, the doctor and
the matrix report all use these values (they are `str` enums, so they print and
serialise as their plain names)."""
from __future__ import annotations

from enum import StrEnum


class TestOutcome(StrEnum):
    """What happened to one test."""
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
    def bad(self) -> bool:
        """Counts as a failure (and goes into lastfailed)."""
        return self in (TestOutcome.FAILED, TestOutcome.ERROR, TestOutcome.HUNG)


class RunStatus(StrEnum):
    """How a run (an invoke run, a nox cell, a shard) ended."""
    PASSED = "passed"            # everything that ran passed (or only known-flaky failures)
    FAILED = "failed"            # new failures, hangs, or pytest failed on its own
    TIMEOUT = "timeout"          # the whole-run bound expired
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP
    ERROR = "error"              # the run could not start (bad usage, venv, preflight)
    SKIPPED = "skipped"          # e.g. a cell whose Python minor is missing here


class Check(StrEnum):
    """A doctor check."""
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"
