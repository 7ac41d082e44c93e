"""`tractor-tasks init`: shims into a checkout, never overwriting, never touching git."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import git_state, run_tool


def init(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tractor_tasks.cli", "init", *args], cwd=cwd,
                          capture_output=True, text=True)


def init_here(*args, capsys):
    """`tractor-tasks init` in this process: its exit code and what it printed."""
    from tractor_tasks.cli import main
    code = main(["init", *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["tractor-tasks", "init", *args], code, out, err)


def make_checkout(tmp_path, git=True):
    root = tmp_path / "tractor"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "tractor"\n'
                                         'requires-python = ">=3.13, <3.15"\n')
    (root / "tests" / "test_local.py").write_text("def test_x():\n    pass\n")
    for cmd in (["init", "-q"], ["add", "-A"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]) if git else ():
        subprocess.run(["git", *cmd], cwd=root, check=True, capture_output=True)
    return root


@pytest.mark.slow
def test_init_makes_nox_and_invoke_work_in_a_checkout(tmp_path):
    root = make_checkout(tmp_path)
    before = git_state(root)
    out = init(str(root), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (root / "noxfile.py").exists() and (root / "tasks.py").exists()

    nox = run_tool("nox", "--list", cwd=root)
    assert nox.returncode == 0, nox.stderr
    assert "tests-3.13(tpt='uds')" in nox.stdout and "tests-3.14(tpt='tcp')" in nox.stdout
    assert "backends-3.13(spawn='mp_forkserver', tpt='uds')" in nox.stdout
    inv = run_tool("invoke", "--list", cwd=root)
    assert inv.returncode == 0, inv.stderr
    for name in ("doctor", "clean", "test", "smoke", "lastfailed", "affected", "ci-matrix"):
        assert name in inv.stdout

    after = git_state(root)
    assert after["head"] == before["head"] and after["index"] == before["index"]
    assert sorted(after["status"].split()) == ["??", "??", "noxfile.py", "tasks.py"]


def test_init_refuses_to_overwrite_without_force(tmp_path, capsys):
    root = make_checkout(tmp_path, git=False)
    (root / "tasks.py").write_text("# mine\n")
    out = init_here(str(root), capsys=capsys)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "--force" in out.stderr
    assert (root / "tasks.py").read_text() == "# mine\n"
    assert not (root / "noxfile.py").exists()
    out = init_here("--force", str(root), capsys=capsys)
    assert out.returncode == 0
    assert "collection(__file__)" in (root / "tasks.py").read_text()


def test_init_into_a_missing_dir_is_a_usage_error(tmp_path, capsys):
    out = init_here(str(tmp_path / "nope"), capsys=capsys)
    assert out.returncode == 2 and "not a directory" in out.stderr
    assert not (tmp_path / "nope").exists()
