"""Cells of the matrix (Python minor x transport x spawn backend), their names, and
the matrix report.

A cell's name is its nox session name, encoded here and parsed here only:
`tests-3.13(tpt='uds')` for the default spawn backend,
`backends-3.13(spawn='mp_spawn', tpt='uds')` for the others, `smoke-3.13` for
the core subset (nox_sessions.py defines the sessions with `session_name` and
`PARAMS`, and nox writes the parameters in that order). Each run of a cell writes `outcome.json` into its run dir
(`<target>/.tractor-tasks/cells/<slug>/last`): the matrix report reads only that.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import TaskError, usage
from .rundirs import RunDir, State
from .status import RunStatus
from .target import Target

_NAME_RE = re.compile(r"(?P<kind>tests|backends|smoke)-(?P<minor>3\.\d+)(?:\((?P<params>.*)\))?")
_PARAM_RE = re.compile(r"(\w+)='([^']*)'")
# each kind's nox parameters, in the order nox writes them into the session's name
PARAMS = {"tests": ("tpt",), "backends": ("spawn", "tpt"), "smoke": ()}


def session_name(kind: str, minor: str) -> str:
    """A cell's nox session, its name before nox's parameters: `tests-3.13`."""
    return f"{kind}-{minor}"


@dataclass(frozen=True)
class Cell:
    kind: str   # tests | backends | smoke
    minor: str
    tpt: str
    spawn: str

    @property
    def name(self) -> str:
        params = ", ".join(f"{key}='{getattr(self, key)}'" for key in PARAMS[self.kind])
        return session_name(self.kind, self.minor) + (f"({params})" if params else "")

    @property
    def slug(self) -> str:
        if self.kind == "smoke":
            return session_name(self.kind, self.minor)
        return f"{session_name(self.kind, self.minor)}-{self.spawn}-{self.tpt}"

    def dir(self, target: Target) -> Path:
        return State(target).cell_dir(self.slug)

    def cache_dir(self, target: Target) -> Path:
        """Kept across runs: this cell's pytest cache (its lastfailed)."""
        return State(target).cell_cache(self.slug)

    @classmethod
    def parse(cls, name: str, target: Target) -> Cell:
        m = _NAME_RE.fullmatch(name.strip())
        if not m:
            raise usage(f"{name!r} is not a cell name; cells look like "
                        "tests-3.13(tpt='uds') (see `nox --list`)")
        params = dict(_PARAM_RE.findall(m["params"] or ""))
        return cls(m["kind"], m["minor"], params.get("tpt", target.transports[0]),
                   params.get("spawn", target.default_spawn_backend))

    @classmethod
    def of_matrix(cls, name: str, target: Target) -> Cell:
        """A cell of this target's matrix (what its nox sessions define), by its name;
        anything else (an unknown transport, minor or backend, a smoke cell with
        parameters) is a one-line usage error listing the cells."""
        cell = cls.parse(name, target)
        m = _NAME_RE.fullmatch(name.strip())
        keys = set(dict(_PARAM_RE.findall(m["params"] or "")))
        wanted = set(PARAMS[cell.kind])
        cells = matrix_cells(target)
        if keys != wanted or cell not in cells:
            shown = ", ".join(c.name for c in cells[:6]) + (", ..." if len(cells) > 6 else "")
            raise usage(f"error: {name!r} is not a cell of this target's matrix; its cells: "
                        f"{shown} (see `nox --list`)")
        return cell


def matrix_cells(target: Target) -> list[Cell]:
    """Every cell the nox sessions define for the target (nox_sessions._define)."""
    out = []
    others = [s for s in target.spawn_backends if s != target.default_spawn_backend]
    for minor in target.pythons:
        out += [Cell("tests", minor, t, target.default_spawn_backend) for t in target.transports]
        out += [Cell("backends", minor, t, s) for s in others for t in target.transports]
        out.append(Cell("smoke", minor, target.transports[0], target.default_spawn_backend))
    return out


# -- the matrix report ----------------------------------------------------------

@dataclass
class Row:
    cell: str
    status: RunStatus
    passed: int
    failed: int
    known_flaky: int
    hung: int
    skipped: int
    leaked: int
    seconds: float
    pre_existing: int = 0   # explained failures (the verdict): they do not fail the cell
    flaky: int = 0          # flaky and load-sensitive: passed when re-run alone
    regressions: int = 0    # of `failed` (the rest are new, or not judged)
    missing: int = 0        # CI jobs of this cell that reported nothing (ci-report)
    reported: int = 1       # CI jobs of this cell that did report

    @property
    def new(self) -> int:
        return self.failed - self.regressions

    @property
    def status_text(self) -> str:
        """A cell none of whose jobs reported has no status: it must never read as one."""
        if self.missing and not self.reported:
            return "no outcome"
        return self.status.value + (f" +{self.missing} no outcome" if self.missing else "")

    @classmethod
    def of(cls, path: Path, rec: dict | None = None) -> Row:
        """One cell's outcome.json (outcome.Outcome's fields) as a matrix row (a bad
        file: one line, exit 1)."""
        return _row(path, rec)


MAX_SHARDS = 1000   # far past any CI matrix: a shard count past it is a broken outcome
MAX_COUNT = 10_000_000    # tests in one outcome: far past any suite
MAX_SECONDS = 1e7         # a run's wall (116 days): past it, a broken outcome


def read_outcome(path: Path) -> dict:
    """One cell's outcome.json, read bounded (a FIFO, a device, a symlink or a huge file
    is refused, never waited on) and checked field by field; a bad file is a TaskError
    (one line, exit 1) naming it."""
    from .fsutil import NotRegular, read_text_bounded

    def bad(why: str) -> TaskError:
        return TaskError(f"{path} is not a cell outcome ({why}); it was left as it is: "
                         "rerun the cell to rewrite it")
    try:
        rec = json.loads(read_text_bounded(path))
    except IsADirectoryError:
        raise bad("a directory")
    except NotRegular as err:
        raise bad(err.strerror)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise bad(f"not JSON: {err}")
    if not isinstance(rec, dict):
        raise bad(f"a {type(rec).__name__}, not an object")
    if not isinstance(rec.get("cell"), str) or not rec["cell"]:
        raise bad("no 'cell' name")
    for key in ("minor", "tpt", "spawn", "invocation"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise bad(f"{key} is {rec[key]!r}, not a string")
    shard = rec.get("shard")
    if shard not in (None, ""):
        k, _, n = str(shard).partition("/") if isinstance(shard, str) else ("", "", "")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n) <= MAX_SHARDS):
            raise bad(f"shard is {str(shard)[:40]!r}, not K/N with 1 <= K <= N <= {MAX_SHARDS}")
    finished = rec.get("finished")
    if finished is not None and (isinstance(finished, bool)
                                 or not isinstance(finished, (int, float))):
        raise bad(f"finished is {str(finished)[:40]!r}, not a time")
    not_run = rec.get("not_run")
    if not_run is not None and not isinstance(not_run, list):
        raise bad(f"not_run is {str(not_run)[:40]!r}, not a list")
    return rec


def _row(path: Path, rec: dict | None = None) -> Row:
    """One cell's outcome.json as a matrix row (a bad file: one line, exit 1)."""
    def bad(why: str) -> TaskError:
        return TaskError(f"error: {path} is not a cell outcome ({why}); it was left as it is: "
                         "rerun the cell to rewrite it")
    rec = read_outcome(path) if rec is None else rec
    try:
        status = RunStatus(rec.get("status"))
    except ValueError:
        raise bad(f"unknown status {rec.get('status')!r}")

    def num(key: str, whole: bool = True):
        value = rec["summary"].get(key, 0) if key != "seconds" else rec.get("seconds")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value < 0:
            raise bad(f"{key} is {value!r}, not a number")
        if value > (MAX_SECONDS if key == "seconds" else MAX_COUNT):
            raise bad(f"{key} is {value!r}, past any real run")
        return int(value) if whole else float(value)
    if not isinstance(rec.get("summary"), dict):
        raise bad("no 'summary'")
    cell = rec["cell"].encode("unicode_escape").decode("ascii")  # no escapes to the terminal
    return Row(cell, status, num("passed"), num("new_failures"), num("known_flaky"),
               num("hung"), num("skipped"), num("leaked"), num("seconds", whole=False),
               num("pre_existing"), num("flaky"), num("regressions"))


def read_rows(target: Target, invocation: str | None = None,
              warn=lambda line: None) -> list[Row]:
    """The latest outcome of every cell (of one nox invocation when given); a bad
    file is one warning line and is left out."""
    rows = []
    state = State(target)
    for link in state.cell_links():
        run = state.resolve_last(link)  # only a link of ours, to a run dir of ours
        if run is None:
            if os.path.lexists(link / RunDir.OUTCOME):
                warn(f"skipped: {link} does not lead to a run dir inside {state.path}")
            continue
        path = link / RunDir.OUTCOME  # `last` is followed (checked above), outcome.json not
        if not os.path.lexists(path):
            continue
        try:
            rec = read_outcome(path)
            if invocation and rec.get("invocation") != invocation:
                continue
            rows.append(Row.of(path, rec))
        except TaskError as err:
            warn(str(err))
    return rows


_COLS = ("cell", "status", "passed", "regressions", "new", "pre-existing", "flaky",
         "known-flaky", "hung", "skipped", "leaked", "duration")


def _cols(row: Row) -> list[str]:
    return [row.cell, row.status_text, str(row.passed), str(row.regressions), str(row.new),
            str(row.pre_existing), str(row.flaky), str(row.known_flaky), str(row.hung),
            str(row.skipped), str(row.leaked), f"{row.seconds:.1f}s"]


def table_text(rows: list[Row]) -> str:
    data = [list(_COLS)] + [_cols(r) for r in rows]
    widths = [max(len(r[i]) for r in data) for i in range(len(_COLS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in data)


def append_step_summary(rows: list[Row], env=None) -> str | None:
    """The matrix as markdown appended to $GITHUB_STEP_SUMMARY when it is set (nox's
    report and `invoke ci-report`); a note to print when it could not be."""
    import os
    summary = (os.environ if env is None else env).get("GITHUB_STEP_SUMMARY")
    if not summary:
        return None
    try:
        from .fsutil import append_text
        append_text(summary, "\n### tractor-tasks matrix\n\n" + table_markdown(rows))
    except OSError as err:
        return f"note: could not append to GITHUB_STEP_SUMMARY ({err.strerror})"
    return None


def table_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(_COLS) + " |", "|" + "---|" * len(_COLS)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in _cols(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"
