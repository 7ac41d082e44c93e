"""Progress people can see while parallel cells or shards run: one line each, read
from the probes' logs (tests done of collected, failures so far, the running test
and for how long). On a terminal the lines are redrawn in place; elsewhere (CI
logs) they are printed as plain lines every `interval` seconds.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .probelog import ProbeLog, read_json
from .results import stable_id
from .rundirs import RunDir, State, pass_dirs


@dataclass
class Snapshot:
    label: str
    total: int | None
    done: int
    failed: int
    hung: int
    running: str | None
    since: float | None
    over: bool = False

    def line(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        total = f"/{self.total}" if self.total is not None else ""
        parts = [f"{self.label}: {self.done}{total} done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.hung:
            parts.append(f"{self.hung} hung")
        if self.over:
            parts.append("finished")
        elif self.running:
            parts.append(f"running {self.running} ({int(now - (self.since or now))}s)")
        return " · ".join(parts)


def snapshot(label: str, lane: Path, *, total: int | None = None,
             logs: dict[Path, ProbeLog] | None = None) -> Snapshot:
    """Where one lane (a run dir, or a shard's dir: its pass-N dirs inside) stands.
    `logs` keeps each pass's reader between calls (each reads only what is new)."""
    logs = {} if logs is None else logs
    passes = pass_dirs(lane)
    done: dict[str, str] = {}
    first_total = None
    hung = 0
    for d in passes:
        log = logs.get(d)
        if log is None:
            log = logs[d] = ProbeLog(d)
        log.poll()
        if first_total is None and log.collected is not None:
            first_total = len(log.collected)
        for nodeid, (outcome, _) in log.outcomes().items():
            done[stable_id(nodeid)] = outcome.value
        hung += log.stopped is not None and log.stopped.stop == "hung"
    running, since = logs[passes[-1]].current if passes else (None, None)
    failed = sum(1 for o in done.values() if o in ("failed", "error"))
    return Snapshot(label, total if total is not None else first_total, len(done), failed, hung,
                    running, since, (lane / RunDir.OUTCOME).exists())


class Board:
    """The lines of several lanes, drawn through an Output (in place on a terminal).

    `lanes` is a list of (label, lane dir, tests) or a callable giving the current one
    (a parallel run's workers change units as they go); `header` gives a line drawn
    first (the scheduler's admitted load)."""

    def __init__(self, out, lanes, interval: float = 30.0,
                 header: Callable[[], str] | None = None):
        self.out = out
        self.lanes = lanes
        self.header = header
        self.interval = interval
        self._last = 0.0
        self._logs: dict[Path, ProbeLog] = {}   # each pass's reader, kept between ticks

    def tick(self, force: bool = False, over: bool = False) -> None:
        now = time.time()
        lanes = self.lanes() if callable(self.lanes) else self.lanes
        snaps = [snapshot(label, path, total=total, logs=self._logs)
                 for label, path, total in lanes]
        for snap in snaps:
            snap.over = snap.over or over
        lines = ([self.header()] if self.header else []) + [snap.line(now) for snap in snaps]
        if self.out.tty:
            self.out.status(lines)
        elif force or now - self._last >= self.interval:
            self._last = now
            for line in lines:
                self.out.line(f"progress: {line}")

    def close(self) -> None:
        if self.out.tty:
            self.out.status([])
        else:
            self.tick(force=True, over=True)  # where each lane ended


def cell_lanes(state_dir: Path, invocation: str) -> list[tuple[str, Path, None]]:
    """The runs of one nox invocation that are going: (cell name, run dir)."""
    out = []
    for run in sorted(state_dir.glob(f"{State.RUNS}/*/{RunDir.RUN}")):
        data = read_json(run)
        if isinstance(data, dict) and data.get("invocation") == invocation and \
                not (run.parent / RunDir.OUTCOME).exists():
            out.append((data.get("cell") or run.parent.name, run.parent, None))
    return out


def watch_cells(state_dir: Path, invocation: str, out, interval: float = 60.0
                ) -> threading.Event:
    """For nox's main process when its stdout is not a terminal (nox buffers each
    parallel cell's output until it ends): a plain line per running cell every
    `interval` seconds. Returns the event that stops it."""
    stop = threading.Event()
    logs: dict[Path, ProbeLog] = {}

    def loop():
        while not stop.wait(interval):
            for label, path, _ in cell_lanes(state_dir, invocation):
                out.line(f"progress: {snapshot(label, path, logs=logs).line()}")

    threading.Thread(target=loop, daemon=True, name="tt-progress").start()
    return stop
