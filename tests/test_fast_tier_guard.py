"""The fast tier starts no process: the guard in conftest.py refuses, loudly, naming what
was started. These tests run under it (they are not slow), so they meet the refusal."""
from __future__ import annotations

import asyncio
import os
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


@pytest.mark.slow
def test_a_slow_test_may_start_processes(process_refusals):
    assert subprocess.run(["true"]).returncode == 0 and process_refusals == []
