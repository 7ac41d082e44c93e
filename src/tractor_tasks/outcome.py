"""outcome.json: what one run (an invoke run, a nox cell, a CI shard job) ended with, as
one dataclass. The pipeline writes it; the matrix report and the CI merge read it
through cells.read_outcome (bounded, checked field by field) and cells.Row.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .status import TestOutcome as O, Verdict as V


@dataclass
class Summary:
    """What the matrix table shows (skipped counts xfailed too, as pytest's JUnit does)."""
    passed: int = 0
    new_failures: int = 0       # failures that fail the run: regressions and new ones
    known_flaky: int = 0
    hung: int = 0
    skipped: int = 0
    leaked: int = 0
    collected: int = 0
    regressions: int = 0
    pre_existing: int = 0
    flaky: int = 0              # flaky and load-sensitive (passed alone)
    quarantined: int = 0
    not_run: int = 0


@dataclass
class Failure:
    nodeid: str
    outcome: str
    verdict: str = ""
    why: str = ""
    cause: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    status: str
    code: int
    cell: str | None = None
    minor: str = ""
    tpt: str | None = None
    spawn: str | None = None
    seconds: float = 0.0
    finished: float = field(default_factory=time.time)
    invocation: str | None = None
    containment: str = ""
    passes: int = 0
    shards: int = 0
    shard: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    summary: Summary = field(default_factory=Summary)
    verdicts: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    verdict: dict = field(default_factory=dict)     # the Judgement: baseline, costs
    hung: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    leaks: dict = field(default_factory=dict)
    note: str = ""      # why a cell that never ran (error, skipped) did not
    reason: str = ""    # why the run ended as it did (status.conclude's one line)

    def to_json(self) -> dict:
        return asdict(self)


def of_run(p, result, not_run: list[str]) -> Outcome:
    """The outcome of a finished run (pipeline.finish)."""
    from .verdict import counts as verdict_counts, failing
    results = result.results
    counts = results.counts()
    by_verdict = verdict_counts(results)
    summary = Summary(
        passed=counts[O.PASSED], new_failures=len(failing(results)),
        known_flaky=by_verdict[V.KNOWN_FLAKY], hung=counts[O.HUNG],
        skipped=counts[O.SKIPPED] + counts[O.XFAILED], leaked=results.leaks.count(),
        collected=len(results.collected), regressions=by_verdict[V.REGRESSION],
        pre_existing=by_verdict[V.PRE_EXISTING],
        flaky=by_verdict[V.FLAKY] + by_verdict[V.LOAD_SENSITIVE],
        quarantined=by_verdict[V.QUARANTINED], not_run=len(not_run))
    return Outcome(
        status=result.status.value, code=result.code, cell=p.cell.name if p.cell else None,
        minor=p.minor, tpt=p.tpt, spawn=p.spawn, seconds=round(results.seconds, 2),
        invocation=p.invocation, containment=p.containment.mode, passes=len(result.passes),
        shards=result.shards, shard="%d/%d" % p.opts.shard if p.opts.shard else None,
        counts={k.value: v for k, v in counts.items()}, summary=summary,
        verdicts={k.value: v for k, v in by_verdict.items() if v},
        failures=[Failure(t.nodeid, t.outcome.value, t.verdict.value if t.verdict else "",
                          t.why, list(t.cause)) for t in results.failures],
        verdict=result.verdict.as_dict() if result.verdict else {},
        hung=[t.nodeid for t in results.hung], not_run=not_run,
        leaks=results.leaks.as_dict(), reason=result.ending.why if result.ending else "")
