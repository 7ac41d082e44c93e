"""Stalls and leaks /proc shows: a writer blocked on a pipe nobody drains (named in a
hang's dump), runaway processes, and shared memory (a contained run's own /dev/shm;
the host's compared before and after, `invoke doctor`, `invoke clean --shm`).

Fast tests decide on fake data (said where); the slow ones run the sample's chaos
switches for real. Segment names are unique per test: no other segment on this
machine is ever touched."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from helpers import REPO, alive, copy_sample, invoke, last_run, wait_for, wait_for_test
from tractor_tasks import shm, stalls
from tractor_tasks.errors import TaskError
from tractor_tasks.target import load_target


# -- blocked pipe writers, on a fake /proc ---------------------------------------------
# The fake is a directory laid out as /proc is (stat, wchan, syscall, cmdline, fd/N as
# symlinks to "pipe:[N]", fdinfo/N with the open flags): it stands in for the kernel's
# view of a writer asleep on a full pipe. tests below run the real shape too.

def _fake(proc: Path, pid: int, *, title: str, state="S", wchan="0", syscall="",
          fds: dict[int, tuple[str, int]] = {}):
    d = proc / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "fdinfo").mkdir()
    (d / "stat").write_text(f"{pid} (python) {state} 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 "
                            "5000 0 0\n")
    (d / "wchan").write_text(wchan)
    (d / "syscall").write_text(syscall)
    (d / "cmdline").write_text(title.replace(" ", "\0") + "\0")
    for fd, (target, flags) in fds.items():
        os.symlink(target, d / "fd" / str(fd))
        (d / "fdinfo" / str(fd)).write_text(f"pos:\t0\nflags:\t{flags:o}\nmnt_id:\t16\n")


def test_a_writer_blocked_on_a_pipe_pytest_reads_is_named(tmp_path):
    _fake(tmp_path, 5, title="python -m pytest tests", wchan="do_wait",
          fds={1: ("/tmp/#12 (deleted)", 0o1), 13: ("pipe:[77]", 0o2000000)})
    _fake(tmp_path, 10, title="_subactor[flooder@28]", wchan="anon_pipe_write",
          syscall="1 0x2 0x7f02fbe98890 0x87 0x0 0x0 0x0 0x7fff 0x7f02",
          fds={1: ("/dev/null", 0o1), 2: ("pipe:[77]", 0o1)})
    lines = stalls.diagnose([5, 10], 5, tmp_path, machine="x86_64")
    assert lines == ["STALL: pid 10 (_subactor[flooder@28]) is blocked writing to fd 2, a pipe "
                     "that pytest (pid 5, its fd 13) captures and nobody is draining: try "
                     "--capture=sys or -s (or have the test read its child's output)"]


def test_a_reader_in_the_run_that_does_not_read_is_named(tmp_path):
    _fake(tmp_path, 5, title="pytest", fds={})
    _fake(tmp_path, 7, title="_subactor[parent@3]", fds={4: ("pipe:[9]", 0o0)})
    # no syscall file to read (another arch, or no access): wchan and the stdio fds
    _fake(tmp_path, 8, title="_subactor[child@4]", wchan="pipe_write",
          fds={1: ("pipe:[9]", 0o1)})
    (tmp_path / "8" / "syscall").unlink()
    [line] = stalls.diagnose([5, 7, 8], 5, tmp_path, machine="x86_64")
    assert "pid 8 (_subactor[child@4]) is blocked writing to fd 1" in line
    assert "reader pid 7 (_subactor[parent@3], its fd 4) is in the run" in line


@pytest.mark.parametrize("case", ["running", "reading a pipe", "writing a file",
                                  "waiting elsewhere"])
def test_what_is_not_a_blocked_pipe_write(tmp_path, case):
    _fake(tmp_path, 5, title="pytest", fds={13: ("pipe:[77]", 0o0)})
    kw = dict(wchan="anon_pipe_write", syscall="1 0x2 0x0", fds={2: ("pipe:[77]", 0o1)})
    if case == "running":
        kw["state"] = "R"
    elif case == "reading a pipe":
        kw.update(wchan="anon_pipe_read", syscall="0 0x3 0x0", fds={3: ("pipe:[77]", 0o0)})
    elif case == "writing a file":
        kw.update(wchan="0", fds={2: ("/tmp/log", 0o1)})
    else:
        kw.update(wchan="do_sys_poll", syscall="7 0x7ffd 0x1")
    _fake(tmp_path, 10, title="_subactor[x@2]", **kw)
    assert stalls.diagnose([5, 10], 5, tmp_path, machine="x86_64") == []


# -- runaways, on fake samples -----------------------------------------------------------
# (pid, start time, title, cpu seconds) tuples stand in for what the watch loop reads
# off /proc; the reports stand in for what probelog.py reads off the probe's log.

def _reports(watch, nodeid, start, end):
    from tractor_tasks.probelog import Report
    watch.note_report(Report(nodeid, "setup", "passed", 0.01, at=start + 0.01))
    watch.note_report(Report(nodeid, "teardown", "passed", 0.0, at=end))


def test_a_process_busy_after_its_test_ended_is_a_runaway():
    w = stalls.RunawayWatch(0.8, 2.0, main_pid=1)
    _reports(w, "t.py::test_a", 100.0, 101.0)
    w.note_test("t.py::test_b", 101.0)
    found = []
    for i in range(10):   # 0.5 s apart, from 100.5 on
        now = 100.5 + i * 0.5
        found += w.update(now, [
            (1, 99.0, "pytest", 0.9 * i),                     # pytest itself: never
            (20, 100.5, "_subactor[spin@3]", 0.45 * i),       # born in test_a, spins
            (21, 100.5, "_subactor[idle@4]", 0.01 * i),       # born in test_a, idle
            (22, 99.5, "_subactor[session@5]", 0.45 * i),     # born before any test
        ])
    assert [(r["pid"], r["test"]) for r in found] == [(20, "t.py::test_a")]
    assert found[0]["cpu"] >= 0.8 and found[0]["seconds"] >= 2.0
    assert w.found == found   # reported once


def test_a_process_busy_while_its_own_test_runs_is_not():
    w = stalls.RunawayWatch(0.8, 1.0)
    w.note_test("t.py::test_a", 100.0)
    assert not any(w.update(100.5 + i * 0.5, [(20, 100.2, "busy", 0.5 * i)])
                   for i in range(10))
    assert not stalls.RunawayWatch(0.8, 0).on


def test_the_test_a_process_belongs_to_is_told_apart_from_the_next():
    w = stalls.RunawayWatch(0.8, 1.0)
    _reports(w, "t.py::a", 100.0, 100.3)
    _reports(w, "t.py::b", 100.3, 101.0)
    assert w.test_at(100.15) == "t.py::a" and w.test_at(100.5) == "t.py::b"
    assert w.test_at(99.0) is None


# -- shared memory, in a stand-in /dev/shm ---------------------------------------------
# A temp dir stands in for the host's /dev/shm (its files for segments); holders are
# found in the real /proc (this test's own open fd holds one).

def _pass(state: Path, name: str, before: dict, start: float, end: float | None,
          appeared=()) -> Path:
    d = state / "runs" / name / "pass-1"
    d.mkdir(parents=True)
    (d / shm.BEFORE).write_text(json.dumps({"start": start, "segments": before}))
    if end is not None:
        (d / shm.AFTER).write_text(json.dumps({"end": end, "appeared": list(appeared)}))
    return d


def test_only_unheld_segments_a_run_of_ours_held_are_ours(tmp_path):
    """Recorded by the run's census (seen held by the run) and held by nobody now: ours.
    One that only appeared while the run went (another process may have made it) is
    not (issue 26)."""
    root, state = tmp_path / "shm", tmp_path / "state"
    root.mkdir()
    old = root / "old_seg"
    old.write_bytes(b"x")
    time.sleep(0.05)
    start = time.time()
    for name in ("ours_seg", "held_seg", "neighbours_seg"):
        (root / name).write_bytes(b"y" * 100)
    held = open(root / "held_seg", "rb")
    try:
        _pass(state, "r1", {"old_seg": old.stat().st_ino}, start - 0.5, time.time() + 1,
              appeared=[{"name": n, "ino": (root / n).stat().st_ino}
                        for n in ("ours_seg", "held_seg")])
        census = shm.orphans(state, root)
        assert [s.name for s in census.ours] == ["ours_seg"]
        # held_seg: not at all; neighbours_seg appeared in the window, never recorded
        assert [s.name for s in census.others] == ["neighbours_seg", "old_seg"]
        assert shm.remove(state, root=root, dry_run=True)[0].startswith(
            f"would remove shared memory {root / 'ours_seg'}")
        assert (root / "ours_seg").exists()
        lines = shm.remove(state, root=root)
        assert lines[0].startswith(f"removed shared memory {root / 'ours_seg'}")
        assert "kept 2 shared memory segment(s)" in lines[1] and "old_seg" in lines[1]
        assert sorted(p.name for p in root.iterdir()) == ["held_seg", "neighbours_seg",
                                                          "old_seg"]
    finally:
        held.close()


def test_a_segment_made_after_a_killed_run_stopped_is_not_ours(tmp_path):
    root, state = tmp_path / "shm", tmp_path / "state"
    root.mkdir()
    d = _pass(state, "r1", {}, time.time() - 100, None)   # killed: no shm.json
    os.utime(d / shm.BEFORE, (time.time() - 90, time.time() - 90))
    (root / "later_seg").write_bytes(b"z")
    assert [s.name for s in shm.orphans(state, root).others] == ["later_seg"]
    assert shm.orphans(state, root).ours == []


def test_the_census_records_what_appeared_and_leaves_what_others_hold(tmp_path):
    root, pass_dir = tmp_path / "shm", tmp_path / "pass"
    root.mkdir()
    pass_dir.mkdir()
    (root / "before").write_bytes(b"a")
    shm.record_before(pass_dir, root)
    (root / "left").write_bytes(b"b" * 10)
    (root / "theirs").write_bytes(b"c")
    (root / "unseen").write_bytes(b"d")   # appeared meanwhile, never seen held by the run
    with open(root / "left", "rb") as f:  # a process of the run holding it, during the pass
        seen = shm.held_by([os.getpid()], root)
    assert seen == {"left": (root / "left").stat().st_ino}
    with open(root / "theirs", "rb"):
        got = shm.appeared(pass_dir, root, seen=seen)
    assert [(s.name, s.size, pids) for s, pids in got] == [("left", 10, [])]
    rec = json.loads((pass_dir / shm.AFTER).read_text())
    assert [a["name"] for a in rec["appeared"]] == ["left"]


@pytest.mark.parametrize("line, needle", [
    ('shm_size = "lots"', "shm_size"), ('shm_size = "101%"', "shm_size"),
    ("runaway_cpu = 2", "runaway_cpu"), ("runaway_seconds = -1", "runaway_seconds"),
])
def test_bad_stall_config_is_one_line(tmp_path, line, needle):
    (tmp_path / "pyproject.toml").write_text(f"[tool.tractor-tasks]\n{line}\n")
    with pytest.raises(TaskError) as err:
        load_target(tmp_path)
    assert needle in str(err.value) and "\n" not in str(err.value)


# -- the real thing ----------------------------------------------------------------------

def _host_has(name: str) -> bool:
    return (shm.HOST / name).exists()


def _outcome(root):
    return json.loads((root / ".tractor-tasks" / "last" / "outcome.json").read_text())


def _leaked_property(root) -> int:
    suite = ET.parse(root / ".tractor-tasks" / "last" / "junit.xml").getroot()
    return int(suite.find("properties/property[@name='leaked']").get("value"))


@pytest.mark.slow
def test_a_subactor_flooding_a_pipe_nobody_drains_is_named_in_the_hang(sample_repo,
                                                                       monkeypatch):
    """... and what the hung pass left in its own /dev/shm is still counted."""
    name = f"ttt_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "flood,shm_leak")
    monkeypatch.setenv("SAMPLE_ACTORS_SHM_NAME", name)
    out = invoke("test", "test_spawning.py::test_shm_leak", "test_spawning.py::test_flood",
                 "--test-timeout", "4", "--strict", "--no-confirm", root=sample_repo,
                 timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert _outcome(sample_repo)["leaks"]["shm"] == [{"name": name, "size": 25000}]
    assert not _host_has(name)
    stall = next(line.strip() for line in out.stdout.splitlines() if "STALL:" in line)
    assert "(_subactor[flooder@" in stall and "is blocked writing to fd 2" in stall, stall
    assert "a pipe that pytest (pid" in stall and "nobody is draining" in stall, stall
    dump = (last_run(sample_repo) / "pass-1" / "stacks.txt").read_text()
    assert dump.startswith("STALL: pid ")
    suite = ET.parse(sample_repo / ".tractor-tasks" / "last" / "junit.xml").getroot()
    assert any("STALL: pid" in (e.text or "") for e in suite.iter("error"))


@pytest.mark.slow
def test_a_hang_without_a_pipe_stall_names_none(sample_repo, monkeypatch):
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "hang")
    out = invoke("test", "test_spawning.py::test_hang", "--test-timeout", "4",
                 "--strict", "--no-confirm", root=sample_repo, timeout=300)
    assert out.returncode == 1 and "HUNG" in out.stdout, out.stdout
    assert "STALL:" not in out.stdout


@pytest.mark.slow
def test_a_process_spinning_after_its_test_is_a_runaway(tmp_path, monkeypatch, chaos_dir):
    root = copy_sample(tmp_path / "s")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.tractor-tasks]\n", "[tool.tractor-tasks]\nrunaway_cpu = 0.3\n"
        "runaway_seconds = 1\n", 1))
    tests = ["test_spawning.py::test_runaway", "test_spawning.py::test_runaway_outlived"]
    calm = invoke("test", *tests, root=root, timeout=600)
    assert calm.returncode == 0 and "RUNAWAY" not in calm.stdout, calm.stdout
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "runaway")
    out = invoke("test", *tests, root=root, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr   # a leak alone does not fail
    live = next(line for line in out.stdout.splitlines() if line.startswith("RUNAWAY: pid"))
    assert "(_subactor[spinner@" in live and "after tests/test_spawning.py::test_runaway " \
        "ended" in live, live
    assert "RUNAWAY" in next(line for line in out.stdout.splitlines()
                             if line.startswith("LEAK:"))
    rec = _outcome(root)
    [r] = rec["leaks"]["runaway"]
    assert r["test"] == "tests/test_spawning.py::test_runaway" and r["cpu"] >= 0.3
    assert rec["summary"]["leaked"] >= 1 and _leaked_property(root) == rec["summary"]["leaked"]
    strict = invoke("test", *tests, "--fail-on-leak", root=root, timeout=600)
    assert strict.returncode == 1 and "RUNAWAY" in strict.stdout, strict.stdout


@pytest.mark.slow
def test_a_contained_runs_shared_memory_is_its_own_and_counted(sample_repo, monkeypatch):
    name = f"ttt_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "shm_leak")
    monkeypatch.setenv("SAMPLE_ACTORS_SHM_NAME", name)
    out = invoke("test", "test_spawning.py::test_shm_leak", root=sample_repo)
    assert out.returncode == 0, out.stdout + out.stderr
    leak = next(line for line in out.stdout.splitlines() if line.startswith("LEAK:"))
    assert f"1 shared memory segment(s): {name} (25000 B)" in leak, leak
    rec = _outcome(sample_repo)
    assert rec["containment"] == "namespaces"
    assert rec["leaks"]["shm"] == [{"name": name, "size": 25000}]
    assert _leaked_property(sample_repo) == rec["summary"]["leaked"] == 1
    assert not _host_has(name)   # it never reached the host, and went with the run
    strict = invoke("test", "test_spawning.py::test_shm_leak", "--fail-on-leak",
                    root=sample_repo)
    assert strict.returncode == 1 and name in strict.stdout


def _start(root, *args):
    return subprocess.Popen([sys.executable, "-m", "invoke", "test", "test_spawning.py",
                             "-k", "shm_leak or test_hang", "--no-x", *args,
                             "--root", str(root)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_a_killed_contained_run_leaves_nothing_in_the_hosts_dev_shm(sample_repo, monkeypatch,
                                                                    chaos_dir, procs):
    name = f"ttt_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "shm_leak,hang")
    monkeypatch.setenv("SAMPLE_ACTORS_SHM_NAME", name)
    before_names = set(os.listdir(shm.HOST))
    before = last_run(sample_repo)
    run = _start(sample_repo)
    try:
        wait_for_test(sample_repo, before, "test_hang")
        ours = [procs.adopt(p.pid) for p in psutil.Process(run.pid).children(recursive=True)]
        pytest_pid = next(p for p in ours
                          if "pytest" in " ".join(psutil.Process(p).cmdline()))
        # made, in the run's own /dev/shm, not the host's
        assert (chaos_dir / "shm.name").read_text().strip() == name
        assert Path(f"/proc/{pytest_pid}/root/dev/shm/{name}").stat().st_size == 25000
        assert not _host_has(name)
        run.send_signal(signal.SIGKILL)
        run.wait()
        wait_for(lambda: not any(alive(p) for p in ours), 15, "the run to die with it")
    finally:
        if run.poll() is None:
            run.kill()
    after_names = set(os.listdir(shm.HOST))
    print(f"host /dev/shm: {len(before_names)} entries before, {len(after_names)} after")
    assert not _host_has(name) and name not in after_names


@pytest.mark.slow
def test_an_uncontained_runs_segment_is_reported_and_cleaned_others_are_kept(
        sample_repo, monkeypatch, chaos_dir, procs):
    """--no-contain, the supervisor SIGKILLed mid-run: the segment its actor left is on
    the host; doctor names it as this checkout's, clean --shm removes it. A decoy made
    before the run and one a stranger holds open stay."""
    name = f"ttt_{uuid.uuid4().hex[:12]}"
    decoy = shm.HOST / f"ttt_decoy_{uuid.uuid4().hex[:12]}"
    decoy.write_bytes(b"d" * 10)
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "shm_leak,hang")
    monkeypatch.setenv("SAMPLE_ACTORS_SHM_NAME", name)
    before = last_run(sample_repo)
    run = _start(sample_repo, "--no-contain")
    held = None
    try:
        wait_for_test(sample_repo, before, "test_hang")
        for p in psutil.Process(run.pid).children(recursive=True):
            procs.adopt(p.pid)
        held_path = shm.HOST / f"ttt_held_{uuid.uuid4().hex[:12]}"
        held_path.write_bytes(b"h")   # made during the run, but a stranger holds it
        held = open(held_path, "rb")
        assert _host_has(name)
        run.kill()
        run.wait()
        doctor = invoke("doctor", "--fast", "--verbose", root=sample_repo)
        line = next(x for x in doctor.stdout.splitlines() if x.startswith("shm"))
        assert "warn" in line and f"{name} (24.4 KB): held by a run of this " \
            "checkout" in line, doctor.stdout
        assert f"{decoy.name} (10 B): held by no process, not shown" in line
        assert held_path.name not in line
        out = invoke("clean", "--shm", root=sample_repo)
        assert f"removed shared memory /dev/shm/{name}" in out.stdout, out.stdout
        assert out.returncode == 0 and out.stdout.strip().endswith("clean"), out.stdout
        assert not _host_has(name) and decoy.exists() and held_path.exists()
    finally:
        if run.poll() is None:
            run.kill()
        if held is not None:
            held.close()
            Path(held.name).unlink(missing_ok=True)
        decoy.unlink(missing_ok=True)
        (shm.HOST / name).unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["subreaper", "off"])
def test_a_run_on_the_hosts_dev_shm_reports_what_appeared_and_deletes_nothing(
        sample_repo, monkeypatch, mode):
    name = f"ttt_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("TRACTOR_TASKS_CONTAIN", mode)
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "shm_leak")
    monkeypatch.setenv("SAMPLE_ACTORS_SHM_NAME", name)
    try:
        out = invoke("test", "test_spawning.py::test_shm_leak", root=sample_repo)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"1 shared memory segment(s): {name} (25000 B)" in out.stdout, out.stdout
        assert _outcome(sample_repo)["leaks"]["shm"] == [{"name": name, "size": 25000}]
        assert _host_has(name)   # not shown to be the run's at the time: left for clean
        recorded = json.loads((last_run(sample_repo) / "pass-1" / shm.AFTER).read_text())
        assert [a["name"] for a in recorded["appeared"]] == [name]
        out = invoke("clean", "--shm", "--dry-run", root=sample_repo)
        assert f"would remove shared memory /dev/shm/{name}" in out.stdout and _host_has(name)
        out = invoke("clean", "--shm", root=sample_repo)
        assert f"removed shared memory /dev/shm/{name}" in out.stdout and not _host_has(name)
    finally:
        (shm.HOST / name).unlink(missing_ok=True)
