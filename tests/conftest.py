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


@pytest.fixture(autouse=True)
def _no_process_in_the_fast_tier(request, monkeypatch):
    """A test not marked slow that starts a process (git included) fails loudly: through
    subprocess (asyncio's and trio's go there too), os.fork/exec*/spawn*/system/popen,
    or the fork_exec that multiprocessing calls."""
    refusals = Refusals()
    if request.node.get_closest_marker("slow"):
        yield refusals
        return

    def popen_init(self, args=None, *rest, **kw):
        refuse_process(refusals, "subprocess.Popen",
                       args if args is not None else kw.get("args"))

    monkeypatch.setattr(subprocess.Popen, "__init__", popen_init)
    for name in _STARTERS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, lambda *a, _n=name, **k: refuse_process(
                refusals, f"os.{_n}", _argv_of(_n, a)))
    import _posixsubprocess
    monkeypatch.setattr(_posixsubprocess, "fork_exec", lambda *a, **k: refuse_process(
        refusals, "_posixsubprocess.fork_exec", a[:1]))
    yield refusals
    refusals.check()


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
