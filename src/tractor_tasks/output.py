"""How a run writes to the user while it goes (its lines, the status block), and the
copy of pytest's output. (The tasks' one-shot answers, tables and histories, print.)

Every line of ours goes through here: `Output` for a run (its status block, pytest's
copy), `say()` for a task's answer and a front end's error line. Both escape control
characters (fsutil.shown) and both survive a lost stdout (a closed pipe, a closed
terminal): the first failed write switches that stream to /dev/null and the run (or
the task) goes on, a run supervised and torn down as usual, its results on disk.
A test (tests/test_output.py) counts the print() calls elsewhere in src/.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from .fsutil import shown


def guard_std_fds() -> None:
    """A front end started with stdout (or stdin/stderr) closed (`invoke test >&-`): put
    /dev/null on the closed fd before anything is opened, so no file of ours (a lock, a
    log) lands on fd 1 and no child writes into it; the run goes on, its output going
    nowhere, with one note on stderr when stderr is open."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            closed.append(fd)
    if 1 in closed or sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
        if 2 not in closed and sys.stderr is not None:
            from .rundirs import STATE_DIR, State
            say("note: stdout is closed: the run goes on and writes nothing there; its "
                f"results are in {STATE_DIR}/{State.LAST} (`invoke report`)", err=True)
    if 2 in closed or sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)
    if 0 in closed or sys.stdin is None:
        sys.stdin = open(0, "r", closefd=False)


def say(text: str = "", *, err: bool = False, one_line: bool = False,
        end: str = "\n") -> None:
    """One message of a task to the user, on stdout (stderr with `err`): control
    characters escaped (`one_line`: newlines too, for an error line), the stream
    flushed; a lost stream swallows it and what follows, quietly (Output's policy)."""
    Output(sys.stderr if err else sys.stdout).write(shown(str(text), one_line=one_line) + end)


def _stdout_gone() -> bool:
    """fd 1 is a pipe whose reader has gone (`... | head -1` after head exited)."""
    import select
    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def quiet_broken_pipe() -> None:
    """`invoke --list | head -1`, `invoke history X | head -1`: a reader that stopped
    reading ends the command without a traceback (invoke's own printing included, so
    this is installed where the tasks are loaded). Only a BrokenPipeError whose stdout
    is really gone is quieted: any other still shows. A run never gets here: its
    Output switches a lost stdout to /dev/null and the run goes on."""
    if getattr(sys.excepthook, "_tt_broken_pipe", False):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, BrokenPipeError) and _stdout_gone():
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)      # the interpreter's last flush goes nowhere, quietly
            os.close(null)
            return
        previous(kind, value, tb)
    hook._tt_broken_pipe = True
    sys.excepthook = hook


class Output:
    def __init__(self, stream=None, *, quiet: bool = False):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.broken = self.stream is None  # no stdout at all: write nothing, never fail
        self._lock = threading.RLock()
        self._status = 0  # lines of the status block drawn last (terminal only)

    @property
    def tty(self) -> bool:
        try:
            return not self.broken and self.stream.isatty()
        except (AttributeError, ValueError, OSError):
            return False

    def __call__(self, text: str = "") -> None:
        self.line(text)

    def line(self, text: str = "") -> None:
        """One line of ours: what it quotes (test ids, refs, paths, commands) shown with
        control characters escaped (fsutil.shown); pytest's own output is raw()'s."""
        if self.quiet:
            return
        self.write(shown(text) + "\n")

    def status(self, lines: list[str]) -> None:
        """Redraw the status block (a terminal's live lines) in place."""
        if self.broken or self.quiet:
            return
        import shutil
        width = max(20, shutil.get_terminal_size().columns - 1)
        with self._lock:
            self._clear()
            self._raw("".join(shown(line)[:width] + "\n" for line in lines))
            self._status = len(lines)

    def _clear(self) -> None:
        if self._status:
            n, self._status = self._status, 0
            self._raw(f"\x1b[{n}A\x1b[J")

    def _raw(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._lose()

    def write(self, text: str) -> None:
        if self.broken:
            return
        with self._lock:
            self._clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._lose()

    def raw(self, data: bytes) -> None:
        if self.broken or self.quiet:
            return
        with self._lock:
            self._clear()
            try:
                buf = getattr(self.stream, "buffer", None)
                if buf is None:
                    self.stream.write(data.decode("utf-8", "replace"))
                else:
                    self.stream.flush()
                    buf.write(data)
                    buf.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._lose()

    def _lose(self) -> None:
        """stdout is gone: point it at /dev/null so nothing (not even Python's final
        flush at exit) raises again."""
        self.broken = True
        try:
            fd = self.stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except (AttributeError, ValueError, OSError):
            pass


class Tee(threading.Thread):
    """Copy pytest's output (a pipe) to a log file and, when `echo`, to the user.

    The pipe is always drained, so pytest never blocks on a full pipe and never sees
    our stdout go away. With `max_bytes`, the log keeps the first half of that as it
    comes and the last half (held in memory, written at the end), with one line saying
    how much was cut between them; the user's copy (`out`) is never cut."""

    def __init__(self, fd: int, log: Path, out: Output | None, max_bytes: int | None = None):
        super().__init__(daemon=True, name=f"tee-{log.parent.name}")
        self.fd = fd
        self.log = log
        self.out = out
        self.max_bytes = max_bytes
        self.cut = 0  # bytes left out of the log

    def run(self) -> None:
        import collections
        head_room = self.max_bytes // 2 if self.max_bytes else None
        tail_room = self.max_bytes - head_room if self.max_bytes else 0
        tail: collections.deque[bytes] = collections.deque()
        held = 0
        from .fsutil import open_own
        from .rundirs import PassDir
        with os.fdopen(open_own(self.log), "ab") as f:   # never through a planted link
            while True:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                if self.out is not None:
                    self.out.raw(chunk)
                if head_room is None:
                    f.write(chunk)
                    f.flush()
                    continue
                if head_room:
                    part, chunk = chunk[:head_room], chunk[head_room:]
                    head_room -= len(part)
                    f.write(part)
                    f.flush()
                if chunk:
                    tail.append(chunk)
                    held += len(chunk)
                    while held - len(tail[0]) >= tail_room:
                        held -= len(tail[0])
                        self.cut += len(tail.popleft())
            if held > tail_room:  # the oldest kept chunk, trimmed to the room left
                extra = held - tail_room
                tail[0] = tail[0][extra:]
                self.cut += extra
            if self.cut:
                f.write(f"\n[tractor-tasks: {self.cut} bytes of output cut here: {PassDir.OUTPUT} "
                        f"keeps its first and last {self.max_bytes // 2} bytes "
                        "(output_log_max_mb)]\n".encode())
            for part in tail:
                f.write(part)
        try:
            os.close(self.fd)
        except OSError:
            pass

