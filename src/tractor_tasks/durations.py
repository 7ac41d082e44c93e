"""The durations file: what `invoke durations` and `ci-report --durations-out` write for
CI to commit, and `--durations-file` reads to balance shards without a history.

    {"version": 2, "durations": {nodeid: seconds}, "costs": {nodeid: {"cpu": seconds,
     "rss": bytes}}}

(costs only for tests whose rows measured them; a version-1 file has no costs). The
per-test cost it carries (TestCost) and what a sane duration is live here too, below
the history that computes them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import TaskError
from .fsutil import atomic_write
from .results import stable_id

MAX_SECONDS = 1e6     # a test duration past this (11 days) is junk: what a durations file refuses


@dataclass(frozen=True)
class TestCost:
    __test__ = False
    wall: float
    cpu: float | None = None     # None: no row measured it
    rss: int | None = None


def sane_seconds(value) -> bool:
    """A duration the history keeps and exports (rows stored before imports were checked
    may hold 1e300)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and 0 <= value < MAX_SECONDS


def load_durations(path: Path) -> dict[str, float]:
    """The durations file write() wrote (version 1 or 2); a bad file is one
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
    return {stable_id(k): TestCost(float(v), float(costs[k]["cpu"]) if k in costs else None,
                                   costs[k].get("rss") if k in costs else None)
            for k, v in doc["durations"].items()}


def write(path: Path, durations: dict[str, float], costs: dict[str, TestCost]) -> None:
    """The file, whole or not at all (a FIFO, device or link there is refused)."""
    doc = {"version": 2, "durations": {k: round(v, 3) for k, v in sorted(durations.items())},
           "costs": {k: {"cpu": round(c.cpu, 3), "rss": c.rss}
                     for k, c in sorted(costs.items()) if c.cpu is not None}}
    path = Path(path)
    try:
        atomic_write(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    except OSError as err:
        raise TaskError(f"error: cannot write durations file {path} "
                        f"({err.strerror or err})", 1) from None
