"""The one error type the front ends turn into a one-line message and an exit code.

Exit codes, everywhere in the suite:
  0 clean / passed, 1 problems found or tests failed, 2 bad usage,
  124 wall-clock timeout, 130 interrupted.
"""
from __future__ import annotations

USAGE = 2
PROBLEM = 1
TIMEOUT = 124
INTERRUPTED = 130


PREFIX = "error: "


class TaskError(Exception):
    """A problem a person can act on: `str(err)` is the whole message, one line that
    starts with `error: ` (added here when the message does not carry it)."""

    def __init__(self, message: str, code: int = PROBLEM):
        super().__init__(message if message.startswith(PREFIX) else PREFIX + message)
        self.code = code


def usage(message: str) -> TaskError:
    return TaskError(message, USAGE)
