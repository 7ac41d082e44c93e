"""Every test runs in private dirs on a random registry port: nothing here touches the
machine's real :1616, its real runtime dir or anyone else's processes."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import SAMPLE, Procs, copy_sample, free_port

_PRIVATE = Path(tempfile.mkdtemp(prefix="ttt-"))  # short: UDS paths are length-capped
for sub in ("run", "tmp"):
    (_PRIVATE / sub).mkdir(mode=0o700)
# uv's own cache dir is asked for (a subprocess) only when a slow test is selected, and
# with the environment as it was before ours was made private: see pytest_collection_finish
_UV_ENV = dict(os.environ)
os.environ["XDG_RUNTIME_DIR"] = str(_PRIVATE / "run")
os.environ["TMPDIR"] = str(_PRIVATE / "tmp")
os.environ["XDG_CACHE_HOME"] = str(_PRIVATE / "tmp" / "cache")
# contained runs get their own /tmp; these tests read what the sample's chaos switches
# write under their tmp_path, so it stays the real one for them
os.environ["TRACTOR_TASKS_KEEP_PATHS"] = str(_PRIVATE)
tempfile.tempdir = None  # forget a cached /tmp
PORT = free_port()
os.environ["SAMPLE_ACTORS_REGISTRY_PORT"] = str(PORT)
os.environ["TRACTOR_TASKS_REGISTRY_PORT"] = str(PORT)
for var in ("TRACTOR_TASKS_ROOT", "CI", "VIRTUAL_ENV", "SAMPLE_ACTORS_CHAOS",
            "GITHUB_STEP_SUMMARY", "TRACTOR_TASKS_NOX_INVOCATION", "TRACTOR_TASKS_RUN",
            # the CI event decides a baseline (ci_event): tests give their own
            "GITHUB_ACTIONS", "GITHUB_EVENT_NAME", "GITHUB_EVENT_PATH", "GITHUB_REF",
            "GITLAB_CI", "CI_PIPELINE_SOURCE", "ImageOS", "ImageVersion", "RUNNER_OS"):
    os.environ.pop(var, None)


def pytest_collection_finish(session):
    """Keep uv's package cache (venvs build from it) while everything else of ours is
    private: only when a selected test is slow (the fast tier starts no uv, no venv)."""
    if "UV_CACHE_DIR" in os.environ or session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("slow") for item in session.items):
        return
    from tractor_tasks.interpreters import uv_binary
    found = subprocess.run([uv_binary(), "cache", "dir"], capture_output=True, text=True,
                           env=_UV_ENV).stdout.strip()
    if found:
        os.environ["UV_CACHE_DIR"] = found


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PRIVATE, ignore_errors=True)


@pytest.fixture
def registry_port() -> int:
    return PORT


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.cleanup()


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory):
    """A git copy of the bundled sample with its py311 venv: the target most tests run."""
    from tractor_tasks.pipeline import prepare_venv
    from tractor_tasks.target import load_target
    root = copy_sample(tmp_path_factory.mktemp("repo") / "sample-actors", git=True)
    prepare_venv(load_target(root), "3.11", out=lambda line: None)
    return root


@pytest.fixture
def target(sample_repo):
    from tractor_tasks.target import load_target
    return load_target(sample_repo)


@pytest.fixture
def chaos_dir(tmp_path, monkeypatch):
    d = tmp_path / "chaos"
    d.mkdir()
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS_DIR", str(d))
    return d


_STARTERS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen",
             "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
             "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp",
             "spawnlpe")


class Refusals(list):
    """The process starts the guard refused during one test (a refusal that the code
    under test swallows, `except Exception`, still fails the test at its teardown)."""
    expected = False

    def check(self) -> None:
        if self and not self.expected:
            pytest.fail(f"the fast tier starts no process, and this test tried: "
                        f"{'; '.join(self)} (swallowed by the code under test)", pytrace=False)


def _argv_of(name: str, args: tuple):
    """The command an os starter was given: system's string, exec/spawn's argv."""
    if name in ("system", "popen"):
        return args[0] if args else None
    if name.startswith(("execl", "spawnl")):
        return list(args[1 if name.startswith("exec") else 2:])
    if name.startswith(("execv", "posix_spawn")):
        return args[1] if len(args) > 1 else None
    if name.startswith("spawnv"):
        return args[2] if len(args) > 2 else None
    return None   # fork, forkpty


def refuse_process(refusals: Refusals, what: str, argv=None):
    """What a fast test meets when it starts a process: an AssertionError naming it."""
    shown = f" {list(argv) if isinstance(argv, (list, tuple)) else argv!r}" if argv else ""
    refusals.append(f"{what}{shown}")
    raise AssertionError(f"the fast tier starts no process: {what}{shown}; fake it at the "
                         f"process boundary or mark the test @pytest.mark.slow")


# libc functions that start a process, refused when looked up through ctypes
_LIBC_STARTERS = frozenset(_STARTERS) | {
    "vfork", "_Fork", "__fork", "clone", "clone3", "fexecve", "execveat", "posix_spawn",
    "posix_spawnp", "popen", "system"}


class _Guard:
    """The patches that refuse a process start, for one fast test: armed when pytest
    begins setting the test up (pytest_runtest_setup below), so a module- or
    session-scoped fixture set up on its behalf meets them too; disarmed when its
    function-scoped fixtures are torn down (a wider fixture's teardown may belong to a
    slow test that set it up).

    Seen: subprocess.Popen (asyncio's and trio's too), subprocess's own _fork_exec,
    _posixsubprocess.fork_exec (multiprocessing), os's and posix's fork/exec*/spawn*/
    posix_spawn*/system/popen, and ctypes lookups of libc's starters (CDLL(...).fork or
    ["system"]: refused at the lookup, before any call).
    Unseen: a function bound before the test began (`from os import fork` at import,
    a CDLL whose `fork` was looked up and cached on it earlier, a _FuncPtr built by
    address), libc's syscall() given fork's or clone's number, cffi, C extensions that
    fork in C, and a process a test module starts when imported (at collection: none
    does today)."""

    def __init__(self):
        self.refusals = Refusals()
        self.owned = False   # the guard fixture took over disarming
        self._patches = pytest.MonkeyPatch()

    def _refuser(self, what: str, argv_of=lambda args: None):
        return lambda *a, **k: refuse_process(self.refusals, what, argv_of(a))

    def arm(self) -> None:
        import _posixsubprocess
        import ctypes
        import posix
        refusals, mp = self.refusals, self._patches

        def popen_init(self, args=None, *rest, **kw):
            refuse_process(refusals, "subprocess.Popen",
                           args if args is not None else kw.get("args"))

        mp.setattr(subprocess.Popen, "__init__", popen_init)
        for module in (os, posix):
            for name in _STARTERS:
                if hasattr(module, name):
                    mp.setattr(module, name, self._refuser(
                        f"{module.__name__}.{name}", lambda a, _n=name: _argv_of(_n, a)))
        mp.setattr(_posixsubprocess, "fork_exec", self._refuser(
            "_posixsubprocess.fork_exec", lambda a: a[:1]))
        if hasattr(subprocess, "_fork_exec"):
            mp.setattr(subprocess, "_fork_exec", self._refuser(
                "subprocess._fork_exec", lambda a: a[:1]))
        lookup = ctypes.CDLL.__getitem__

        def cdll_getitem(lib, name_or_ordinal):
            if name_or_ordinal in _LIBC_STARTERS:
                refuse_process(refusals, f"ctypes lookup of {name_or_ordinal}")
            return lookup(lib, name_or_ordinal)

        mp.setattr(ctypes.CDLL, "__getitem__", cdll_getitem)   # CDLL.__getattr__ calls it

    def disarm(self) -> None:
        self._patches.undo()   # a second undo does nothing


_GUARD = pytest.StashKey[_Guard]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """Arm the guard for a fast test before pytest sets up any of its fixtures: those of
    a wider scope come first, before any function-scoped (autouse included) one."""
    if not item.get_closest_marker("slow"):
        guard = item.stash[_GUARD] = _Guard()
        guard.arm()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    guard = item.stash.get(_GUARD, None)
    if guard is not None and not guard.owned:
        guard.disarm()   # its setup failed before the guard fixture: nothing to watch
    try:
        return (yield)
    finally:
        if guard is not None:
            guard.disarm()


@pytest.fixture(autouse=True)
def _no_process_in_the_fast_tier(request):
    """A test not marked slow that starts a process (git included) fails loudly, and so
    does one whose fixtures (of any scope, set up for it) start one: the refusals, which
    the guard (armed in pytest_runtest_setup) keeps, are checked at this teardown."""
    guard = request.node.stash.get(_GUARD, None)
    if guard is None:   # a slow test
        yield Refusals()
        return
    guard.owned = True
    yield guard.refusals
    guard.disarm()
    guard.refusals.check()


@pytest.fixture
def process_refusals(_no_process_in_the_fast_tier):
    """For the guard's own tests: what it refused; its teardown check is theirs."""
    _no_process_in_the_fast_tier.expected = True
    return _no_process_in_the_fast_tier


@pytest.fixture(autouse=True)
def _private_runtime_dir(monkeypatch):
    """A fresh, short XDG_RUNTIME_DIR per test, and no chaos unless a test asks."""
    d = tempfile.mkdtemp(dir=_PRIVATE / "run")
    os.chmod(d, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", d)
    monkeypatch.delenv("SAMPLE_ACTORS_CHAOS", raising=False)
    yield Path(d)


__all__ = ["SAMPLE"]
