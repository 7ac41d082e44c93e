"""The fast tier starts no process: the guard in conftest.py refuses, loudly, naming what
was started. These tests run under it (they are not slow), so they meet the refusal."""
from __future__ import annotations

import asyncio
import ctypes
import os
import posix
import subprocess

import pytest


def test_a_fast_test_that_runs_a_command_fails_naming_its_argv(process_refusals):
    with pytest.raises(AssertionError, match=r"starts no process: subprocess\.Popen \['true'\]"):
        subprocess.run(["true"])
    assert process_refusals == ["subprocess.Popen ['true']"]


def test_git_through_check_output_is_refused_too(process_refusals):
    with pytest.raises(AssertionError, match=r"\['git', 'status'\]"):
        subprocess.check_output(["git", "status"])


def test_asyncio_subprocesses_are_refused(process_refusals):
    async def main():
        await asyncio.create_subprocess_exec("true")
    with pytest.raises(AssertionError, match=r"starts no process: subprocess\.Popen"):
        asyncio.run(main())


@pytest.mark.parametrize("start, what", [
    (lambda: os.fork(), "os.fork"),
    (lambda: os.system("true"), "os.system 'true'"),
    (lambda: os.execv("/bin/true", ["true"]), "os.execv ['true']"),
    (lambda: os.posix_spawn("/bin/true", ["true"], {}), "os.posix_spawn ['true']"),
    (lambda: os.spawnl(os.P_WAIT, "/bin/true", "true", "x"), "os.spawnl ['true', 'x']"),
])
def test_the_os_starters_are_refused(process_refusals, start, what):
    with pytest.raises(AssertionError, match=r"starts no process: os\."):
        start()
    assert process_refusals == [what]


def test_a_refusal_the_code_swallows_still_fails_the_test(process_refusals):
    try:   # as code under test that catches everything would
        subprocess.run(["git", "archive", "HEAD"])
    except Exception:
        pass
    process_refusals.expected = False
    with pytest.raises(pytest.fail.Exception, match=r"tried: subprocess\.Popen \['git', "
                                                    r"'archive', 'HEAD'\] \(swallowed"):
        process_refusals.check()
    process_refusals.clear()


def _start_true():
    """What a fixture that tries a command would do: the refusal it met, else None
    (the command ran: the guard did not see it)."""
    try:
        subprocess.run(["true"])
    except AssertionError as err:
        return str(err)
    return None


@pytest.fixture(scope="module")
def started_by_a_module_fixture():
    return _start_true()


@pytest.fixture(scope="session")
def started_by_a_session_fixture():
    return _start_true()


def test_a_module_fixture_set_up_for_a_fast_test_is_refused(started_by_a_module_fixture,
                                                             process_refusals):
    """The guard is armed before a fast test's fixtures of any scope are set up."""
    assert "starts no process: subprocess.Popen ['true']" in started_by_a_module_fixture
    assert process_refusals == ["subprocess.Popen ['true']"]


def test_a_session_fixture_set_up_for_a_fast_test_is_refused(started_by_a_session_fixture,
                                                              process_refusals):
    assert "starts no process: subprocess.Popen ['true']" in started_by_a_session_fixture
    assert process_refusals == ["subprocess.Popen ['true']"]


@pytest.mark.parametrize("start, what", [
    (lambda: posix.system("true"), "posix.system 'true'"),
    (lambda: posix.posix_spawn("/bin/true", ["true"], {}), "posix.posix_spawn ['true']"),
    (lambda: posix.posix_spawnp("true", ["true"], {}), "posix.posix_spawnp ['true']"),
    (lambda: posix.execv("/bin/true", ["true"]), "posix.execv ['true']"),
    (lambda: posix.fork(), "posix.fork"),
])
def test_the_posix_module_starters_are_refused(process_refusals, start, what):
    """os's starters are posix's, and patching os's leaves posix's own name in place."""
    with pytest.raises(AssertionError, match=r"starts no process: posix\."):
        start()
    assert process_refusals == [what]


def test_subprocess_own_fork_exec_is_refused(process_refusals):
    """subprocess binds _posixsubprocess.fork_exec at import: its own name is patched."""
    with pytest.raises(AssertionError, match=r"starts no process: subprocess\._fork_exec"):
        subprocess._fork_exec(["true"])


@pytest.mark.parametrize("name", ["fork", "vfork", "system", "popen", "execv", "execve",
                                  "posix_spawn", "posix_spawnp", "clone"])
def test_a_libc_starter_looked_up_through_ctypes_is_refused(process_refusals, name):
    """The lookup itself is refused (attribute and item), before anything is called."""
    libc = ctypes.CDLL(None)
    with pytest.raises(AssertionError, match=rf"starts no process: ctypes lookup of {name};"):
        getattr(libc, name)
    with pytest.raises(AssertionError, match=rf"ctypes lookup of {name};"):
        libc[name]
    assert process_refusals == [f"ctypes lookup of {name}"] * 2


def test_other_libc_functions_still_resolve_through_ctypes(process_refusals):
    """contain.py's prctl and the like are no process start: looked up as ever."""
    libc = ctypes.CDLL(None)
    assert libc.getpid() == os.getpid() and libc["prctl"] is not None
    assert process_refusals == []


@pytest.mark.slow
def test_a_slow_test_may_start_processes(process_refusals):
    assert subprocess.run(["true"]).returncode == 0 and process_refusals == []
