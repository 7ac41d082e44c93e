"""outcome.json: what one run (an invoke run, a nox cell, a CI shard job) ended with, as
one dataclass. The pipeline writes it, the matrix report and the CI merge read it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

from .status import RunStatus, TestOutcome as O, Verdict as V


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

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data) -> Outcome:
        """A checked read: ValueError naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("status") not in {s.value for s in RunStatus}:
            raise ValueError(f"status {data.get('status')!r}")
        kw = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "summary":
                value = _summary(value)
            elif f.name == "failures":
                value = [_failure(x) for x in (value or [])]
            elif not _type_ok(f.name, value):
                raise ValueError(f"{f.name} {value!r}")
            kw[f.name] = value
        if "code" not in kw:
            raise ValueError("no 'code'")
        return cls(**kw)


_TYPES = {"code": int, "seconds": (int, float), "finished": (int, float), "passes": int,
          "shards": int, "counts": dict, "verdicts": dict, "verdict": dict, "hung": list,
          "not_run": list, "leaks": dict, "status": str}
_OPTIONAL_STR = ("cell", "minor", "tpt", "spawn", "invocation", "containment", "shard")


def _type_ok(name: str, value) -> bool:
    if name in _OPTIONAL_STR:
        return value is None or isinstance(value, str)
    want = _TYPES.get(name)
    return want is None or (isinstance(value, want) and not isinstance(value, bool))


def _summary(value) -> Summary:
    if not isinstance(value, dict):
        raise ValueError("summary is not an object")
    s = Summary()
    for f in fields(Summary):
        if f.name in value:
            v = value[f.name]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"summary.{f.name} {v!r}")
            setattr(s, f.name, v)
    return s


def _failure(value) -> Failure:
    if not isinstance(value, dict) or not isinstance(value.get("nodeid"), str):
        raise ValueError("a failure without a node id")
    return Failure(value["nodeid"], str(value.get("outcome", "")), str(value.get("verdict", "")),
                   str(value.get("why", "")), [str(c) for c in value.get("cause") or []])


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
        leaks=results.leaks.as_dict())
