"""CI: the GitHub Actions matrix, derived from the nox sessions themselves (it asks
`nox --list --json` rather than recomputing the cells, so CI and local runs never
drift), expanded into shards when asked, and the merge of the jobs' results.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cells import Cell
from .errors import TaskError
from .fsutil import shown
from . import rundirs
from .rundirs import RunDir
from .status import Ending


def nox_sessions(shim_dir: Path, root: str | None = None) -> list[dict]:
    env = dict(os.environ)
    if root:
        env["TRACTOR_TASKS_ROOT"] = str(Path(root).resolve())
    out = subprocess.run([sys.executable, "-m", "nox", "--list", "--json",
                          "-f", str(shim_dir / "noxfile.py")],
                         cwd=shim_dir, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise TaskError(f"`nox --list --json` failed in {shim_dir}: {tail}")
    return json.loads(out.stdout)


GITHUB_MAX_JOBS = 256  # jobs a GitHub Actions matrix may generate per workflow run


def matrix(shim_dir: Path, root: str | None = None, smoke: bool = False,
           shards: int = 1) -> dict:
    from .target import resolve
    target = resolve(shim_dir, root)
    include = []
    for s in nox_sessions(shim_dir, root):
        cell = Cell.parse(s["session"], target)
        if cell.kind == "smoke" and not smoke:
            continue
        row = {"session": cell.name, "python": cell.minor, "tpt": cell.tpt, "spawn": cell.spawn}
        if shards > 1 and cell.kind != "smoke":
            include += [{**row, "shard": i, "of": shards} for i in range(1, shards + 1)]
        else:
            include.append(row)
    if len(include) > GITHUB_MAX_JOBS:
        raise TaskError(f"error: {len(include)} jobs, past GitHub Actions' limit of "
                        f"{GITHUB_MAX_JOBS} jobs per matrix; pass --shards {_fitting(include, shards)} "
                        "or fewer", 2)
    return {"include": include}


def _fitting(include: list[dict], shards: int) -> int:
    """The most shards per cell whose matrix stays within GitHub's job limit."""
    sharded = len({r["session"] for r in include if "shard" in r})
    single = len(include) - sharded * shards
    return max((GITHUB_MAX_JOBS - single) // max(sharded, 1), 1)


def matrix_json(shim_dir: Path, root: str | None = None, smoke: bool = False,
                shards: int = 1) -> str:
    return json.dumps(matrix(shim_dir, root, smoke, shards))


# -- the report job: every job's outcome.json (and JUnit) -> one verdict and table ---------

NO_OUTCOME = Ending.no_outcome().why   # a job of the matrix that reported nothing
MATRIX_FILE = rundirs.MATRIX_FILE     # the matrix job's output, uploaded as an artifact
HISTORY_FILE = rundirs.State.HISTORY  # each job's history, uploaded beside its cells' dirs
STEP_SUMMARY_LIMIT = 1024 * 1024   # GitHub's limit on one step's summary


@dataclass(frozen=True)
class Job:
    """One job of the matrix: a cell, or one shard of it."""
    cell: str
    shard: str | None = None   # "k/n"

    @property
    def label(self) -> str:
        return shown(self.cell) + (f" shard {self.shard}" if self.shard else "")


def load_matrix(path: Path) -> list[Job]:
    """The jobs of a matrix `invoke ci-matrix` printed (checked: a bad file is one line,
    exit 2)."""
    from .fsutil import read_text_bounded

    def bad(why: str) -> TaskError:
        return TaskError(f"error: {path} is not a CI matrix ({why}); pass the output of "
                         "`invoke ci-matrix` (the matrix job's) with --matrix", 2)
    try:
        doc = json.loads(read_text_bounded(path))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise bad(getattr(err, "strerror", None) or str(err)) from None
    include = doc.get("include") if isinstance(doc, dict) else None
    if not isinstance(include, list) or not include:
        raise bad("no 'include' list of jobs")
    jobs = []
    for row in include:
        if not isinstance(row, dict) or not isinstance(row.get("session"), str):
            raise bad(f"a job without a session: {str(row)[:80]}")
        shard, of = row.get("shard"), row.get("of")
        if shard is None and of is None:
            jobs.append(Job(row["session"]))
            continue
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (shard, of)) \
                or not 1 <= shard <= of:
            raise bad(f"shard {shard!r} of {of!r} in {row['session']}")
        jobs.append(Job(row["session"], f"{shard}/{of}"))
    seen: set = set()
    for j in jobs:
        if j in seen:   # two jobs would upload under one name: not what ci-matrix prints
            raise bad(f"{j.label} is in it twice")
        seen.add(j)
    return jobs


def find_matrix(directory: Path) -> Path | None:
    """The one matrix.json among the downloaded artifacts (several: exit 2)."""
    found = sorted(p for p in directory.rglob(MATRIX_FILE) if p.is_file() and not p.is_symlink())
    if len(found) > 1:
        raise TaskError(f"error: {len(found)} {MATRIX_FILE} files under {directory}; pass the "
                        "one to check against with --matrix FILE", 2)
    return found[0] if found else None


def read_outcomes(paths: list[Path], warn=lambda line: None) -> list[tuple[Path, dict]]:
    """The outcome files that are good, each checked (cells.read_outcome); a bad one is
    one warn() line naming it, and left out."""
    from .cells import Row, read_outcome
    good = []
    for path in sorted(paths):
        try:
            rec = read_outcome(path)
            Row.of(path, rec)
        except TaskError as err:
            warn(str(err))
            continue
        good.append((path, rec))
    return good


def merge_outcomes(paths: list[Path], warn=lambda line: None, *,
                   outcomes: list[tuple[Path, dict]] | None = None):
    """Rows of the matrix with a cell's shards added up (counts summed, the worst status,
    the longest shard's time: they ran side by side)."""
    from .cells import Row
    from .status import worst
    cells: dict[str, list[Row]] = {}
    for path, rec in read_outcomes(paths, warn) if outcomes is None else outcomes:
        row = Row.of(path, rec)
        cells.setdefault(row.cell, []).append(row)
    out = []
    for name, rows in cells.items():
        total = {k: sum(getattr(r, k) for r in rows) for k in (
            "passed", "failed", "known_flaky", "hung", "skipped", "leaked", "pre_existing",
            "flaky", "regressions")}
        out.append(Row(name, worst(r.status for r in rows), seconds=max(r.seconds for r in rows),
                       reported=len(rows), **total))
    return out


def job_fails(rec: dict) -> bool:
    """Whether a job's own outcome fails the run (status.job_fails)."""
    from .status import job_fails as fails, stored
    return fails(stored(rec["status"]), rec.get("code"))


def _failure_fails(f: dict) -> bool:
    """A failure listed in outcome.json that fails the run: a regression or new one (by
    status.Verdict), or one never judged (the run stopped first)."""
    from .status import Verdict
    v = f.get("verdict") or ""
    try:
        return Verdict(v).fails_run
    except ValueError:
        return v == ""


def _one_line(text: str, limit: int) -> str:
    line = " ".join(shown(str(text)).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


@dataclass
class Named:
    """A failure that fails the run, with the job it failed in."""
    job: Job
    nodeid: str
    verdict: str     # regression, new; "" not judged
    outcome: str
    why: str
    cause: str

    @property
    def tag(self) -> str:
        return self.verdict.upper() if self.verdict else "NEW (not judged)"


@dataclass
class CiReport:
    rows: list = field(default_factory=list)           # cells.Row per cell, shards added up
    reported: list[tuple[Job, dict]] = field(default_factory=list)
    missing: list[Job] = field(default_factory=list)   # in the matrix, no outcome
    failures: list[Named] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # run-level: timeout, error, not run
    notes: list[str] = field(default_factory=list)     # skipped cells, no matrix, ...
    bad: list[str] = field(default_factory=list)       # unreadable outcome files
    kept: list[Path] = field(default_factory=list)     # the outcome files counted (one a job)
    expected: int | None = None                        # jobs in the matrix
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def red(self) -> bool:
        return bool(self.missing or self.problems or self.failures or self.bad
                    or any(job_fails(rec) for _, rec in self.reported))

    def headline(self) -> str:
        t = self.totals
        parts = [f"{t.get('regressions', 0)} regression(s)", f"{t.get('new', 0)} new"]
        if self.missing:
            parts.append(f"{len(self.missing)} job(s) with no outcome")
        if self.problems:
            parts.append(f"{len(self.problems)} run problem(s)")
        if self.bad:
            parts.append(f"{len(self.bad)} unreadable outcome(s)")
        parts += [f"{t[k]} {word}" for k, word in (
            ("pre_existing", "pre-existing"), ("flaky", "flaky"),
            ("known_flaky", "known-flaky"), ("quarantined", "quarantined")) if t.get(k)]
        jobs = len(self.reported)
        of = f"{jobs} of {self.expected} jobs reported" if self.expected is not None else \
            f"{jobs} job(s) reported (no matrix to check against)"
        return (f"{'FAILED' if self.red else 'passed'}: " + " · ".join(parts)
                + f" ({of}, {len(self.rows)} cell(s))")

    def lines(self) -> list[str]:
        """The report as plain lines: the verdict, what is missing or broke the run, the
        failures that fail it by name; the table follows (the caller prints it)."""
        out = [f"ci-report: {self.headline()}"]
        out += [f"  MISSING {j.label}: {NO_OUTCOME}" for j in self.missing]
        out += [f"  PROBLEM {p}" for p in self.problems]
        for f in self.failures:
            out.append(f"  {f.tag} {f.nodeid}  [{f.job.label}] {f.outcome}"
                       + (f": {f.why}" if f.why else "")
                       + (f"; likely cause: {f.cause}" if f.cause else ""))
        out += [f"  note: {n}" for n in self.notes]
        return out

    def markdown(self, table: str, limit: int = STEP_SUMMARY_LIMIT) -> str:
        """The step summary: the verdict first, then every job with no outcome and every
        run problem, the regressions and new failures by name (cut to stay under `limit`
        bytes, with how many more), then the table."""
        head = [f"## tractor-tasks: {_md(self.headline())}", ""]
        must = [f"- **no outcome**: {_md(j.label)}: {NO_OUTCOME}" for j in self.missing]
        must += [f"- **problem**: {_md(p)}" for p in self.problems]
        must += [f"- **unreadable**: {_md(b)}" for b in self.bad]
        tail = ["", "### matrix", "", table]
        if self.notes:
            tail += [""] + [f"- note: {_md(n)}" for n in self.notes]
        items = must + [
            f"- **{f.tag}** `{f.nodeid.replace('`', chr(39))}` · {_md(f.job.label)} · "
            f"{f.outcome}" + (f" · {_md(f.why)}" if f.why else "")
            + (f" · likely cause: {_md(f.cause)}" if f.cause else "") for f in self.failures]
        size = lambda lines: len("\n".join(lines).encode()) + len(lines)  # noqa: E731
        budget = limit - size(head) - size(tail) - 200
        kept: list[str] = []
        used = 0
        for i, item in enumerate(items):
            used += len(item.encode()) + 1
            if used > budget:
                kept.append(f"- ... and {len(items) - i} more (each job's {RunDir.SUMMARY} "
                            "artifact lists its own)")
                break
            kept.append(item)
        body = head + kept
        return "\n".join(body + tail) + "\n"


def _md(text: str) -> str:
    """Plain text inside a markdown line: no HTML, no table breaks."""
    return shown(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") \
        .replace("|", "\\|")


def judge_jobs(good: list[tuple[Path, dict]], jobs: list[Job] | None) -> CiReport:
    """Every job's outcome against the matrix: which reported, which did not (without a
    matrix, a sharded cell's own shard count says which of its shards are missing), what
    each reported that fails the run."""
    from .status import RunStatus, stored
    rep = CiReport(expected=len(jobs) if jobs is not None else None)
    latest: dict[Job, dict] = {}
    for _, rec in good:
        job = Job(rec["cell"], rec.get("shard") or None)
        if job in latest:
            rep.notes.append(f"{job.label}: reported twice; the later outcome is used")
            if (rec.get("finished") or 0) < (latest[job].get("finished") or 0):
                continue
        latest[job] = rec
    expected = list(jobs) if jobs is not None else []
    if jobs is None:  # no matrix: at least every shard of a cell that reported one
        for job in latest:
            if job.shard and "/" in job.shard:
                of = int(job.shard.split("/")[1])
                expected += [Job(job.cell, f"{k}/{of}") for k in range(1, of + 1)]
        expected = list(dict.fromkeys(expected))
    rep.missing = [j for j in expected if j not in latest]
    if jobs is not None:
        extra = [j for j in latest if j not in set(jobs)]
        rep.notes += [f"{j.label}: reported, but not in the matrix" for j in extra]
    totals = dict.fromkeys(("regressions", "new", "pre_existing", "flaky", "known_flaky",
                            "quarantined"), 0)
    for job, rec in latest.items():
        rep.reported.append((job, rec))
        summary = rec.get("summary") or {}
        failing = int(summary.get("new_failures", 0) or 0)
        regressions = int(summary.get("regressions", 0) or 0)
        totals["regressions"] += regressions
        totals["new"] += failing - regressions
        for k in ("pre_existing", "flaky", "known_flaky", "quarantined"):
            totals[k] += int(summary.get(k, 0) or 0)
        named = [f for f in rec.get("failures") or [] if isinstance(f, dict)
                 and isinstance(f.get("nodeid"), str) and _failure_fails(f)]
        for f in named:
            # verdict.py writes each as "likely cause: ...": said once, here
            cause = [str(c).removeprefix("likely cause: ") for c in f.get("cause") or []]
            rep.failures.append(Named(job, _one_line(f["nodeid"], 500), str(f.get("verdict") or ""),
                                      _one_line(f.get("outcome") or "failed", 20),
                                      _one_line(f.get("why") or "", 240),
                                      _one_line("; ".join(map(str, cause[:3])), 240)))
        if failing > len(named):
            rep.problems.append(f"{job.label}: {failing - len(named)} failing test(s) its "
                                f"{RunDir.OUTCOME} does not name; see its {RunDir.SUMMARY}")
        status = stored(rec["status"])
        not_run = rec.get("not_run") or []
        note = _one_line(rec.get("note") or "", 240)
        if status is RunStatus.TIMEOUT:
            rep.problems.append(f"{job.label}: timed out (its --cell-timeout expired)"
                                + (f"; {len(not_run)} test(s) never ran" if not_run else ""))
        elif status is RunStatus.INTERRUPTED:
            rep.problems.append(f"{job.label}: interrupted (cancelled or signalled)")
        elif status is RunStatus.ERROR:
            rep.problems.append(f"{job.label}: error: {note or 'it could not run'}")
        elif status is RunStatus.SKIPPED:
            rep.notes.append(f"{job.label}: skipped" + (f": {note}" if note else ""))
        elif not_run:
            rep.problems.append(f"{job.label}: {len(not_run)} selected test(s) never ran")
        elif job_fails(rec) and not named and failing == 0:
            rep.problems.append(f"{job.label}: {status.value} (exit {rec.get('code')}) with no "
                                f"regression or new failure; see its {RunDir.SUMMARY}")
    order = {"regression": 0, "new": 1}
    rep.failures.sort(key=lambda f: (order.get(f.verdict, 2), f.job.label, f.nodeid))
    rep.totals = totals
    return rep


def shard_walls(paths: list[Path]) -> list[str]:
    """Per sharded cell, one line: each job's real wall (and its plan's prediction, from
    the shard.json beside its outcome.json), and the imbalance max/mean of the walls (1.00
    is a perfect split; the cell's wall is its slowest job)."""
    from .fsutil import read_text_bounded
    cells: dict[str, list[tuple[str, float, float | None]]] = {}
    for path in sorted(paths):
        try:  # artifacts: bounded, regular files only, links not followed
            rec = json.loads(read_text_bounded(path))
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("shard"), str) or \
                not isinstance(rec.get("seconds", 0), (int, float)):
            continue
        try:
            planned = json.loads(read_text_bounded(path.with_name(RunDir.SHARD))).get(
                "predicted")
            planned = float(planned) if isinstance(planned, (int, float)) else None
        except (OSError, ValueError, AttributeError):
            planned = None
        cells.setdefault(rec.get("cell") or "?", []).append(
            (rec["shard"], float(rec.get("seconds") or 0.0), planned))
    lines = []
    for cell, jobs in sorted(cells.items()):
        jobs.sort(key=lambda j: int(str(j[0]).split("/")[0]))
        walls = [w for _, w, _ in jobs]
        mean = sum(walls) / len(walls)
        parts = [f"{shard} {wall:.0f}s" + (f" (predicted {planned:.0f}s)" if planned else "")
                 for shard, wall, planned in jobs]
        lines.append(f"{cell}: " + ", ".join(parts)
                     + f"; imbalance {max(walls) / mean if mean else 1.0:.2f} (max/mean)")
    return lines


def report_dir(directory: Path, *, durations_out: Path | None = None, warn=print,
               matrix: Path | None = None, history: Path | None = None) -> CiReport:
    """The final CI job: the jobs' artifacts (each a cell's `last/` dir with outcome.json,
    junit.xml, summary.txt, trace.json) checked against the matrix -> the verdict over
    every job and the table; optionally a durations file from their JUnit, and every
    job's history.sqlite merged into `history` (then checkpointed: one file to cache)."""
    from .cells import Row
    if not directory.is_dir():
        raise TaskError(f"error: {directory} is not a directory of job artifacts", 2)
    from .fsutil import check_destination
    for dest in (durations_out, history):  # refused before anything is read or printed
        if dest is not None:
            check_destination(dest)
    matrix = matrix if matrix is not None else find_matrix(directory)
    jobs = load_matrix(matrix) if matrix is not None else None
    outcomes = sorted(directory.rglob(RunDir.OUTCOME))
    if not outcomes and jobs is None:
        raise TaskError(f"no {RunDir.OUTCOME} under {directory}; upload each job's "
                        f"`{rundirs.STATE_DIR}/{rundirs.State.CELLS}/*/{rundirs.State.LAST}/` "
                        "as an artifact", 1)
    bad: list[str] = []

    def warn_bad(line: str) -> None:
        bad.append(line)
        warn(line)
    good = read_outcomes(outcomes, warn_bad)
    rep = judge_jobs(good, jobs)
    rep.bad = bad
    if jobs is None:
        rep.notes.append(f"no {MATRIX_FILE} under {directory} and no --matrix: a job that "
                         "reported nothing is found only among a sharded cell's shards")
    # the table counts what the verdict counts: a job reported twice, its later outcome
    counted = {id(rec) for _, rec in rep.reported}
    kept = [(path, rec) for path, rec in good if id(rec) in counted]
    rep.kept = [path for path, _ in kept]
    rep.rows = merge_outcomes(rep.kept, warn, outcomes=kept)
    missing: dict[str, int] = {}
    for job in rep.missing:
        missing[job.cell] = missing.get(job.cell, 0) + 1
    by_cell = {r.cell: r for r in rep.rows}
    for cell, n in missing.items():
        key = cell.encode("unicode_escape").decode("ascii")
        if key in by_cell:
            by_cell[key].missing = n
        else:
            rep.rows.append(Row(key, Ending.no_outcome().status, 0, 0, 0, 0, 0, 0, 0.0, missing=n,
                                reported=0))
    if history is not None:
        _merge_histories(directory, history, warn)
    if durations_out is not None:
        import tempfile

        from .history import History
        from .junit import import_junit
        with tempfile.TemporaryDirectory() as tmp:
            h = History(Path(tmp) / HISTORY_FILE)
            for outcome, rec in good:
                junit = outcome.with_name(RunDir.JUNIT)
                if not os.path.lexists(junit):
                    continue
                try:  # a bad JUnit file costs its durations only, not the report
                    import_junit(h, junit, minor=rec.get("minor") or "",
                                 tpt=rec.get("tpt") or "", spawn=rec.get("spawn") or "",
                                 cell=rec.get("cell") or "", follow=False)
                except TaskError as err:
                    warn(f"skipped: {str(err).removeprefix('error: ')}")
            n = h.export_durations(durations_out)
        warn(f"wrote durations of {n} test(s) to {durations_out}")
    return rep


def _merge_histories(directory: Path, into: Path, warn) -> None:
    """Every job's history.sqlite under the artifacts into one (by run), checkpointed so
    the one file is what the cache saves."""
    from .history import History
    paths = sorted(p for p in directory.rglob(HISTORY_FILE) if not p.is_symlink())
    h = History(into, warn=warn)
    added = known = 0
    for path in paths:  # one at a time: a bad artifact costs its own rows only
        try:
            a, k = h.merge_from([path])
        except TaskError as err:
            warn(f"skipped: {str(err).removeprefix('error: ')}")
            continue
        added, known = added + a, known + k
    h.checkpoint()
    warn(f"history: merged {added} new run(s) from {len(paths)} job(s) into {into} "
         f"({known} already there)")
