"""A run's result as the text printed at its end: teardown notes, counts, the verdict
first (how many regressions, pre-existing, flaky ... failures), then the failures
that fail the run with their tracebacks and likely causes, then one line for each
explained one, hangs with their dumps, leaks, and what to do."""
from __future__ import annotations

from .fsutil import shown
from .status import RunStatus, Stop, TestOutcome as O
from .trace import FILE


def render(p, result, *, traceback_lines: int = 12, dump_lines: int = 15) -> list[str]:
    results = result.results
    lines: list[str] = []
    for o in result.passes:
        for note in o.teardown:
            lines.append(f"teardown{'' if len(result.passes) == 1 else f' (pass {o.number})'}: "
                         f"{note}")
        if o.stop is Stop.TIMEOUT:
            where = o.running or "no test was running (collection or session setup/teardown)"
            lines.append(f"TIMEOUT: {where}; stacks in {o.stacks}")
        elif o.stop is Stop.INTERRUPTED:
            lines.append("INTERRUPTED" + (f" during {o.running}" if o.running else ""))
        elif o.stop is Stop.FINISHED and (o.returncode or 0) < 0:
            lines.append(f"pytest was killed by signal {-o.returncode}"
                         + (f" during {o.running}" if o.running else ""))
    if result.stop is not None and all(o.stop is not result.stop for o in result.passes):
        # the run's own stop, between passes (no pass was running to say it)
        lines.append("INTERRUPTED between passes" if result.stop is Stop.INTERRUPTED else
                     "TIMEOUT: the whole-run bound expired between passes")
    passes = len(result.passes)
    extra = []
    if p.opts.shard:   # a CI job: one shard of N ran here
        extra.append("shard %d/%d" % p.opts.shard)
    elif result.shards:
        extra.append(f"{result.shards} shards")
    if passes > 1 and not result.shards:
        extra.append(f"{passes} passes")
    lines.append(f"results: {results.counts_line()} in {results.seconds:.1f}s"
                 + (f" ({', '.join(extra)})" if extra else ""))
    if result.no_match():
        k = f" (-k {shown(p.opts.k)!r})" if p.opts.k else ""
        lines.append(f"error: the selection{k} matches no test; nothing ran: check the "
                     "expression or the test ids")
    lines += _failures(results, result.verdict, traceback_lines, dump_lines,
                       strict=p.opts.strict)
    # a test cut while running: by a stop of the run, or by its pytest ending (os._exit,
    # a kill from elsewhere) when nothing stopped the run
    when = "the run stopped" if result.stopped() else "pytest ended"
    for t in results.tests.values():
        if t.outcome in (O.INTERRUPTED, O.TIMEOUT):
            lines.append(f"  {t.outcome.upper()} {t.nodeid}  (running when {when})")
    not_run = results.not_run()
    if not_run and (results.hung or result.status in (RunStatus.INTERRUPTED,
                                                      RunStatus.TIMEOUT)):
        lines.append(f"not run: {len(not_run)} of {len(results.collected)} collected test(s)")
    if results.leaks:
        lines.append(f"LEAK: {results.leaks.line()}"
                     + ("" if p.opts.fail_on_leak else "  (--fail-on-leak makes this fail)"))
    lines += result.notes
    if result.code == 1 and results.failures and not results.new_failures \
            and result.cut == "-x" and results.not_run() and not p.opts.strict:
        lines.append("only explained failures, but -x stopped the run at one: the rest did "
                     "not run (use --no-x to run past them)")
    for why in result.broken:
        lines.append(f"NOT RUN: {why}")
    for why in result.unfinished:
        if why not in result.broken:  # every test ran, but pytest never finished
            lines.append(f"UNFINISHED: {why}")
    missing = result.unaccounted()
    if missing:
        listed = ", ".join(missing[:10]) + (f", ... (+{len(missing) - 10})"
                                           if len(missing) > 10 else "")
        lines.append(f"NOT RUN: {len(missing)} selected test(s) never ran and nothing "
                     f"accounts for it: {listed}")
    if result.run_dir is not None:
        lines.append(f"files: {result.run_dir}")
        if (result.run_dir / FILE).is_file():
            lines.append(f"timeline: {result.run_dir / FILE} (open in ui.perfetto.dev)")
    return [shown(ln) for ln in lines]  # ids and messages: no raw ESC/BEL/bidi to a terminal


def _tag(t) -> str:
    if t.verdict is not None:
        return t.verdict.value.upper()
    return f"known flaky ({t.flaky.note or t.flaky.error})" if t.flaky else "NEW"


def _failures(results, judgement, traceback_lines: int, dump_lines: int, *,
              strict: bool) -> list[str]:
    """The verdict's line, then the failures: those that fail the run in full (verdict,
    why, likely cause, traceback), the explained ones one line each."""
    fails = results.failures
    if not fails:
        return []
    from . import verdict
    lines = []
    judged = any(t.verdict is not None for t in fails)
    if judged:
        lines.append(verdict.headline(results, judgement))
        if judgement is not None:
            lines += judgement.notes
    order = sorted(fails, key=lambda t: (t.verdict.order if t.verdict else -1))
    for t in order:
        full = strict or t.verdict is None or t.verdict.fails_run
        head = f"  {t.outcome.upper():6} {t.nodeid}  [{_tag(t)}]"
        if not full:
            lines.append(head + (f": {t.why}" if t.why else ""))
            continue
        lines.append(head)
        if t.why:
            lines.append(f"      {t.why}")
        lines += [f"      {c}" for c in t.cause]
        if t.outcome is O.HUNG:
            lines.append(f"      {t.message}; dump: {t.dump}")
            body = [ln for ln in t.text.splitlines() if ln.strip()][:dump_lines]
        else:
            body = t.short(traceback_lines).splitlines()
        lines += [f"      {ln}" for ln in body]
    if judged and judgement is not None and judgement.confirmed:
        absorbed = sum(1 for t in fails if any(r.outcome is O.PASSED for r in t.reruns))
        lines.append(f"verdict: {judgement.confirmed} failure(s) re-run alone in "
                     f"{judgement.confirm_seconds:.1f}s ({absorbed} passed)"
                     + (f"; {judgement.at_baseline} run at {judgement.baseline.name} in "
                        f"{judgement.baseline_seconds:.1f}s" if judgement.at_baseline else ""))
    return lines
