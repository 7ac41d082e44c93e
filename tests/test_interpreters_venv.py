"""Finding an interpreter with each candidate's answer faked (fast); interpreters that
really run, and the target's py<MINOR> uv venvs (real uv, real venvs: slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_sample, invoke
from tractor_tasks import interpreters
from tractor_tasks.errors import TaskError
from tractor_tasks.target import load_target
from tractor_tasks.venv import active_venv_check, venv_python


@pytest.fixture(autouse=True)
def _fresh_cache():
    interpreters.find_python.cache_clear()
    yield
    interpreters.find_python.cache_clear()


class FakeRuns:
    """The interpreters' answers at the process boundary: what each path prints for
    `sys.version_info[:2]` and its exit code; uv's `python find` finds nothing."""
    TimeoutExpired = subprocess.TimeoutExpired

    def __init__(self, answers):
        self.answers, self.ran = answers, []

    def run(self, argv, **kw):
        self.ran.append(argv)
        code, out = self.answers.get(os.path.realpath(argv[0]), (2, ""))
        return subprocess.CompletedProcess(argv, code, out, "")


@pytest.fixture
def fake_runs(tmp_path, monkeypatch):
    """No interpreter is run: a private pyenv root, PATH and cache; each path answers
    from the dict the test fills."""
    runs = FakeRuns({})
    monkeypatch.setattr(interpreters, "subprocess", runs)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "bin").mkdir()
    return runs


def fake_python(path, answers, minor, code=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    answers[os.path.realpath(path)] = (code, minor + "\n" if code == 0 else "")
    return path


def test_the_running_minor_is_found_first_then_the_newest_pyenv_patch(tmp_path, fake_runs):
    here = "%d.%d" % sys.version_info[:2]
    running = Path(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))
    fake_runs.answers[str(running)] = (0, here + "\n")
    found = interpreters.find_python(here)
    assert found is not None and found.source == "running" and found.path == running
    versions = tmp_path / "pyenv" / "versions"
    fake_python(versions / "3.9.1" / "bin" / "python3.9", fake_runs.answers, "3.9")
    newest = fake_python(versions / "3.9.10" / "bin" / "python3.9", fake_runs.answers, "3.9")
    found = interpreters.find_python("3.9")
    assert (found.path, found.source) == (newest, "pyenv")


def test_a_candidate_that_exits_127_or_says_another_minor_is_passed_over(tmp_path, fake_runs):
    shim = fake_python(tmp_path / "bin" / "python3.9", fake_runs.answers, "3.9", code=127)
    fake_python(tmp_path / "bin" / "python3.8", fake_runs.answers, "3.9")   # lies
    real = fake_python(tmp_path / "pyenv" / "versions" / "3.9.4" / "bin" / "python3.9",
                       fake_runs.answers, "3.9")
    found = interpreters.find_python("3.9")
    assert (found.path, found.source) == (real, "pyenv")
    assert os.path.realpath(fake_runs.ran[0][0]) == os.path.realpath(shim)   # asked, refused
    assert interpreters.find_python("3.8") is None


def test_a_missing_minor_says_how_to_get_it(fake_runs):
    assert interpreters.find_python("3.99") is None
    with pytest.raises(TaskError) as err:
        interpreters.require_python("3.99")
    assert err.value.code == 1 and "uv python install 3.99" in str(err.value)
    assert "\n" not in str(err.value)
    for bad in ("3", "3.x", "python", "4.1.2"):
        with pytest.raises(TaskError) as err:
            interpreters.check_minor(bad)
        assert err.value.code == 2
    assert interpreters.check_minor("py313") == "3.13"


@pytest.mark.slow
def test_finds_the_running_minor_and_pyenv_minors():
    here = "%d.%d" % sys.version_info[:2]
    found = interpreters.find_python(here)
    assert found is not None and found.source == "running"
    pyenv = sorted(p.name for p in (interpreters._pyenv_root() / "versions").glob("3.1[0-9].*"))
    if not pyenv:
        pytest.skip("no pyenv versions on this machine")
    minor = ".".join(pyenv[-1].split(".")[:2])
    found = interpreters.find_python(minor)
    assert found is not None
    out = subprocess.run([str(found.path), "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == str(tuple(int(x) for x in minor.split(".")))


@pytest.mark.slow
def test_a_shim_that_exits_127_is_not_an_interpreter(tmp_path, monkeypatch):
    shim = tmp_path / "python3.12"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = interpreters.find_python("3.12")
    assert found is None or found.path != shim


@pytest.mark.slow
def test_missing_and_malformed_minors(monkeypatch):
    assert interpreters.find_python("3.99") is None
    with pytest.raises(TaskError) as err:
        interpreters.require_python("3.99")
    assert err.value.code == 1 and "uv python install 3.99" in str(err.value)
    assert "\n" not in str(err.value)
    for bad in ("3", "3.x", "python", "4.1.2"):
        with pytest.raises(TaskError) as err:
            interpreters.check_minor(bad)
        assert err.value.code == 2
    assert interpreters.check_minor("py313") == "3.13"


@pytest.mark.slow
def test_invoke_venv_creates_py311_and_is_idempotent(tmp_path):
    root = copy_sample(tmp_path / "s")
    first = invoke("venv", "--python", "3.11", root=root, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "UV_PROJECT_ENVIRONMENT=py311 uv sync" in first.stdout
    assert "venv py311: created" in first.stdout
    assert venv_python(load_target(root), "3.11").exists()
    assert not (root / ".venv").exists()
    imp = subprocess.run([str(root / "py311" / "bin" / "python"), "-c",
                          "import sample_actors, pytest; print(sample_actors.__file__)"],
                         capture_output=True, text=True)
    assert imp.returncode == 0 and str(root) in imp.stdout

    second = invoke("venv", "--python", "3.11", root=root)
    assert second.returncode == 0 and "venv py311: up to date" in second.stdout

    (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text() + "\n# touched\n")
    third = invoke("venv", "--python", "3.11", root=root)
    assert third.returncode == 0 and "venv py311: synced" in third.stdout
    stamp = json.loads((root / "py311" / ".tractor-tasks-synced").read_text())
    assert stamp["python"].endswith("python3.11") or "3.11" in stamp["python"]


@pytest.mark.slow
def test_venv_for_a_minor_this_machine_lacks(tmp_path):
    root = copy_sample(tmp_path / "s", config='[tool.tractor-tasks]\npythons = ["3.11", "3.99"]\n')
    out = invoke("venv", "--python", "3.99", root=root)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        out.stderr.strip()] and "no Python 3.99 interpreter" in out.stderr
    assert not (root / "py399").exists()


def test_active_venv_cases(tmp_path):
    t = load_target(copy_sample(tmp_path / "s"))
    b = active_venv_check(t, "3.11", env={})
    assert (b.case, b.status) == ("B", "fail") and "UV_PROJECT_ENVIRONMENT=py311 uv sync" in b.fix
    a = active_venv_check(t, "3.11", env={"VIRTUAL_ENV": str(t.root / "py311")})
    assert (a.case, a.status) == ("A", "ok")
    other = active_venv_check(t, "3.11", env={"VIRTUAL_ENV": str(tmp_path / "elsewhere")})
    assert other.status == "warn"
