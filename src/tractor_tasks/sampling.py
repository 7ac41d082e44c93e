"""What a run's live processes cost while pytest runs: each process read once per tick
(proc_samples: for the costs and the runaway watch alike), and the CPU and peak RSS
put on the test running at each sample (TreeCost, written to the pass's
tree-costs.json).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import stalls
from .fsutil import atomic_write
from .rundirs import PassDir


@dataclass(frozen=True)
class ProcSample:
    """One live process of the run at one tick: read once, for the costs and the
    runaway watch alike."""
    pid: int
    created: float          # psutil's create time (the costs' key)
    started: float | None   # /proc's start time (the runaway watch's key); None: gone
    cpu: float              # CPU seconds so far, its own
    rss: int
    title: str = ""         # its command line (read only for the runaway watch)


def proc_samples(members: list[psutil.Process], runaways: bool = False) -> list[ProcSample]:
    """Every member read once (psutil's oneshot); a process gone meanwhile is left out.
    `runaways`: also what the runaway watch keys and names them by (start time, title)."""
    out = []
    for m in members:
        try:
            with m.oneshot():
                t = m.cpu_times()
                out.append(ProcSample(
                    m.pid, m.create_time(), stalls.start_time(m.pid) if runaways else None,
                    t.user + t.system, m.memory_info().rss,
                    " ".join((" ".join(m.cmdline()) or m.name()).split()) if runaways else ""))
        except psutil.Error:
            continue
    return out


class TreeCost:
    """What the run's live processes cost, sampled while pytest runs and put on the test
    running at each sample: CPU seconds (each process's own, by delta since it was last
    seen: subactors pytest has not reaped yet, which its rusage cannot count) and the peak
    of the tree's summed RSS. Written to `tree-costs.json` in the pass's dir."""

    def __init__(self):
        self.last: dict[tuple[int, float], float] = {}
        self.tests: dict[str, dict] = {}
        self.prev: tuple[str | None, float] = (None, 0.0)   # (test, time) at the last sample

    def sample(self, samples: list[ProcSample], nodeid: str | None,
               stamp: float | None = None) -> None:
        """CPU between two samples counts for a test only when it ran at both (a boundary
        interval is left to the probe's exact getrusage); a process first seen counts from
        zero only when it started after the last sample (pytest's own import time does
        not land on its first test)."""
        stamp = time.time() if stamp is None else stamp
        prev_node, prev_time = self.prev
        cpu, rss, now = 0.0, 0, {}
        for s in samples:
            key = (s.pid, s.created)
            now[key] = s.cpu
            base = self.last.get(key, 0.0 if s.created >= prev_time else s.cpu)
            cpu += max(s.cpu - base, 0.0)
            rss += s.rss
        self.last = now
        self.prev = (nodeid, stamp)
        if nodeid:
            rec = self.tests.setdefault(nodeid, {"cpu": 0.0, "rss": 0})
            if nodeid == prev_node:
                rec["cpu"] += cpu
            rec["rss"] = max(rec["rss"], rss)

    def write(self, pass_dir: Path) -> None:
        data = {k: {"cpu": round(v["cpu"], 3), "rss": v["rss"]} for k, v in self.tests.items()}
        try:
            atomic_write(PassDir(pass_dir).tree_costs, json.dumps(data), replace_link=True)
        except OSError:
            pass
