"""Intent parsing (spec sections 1-2), the pytest command, and affected (section 6)."""
from __future__ import annotations

import subprocess

import pytest

from helpers import SAMPLE, copy_sample, git_state, invoke
from tractor_tasks.command import check_names, pytest_args
from tractor_tasks.errors import TaskError
from tractor_tasks.options import RunOptions
from tractor_tasks.pipeline import pick_minor
from tractor_tasks.selection import changed_files, map_changes, resolve_words
from tractor_tasks.target import load_target


@pytest.fixture(scope="module")
def sample():
    return load_target(SAMPLE)


@pytest.mark.parametrize("words, paths", [
    ([], ["tests/"]),                                            # /run-tests -> full suite
    (["test_local.py"], ["tests/test_local.py"]),                # single file
    (["test_registrar"], ["tests/discovery/test_registrar.py"]), # pattern -> glob
    (["ipc/"], ["tests/ipc/"]),                                  # subdir under tests/
    (["tests/ipc/"], ["tests/ipc/"]),                            # subdir from the root
    (["test_registrar.py"], ["tests/discovery/test_registrar.py"]),  # bare name, found deeper
    (["discovery/test_registrar.py::test_reg_then_unreg"],
     ["tests/discovery/test_registrar.py::test_reg_then_unreg"]),    # node ids pass through
    (["test_local.py", "rpc", "test_local.py"], ["tests/test_local.py", "tests/test_rpc.py"]),
    (["all"], ["tests/"]),
])
def test_words_resolve_like_the_spec(sample, words, paths):
    assert resolve_words(sample, words) == paths


@pytest.mark.parametrize("word, needle", [
    ("no_such_thing", "no tests match"),
    ("pyproject.toml", "outside the tests dir"),
    ("../README.md", "outside the tests dir"),
    ("/etc/passwd", "outside the tests dir"),
    ("sample_actors", "outside the tests dir"),
    ("*", "not a test file, dir, node id or name pattern"),
    ("**", "not a test file, dir, node id or name pattern"),
    ("loc*", "not a usable name pattern"),
])
def test_bad_words_are_usage_errors(sample, word, needle):
    with pytest.raises(TaskError, match=needle) as err:
        resolve_words(sample, [word])
    assert err.value.code == 2


def test_default_flags_and_overrides(sample):
    base = pytest_args(sample, ["tests/"], RunOptions())
    assert base[:4] == ["tests/", "-x", "--tb=short", "--no-header"]
    args = pytest_args(sample, ["tests/"], RunOptions(k="cancel and not slow", tpt="uds",
                                                      spawn="mp_spawn", ll="debug", tpdb=True,
                                                      extra=["--tb=long", "--maxfail=3", "-v"]))
    assert "-x" not in args and "--tb=short" not in args
    assert args[-3:] == ["--tb=long", "--maxfail=3", "-v"]
    for seq in (["-k", "cancel and not slow"], ["--tpt-proto", "uds"],
                ["--spawn-backend", "mp_spawn"], ["--ll", "debug"]):
        i = args.index(seq[0])
        assert args[i:i + 2] == seq
    assert "--tpdb" in args
    assert "-x" not in pytest_args(sample, ["tests/"], RunOptions(exitfirst=False))


def test_fork_backends_that_need_it_get_capture_sys(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tractor-tasks]\nspawn_backends = ["trio", "main_thread_forkserver"]\n')
    t = load_target(tmp_path)
    assert "--capture=sys" in pytest_args(t, [], RunOptions(spawn="main_thread_forkserver"))
    assert "--capture=sys" not in pytest_args(t, [], RunOptions(spawn="trio"))
    assert "--capture=sys" not in pytest_args(
        t, [], RunOptions(spawn="main_thread_forkserver", extra=["-s"]))


def test_unknown_names_are_rejected_before_anything_runs(sample):
    with pytest.raises(TaskError, match="unknown spawn backend 'subint'") as err:
        pytest_args(sample, [], RunOptions(spawn="subint"))
    assert err.value.code == 2


@pytest.mark.parametrize("values, words, needle", [
    ({"tpt": "quic"}, [], "unknown transport 'quic'"),
    ({"spawn": "thread"}, [], "unknown spawn backend 'thread'"),
    ({}, ["nope_nothing"], "no tests match"),
    ({}, ["../pyproject.toml"], "outside the tests dir"),
    ({"python": "3.x"}, [], "not a Python minor"),
    ({"python": "3.9"}, [], "not one of the target's minors"),
    ({"timeout": "soon"}, [], "--timeout must be a positive number of seconds"),
    ({"timeout": "nan"}, [], "positive number of seconds"),
    ({"timeout": "0"}, [], "positive number of seconds"),
    ({"test_timeout": "-3"}, [], "--test-timeout must be 0 or a positive number of seconds"),
    ({"max_hangs": "x"}, [], "--max-hangs must be a whole number"),
    ({"shards": "0"}, [], "--shards must be a number of shards"),
    ({"shard": "3/2"}, [], "--shard must be I/N"),
    ({"k": " "}, [], "--k is empty"),
    ({}, ["*"], "name pattern"),
])
def test_bad_values_are_one_usage_error_line(sample, values, words, needle):
    """The checks `invoke test` runs before anything (the real-process test with invoke:
    test_bad_usage_exits_2_with_one_line_and_changes_nothing)."""
    with pytest.raises(TaskError) as err:
        opts = RunOptions.parse(values)
        check_names(sample, opts)
        pick_minor(sample, opts.python, env={})
        resolve_words(sample, words)
    message = str(err.value)
    assert err.value.code == 2 and needle in message
    assert message.startswith("error: ") and "\n" not in message


@pytest.mark.slow
def test_dry_run_prints_the_exact_command_and_runs_nothing(tmp_path):
    root = copy_sample(tmp_path / "s")
    out = invoke("test", "test_local.py", "-k", "registry", "--tpt", "uds", "--dry-run",
                 "--", "-v", root=root)
    assert out.returncode == 0, out.stderr
    line = out.stdout.splitlines()[1]
    assert "py311/bin/python -m pytest tests/test_local.py -x --tb=short --no-header -k " \
           "registry --tpt-proto uds" in line
    assert line.rstrip().endswith("-v") and "VIRTUAL_ENV=" in line
    assert not (root / "py311").exists() and not (root / ".tractor-tasks").exists()


@pytest.mark.parametrize("args, needle", [
    (["test", "--tpt", "quic"], "unknown transport 'quic'"),
    (["test", "--spawn", "thread"], "unknown spawn backend 'thread'"),
    (["test", "nope_nothing"], "no tests match"),
    (["test", "../pyproject.toml"], "outside the tests dir"),
    (["test", "--python", "3.x"], "not a Python minor"),
    (["test", "--python", "3.9"], "not one of the target's minors"),
    (["test", "--timeout", "soon"], "number of seconds"),
    (["test", "--timeout", "nan"], "positive number of seconds"),
    (["test", "--timeout", "-1"], "positive number of seconds"),
    (["test", "--timeout", "0"], "positive number of seconds"),
    (["test", "--timeout", "inf"], "positive number of seconds"),
    (["test", "--test-timeout", "-3"], "0 or a positive number of seconds"),
    (["test", "--max-hangs", "x"], "whole number"),
    (["test", "-n", "0"], "number of shards"),
    (["test", "-n", "abc"], "number of shards"),
    (["test", "--shard", "3/2"], "I/N"),
    (["test", "*"], "name pattern"),
    (["test", "--root", "NOPYPROJECT"], "no pyproject.toml"),
])
@pytest.mark.slow
def test_bad_usage_exits_2_with_one_line_and_changes_nothing(tmp_path, args, needle):
    root = copy_sample(tmp_path / "s")
    if "NOPYPROJECT" in args:  # a dir without pyproject.toml (nor tests): nothing written
        root = tmp_path / "empty"
        root.mkdir()
        args = [a for a in args if a not in ("--root", "NOPYPROJECT")]
    out = invoke(*args, root=root)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr
    assert "Traceback" not in out.stderr
    assert not (root / "py311").exists() and not (root / ".tractor-tasks").exists()


# -- affected ---------------------------------------------------------------

@pytest.mark.slow
def test_affected_maps_changes_and_says_what_fell_back(tmp_path):
    root = copy_sample(tmp_path / "s", git=True)
    t = load_target(root)
    (root / "sample_actors" / "ipc" / "_chan.py").write_text("# edited\n")   # unstaged
    (root / "sample_actors" / "msg" / "new.py").write_text("x = 1\n")          # untracked
    (root / "tests" / "test_local.py").write_text("def test_x():\n    pass\n")
    subprocess.run(["git", "add", "tests/test_local.py"], cwd=root, check=True)  # staged
    (root / "README.md").write_text("changed\n")                               # not mapped
    files = changed_files(root)
    assert set(files) == {"sample_actors/ipc/_chan.py", "sample_actors/msg/new.py",
                          "tests/test_local.py", "README.md"}
    aff = map_changes(t, files)
    assert aff.mapped["sample_actors/ipc/_chan.py"] == ["ipc/"]
    assert aff.mapped["sample_actors/msg/new.py"] == ["msg/"]
    assert aff.mapped["tests/test_local.py"] == ["test_local.py"]
    assert aff.fell_back == ["README.md"]
    # mapped words in the order their files came, then the fallback (smoke) for README.md
    assert aff.tests == ["test_local.py", "ipc/", "msg/", "test_rpc.py", "test_spawning.py",
                         "discovery/test_registrar.py"]

    before = git_state(root)
    out = invoke("affected", "--list", root=root)
    assert out.returncode == 0, out.stderr
    assert "README.md" in out.stdout and "fallback" in out.stdout
    assert "tests/ipc/" in out.stdout.splitlines() and "tests/msg/" in out.stdout.splitlines()
    assert git_state(root) == before


@pytest.mark.slow
def test_affected_with_base_counts_commits(tmp_path):
    root = copy_sample(tmp_path / "s", git=True)
    (root / "sample_actors" / "_spawn.py").write_text("# changed\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "c"],
                   cwd=root, check=True)
    assert changed_files(root) == []
    assert changed_files(root, "HEAD~1") == ["sample_actors/_spawn.py"]
    out = invoke("affected", "--base", "HEAD~1", "--list", root=root)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "tests/test_spawning.py"
    bad = invoke("affected", "--base", "no-such-ref", "--list", root=root)
    assert bad.returncode == 2 and "not a commit" in bad.stderr


@pytest.mark.slow
def test_affected_with_nothing_changed(tmp_path):
    root = copy_sample(tmp_path / "s", git=True)
    out = invoke("affected", root=root)
    assert out.returncode == 0 and "no changed files" in out.stdout


def test_head_commit_is_read_from_hand_made_git_files(tmp_path, monkeypatch):
    """The same cases as the slow twin below, the git dir's files written by hand: a loose
    ref, packed refs, a detached HEAD, a worktree's `.git` file; below the top, git itself
    (faked here) is asked."""
    from tractor_tasks import selection
    from tractor_tasks.selection import _read_head, head_commit
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    root = tmp_path / "s"
    (root / "tests").mkdir(parents=True)
    gitdir = root / ".git"
    (gitdir / "refs" / "heads").mkdir(parents=True)
    (gitdir / "HEAD").write_text("ref: refs/heads/main\n")
    (gitdir / "refs" / "heads" / "main").write_text(a + "\n")
    assert _read_head(root) == a
    (gitdir / "refs" / "heads" / "main").unlink()   # `git pack-refs --all`
    (gitdir / "packed-refs").write_text(f"# pack-refs with: peeled fully-peeled sorted\n"
                                        f"{c} refs/heads/other\n{a} refs/heads/main\n")
    assert _read_head(root) == a
    (gitdir / "HEAD").write_text(a + "\n")           # `git checkout --detach`
    assert _read_head(root) == a
    wt_dir = gitdir / "worktrees" / "wt"              # `git worktree add ../wt -b other`
    wt_dir.mkdir(parents=True)
    (wt_dir / "HEAD").write_text("ref: refs/heads/other\n")
    (wt_dir / "commondir").write_text("../..\n")
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {wt_dir}\n")
    assert _read_head(tmp_path / "wt") == c
    (gitdir / "refs" / "heads" / "other").write_text(b + "\n")   # a loose ref wins
    assert _read_head(tmp_path / "wt") == b

    asked = []

    def fake_run(argv, cwd, **kw):
        asked.append((argv, cwd))
        inside = cwd == root / "tests"
        return subprocess.CompletedProcess(argv, 0 if inside else 128,
                                           a + "\n" if inside else "", "")
    monkeypatch.setattr(selection.subprocess, "run", fake_run)
    assert _read_head(root / "tests") is None  # not the top: git itself is asked
    assert head_commit(root / "tests") == a
    assert head_commit(tmp_path) is None
    assert [argv for argv, _ in asked] == [["git", "rev-parse", "HEAD"]] * 2


@pytest.mark.slow
def test_head_commit_read_from_the_git_files_is_what_git_says(tmp_path):
    """A plain checkout, packed refs, a detached HEAD, a worktree: read without git."""
    from tractor_tasks.selection import _read_head, head_commit
    root = copy_sample(tmp_path / "s", git=True)

    def git(*args, cwd=root):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    assert _read_head(root) == git("rev-parse", "HEAD")
    git("pack-refs", "--all")
    assert _read_head(root) == git("rev-parse", "HEAD")
    git("checkout", "-q", "--detach")
    assert _read_head(root) == git("rev-parse", "HEAD")
    git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", "other")
    assert _read_head(tmp_path / "wt") == git("rev-parse", "HEAD", cwd=tmp_path / "wt")
    assert _read_head(root / "tests") is None  # not the top: git itself is asked
    assert head_commit(root / "tests") == git("rev-parse", "HEAD")
    assert head_commit(tmp_path) is None
