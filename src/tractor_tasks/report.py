"""The one place a run's result becomes text: teardown notes, counts, each failure
with its class and short traceback, hangs with their dumps, leaks, and what to do."""
from __future__ import annotations

from .fsutil import shown
from .status import RunStatus, TestOutcome as O
from .supervise import Stop


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
    passes = len(result.passes)
    extra = []
    if result.shards:
        extra.append(f"{result.shards} shards")
    if passes > 1 and not result.shards:
        extra.append(f"{passes} passes")
    lines.append(f"results: {results.counts_line()} in {results.seconds:.1f}s"
                 + (f" ({', '.join(extra)})" if extra else ""))
    for t in results.failures:
        tag = f"known flaky ({t.flaky.note or t.flaky.error})" if t.flaky else "NEW"
        lines.append(f"  {t.outcome.upper():6} {t.nodeid}  [{tag}]")
        if t.outcome is O.HUNG:
            lines.append(f"      {t.message}; dump: {t.dump}")
            body = [ln for ln in t.text.splitlines() if ln.strip()][:dump_lines]
        else:
            body = t.short(traceback_lines).splitlines()
        lines += [f"      {ln}" for ln in body]
    for t in results.tests.values():
        if t.outcome in (O.INTERRUPTED, O.TIMEOUT):
            lines.append(f"  {t.outcome.upper()} {t.nodeid}  (running when the run stopped)")
    not_run = results.not_run()
    if not_run and (results.hung or result.status in (RunStatus.INTERRUPTED,
                                                      RunStatus.TIMEOUT)):
        lines.append(f"not run: {len(not_run)} of {len(results.collected)} collected test(s)")
    if results.leaks:
        lines.append(f"LEAK: {results.leaks.line()}"
                     + ("" if p.opts.fail_on_leak else "  (--fail-on-leak makes this fail)"))
    lines += result.notes
    if result.code == 1 and not results.new_failures and results.known_flaky \
            and p.opts.exitfirst and not results.hung:
        lines.append("only known-flaky failures, but -x stopped the run there: the rest did "
                     "not run (use --no-x to run past them)")
    if result.run_dir is not None:
        lines.append(f"files: {result.run_dir}")
    return [shown(ln) for ln in lines]  # ids and messages: no raw ESC/BEL/bidi to a terminal
