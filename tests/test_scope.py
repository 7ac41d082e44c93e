"""Scope and leftover decisions, table-tested over synthetic process trees (no real
processes: milliseconds). The real-process tests are in test_sweep.py."""
from __future__ import annotations

import pytest

from tractor_tasks.processes import Proc
from tractor_tasks.scope import ENV_RUN, LeakKind, RunMarker, ScopeView, Why
from tractor_tasks.target import load_target

ROOT = "/work/t"
OTHER = "/work/piker"
ME = 5000                      # the tool itself
SUPERVISOR = 4000              # a live tractor-tasks run
DEAD = 3999                    # a run whose supervisor is gone


@pytest.fixture
def target(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[tool.tractor-tasks]\nprocess_markers = ["_subactor[", "tractor._child"]\n')
    t = load_target(root)
    return t


def proc(pid, ppid, cmd, cwd, *, env=None, maps=(), name=None, status="sleeping", ctime=100.0,
         exe="/usr/bin/python3.13"):
    return Proc(pid=pid, ppid=ppid, name=name or cmd.split()[0][:15], cmdline=cmd, cwd=cwd,
                status=status, create_time=ctime, _environ=dict(env or {}), _maps=tuple(maps),
                _exe=exe)


def view_of(target, procs, private=()):
    root = str(target.root)
    fixed = [
        proc(1, 0, "/sbin/init", "/", name="init"),
        proc(ME, 1, "python -m invoke clean", root),
        proc(SUPERVISOR, 1, "python -m invoke test", root),
        proc(200, 1, "systemd --user", "/", name="systemd"),
        proc(300, 1, "bash", root),
    ]
    table = {p.pid: p for p in fixed + [p(root) if callable(p) else p for p in procs]}
    return ScopeView(target, procs=table, private_dirs=tuple(private), own={ME, 1})


def marker_env(target, pid=SUPERVISOR, ctime=100.0, token="pass1"):
    return {ENV_RUN: str(RunMarker(pid, ctime, token, str(target.root)))}


CASES = {
    # name: (builder(root, target) -> procs, pid asked, expected in-scope why, expected leak kind)
    "orphan actor at the root": (
        lambda r, t: [proc(10, 1, "_subactor[x@10]", r)], 10, Why.MARKER_AT_ROOT,
        LeakKind.ORPHANED),
    "actor tree under a live pytest": (
        lambda r, t: [proc(10, 300, "python -m pytest", r), proc(11, 10, "_subactor[a@11]", r),
                      proc(12, 11, "_subactor[b@12]", r)], 12, Why.MARKER_AT_ROOT, None),
    "actor tree whose pytest died (adopted by a subreaper)": (
        lambda r, t: [proc(11, 200, "_subactor[a@11]", r), proc(12, 11, "_subactor[b@12]", r)],
        12, Why.MARKER_AT_ROOT, LeakKind.ORPHANED),
    "actor of another checkout (piker), orphaned": (
        lambda r, t: [proc(10, 1, "_subactor[piker@10]", OTHER,
                           maps=[f"{OTHER}/py313/lib/python3.13/site-packages/x.so"])],
        10, None, None),
    "actor-looking orphan elsewhere, no venv maps": (
        lambda r, t: [proc(10, 1, "_subactor[decoy@10]", "/tmp")], 10, None, None),
    "plain orphan at the root (no marker)": (
        lambda r, t: [proc(10, 1, "python3 -m http.server", r)], 10, None, None),
    "stray of a bare devx run: cwd in tmp_path, env wiped, this checkout's venv mapped": (
        lambda r, t: [proc(10, 1, "_subactor[breakpoint_forever@10]", "/tmp/pytest-of-u/p0",
                           maps=[f"{r}/py313/lib/python3.13/site-packages/_cffi.so",
                                 "/usr/lib/libc.so.6"])], 10, Why.VENV, LeakKind.ORPHANED),
    "venv of a sibling checkout whose name starts like ours": (
        lambda r, t: [proc(10, 1, "_subactor[x@10]", "/tmp",
                           maps=[f"{r}-old/py313/lib/x.so"])], 10, None, None),
    "started by a live run (marker), cwd elsewhere": (
        lambda r, t: [proc(10, 1, "_subactor[x@10]", "/tmp", env=marker_env(t))], 10,
        Why.RUN_MARKER, None),
    "started by a run whose supervisor is gone": (
        lambda r, t: [proc(10, 1, "python3 worker.py", r, env=marker_env(t, DEAD))], 10,
        Why.RUN_MARKER, LeakKind.SUPERVISOR_GONE),
    "supervisor pid reused (create time differs)": (
        lambda r, t: [proc(10, 1, "python3 worker.py", r, env=marker_env(t, SUPERVISOR, 1.0))],
        10, Why.RUN_MARKER, LeakKind.SUPERVISOR_GONE),
    "another checkout's run marker": (
        lambda r, t: [proc(10, 1, "_subactor[x@10]", OTHER,
                           env={ENV_RUN: str(RunMarker(SUPERVISOR, 100.0, "p", OTHER))})],
        10, None, None),
    "zombie": (
        lambda r, t: [proc(10, 1, "_subactor[x@10]", r, status="zombie")], 10, None, None),
    "the tool itself, even looking like an actor": (
        lambda r, t: [], ME, None, None),
    # issue 26: a marker in argv is not an actor unless a Python interpreter runs there
    "detached tail -f of a file named like a marker, at the root": (
        lambda r, t: [proc(10, 1, "tail -f sample_actors.tractor._child.log", r,
                           exe="/usr/bin/tail")], 10, None, None),
    "an editor on notes_subactor[x].txt, at the root": (
        lambda r, t: [proc(10, 1, "vim notes_subactor[x].txt", r, exe="/usr/bin/vim.basic")],
        10, None, None),
    "a non-Python process with a marker mapping this checkout's venv files": (
        lambda r, t: [proc(10, 1, "less _subactor[x].log", "/tmp", exe="/usr/bin/less",
                           maps=[f"{r}/py313/lib/python3.13/site-packages/x.txt"])],
        10, None, None),
    "a retitled actor whose exe is unreadable but maps libpython": (
        lambda r, t: [proc(10, 1, "_subactor[x@10]", r, exe="",
                           maps=["/opt/py/lib/libpython3.13.so.1.0"])], 10,
        Why.MARKER_AT_ROOT, LeakKind.ORPHANED),
    "a retitled actor on a venv: the exe is the base interpreter": (
        lambda r, t: [proc(10, 1, "_subactor[x@10]", r,
                           exe="/root/.local/share/uv/python/cpython-3.13-linux/bin/python3.13")],
        10, Why.MARKER_AT_ROOT, LeakKind.ORPHANED),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scope_and_leftovers_over_synthetic_trees(target, name):
    build, pid, why, leak = CASES[name]
    view = view_of(target, build(str(target.root), target))
    p = view.procs[pid]
    scope = view.in_scope(p)
    assert (scope.why if scope else None) is why
    got = view.leak(p)
    assert (got.kind if got else None) is leak
    if got:
        assert str(got)  # a readable reason


def test_private_dir_and_descendant_and_finished_run_rules(target, tmp_path):
    root = str(target.root)
    private = "/tmp/tt-abc"
    procs = [proc(10, 1, "python3 -c sleep", private + "/pytest-of-u/x"),
             proc(20, 300, "python -m pytest", root),
             proc(21, 20, "_subactor[a@21]", root),
             proc(30, 1, "_subactor[b@30]", "/tmp", env=marker_env(target))]
    view = view_of(target, procs, private=[private])
    assert view.leak(view.procs[10]).kind is LeakKind.RUN_OVER
    # descendant mode: only the named parent's subtree
    assert view.leak(view.procs[21], parent=20).kind is LeakKind.DESCENDANT
    # ...at any depth: 21 descends from 300 through 20
    assert view.leak(view.procs[21], parent=300).kind is LeakKind.DESCENDANT
    assert view.leak(view.procs[30], parent=20) is None
    # a finished pass's own sweep takes what carries its marker, live supervisor or not,
    # and never what another pass of the same supervisor (a shard) started
    run = RunMarker(SUPERVISOR, 100.0, "pass1", root)
    assert view.leak(view.procs[30], run=run).kind is LeakKind.RUN_OVER
    assert view.leak(view.procs[30]) is None
    shard = RunMarker(SUPERVISOR, 100.0, "pass2", root)
    assert view.leak(view.procs[30], run=shard) is None


def test_the_real_machine_reads_and_this_process_is_never_in_scope(target):
    import os
    view = ScopeView(target)
    assert os.getpid() in view.own and view.in_scope(view.procs[os.getpid()]) is None
    assert view.leaks() == []  # a fresh dir: nothing on this machine is its leftover
