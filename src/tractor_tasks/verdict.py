"""The verdict: what each failure (failed, error, hung) of a run means, so a developer
learns from one line whether their change broke something.

In order, each step deciding only what the ones before left open:
1. the config: quarantined tests (they run and are reported, and never fail the run)
   and known-flaky failures (id glob AND error signature);
2. what the history already knows: with a baseline, the test's outcomes in its last
   runs at the baseline commit (pre-existing when the newest or most of them failed
   the same way, or most failed and one of them this way, or most failed with
   messages that vary between runs there; one that passed in the newest but failed
   in an earlier one is flaky there too when it fails again alone, not a
   regression); without one, the same failure in most recent runs of this cell on
   this machine at ancestors of HEAD (pre-existing);
3. confirmation: the rest once more alone (a module's failures in one pytest start,
   contained and bounded like any pass, after every shard), `--confirm N` times: a
   test that passes alone is flaky, or load-sensitive when it failed beside other
   work (shards);
4. the baseline: what still fails runs at the baseline commit (its tree exported
   read-only, the same venv, the export imported first) unless the history already
   has that commit's outcome; passing there makes it a regression, failing there
   the same way pre-existing, differently a regression (said so), not there new;
   without a baseline, a test that passed at this very commit before is flaky, the
   rest new;
5. for regressions and new failures, the likely cause: the files changed since the
   baseline, ranked by what ties each to the test.

Signatures are compared with addresses, long numbers (ports, pids) and temp paths
masked: "the same failure" means the same exception and message shape.

This module holds the rules; the passes of steps 3 and 4 are reruns.py's (they return
what they found, through the runner interface), step 5 is cause.py's.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from . import footprints, gitref, reruns
from .cause import likely_cause, test_file
from .reruns import Phase
from .rundirs import RunDir
from .results import Results, TestResult, match_rule, stable_id
from .runner import Runner
from .status import TestOutcome as O, Verdict as V

RECENT = 5   # how many recent runs of a test the history rule looks at


# -- signatures -----------------------------------------------------------------------

_MASKS = (
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"/(?:tmp|var/tmp)/[^\s'\"):]*"), "<tmp>"),
    (re.compile(r"\d+\.\d+"), "<n>"),
    (re.compile(r"\d{4,}"), "<n>"),
)


_TYPE = re.compile(r"^[A-Za-z_][\w.]*: ")   # `AssertionError: ` before a message


def same_failure(a: str, b: str) -> bool:
    """Two signatures of one failure: equal once the run-specific parts are masked, or
    when one is the other with its exception type in front (pytest prints
    `assert not True` or `AssertionError: assert not True` by traceback style)."""
    if not a or not b:
        return False
    x, y = normalize(a), normalize(b)
    return x == y or _TYPE.sub("", x, count=1) == y or x == _TYPE.sub("", y, count=1)


def normalize(signature: str) -> str:
    for rx, mask in _MASKS:
        signature = rx.sub(mask, signature)
    return " ".join(signature.split())


# -- the judgement ---------------------------------------------------------------------------

@dataclass
class Judgement:
    """What the verdict did for one run, besides the classes on each failure."""
    baseline: gitref.Baseline | None = None
    notes: list[str] = field(default_factory=list)
    confirmed: int = 0          # failures re-run alone
    confirm_seconds: float = 0.0
    at_baseline: int = 0        # failures run at the baseline commit
    baseline_seconds: float = 0.0
    known_at_baseline: int = 0  # failures whose baseline outcome the history had
    second: int = 0             # regressions given a second opinion (each in its own pytest)
    second_seconds: float = 0.0
    passes: list = field(default_factory=list)   # the PassOutcomes of its own passes
    changed: list[str] = field(default_factory=list)
    strict: bool = False
    confirm: int = 1            # re-runs asked for (0: --no-confirm)
    stopped: bool = False       # a stop or the verdict's time cut its passes short
    published: bool = False     # the tree is a published tip: nothing to blame
    base_lock: str | None = None  # the baseline's own uv.lock hash when it differs

    def what(self, t: TestResult) -> str:
        """What confirmation said of a failure, for its reason."""
        if _ran(t):
            return "failed again when re-run alone"
        if self.stopped:
            return "not re-run (the verdict's time ran out or the run was stopped)"
        return "not re-run (--no-confirm)" if not self.confirm else "not re-run"

    def absorb(self, phase: Phase) -> None:
        """What one of its phases (reruns.py) did."""
        self.passes += phase.passes
        self.notes += phase.notes
        self.stopped = self.stopped or phase.stopped

    def as_dict(self) -> dict:
        return {"baseline": ({"commit": self.baseline.commit, "label": self.baseline.label,
                              "why": self.baseline.why} if self.baseline else None),
                "confirmed": self.confirmed, "confirm_seconds": round(self.confirm_seconds, 2),
                "at_baseline": self.at_baseline,
                "baseline_seconds": round(self.baseline_seconds, 2),
                "known_at_baseline": self.known_at_baseline,
                "second_opinion": self.second,
                "second_seconds": round(self.second_seconds, 2), "strict": self.strict}


def _ran(t: TestResult) -> list[TestResult]:
    """Its re-runs that ran to an outcome of their own (not cut by a stop)."""
    return [r for r in t.reruns if not r.outcome.cut]


def _set(t: TestResult, verdict: V, why: str) -> None:
    t.verdict, t.why = verdict, why


def judge(runner: Runner, results: Results, *, history=None,
          choice: gitref.Choice | None = None, confirm: int = 1, parallel: bool = False) -> Judgement:
    """Give every failure of `results` its verdict (see the module's docstring)."""
    p = runner.p
    target = p.target
    j = Judgement(baseline=choice.baseline if choice else None, strict=p.opts.strict,
                  confirm=confirm, published=bool(choice and choice.published))
    if choice and choice.note:
        j.notes.append(choice.note)
    fails = results.failures
    if not fails:
        return j
    for t in fails:
        if parallel:
            t.parallel = True
        rule = match_rule(target.quarantine, target, t)
        if rule is not None:
            _set(t, V.QUARANTINED, "quarantined" + (f": {rule.note}" if rule.note else ""))
        elif t.flaky is not None:
            _set(t, V.KNOWN_FLAKY, t.flaky.note or t.flaky.error)
    open_ = [t for t in fails if t.verdict is None]
    past = _past(history, p, [stable_id(t.nodeid) for t in open_])
    base = j.baseline
    ancestry = gitref.Ancestry(target.root) if gitref.is_repo(target.root) else None
    at_base: dict[str, TestResult] = {}
    base_bad: dict[str, tuple[int, int]] = {}   # failed in how many runs there, of how many
    env = gitref.env_state(target.verdict_env)
    environ = environment(target, p.minor)
    base_environ = environ
    if base is not None and open_:
        # a baseline with a lock of its own runs with it (reruns.at_baseline), and its
        # rows are compared under that lock
        j.base_lock = reruns.lock_change(target, base)
        base_environ = reruns.with_lock(environ, j.base_lock)
    for t in open_:
        rows = past.get(stable_id(t.nodeid), [])
        if base is not None:
            # rows at the baseline count wherever they were recorded, in its environment
            there = [r for r in rows if r.commit == base.commit and _comparable(r, env)
                     and not env_diff(r.environ, base_environ) and O(r.outcome).flip][:RECENT]
            if there:
                row = there[0]
                at_base[stable_id(t.nodeid)] = TestResult(t.nodeid, O(row.outcome),
                                                          message=row.signature)
                j.known_at_baseline += 1
                # how often it failed at the baseline at all (a flip there), of how many
                base_bad[stable_id(t.nodeid)] = (sum(O(r.outcome).bad for r in there),
                                                 len(there))
                why = _preexisting_at_base(t, there, base)
                if why:
                    _set(t, V.PRE_EXISTING, why)
        elif ancestry is not None:
            why = _preexisting_by_history(t, rows, ancestry, p, environ)
            if why:
                _set(t, V.PRE_EXISTING, why)
    # confirmation: alone, after every shard
    todo = [t for t in fails if t.verdict is None]
    if todo and confirm > 0:
        t0 = time.monotonic()
        j.absorb(reruns.confirm(runner, todo, confirm, t0))
        j.confirm_seconds = time.monotonic() - t0
        j.confirmed = len(todo)
    j.stopped = j.stopped or any(r.outcome.cut for t in todo for r in t.reruns)
    for t in todo:
        if any(r.outcome is O.PASSED for r in t.reruns):
            if t.parallel:
                _set(t, V.LOAD_SENSITIVE, "failed beside other work (parallel), passed "
                     "when re-run alone" + _beside(t))
            else:
                _set(t, V.FLAKY, "passed when re-run alone")
    todo = [t for t in todo if t.verdict is None]
    if todo and base is not None:
        unknown = [t for t in todo if stable_id(t.nodeid) not in at_base]
        if unknown:
            t0 = time.monotonic()
            found, phase = reruns.at_baseline(runner, unknown, base, history, environ,
                                              lock=j.base_lock)
            at_base.update(found)
            j.absorb(phase)
            j.baseline_seconds = time.monotonic() - t0
            j.at_baseline = len(unknown)
        for t in todo:
            _by_baseline(t, at_base.get(stable_id(t.nodeid)), base, j.what(t),
                         base_bad.get(stable_id(t.nodeid), (0, 0)))
        candidates = [t for t in todo if t.verdict is V.REGRESSION]
        if candidates and confirm > 0:
            t0 = time.monotonic()
            _second_opinion(runner, candidates, base, j, history, environ,
                            {k: runs for k, (_, runs) in base_bad.items()})
            j.second_seconds = time.monotonic() - t0
    elif todo:
        for t in todo:
            rows = footprints.unchanged_since(target, history, t.nodeid,
                                              past.get(stable_id(t.nodeid), []))
            _by_history_alone(t, rows, ancestry, p, j, environ)
    if base is not None and any(t.verdict in (V.REGRESSION, V.NEW) for t in fails):
        j.changed = gitref.changed_since(target.root, base.commit)
        for t in fails:
            if t.verdict in (V.REGRESSION, V.NEW):
                t.cause = likely_cause(target, t, j.changed, base,
                                       run_dir=runner.run_dir.path)
    return j


def _preexisting_at_base(t: TestResult, there: list, base) -> str:
    """Why the failure pre-exists by the baseline's last runs `there` (newest first), or
    "": the newest failed the same way; most failed this way, or most failed and this
    way among them; or most failed with messages that vary between runs (the message is
    no identity there, the failure itself pre-exists)."""
    newest = there[0]
    if O(newest.outcome).bad and same_failure(t.signature, newest.signature):
        return f"fails at {base.name} too, the same way (known from an earlier run there)"
    same = sum(O(r.outcome).bad and same_failure(t.signature, r.signature) for r in there)
    bad, runs = sum(O(r.outcome).bad for r in there), len(there)
    if same * 2 > runs or (same and bad * 2 > runs):
        return (f"failed at {base.name} in {bad} of its last {runs} run(s) there, {same} "
                "of them the same way")
    if bad * 2 > runs and _varies(there):
        return (f"failed at {base.name} in {bad} of its last {runs} run(s) there, with "
                "messages that vary from run to run")
    return ""


def _varies(rows) -> bool:
    """The failed rows' signatures are not one failure's: two or more that do not match."""
    sigs = [r.signature for r in rows if O(r.outcome).bad and r.signature]
    return any(not same_failure(a, b) for a in sigs for b in sigs)


def _beside(t: TestResult) -> str:
    alongside, load = t.alongside, t.load
    bits = []
    if alongside:
        bits.append("beside " + ", ".join(alongside[:3])
                    + (f" (+{len(alongside) - 3})" if len(alongside) > 3 else ""))
    if load is not None:
        bits.append(f"load {load:.1f}")
    return f" ({'; '.join(bits)})" if bits else ""


def _past(history, p, ids: list[str]) -> dict:
    if history is None or not ids:
        return {}
    return history.past(ids, minor=p.minor, tpt=p.tpt, spawn=p.spawn)


def _comparable(row, env: str) -> bool:
    """A row of a run whose code was its commit's (a clean work tree) and whose
    outcome-changing environment (`verdict_env`) was this run's."""
    return gitref.split_state(row.tree) == ("", env)


# -- the environment a run's outcomes belong to --------------------------------------------

_ENV_NAMES = {"python": "the interpreter", "lock": "the lock file (a dependency)",
              "image": "the runner image"}


def environment(target, minor: str, env=None) -> str:
    """What besides the code makes outcomes comparable: the venv interpreter's exact
    version, the lock file's hash, on a CI runner its image (ImageOS/ImageVersion);
    "python=3.13.1;lock=ab12cd34ef56;image=ubuntu24/20250105.1", parts left out when
    unknown."""
    import hashlib
    from .ci_event import runner_image
    parts = {}
    try:
        cfg = (target.venv_dir(minor) / "pyvenv.cfg").read_text(errors="replace")
        found = re.search(r"^version(?:_info)?\s*=\s*(\S+)", cfg, re.M)
        if found:
            parts["python"] = found.group(1)
    except (OSError, AttributeError, TypeError):
        pass
    try:
        parts["lock"] = hashlib.sha256((target.root / "uv.lock").read_bytes()).hexdigest()[:12]
    except (OSError, AttributeError, TypeError):
        pass
    image = runner_image(env)
    if image:
        parts["image"] = image
    return ";".join(f"{k}={v}" for k, v in parts.items())


def _parts(environ: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in (environ or "").split(";") if "=" in p)


def env_diff(recorded: str, now: str) -> list[str]:
    """The parts of the environment that differ between a row and this run, each as a
    phrase ("the interpreter (3.13.0, now 3.13.1)"); a part either side does not know
    is no difference (rows from before environments were recorded stay comparable)."""
    a, b = _parts(recorded), _parts(now)
    out = []
    for key in ("python", "lock", "image"):
        if key in a and key in b and a[key] != b[key]:
            out.append(f"{_ENV_NAMES[key]} ({a[key]}, now {b[key]})" if key != "lock"
                       else _ENV_NAMES[key])
    return out


def machine() -> str:
    from .ci_event import machine_class
    return machine_class()


def _same_machine(row, mine: str) -> bool:
    """The no-baseline rule's rows come from this machine class (a CI runner's OS, image
    and cores; locally the host); rows recorded before classes were, by hostname."""
    if row.machine:
        return row.machine == mine
    return row.host == os.uname().nodename


def _clean_ancestor_rows(rows, ancestry, mine: str, env: str = "", environ: str = "") -> list:
    return [r for r in rows if _comparable(r, env) and _same_machine(r, mine)
            and not env_diff(r.environ, environ) and O(r.outcome).flip
            and ancestry(r.commit)]


def _preexisting_by_history(t: TestResult, rows, ancestry, p, environ: str = "") -> str:
    """Pre-existing when it failed the same way in most of its recent runs of this cell
    on this machine class at ancestors of HEAD (clean work trees, this environment), out
    of at least two runs, or out of one when the test's file is unchanged since it."""
    env = gitref.env_state(p.target.verdict_env)
    recent = _clean_ancestor_rows(rows, ancestry, machine(), env, environ)[:RECENT]
    same = [r for r in recent if O(r.outcome).bad and same_failure(t.signature, r.signature)]
    if not recent or len(same) * 2 <= len(recent):
        return ""
    if len(recent) < 2 and not all(
            gitref.unchanged_since(ancestry.root, r.commit, test_file(p.target, t.nodeid))
            for r in recent):
        return ""   # one run, and the test's own file changed since: no evidence
    return (f"failed the same way in {len(same)} of its last {len(recent)} run(s) of this "
            "cell at ancestors of HEAD")


def _by_history_alone(t: TestResult, rows, ancestry, p, j: Judgement, environ: str = "") -> None:
    """No baseline (a published tip of the default branch, or no commit to compare
    with): the code is the code of earlier runs at this very commit, so what still fails
    after confirmation is flaky when it passed here before, pre-existing when it failed
    here before (however it failed), a regression of the environment when it passed
    here under another one, flaky when it flips in its history; on a published tip
    pre-existing (nothing changed to compare with), else new."""
    what = j.what(t)
    env = gitref.env_state(p.target.verdict_env)
    mine = machine()
    recent = (_clean_ancestor_rows(rows, ancestry, mine, env, environ)[:RECENT * 2]
              if ancestry is not None else [])
    head = ancestry.head if ancestry is not None else None
    here = [r for r in recent if r.commit == head]
    unchanged = head is not None and not gitref.edits(p.target.root)
    if unchanged and here and O(here[0].outcome).bad:
        _set(t, V.PRE_EXISTING, f"{what}; failed at this same commit in its last run here "
             f"too ({here[0].signature or here[0].outcome}): the code did not change")
        return
    if unchanged and any(O(r.outcome) is O.PASSED for r in here):
        _set(t, V.FLAKY, f"{what}, but passed at this same commit (clean tree) in an "
             "earlier run: the code did not change")
        return
    if unchanged and _ran(t):
        elsewhere = [r for r in rows if r.commit == head and _comparable(r, env)
                     and O(r.outcome) is O.PASSED and env_diff(r.environ, environ)]
        if elsewhere:
            _set(t, V.REGRESSION, f"{what}; passed at this same commit under another "
                 f"environment: {', '.join(env_diff(elsewhere[0].environ, environ))} "
                 "changed")
            return
    sides = [O(r.outcome).flip for r in recent]
    flips = sum(a != b for a, b in zip(sides, sides[1:]))
    if flips >= 2:
        _set(t, V.FLAKY, f"{what}; flips in the history ({flips} flips in its last "
             f"{len(recent)} runs)")
        return
    if j.published and (_ran(t) or j.stopped or j.confirm == 0):
        _set(t, V.PRE_EXISTING, f"{what}; nothing changed to compare with (a published "
             "tip of the default branch" + ("; not re-run: --no-confirm)"
                                            if j.confirm == 0 else ")"))
        return
    _set(t, V.NEW, f"{what}; no baseline to compare with")


def _by_baseline(t: TestResult, there: TestResult | None, base, what: str,
                 base_bad: tuple[int, int] = (0, 0)) -> None:
    """`base_bad`: in how many of its last runs at the baseline it failed, of how many."""
    t.baseline = there
    if there is None:
        _set(t, V.NEW, f"{what}; not in {base.name} (a new test, or not collected there)")
    elif there.outcome is O.PASSED and base_bad[0]:
        bad, runs = base_bad
        _set(t, V.FLAKY, f"{what}; passed at {base.name} in its last run there, but failed "
             f"there in {bad} of its last {runs}: flaky there too")
    elif there.outcome is O.PASSED:
        _set(t, V.REGRESSION, f"{what}; passes at {base.name}")
    elif there.outcome.bad and same_failure(t.signature, there.signature):
        _set(t, V.PRE_EXISTING, f"fails at {base.name} too, the same way")
    elif there.outcome.bad:
        _set(t, V.REGRESSION, f"{what}; fails at {base.name} too, but differently: "
             f"{there.signature or there.outcome}")
    else:
        _set(t, V.NEW, f"{what}; {there.outcome} at {base.name}")


# -- the second opinion ------------------------------------------------------------------

def _second_opinion(runner: Runner, tests: list[TestResult], base, j: Judgement, history,
                    environ: str, known: dict[str, int] | None = None) -> None:
    """A regression is said only on evidence that holds apart. The confirmation runs a
    module's failures in one pytest, where a deadline one of them misses slows the next
    (tractor's timing tests chain so), and the baseline ran them once: each candidate
    now runs in a pytest of its own at HEAD (reruns.alone), and those that fail there
    again run once more at the baseline. A pass alone at HEAD, or a failure at the
    baseline, makes it flaky: it flips there too. A test the history already saw at the
    baseline in two runs or more (`known`: how many; each passed, or each failed another
    way, or it would not be a candidate) is not run there again. Stopped (the verdict's
    time spent), a candidate keeps its verdict and its reason says the second opinion
    is missing."""
    known = known or {}
    j.second = len(tests)
    got, phase = reruns.alone(runner, tests, f"a second opinion on {len(tests)} "
                              "regression(s)")
    j.absorb(phase)
    again_bad: list[TestResult] = []
    for t in tests:
        key = stable_id(t.nodeid)
        if key not in got:
            t.why += " (no second opinion: the verdict's time ran out)"
            continue
        again = got[key]
        if again is None:
            t.why += " (its second run alone did not report)"
            continue
        t.reruns.append(again)
        if again.outcome is O.PASSED:
            _set(t, V.FLAKY, "failed in the run and again beside its module's other "
                 "failures, but passed in a pytest of its own")
        elif again.outcome.bad:
            again_bad.append(t)
        else:   # interrupted, or the verdict's time ran out while it ran
            t.why += f" (no second opinion: its run alone was {again.outcome.value})"
    for t in [t for t in again_bad if known.get(stable_id(t.nodeid), 0) >= 2]:
        again_bad.remove(t)
        how = "passed" if t.baseline is not None and t.baseline.outcome is O.PASSED else \
            "failed another way"
        t.why += (f"; failed again in a pytest of its own, and {how} at {base.name} in "
                  f"its last {known[stable_id(t.nodeid)]} runs there")
    if not again_bad or runner.stopped():
        return
    there, phase = reruns.at_baseline(runner, again_bad, base, history, environ,
                                      phase=RunDir.BASELINE_PHASE + "-2", lock=j.base_lock)
    j.absorb(phase)
    for t in again_bad:
        b, first = there.get(stable_id(t.nodeid)), t.baseline
        if b is None or first is None:
            continue
        if b.outcome.bad != first.outcome.bad:   # it passed once and failed once there
            t.baseline = b
            _set(t, V.FLAKY, f"failed again in a pytest of its own, but at {base.name} it "
                 f"passed once and failed once ({b.signature or b.outcome}"
                 f"{'' if b.outcome.bad else ' before'}): it flips there too")
        elif b.outcome.bad and same_failure(t.signature, b.signature):
            t.baseline = b
            _set(t, V.PRE_EXISTING, f"fails at {base.name} too, the same way (on a second "
                 "run there)")
        else:
            how = "passed" if b.outcome is O.PASSED else "failed another way"
            t.why += f"; failed again in a pytest of its own, and {how} at {base.name} again"


# -- the exit code and the summary's first line ----------------------------------------------

def failing(results: Results, strict: bool = False) -> list[TestResult]:
    """The failures that fail the run: regressions and new ones (every one, --strict)."""
    return list(results.failures) if strict else results.new_failures


def counts(results: Results) -> dict[V, int]:
    out = dict.fromkeys(V, 0)
    for t in results.failures:
        if t.verdict is not None:
            out[t.verdict] += 1
    return out


def headline(results: Results, j: Judgement | None) -> str:
    """`verdict: 0 regressions · 21 pre-existing (fail at main too) · 4 flaky (passed
    alone) · 2 known-flaky`"""
    c = counts(results)
    base = j.baseline if j else None
    words = {V.REGRESSION: "", V.NEW: "", V.PRE_EXISTING:
             f" (fail at {base.label} too)" if base else
             " (nothing changed to compare with)" if j and j.published else
             " (failed before too)",
             V.FLAKY: " (passed alone)", V.LOAD_SENSITIVE: " (passed alone)",
             V.KNOWN_FLAKY: "", V.QUARANTINED: ""}
    parts = [f"{c[V.REGRESSION]} regression{'' if c[V.REGRESSION] == 1 else 's'}"]
    parts += [f"{c[v]} {v.value}{words[v]}" for v in V if v is not V.REGRESSION and c[v]]
    return "verdict: " + " · ".join(parts)

