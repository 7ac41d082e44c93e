"""A tiny pytest plugin tractor-tasks loads into the target's pytest (`-p`).

It observes, and selects only when told to. Into $TRACTOR_TASKS_PROBE_DIR it writes:
  session.json   at configure: pytest's pid, rootdir, cache dir, the lastfailed
                 cache as it was before this run
  collected.json after collection: the node ids that will run, in order
  scopes.json    after collection: {module path: [fixture names]}, the module- and
                 class-scoped fixtures its tests use (a module with none may be
                 split across CI shards at test boundaries without setting anything
                 up twice that it set up once)
  current        the running test and since when ({"nodeid", "since"}); between
                 tests {"after": id}: the supervisor's per-test watchdog reads it
  results.jsonl  the pass's event stream, one JSON record a line, as it happens (the
                 run's results, even when pytest is killed before it could write
                 anything else; probelog.py is its one reader). Every test report
                 (no "event" key): nodeid, when, outcome, duration, when it was
                 written (`at`), when its test started (`start`), the machine's
                 1-minute load and pytest's CPU seconds so far, its own and its
                 waited-for children's (`load`, `cpu`: the run's timeline). And
                 {"event": ...} records: "session" (session.json's fields),
                 "collected" ({"ids"}), "scopes" ({"modules"}), "start" ({"nodeid",
                 "at"}, at logstart), "costs" (at logfinish: {"nodeid", "start",
                 "stop" (unix time), "cpu" (CPU seconds of pytest plus its reaped
                 children, from getrusage, over the test), "rss" (peak RSS in bytes
                 of pytest or its largest reaped child so far), "load" (1-min load
                 average)}), "finished" ({"exitstatus"}, at session finish).
                 The file is opened once and kept open: a test that removes or
                 replaces it (or the whole dir) cannot redirect what is written.
  finished.json  at session finish: pytest's exit status
  stacks-<pid>.txt  what `kill -USR1 <pytest pid>` dumps (every thread's stack),
                 chained with any SIGUSR1 handler the target installs, before or
                 after this plugin (tractor's --enable-stackscope task trees)
$TRACTOR_TASKS_SELECT names a JSON file {"only": [ids] | null, "skip": [ids]}:
tests outside "only" or inside "skip" are deselected (a resumed pass, a shard);
the rest keep pytest's order. Ids are compared without the memory addresses some
parametrize ids carry (`<function f at 0x7f...>` differs in every process).
Standard library only: it runs in the target's venv.
"""
import faulthandler
import json
import os
import re
import resource
import signal
import sys
import time
import traceback

import pytest

_DIR = os.environ.get("TRACTOR_TASKS_PROBE_DIR")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # as results.stable_id does


def _key(nodeid):
    return _ADDRESS.sub("", nodeid)
_SELECT = os.environ.get("TRACTOR_TASKS_SELECT")
_stacks = None
_ours = None

if _DIR and not os.path.isdir(_DIR):
    _DIR = None


def _write(name, data):
    """Write a small file whole (readers never see half of it): a temp name of its own,
    created exclusively and never through a link a test planted; the rename replaces
    whatever is at the name (a link itself, never its target)."""
    if not _DIR:
        return
    path = os.path.join(_DIR, name)
    tmp = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | getattr(os, "O_CLOEXEC", 0), 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _dump_python(signum, frame):
    """A Python-level dumper, for when the target put its own handler over ours."""
    try:
        _stacks.write(f"--- SIGUSR1 at {time.time():.3f}, pid {os.getpid()}\n")
        for tid, fr in sys._current_frames().items():
            _stacks.write(f"Thread {tid:#x}:\n{''.join(traceback.format_stack(fr))}\n")
        _stacks.flush()
    except Exception:
        pass
    if callable(_ours.prev):
        _ours.prev(signum, frame)


def _chain():
    """Keep our dump firing after the target installs its own SIGUSR1 handler."""
    global _ours
    current = signal.getsignal(signal.SIGUSR1)
    if _stacks is None or current is _ours or not callable(current):
        return
    if _ours is None or current is not _ours.prev:
        def handler(signum, frame):
            _dump_python(signum, frame)
        handler.prev = current
        _ours = handler
        signal.signal(signal.SIGUSR1, handler)


if _DIR and hasattr(signal, "SIGUSR1"):
    _stacks = open(os.path.join(_DIR, f"stacks-{os.getpid()}.txt"), "a")
    _prev = signal.getsignal(signal.SIGUSR1)
    faulthandler.register(signal.SIGUSR1, file=_stacks, all_threads=True,
                          chain=callable(_prev))


def pytest_configure(config):
    cache = getattr(config, "cache", None)
    before = cache.get("cache/lastfailed", {}) if cache is not None else {}
    session = {
        "pid": os.getpid(), "rootdir": str(config.rootpath),
        "cachedir": str(getattr(cache, "_cachedir", "")) if cache is not None else "",
        "lastfailed_before": before if isinstance(before, dict) else {},
        "started": time.time(),
    }
    _write("session.json", session)
    _append({"event": "session", **session})
    _chain()


def _load_select():
    try:
        with open(_SELECT) as f:
            data = json.load(f)
        only = data.get("only")
        return ({_key(i) for i in only} if only is not None else None,
                {_key(i) for i in data.get("skip") or ()})
    except (OSError, ValueError, AttributeError):
        return None, set()


# after every other reordering plugin, so what runs keeps pytest's own order
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    if _SELECT:
        only, skip = _load_select()
        keep, drop = [], []
        for item in items:
            key = _key(item.nodeid)
            out = key in skip or (only is not None and key not in only)
            (drop if out else keep).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep


def pytest_collection_finish(session):
    ids = [item.nodeid for item in session.items]
    scopes = _shared_scopes(session.items)
    _write("collected.json", ids)
    _write("scopes.json", scopes)
    _append({"event": "collected", "ids": ids})
    _append({"event": "scopes", "modules": scopes})


def _shared_scopes(items):
    """Per module, the fixtures of module or class scope its tests use, or None for a
    module one of whose tests has no fixture info this can read (a plugin's own item
    type, another pytest): an unknown shape says nothing, and such a module stays whole.
    (A fixture fetched with request.getfixturevalue() is not in that info.)"""
    found = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        names = found.setdefault(module, set())
        defs_by_name = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", None)
        if names is None or not isinstance(defs_by_name, dict):
            found[module] = None
            continue
        for name, defs in defs_by_name.items():
            for fdef in defs or ():
                scope = getattr(fdef, "scope", "function")
                if str(getattr(scope, "value", scope)) in ("module", "class"):
                    names.add(name)
    return {module: None if names is None else sorted(names)
            for module, names in found.items()}


_started = {}  # nodeid -> (unix time, cpu seconds) at its logstart


def _cpu():
    """CPU seconds of pytest and of the children it reaped (RUSAGE_CHILDREN counts only
    those: live subactors are sampled by the supervisor instead)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_rss():
    """Bytes (ru_maxrss is in KiB on Linux)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return max(me.ru_maxrss, kids.ru_maxrss) * 1024


def pytest_runtest_logstart(nodeid, location):
    _chain()
    now = time.time()
    _started[nodeid] = (now, _cpu())
    _write("current", {"nodeid": nodeid, "since": now})
    _append({"event": "start", "nodeid": nodeid, "at": round(now, 3)})


def pytest_runtest_logfinish(nodeid, location):
    now = time.time()
    _write("current", {"after": nodeid, "since": now})
    start = _started.pop(nodeid, None)
    if start is not None and _DIR:
        try:
            load = round(os.getloadavg()[0], 2)
        except OSError:
            load = None
        _append({"event": "costs", "nodeid": nodeid, "start": round(start[0], 3),
                 "stop": round(now, 3), "cpu": round(max(_cpu() - start[1], 0.0), 3),
                 "rss": _peak_rss(), "load": load})


_log = []  # the fd of results.jsonl, opened once (the supervisor made the file)


def _append(rec):
    """One record, one write() to the kept fd (O_APPEND: whole lines, in order)."""
    if not _DIR:
        return
    try:
        if not _log:
            _log.append(os.open(os.path.join(_DIR, "results.jsonl"),
                                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                                | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644))
        data = (json.dumps(rec) + "\n").encode()
        while data:
            data = data[os.write(_log[0], data):]
    except OSError:
        pass


def _sample():
    """The machine's load and pytest's CPU seconds (with its reaped children) now."""
    try:
        t = os.times()
        return {"load": round(os.getloadavg()[0], 2),
                "cpu": round(t.user + t.system + t.children_user + t.children_system, 3)}
    except OSError:
        return {}


def pytest_runtest_logreport(report):
    rec = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
           "duration": round(report.duration, 3), "at": round(time.time(), 3)}
    start = _started.get(report.nodeid)
    if start is not None:
        rec["start"] = round(start[0], 3)
    rec.update(_sample())
    if hasattr(report, "wasxfail"):
        rec["xfail"] = True
    if report.failed:
        rec["longrepr"] = report.longreprtext[-8000:]
    _append(rec)


def pytest_collectreport(report):
    if report.failed:
        _append({"nodeid": report.nodeid, "when": "collect", "outcome": "failed",
                 "duration": 0.0, "at": round(time.time(), 3),
                 "longrepr": report.longreprtext[-8000:]})


def pytest_sessionfinish(session, exitstatus):
    _write("finished.json", {"exitstatus": int(exitstatus)})
    _append({"event": "finished", "exitstatus": int(exitstatus)})


# -- footprints: tell the recorder (recorder/sitecustomize.py, when it loaded in this
# process) which test runs and in which phase; it re-arms per test
_fp = sys.modules.get("_tractor_tasks_footprint")
_fp = getattr(_fp, "recorder", None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _fp is not None:
        _fp.begin(item.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if _fp is not None:
        _fp.set_phase("call")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    if _fp is not None:
        _fp.set_phase("teardown")


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """What a fixture runs counts for the tests its scope serves (footprints.attribute)."""
    if _fp is None:
        yield
        return
    before = _fp.phase
    _fp.set_phase(f"setup:{fixturedef.scope}")
    try:
        yield
    finally:
        _fp.set_phase(before)
