"""`invoke doctor` on the real sample: table, json, exit codes, --fix, worktrees."""
from __future__ import annotations

import json
import subprocess

import pytest

from helpers import alive, copy_sample, invoke, port_listening

pytestmark = pytest.mark.slow  # every test here runs `invoke doctor`, most on a real venv


def checks_by_name(out):
    data = json.loads(out.stdout)
    by = {}
    for c in data["checks"]:
        by.setdefault(c["name"], []).append(c)
    return data, by


def test_doctor_on_a_clean_target(sample_repo):
    out = invoke("doctor", "--python", "3.11", root=sample_repo)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0].split() == ["check", "status", "detail"]
    for name in ("python", "venv", "registry", "sockets", "processes", "import", "collection"):
        assert any(line.startswith(name) and " ok " in line for line in out.stdout.splitlines()), name
    data, by = checks_by_name(invoke("doctor", "--json", "--no-collect", root=sample_repo))
    assert data["ok"] is True and data["python"] == "3.11"
    assert "collection" not in by
    assert by["import"][0]["status"] == "ok" and str(sample_repo) in by["import"][0]["detail"]


def test_doctor_flags_a_leak_holding_the_registry_and_fix_sweeps_it(sample_repo, procs,
                                                                    registry_port):
    leak = procs.orphan(sample_repo, "_subactor[leaker@1]", port=registry_port,
                        ignore_sigint=True)
    out = invoke("doctor", "--json", "--no-collect", root=sample_repo)
    assert out.returncode == 1
    data, by = checks_by_name(out)
    assert data["ok"] is False
    reg = by["registry"][0]
    assert reg["status"] == "FAIL" and f"pid {leak}" in reg["detail"] and "leaked" in reg["detail"]
    assert reg["fix"] == "invoke clean"
    assert by["processes"][0]["status"] == "FAIL"
    table = invoke("doctor", "--no-collect", root=sample_repo)
    assert table.returncode == 1 and "-> fix: invoke clean" in table.stdout

    fixed = invoke("doctor", "--fix", "--no-collect", root=sample_repo)
    assert fixed.returncode == 0, fixed.stdout
    assert "fix: ended" in fixed.stdout
    assert not alive(leak) and not port_listening(registry_port)


def test_doctor_reports_a_foreign_registry_holder_without_touching_it(sample_repo, procs,
                                                                      registry_port, tmp_path):
    other = procs.child(tmp_path, "_subactor[someone-else@1]", port=registry_port)
    out = invoke("doctor", "--json", "--no-collect", "--fix", root=sample_repo)
    assert out.returncode == 1
    _, by = checks_by_name(out)
    assert "outside this checkout" in by["registry"][0]["fix"]
    assert other.poll() is None and port_listening(registry_port)


def test_doctor_missing_venv_and_missing_minor(tmp_path):
    root = copy_sample(tmp_path / "s", config='[tool.tractor-tasks]\npythons = ["3.11", "3.99"]\n')
    out = invoke("doctor", "--json", "--python", "3.99", root=root)
    assert out.returncode == 1
    _, by = checks_by_name(out)
    assert by["python"][0]["status"] == "FAIL" and "uv python install 3.99" in by["python"][0]["fix"]
    assert by["venv"][0]["status"] == "FAIL"
    assert by["import"][0]["status"] == "skip"
    assert not (root / "py399").exists()


def test_doctor_in_a_git_worktree_flags_an_install_from_the_main_checkout(sample_repo, tmp_path):
    wt = tmp_path / "wt"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(wt)], cwd=sample_repo,
                   check=True)
    try:
        # the worktree borrows the main checkout's venv: imports resolve outside it
        (wt / "py311").symlink_to(sample_repo / "py311")
        out = invoke("doctor", "--json", "--no-collect", root=wt)
        _, by = checks_by_name(out)
        assert by["worktree (C)"][0]["status"] == "FAIL", out.stdout
        assert "outside this worktree" in by["worktree (C)"][0]["detail"]
        assert "UV_PROJECT_ENVIRONMENT=py311 uv sync" in by["worktree (C)"][0]["fix"]
        run = invoke("test", "test_local.py", root=wt)  # a run refuses too, before pytest
        assert run.returncode == 1 and "outside this worktree" in run.stderr
        assert not (wt / ".tractor-tasks" / "last").exists()
        (wt / "py311").unlink()
        made = invoke("venv", "--python", "3.11", root=wt, timeout=600)
        assert made.returncode == 0, made.stderr
        out = invoke("doctor", "--json", "--no-collect", root=wt)
        _, by = checks_by_name(out)
        assert by["worktree (C)"][0]["status"] == "ok", out.stdout
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=sample_repo)


def test_doctor_import_failure_is_reported_and_collection_not_run(tmp_path):
    root = copy_sample(tmp_path / "s")
    assert invoke("venv", "--python", "3.11", root=root, timeout=600).returncode == 0
    init = root / "sample_actors" / "__init__.py"
    init.write_text(init.read_text() + "\nimport no_such_module_anywhere\n")
    out = invoke("doctor", "--json", root=root)
    assert out.returncode == 1
    _, by = checks_by_name(out)
    assert by["import"][0]["status"] == "FAIL"
    assert "ModuleNotFoundError" in by["import"][0]["detail"]
    assert by["collection"][0]["status"] == "skip"


def test_doctor_fix_makes_a_missing_venv_and_checks_again(tmp_path):
    """The fix policy's venv half for real (test_report.py has its pure decisions)."""
    root = copy_sample(tmp_path / "s")
    out = invoke("doctor", "--fix", "--no-collect", "--python", "3.11", root=root, timeout=600)
    assert "venv py311: created" in out.stdout, out.stdout + out.stderr
    assert (root / "py311" / "bin" / "python").exists()
    assert out.returncode == 0, out.stdout + out.stderr
