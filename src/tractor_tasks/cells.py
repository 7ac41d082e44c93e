"""Cells of the matrix (Python minor x transport x spawn backend) and their records.

A cell's name is its nox session name: `tests-3.13(tpt='uds')` for the
default spawn backend, `backends-3.13(spawn='mp_spawn', tpt='uds')` for the
others, `smoke-3.13` for the core subset. Each cell keeps its own pytest
cache, JUnit file and outcome under <target>/.tractor-tasks/cells/<slug>/.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import usage
from .results import Summary, read_junit
from .target import Target

_NAME_RE = re.compile(r"(?P<kind>tests|backends|smoke)-(?P<minor>3\.\d+)(?:\((?P<params>.*)\))?")
_PARAM_RE = re.compile(r"(\w+)='([^']*)'")


@dataclass(frozen=True)
class Cell:
    kind: str   # tests | backends | smoke
    minor: str
    tpt: str
    spawn: str

    @property
    def name(self) -> str:
        if self.kind == "smoke":
            return f"smoke-{self.minor}"
        if self.kind == "tests":
            return f"tests-{self.minor}(tpt='{self.tpt}')"
        return f"backends-{self.minor}(spawn='{self.spawn}', tpt='{self.tpt}')"

    @property
    def slug(self) -> str:
        if self.kind == "smoke":
            return f"smoke-{self.minor}"
        return f"{self.kind}-{self.minor}-{self.spawn}-{self.tpt}"

    def dir(self, target: Target) -> Path:
        return target.state_dir / "cells" / self.slug

    def run_dir(self, target: Target) -> Path:
        """Remade by every run: JUnit file, command, probe files, stack dumps."""
        return self.dir(target) / "run"

    def cache_dir(self, target: Target) -> Path:
        """Kept across runs: this cell's pytest cache (its lastfailed)."""
        return self.dir(target) / "pytest-cache"

    @classmethod
    def from_name(cls, target: Target, name: str) -> Cell:
        m = _NAME_RE.fullmatch(name.strip())
        if not m:
            raise usage(f"error: {name!r} is not a cell name; cells look like "
                        "tests-3.13(tpt='uds') (see `nox --list`)")
        params = dict(_PARAM_RE.findall(m["params"] or ""))
        return cls(m["kind"], m["minor"], params.get("tpt", target.transports[0]),
                   params.get("spawn", target.default_spawn_backend))


def all_cells(target: Target) -> list[Cell]:
    cells = []
    for minor in target.pythons:
        cells += [Cell("tests", minor, t, target.default_spawn_backend) for t in target.transports]
        cells += [Cell("backends", minor, t, s) for s in target.spawn_backends
                  if s != target.default_spawn_backend for t in target.transports]
        cells.append(Cell("smoke", minor, target.transports[0], target.default_spawn_backend))
    return cells


# -- outcome records and the matrix report ----------------------------------

def write_outcome(target: Target, cell: Cell, *, status: str, code: int, seconds: float,
                  invocation: str | None) -> None:
    record = {"cell": cell.name, **asdict(cell), "status": status, "code": code,
              "seconds": round(seconds, 2), "finished": time.time(), "invocation": invocation}
    (cell.dir(target) / "outcome.json").write_text(json.dumps(record, indent=1))


@dataclass
class Row:
    cell: str
    status: str
    summary: Summary
    seconds: float


def read_rows(target: Target, invocation: str | None = None) -> list[Row]:
    rows = []
    for outcome in sorted((target.state_dir / "cells").glob("*/outcome.json")):
        try:
            rec = json.loads(outcome.read_text())
        except (OSError, ValueError):
            continue
        if invocation and rec.get("invocation") != invocation:
            continue
        summary = read_junit(target, outcome.parent / "run" / "junit.xml")
        rows.append(Row(rec["cell"], rec["status"], summary, rec.get("seconds", 0.0)))
    return rows


_COLS = ("cell", "status", "passed", "failed", "known-flaky", "skipped", "duration")


def _cols(row: Row) -> list[str]:
    c = row.summary.counts
    return [row.cell, row.status, str(c["passed"]),
            str(len(row.summary.new_failures)), str(len(row.summary.known_flaky)),
            str(c["skipped"] + c["xfailed"]), f"{row.seconds:.1f}s"]


def table_text(rows: list[Row]) -> str:
    data = [list(_COLS)] + [_cols(r) for r in rows]
    widths = [max(len(r[i]) for r in data) for i in range(len(_COLS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in data)


def table_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(_COLS) + " |", "|" + "---|" * len(_COLS)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in _cols(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"
