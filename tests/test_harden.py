"""Issue 26: what a test, a file or a neighbour can do to a run. Each test plants the
real thing (a link, a held SQLite lock in another process, a process that only looks
like an actor) and checks nothing outside the target is touched."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from tractor_tasks import reruns
from tractor_tasks.errors import TaskError
from tractor_tasks.history import History, RunRow, TestRow, aggregate
from tractor_tasks.junit import import_junit
from tractor_tasks.rundirs import State
from tractor_tasks.target import load_target


def plain_target(root: Path):
    """A target without git or a venv (the fast tier starts no process)."""
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "pkg"\nrequires-python = ">=3.11"\n'
                                         '[tool.tractor-tasks]\npackage = "pkg"\n')
    (root / "pkg" / "__init__.py").write_text("")
    return load_target(root)


def exports_elsewhere(d: Path) -> dict[str, str]:
    """Dirs named like baseline exports (40 hex digits), outside any target."""
    d.mkdir(parents=True)
    made = {}
    for i in range(4):
        e = d / (f"{i}" * 40)
        e.mkdir()
        (e / "keep.txt").write_text("precious")
        made[e.name] = "precious"
    return made


def listing(d: Path) -> dict[str, str]:
    return {p.name: (p / "keep.txt").read_text() for p in d.iterdir()}


# -- HIGH 2: .tractor-tasks/baseline (and baseline/<commit>) as a link -------------------

@pytest.mark.parametrize("linked", ["baseline", "baseline/<commit>"])
def test_harden_a_linked_baseline_dir_is_refused_not_written_or_pruned(tmp_path, linked):
    target = plain_target(tmp_path / "t")
    state = State(target)
    state.ensure()
    elsewhere = tmp_path / "elsewhere"
    made = exports_elsewhere(elsewhere)
    commit = "a" * 40
    baseline = state.path / "baseline"
    if linked == "baseline":
        baseline.symlink_to(elsewhere)
    else:
        baseline.mkdir()
        (baseline / commit).symlink_to(elsewhere)
    # the run's own start refuses the state dir's link in one line
    if linked == "baseline":
        with pytest.raises(TaskError, match="baseline is a symlink"):
            state.new_run()
    # and the verdict's export, reached with the link planted mid-run, is refused too
    runner = SimpleNamespace(p=SimpleNamespace(target=target))
    base = SimpleNamespace(commit=commit, name="main", why="test")
    found, j = reruns.at_baseline(runner, [], base, None)
    assert found == {}
    assert len(j.notes) == 1 and "is a symlink" in j.notes[0] and "\n" not in j.notes[0]
    assert listing(elsewhere) == made      # nothing exported there, nothing pruned there
    assert (baseline if linked == "baseline" else baseline / commit).is_symlink()


# -- HIGH 3: .tractor-tasks/history.sqlite as a link ---------------------------------------

def _row(run_id="r1"):
    return (RunRow(run_id, 1.0, 2.0, "run", minor="3.11", tpt="tcp", spawn="trio"),
            [TestRow("tests/t.py::test_a", "passed", 1.5)])


@pytest.mark.parametrize("behind", ["empty file", "foreign sqlite", "dangling"])
@pytest.mark.parametrize("linked", ["history.sqlite", "history.sqlite-wal"])
def test_harden_a_linked_history_is_refused_and_nothing_written(tmp_path, behind, linked):
    state_dir = tmp_path / "t" / ".tractor-tasks"
    state_dir.mkdir(parents=True)
    outside = tmp_path / "outside.db"
    if behind == "empty file":
        outside.write_bytes(b"")
    elif behind == "foreign sqlite":
        con = sqlite3.connect(outside)
        con.execute("CREATE TABLE mine (x)")
        con.commit()
        con.close()
    before = outside.read_bytes() if outside.exists() else None
    (state_dir / linked).symlink_to(outside)
    with pytest.raises(TaskError) as err:
        History(state_dir / "history.sqlite").record(*_row())
    assert "is a symlink" in str(err.value) and "\n" not in str(err.value)
    assert (outside.read_bytes() if outside.exists() else None) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["t"] + (["outside.db"] if before is not None else []))


def test_harden_a_history_link_planted_after_opening_is_refused(tmp_path):
    """A test's cwd is the target: it can swap the file between two connections."""
    path = tmp_path / "history.sqlite"
    h = History(path)
    h.record(*_row("r1"))
    outside = tmp_path / "outside"
    outside.write_bytes(b"")
    path.rename(tmp_path / "moved.sqlite")
    path.symlink_to(outside)
    with pytest.raises(TaskError, match="is a symlink"):
        h.record(*_row("r2"))
    assert outside.read_bytes() == b""


# -- MED 7: fixed-name temp files and planted links in the run dir --------------------------

def _planted(run: Path, name: str, outside: Path) -> None:
    """What a hostile test leaves: the old fixed temp name and the file itself as links."""
    (run / f".{name}.tmp").symlink_to(outside)
    (run / name).symlink_to(outside)


@pytest.mark.parametrize("name", ["trace.json", "units.json", "contention.json", "shm.json"])
def test_harden_run_files_never_write_through_a_planted_link(tmp_path, name):
    from tractor_tasks import shm, trace, workers
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    _planted(run, name, outside)
    if name == "trace.json":
        assert trace.write(run) == run / name
    elif name == "shm.json":
        shm._write(run / name, {"a": 1})
    else:
        ctx = SimpleNamespace(run_dir=SimpleNamespace(path=run))
        if name == "units.json":
            workers._write_units(ctx, [])
        else:
            workers._write_contention(ctx, SimpleNamespace(tests={}))
    assert outside.read_text() == "precious"
    assert not (run / name).is_symlink() and (run / name).read_text().strip()
    assert (run / f".{name}.tmp").is_symlink()   # the planted name is left alone
    assert sorted(p.name for p in run.iterdir()) == sorted([name, f".{name}.tmp"])


def test_harden_venv_lock_never_truncates_through_a_link(tmp_path):
    target = plain_target(tmp_path / "t")
    state = State(target)
    state.ensure()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (state.path / "venv-3.11.lock").symlink_to(outside)
    with pytest.raises(TaskError, match="cannot write"):
        with state.venv_lock("3.11"):
            pass
    assert outside.read_text() == "precious"


# -- HIGH 5: a process that only looks like an actor -----------------------------------------

_DETACH = """
import os, sys
cwd, argv = sys.argv[1], sys.argv[2:]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.chdir(cwd)
        fd = os.open(os.devnull, os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(fd, n)
        os.execvp(argv[0], argv)
    os._exit(0)
os._exit(0)
"""


def _detached(procs, cwd: Path, *argv: str) -> int:
    """`argv` run detached (setsid, adopted by init) with `cwd`, as a user's `tail -f &`."""
    import subprocess
    import sys
    import psutil
    from helpers import wait_for
    before = {p.pid for p in psutil.process_iter()}
    subprocess.run([sys.executable, "-c", _DETACH, str(cwd), *argv], check=True)

    def started():
        for p in psutil.process_iter(["cmdline", "cwd"]):
            if p.pid not in before and p.info["cmdline"] == list(argv) and \
                    p.info["cwd"] == str(cwd):
                return p.pid
        return None
    return procs.adopt(wait_for(started, what=f"{argv[0]} started"))


@pytest.mark.slow
def test_harden_sweep_spares_non_python_processes_that_only_name_a_marker(tmp_path, procs):
    from helpers import alive, copy_sample
    from tractor_tasks.sweep import sweep
    root = copy_sample(tmp_path / "sample")
    target = load_target(root)
    assert "_subactor[" in target.process_markers
    log = next(m for m in target.process_markers if m != "_subactor[") + ".log"
    (root / log).write_text("line\n")
    (root / "notes_subactor[x].txt").write_text("notes\n")
    tail = _detached(procs, root, "tail", "-f", log)
    in_subdir = _detached(procs, root / "tests", "tail", "-f", "../notes_subactor[x].txt")
    at_root = _detached(procs, root, "tail", "-f", "notes_subactor[x].txt")
    actor = procs.orphan(root, "_subactor[leaker@1]")   # a real (Python) leftover actor
    report = sweep(target)
    swept = {p.pid for p, _ in report.processes}
    assert actor in swept and not alive(actor)
    assert not swept & {tail, in_subdir, at_root}, report.lines()
    assert alive(tail) and alive(in_subdir) and alive(at_root)


_MAP = """
import mmap, os, sys, time
path, ready = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, 4096)
m = mmap.mmap(fd, 4096)
os.close(fd)   # held by the mapping only, as a SharedMemory segment is
open(ready, "w").write("1")
time.sleep(float(sys.argv[3]))
"""


@pytest.mark.slow
def test_harden_clean_shm_keeps_a_segment_a_neighbour_made_during_an_uncontained_run(tmp_path):
    """A stand-in /dev/shm (a temp dir), real processes: the run's process maps a segment
    and dies (a hard-killed actor), a neighbour makes one in the same time window and
    exits. Only the one seen held by the run is the checkout's; clean --shm leaves the
    neighbour's."""
    import subprocess
    import sys
    import time
    from helpers import wait_for
    from tractor_tasks import shm
    root, state = tmp_path / "shm", tmp_path / "state"
    root.mkdir()
    pass_dir = state / "runs" / "20260101-000000-1-0" / "pass-1"
    pass_dir.mkdir(parents=True)
    shm.record_before(pass_dir, root)
    time.sleep(0.05)
    ready = tmp_path / "ready"
    actor = subprocess.Popen([sys.executable, "-c", _MAP, str(root / "run_seg"), str(ready),
                              "30"])
    try:
        wait_for(ready.exists, what="the run's process mapped its segment")
        seen = shm.held_by([actor.pid], root)    # the supervisor's look during the pass
        neighbour = subprocess.run([sys.executable, "-c", _MAP, str(root / "nb_seg"),
                                    str(tmp_path / "nb-ready"), "0"], timeout=30)
        assert neighbour.returncode == 0
    finally:
        actor.kill()
        actor.wait()
    assert seen == {"run_seg": (root / "run_seg").stat().st_ino}
    got = shm.appeared(pass_dir, root, own={actor.pid}, seen=seen)   # the census
    assert [s.name for s, _ in got] == ["run_seg"]
    census = shm.orphans(state, root)
    assert [s.name for s in census.ours] == ["run_seg"]
    assert [s.name for s in census.others] == ["nb_seg"]
    lines = shm.remove(state, root=root)
    assert lines[0].startswith(f"removed shared memory {root / 'run_seg'}")
    assert sorted(p.name for p in root.iterdir()) == ["nb_seg"]


# -- MED 11: a selection that matches nothing ---------------------------------------------

@pytest.mark.slow
def test_harden_k_that_matches_nothing_is_bad_usage(sample_repo):
    from helpers import invoke
    r = invoke("test", "-k", "no_such_test_anywhere", root=sample_repo)
    assert r.returncode == 2, r.stdout + r.stderr
    err = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "no_such_test_anywhere" in err[0] and "matches no test" in err[0]
    assert "Traceback" not in r.stderr


# -- MED 6: a catastrophic regex in a flaky rule ---------------------------------------------

@pytest.mark.slow
def test_harden_a_catastrophic_flaky_regex_is_refused_before_anything_runs(tmp_path):
    """`(x+x+)+y` against a 40-character failure message spun the supervisor for good (no
    timeout had an effect): now the config that holds it is refused when it loads, one
    line naming the rule, exit 2, nothing run or written."""
    from helpers import copy_sample, invoke
    root = copy_sample(tmp_path / "sample-actors", git=True)
    py = root / "pyproject.toml"
    py.write_text(py.read_text() + '\n[[tool.tractor-tasks.flaky]]\ntest = "test_local.py::*"'
                  '\nerror = "(x+x+)+y"\n')
    r = invoke("test", "test_local.py", root=root, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    err = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "flaky[1].error" in err[0] and "(x+x+)+y" in err[0] \
        and "possessive" in err[0], err
    assert not (root / ".tractor-tasks").exists() and not list(root.glob("py3*"))


# -- MED 10: tracebacks a user meets -------------------------------------------------------

@pytest.mark.parametrize("classname", ["/", "/.", "../x", "a/b"])
def test_harden_flaky_junit_import_with_a_path_classname_is_no_traceback(tmp_path, classname):
    root = tmp_path / "t"
    root.mkdir()
    junit = tmp_path / "j.xml"
    junit.write_text(f'<testsuite><testcase classname="{classname}" name="test_a" time="1"/>'
                     f'<testcase classname="{classname}" name="test_b" time="1">'
                     '<failure message="x"/></testcase></testsuite>')
    h = History(tmp_path / "h.sqlite")
    assert import_junit(h, junit, cell="tests-3.11", minor="3.11", tpt="tcp", spawn="trio",
                          root=root) == 2


@pytest.mark.parametrize("key", ["transports", "spawn_backends"])
def test_harden_an_empty_transports_list_is_bad_config(tmp_path, key):
    (tmp_path / "pyproject.toml").write_text(f"[tool.tractor-tasks]\n{key} = []\n")
    with pytest.raises(TaskError) as err:
        load_target(tmp_path)
    assert err.value.code == 2 and key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_harden_history_limit_past_sqlite_and_closed_pipes_are_no_traceback(tmp_path):
    """`history --limit 99999999999999999999`, and a reader that went away (`| head -1`)
    for `invoke --list`, `ci-matrix`, `history X`: no traceback."""
    import subprocess
    import sys
    from helpers import REPO, copy_sample, invoke
    root = copy_sample(tmp_path / "sample")
    r = invoke("history", "x", "--limit", "99999999999999999999", root=root)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    for args in (["--list"], ["ci-matrix", "--root", str(root)],
                 ["history", "x", "--root", str(root)]):
        read, write = os.pipe()
        os.close(read)    # the reader is gone before anything is written
        try:
            p = subprocess.run([sys.executable, "-m", "invoke", *args], stdout=write,
                               stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120)
        finally:
            os.close(write)
        assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, (args, p.stderr)


# -- MED 9: a locked history keeps the rows; absurd costs are clamped ------------------------

_HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()          # until the test closes our stdin
con.execute("ROLLBACK")
"""


def _stored(path: Path) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT run_id FROM results")}
    finally:
        con.close()


@pytest.mark.slow
def test_harden_rows_that_meet_a_locked_history_are_kept_and_merged_later(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "history.sqlite"
    h = History(path)
    h.record(*_row("r0"))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        h.lock_seconds = 1.0
        kept = h.record(*_row("r1"))
        assert kept is not None and kept.is_file() and kept.parent == tmp_path
        assert _stored(path) == {"r0"}   # not written: the other process holds the lock
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert History(path).record(*_row("r2")) is None   # the next run that gets the lock
    assert _stored(path) == {"r0", "r1", "r2"}
    assert not kept.exists() and History(path).pending() == []


def test_harden_absurd_costs_are_clamped_on_write_and_on_read(tmp_path):
    from tractor_tasks.durations import load_costs
    path = tmp_path / "history.sqlite"
    h = History(path)
    run = RunRow("w", 1.0, 2.0, "run", minor="3.11", tpt="tcp", spawn="trio")
    h.record(run, [TestRow("t.py::test_big", "passed", 1e308, cpu=float("inf"), rss=-1),
                   TestRow("t.py::test_neg", "passed", -5.0, cpu=-1.0, rss=10),
                   TestRow("t.py::test_nan", "passed", float("nan"), cpu=float("nan")),
                   TestRow("t.py::test_ok", "passed", 2.0, cpu=1.0, rss=100)])
    # rows another tool (or an older version) wrote unclamped
    con = sqlite3.connect(path)
    con.execute("INSERT INTO runs (run_id, started, finished, kind) VALUES ('old', 0, 1, 'run')")
    for nodeid, dur, cpu in (("t.py::test_old_inf", 1e308, 1e308),
                             ("t.py::test_ok", 3.0, float("inf"))):
        con.execute("INSERT INTO results (run_id, nodeid, started, outcome, duration, cpu, "
                    "rss) VALUES ('old', ?, 0, 'passed', ?, ?, -7)", (nodeid, dur, cpu))
    con.commit()
    con.close()
    costs = h.test_costs()
    assert all(0 <= c.wall < 1e6 and (c.cpu is None or 0 <= c.cpu < 1e6)
               and (c.rss is None or c.rss >= 0) for c in costs.values()), costs
    assert "t.py::test_old_inf" not in costs
    units = aggregate(list(costs), h.test_costs(list(costs)))
    assert all(u.wall == u.wall and u.wall < 1e7 for u in units.values())   # no NaN
    out = tmp_path / "durations.json"
    h.export_durations(out)
    assert load_costs(out)   # what it exports, --durations-file takes back


@pytest.mark.parametrize("planted", ["symlink", "fifo"])
def test_harden_the_output_log_never_writes_through_a_planted_file(tmp_path, planted):
    """A test can reach the run dir: a later pass's output.log planted as a link (or a
    FIFO nobody reads) is replaced, and pytest's pipe is still drained."""
    from tractor_tasks.output import Tee
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    log = tmp_path / "pass-2" / "output.log"
    log.parent.mkdir()
    if planted == "symlink":
        log.symlink_to(outside)
    else:
        os.mkfifo(log)
    read, write = os.pipe()
    tee = Tee(read, log, None)
    tee.start()
    os.write(write, b"pytest says hi\n")
    os.close(write)
    tee.join(10)
    assert not tee.is_alive()
    assert outside.read_text() == "precious"
    assert not log.is_symlink() and log.read_bytes() == b"pytest says hi\n"


def test_harden_a_fifo_in_place_of_the_history_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "history.sqlite")
    with pytest.raises(TaskError, match="not a regular file"):
        History(tmp_path / "history.sqlite")


def test_harden_a_killed_pass_counts_only_what_it_was_seen_holding(tmp_path):
    """No census (the supervisor was SIGKILLed): shm-seen.json, written by its looks,
    says which segments were the run's; one made meanwhile by anyone else is not."""
    import json
    import time
    from tractor_tasks import shm
    root, state = tmp_path / "shm", tmp_path / "state"
    root.mkdir()
    d = state / "runs" / "20260101-000000-1-0" / "pass-1"
    d.mkdir(parents=True)
    (d / shm.BEFORE).write_text(json.dumps({"start": time.time() - 5, "segments": {}}))
    for name in ("seen_seg", "neighbours_seg"):
        (root / name).write_bytes(b"s")
    with open(root / "seen_seg", "rb"):   # a look while a process of the run held it
        shm.note_seen(d, seen := {}, [os.getpid()], root)
    assert seen == {"seen_seg": (root / "seen_seg").stat().st_ino}
    assert json.loads((d / shm.SEEN).read_text()) == seen
    census = shm.orphans(state, root)
    assert [s.name for s in census.ours] == ["seen_seg"]
    assert [s.name for s in census.others] == ["neighbours_seg"]
