"""A tiny pytest plugin tractor-tasks loads into the target's pytest (`-p`).

It only observes: it writes the node id of the test that is running to
`$TRACTOR_TASKS_PROBE_DIR/current` (so a hung run can say which test hung;
"(after <id>)" between tests), appends each test report to `results.jsonl`
(so a run killed before pytest writes its JUnit file still has results),
and makes `kill -USR1 <pytest pid>` dump every thread's Python stack to
`$TRACTOR_TASKS_PROBE_DIR/stacks-<pid>.txt`, chaining to any SIGUSR1 handler
the target installed itself. Standard library only: it runs in the target's
venv, not ours.
"""
import faulthandler
import json
import os
import signal

_DIR = os.environ.get("TRACTOR_TASKS_PROBE_DIR")
_stacks = None

if _DIR and os.path.isdir(_DIR) and hasattr(signal, "SIGUSR1"):
    _prev = signal.getsignal(signal.SIGUSR1)
    _stacks = open(os.path.join(_DIR, f"stacks-{os.getpid()}.txt"), "a")
    faulthandler.register(signal.SIGUSR1, file=_stacks, all_threads=True,
                          chain=callable(_prev))


def _note(text):
    if _DIR:
        try:
            with open(os.path.join(_DIR, "current"), "w") as f:
                f.write(text)
        except OSError:
            pass


def pytest_runtest_logstart(nodeid, location):
    _note(nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _note(f"(after {nodeid})")


def pytest_runtest_logreport(report):
    if not _DIR:
        return
    rec = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
           "duration": round(report.duration, 3)}
    if hasattr(report, "wasxfail"):
        rec["xfail"] = True
    if report.failed:
        rec["longrepr"] = report.longreprtext[-6000:]
    try:
        with open(os.path.join(_DIR, "results.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
    except OSError:
        pass
