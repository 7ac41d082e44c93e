"""A run as a timeline: `trace.json` in its run dir, in the Chrome trace-event format
(the JSON object form), which ui.perfetto.dev and chrome://tracing open.

Built from what the run dir already holds (rundirs.py's layout): each pass dir's
probe log as probelog.py reads it (every report with when it was written, when its
test started, the machine's load and pytest's CPU; the test a stop cut off; when
pytest started and finished its session), the pass's command.txt, output.log and
stacks.txt (when the pass started, ended and was dumped), run.json and outcome.json.
Tracks:

  pid 1 "run"            tid 0: the run and the shard plan's collection; the load
                         counter; tid N: pass N of an unsharded run (or a retry pass)
  pid 1+K "shard K"      tid N: pass N of shard K; its CPU counter (a parallel run
                         without units.json; a CI job's own passes are on pid 1)
  pid 1+W "worker W"     a local parallel run (units.json maps each lane to its worker):
                         tid 1000 K + N: pass N of the unit run as lane K on worker W

A pass is a slice, each test a slice inside it (name, outcome, class); a hang, a
dump, a resume (the pass after a hang), a timeout and an interrupt are instants. Times are microseconds
since the run's first event.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .fsutil import atomic_write
from .probelog import ProbeLog, Report, outcome_of, read_json as _read_json
from .results import stable_id
from .rundirs import PassDir, RunDir, pass_dirs

FILE = RunDir.TRACE
RUN_PID = 1
_CNAME = {"passed": "good", "xpassed": "good", "failed": "bad", "error": "bad",
          "hung": "terrible", "timeout": "terrible", "interrupted": "terrible",
          "skipped": "grey", "xfailed": "grey"}
_BOUND = re.compile(r"no report for ([0-9.]+)s")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _records(log: ProbeLog) -> list[Report]:
    """The pass's reports that say when they were written, in the order written."""
    return sorted((r for recs in log.reports.values() for r in recs if r.at is not None),
                  key=lambda r: r.at)


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _short(nodeid: str) -> str:
    path, sep, rest = nodeid.partition("::")
    return path.rsplit("/", 1)[-1] + sep + rest


VERDICT_PID = 900  # the verdict's own passes (confirmation, baseline): one process track


def _lanes(run_dir: Path) -> list[tuple[int, str, str, int, Path, int]]:
    """(pid, track name, label prefix, pass number, pass dir, tid) of every pass, in
    order. A local parallel run's lanes go on their worker's track (units.json says
    which), one thread per unit's pass; without units.json, a track per shard."""
    def number(d: Path) -> int:
        tail = d.name.partition("-")[2]
        return int(tail) if tail.isdigit() else 0
    out = [(RUN_PID, "run", "", number(d), d, number(d)) for d in pass_dirs(run_dir)]
    units = _read_json(run_dir / RunDir.UNITS, []) or []
    on = {u["lane"]: u for u in units if isinstance(u, dict) and type(u.get("lane")) is int} \
        if isinstance(units, list) else {}
    for shard in RunDir.shard_dirs(run_dir):
        k = number(shard)
        if not k:
            continue
        lane = on.get(k)
        if lane and type(lane.get("worker")) is int and lane["worker"] > 0:
            w = lane["worker"]
            out += [(RUN_PID + w, f"worker {w}", f"{lane.get('unit')}: ", number(d), d,
                     k * 1000 + number(d)) for d in pass_dirs(shard)]
        else:
            out += [(RUN_PID + k, f"shard {k}", f"shard {k}: ", number(d), d, number(d))
                    for d in pass_dirs(shard)]
    phases = RunDir.phase_dirs(run_dir)
    for k, phase in enumerate(phases, 1):
        out += [(VERDICT_PID, "verdict", f"{phase.name} ", number(d), d, k * 1000 + number(d))
                for d in pass_dirs(phase)]
    return sorted(out, key=lambda x: (x[0], x[5]))


class _Builder:
    def __init__(self):
        self.events: list[dict] = []

    def add(self, ph: str, name: str, t: float, pid: int, tid: int, **fields) -> dict:
        ev = {"name": name, "ph": ph, "ts": t, "pid": pid, "tid": tid, **fields}
        self.events.append(ev)
        return ev

    def slice(self, name: str, start: float, end: float, pid: int, tid: int, **fields):
        ev = self.add("X", name, start, pid, tid, **fields)
        ev["dur"] = max(start, end)  # its end until done(): children end within parents
        return ev

    def meta(self, what: str, pid: int, tid: int, **args):
        self.add("M", what, 0.0, pid, tid, args=args)

    def done(self) -> list[dict]:
        """Wall-clock seconds -> microseconds since the first event."""
        t0 = min((e["ts"] for e in self.events if e["ph"] != "M"), default=0.0)

        def us(t: float) -> int:
            return max(0, round((t - t0) * 1e6))
        for e in self.events:
            e["ts"] = 0 if e["ph"] == "M" else us(e["ts"])
            if "dur" in e:
                e["dur"] = max(0, us(e["dur"]) - e["ts"])
        return sorted(self.events, key=lambda e: (e["ph"] != "M", e["ts"]))


def build(run_dir: Path, results=None) -> dict:
    """The trace of one run dir (read only). `results` (a results.Results) adds each
    test's final class and flaky note; without it the outcomes come from the files."""
    run_dir = Path(run_dir)
    b = _Builder()
    run = _read_json(run_dir / RunDir.RUN, {}) or {}
    outcome = _read_json(run_dir / RunDir.OUTCOME, {}) or {}
    run = run if isinstance(run, dict) else {}
    outcome = outcome if isinstance(outcome, dict) else {}
    hung = {stable_id(n) for n in outcome.get("hung") or () if isinstance(n, str)}
    final = getattr(results, "tests", None) or {}
    # what a cut-off test that is not a hang was ended by, without `results` to say
    stopped = "timeout" if outcome.get("status") == "timeout" else "interrupted"
    b.meta("process_name", RUN_PID, 0, name="run")
    b.meta("process_sort_index", RUN_PID, 0, sort_index=0)
    b.meta("thread_name", RUN_PID, 0, name="run")

    collect = run_dir / RunDir.COLLECT
    if collect.is_dir():
        start, end, _ = _pass_span(collect, None, [])
        if start is not None:
            b.slice("collect (shard plan)", start, end, RUN_PID, 0, cat="pass")

    loads: list[tuple[float, float]] = []
    hung_in: dict = {}   # lane (its pass dirs' parent) -> the test its last pass hung in
    named = {RUN_PID}
    for pid, track, prefix, n, pass_dir, tid in _lanes(run_dir):
        if pid not in named:
            named.add(pid)
            b.meta("process_name", pid, 0, name=track)
            b.meta("process_sort_index", pid, 0, sort_index=pid)
        shard_track = track.startswith("shard ") or pid == RUN_PID
        b.meta("thread_name", pid, tid, name=f"{'' if shard_track else prefix}pass {n}")
        b.meta("thread_sort_index", pid, tid, sort_index=tid)
        _pass(b, pass_dir, pid, tid, f"{prefix}pass {n}", final, hung, stopped, hung_in, loads)

    begin = _num(run.get("started"))
    finish = _num(outcome.get("finished"))
    if begin is not None and finish is not None:
        b.slice("run", begin, finish, RUN_PID, 0, cat="run",
                args={k: outcome.get(k) for k in ("status", "code", "passes", "shards",
                                                  "counts")})
    last = None
    for at, load in sorted(set(loads)):
        if load != last:  # the kernel updates it every 5 s: its changes are enough
            b.add("C", "load (1 min)", at, RUN_PID, 0, args={"load": load})
            last = load
    return {"traceEvents": b.done(), "displayTimeUnit": "ms",
            "otherData": {"run": run_dir.name, "status": outcome.get("status"),
                          "cell": run.get("cell")}}


def _pass(b: _Builder, pass_dir: Path, pid: int, n: int, label: str, final: dict,
          hung: set[str], stopped: str, hung_in: dict[int, str], loads: list) -> None:
    """One pass's track: its slice, its tests' slices, its instants, its CPU."""
    log = ProbeLog(pass_dir).finish()
    recs = _records(log)
    start, end, finished = _pass_span(pass_dir, log, recs)
    if start is None:
        return
    whole = b.slice(label, start, end, pid, n, cat="pass",
                    args={"dir": str(pass_dir), "exitstatus": finished})
    lane = pass_dir.parent
    if lane in hung_in:
        b.add("i", "resume", start, pid, n, s="t", args={"after": hung_in.pop(lane),
                                                         "pass": n})
    dump = _mtime(PassDir(pass_dir).dump)
    if dump is not None:
        b.add("i", "dump", dump, pid, n, s="t", args={"file": str(PassDir(pass_dir).dump)})
    by_test: dict[str, list[Report]] = {}
    for rec in recs:
        by_test.setdefault(rec.nodeid, []).append(rec)
        if rec.load is not None:
            loads.append((rec.at, rec.load))
    cut, since = log.current
    for nodeid, trecs in by_test.items():
        if nodeid == cut:
            continue
        got, _ = outcome_of(trecs)
        began = min(r.start if r.start is not None else r.at - r.duration for r in trecs)
        _test(b, nodeid, got.value if got else "cut off", began,
              max(r.at for r in trecs), pid, n, final, label)
    if cut:
        t = final.get(stable_id(cut))
        t = t if t is not None and t.where == label else None
        what = (t.outcome.value if t is not None else
                "hung" if stable_id(cut) in hung else stopped)
        since = since or start
        stop = dump if dump is not None else end
        _test(b, cut, what, since, stop, pid, n, final, label)
        whole["args"]["stopped"] = what
        if what == "hung":
            hung_in[pass_dir.parent] = cut
            # the bound it ran past, as results.Results.add words a hang's message
            m = _BOUND.search(t.message) if t is not None else None
            at = min(stop, since + float(m[1])) if m else stop
            b.add("i", "hang", at, pid, n, s="t", args={"test": cut})
        elif what in ("timeout", "interrupted"):
            b.add("i", what, stop, pid, n, s="t", args={"test": cut})
    _cpu(b, recs, start, end, pid, n)


def _pass_span(pass_dir: Path, log: ProbeLog | None, recs: list[Report]
               ) -> tuple[float | None, float, int | None]:
    """(start, end, pytest's exit status) of a pass: from the command file written
    just before the launch to the last file the pass wrote."""
    log = log if log is not None else ProbeLog(pass_dir).finish()
    started = log.session.started if log.session is not None else None
    starts = [t for t in (_mtime(PassDir(pass_dir).command), started) if t is not None]
    ends = [t for t in (_mtime(PassDir(pass_dir).output), log.last_write(),
                        _mtime(PassDir(pass_dir).dump)) if t is not None]
    ends += [r.at for r in recs]
    if not starts and not ends:
        return None, 0.0, None
    start = min(starts or ends)
    return start, max([start, *ends]), log.exitstatus


def _test(b: _Builder, nodeid: str, outcome: str, start: float, end: float, pid: int,
          tid: int, final: dict, label: str) -> None:
    args = {"nodeid": nodeid, "outcome": outcome}
    t = final.get(stable_id(nodeid))
    if t is not None and t.where == label:
        verdict = getattr(t, "verdict", None)
        if verdict is not None:
            args["class"] = getattr(verdict, "value", str(verdict))
        if t.flaky is not None:
            args["known_flaky"] = t.flaky.note or t.flaky.error
        if t.message:
            args["message"] = t.message[:500]
    b.slice(_short(nodeid), start, max(start, end), pid, tid, cat=outcome,
            cname=_CNAME.get(outcome, "generic_work"), args=args)


def _cpu(b: _Builder, recs: list[Report], start: float, end: float, pid: int, tid: int) -> None:
    """pytest's CPU (with its reaped children) in cores, between one test's end and the
    next; pytest's clock starts at the pass's start."""
    last_at, last_cpu = start, 0.0
    for rec in recs:
        at, cpu = rec.at, rec.cpu
        if cpu is None or at - last_at < 0.05:
            continue
        b.add("C", "cpu (cores)", at, pid, tid,
              args={"cores": round(max(0.0, cpu - last_cpu) / (at - last_at), 3)})
        last_at, last_cpu = at, cpu
    if last_at > start:
        b.add("C", "cpu (cores)", end, pid, tid, args={"cores": 0.0})


def write(run_dir: Path, results=None) -> Path | None:
    """Write `trace.json` into the run dir (whole or not at all); None when it could not
    be written (a run's result never depends on its timeline)."""
    path = Path(run_dir) / FILE
    try:
        atomic_write(path, json.dumps(build(run_dir, results)), replace_link=True)
    except (OSError, ValueError):
        return None
    return path


def newest(runs: Path) -> Path | None:
    """The newest run's trace under a state dir's runs/ (by when it was written)."""
    found = []
    for p in runs.glob(f"*/{FILE}") if runs.is_dir() else ():
        t = _mtime(p)
        if t is not None and p.is_file() and not p.parent.is_symlink():
            found.append((t, p))
    return max(found)[1] if found else None
