"""The verdict: regressions apart from pre-existing, flaky and load-sensitive failures,
with the likely cause. Pure decisions first, git's answers faked (FakeGit, FakeArchive:
fast); then the same choices against real git in tiny repos, and real runs of the sample
in scratch git copies of it (slow)."""
from __future__ import annotations

import json
import subprocess
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import junit_rules
from helpers import copy_sample, git_state, invoke, last_run
from tractor_tasks import cause, gitref, verdict
from tractor_tasks.errors import TaskError
from tractor_tasks.junit import EXTRAS as JUNIT_EXTRAS
from tractor_tasks.options import RunOptions
from tractor_tasks.passes import RunResult
from tractor_tasks.results import Results, TestResult
from tractor_tasks.status import TestOutcome as O, Verdict as V
from tractor_tasks.target import FlakyRule, load_target


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def tiny_tree(root: Path) -> Path:
    """The tiny target's files, no git (the fast tests' git is a FakeGit)."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "pkg"\nrequires-python = ">=3.11"\n'
                                         '[tool.tractor-tasks]\npackage = "pkg"\n')
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "core.py").write_text("X = 1\n")
    (root / "pkg" / "other.py").write_text("Y = 1\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_core.py").write_text("from pkg.core import X\n\ndef test_x():\n"
                                                 "    assert X == 1\n")
    return root


def tiny_repo(root: Path) -> Path:
    tiny_tree(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    return root


HEAD, FORK, MAIN = "1" * 40, "2" * 40, "3" * 40


class FakeAncestry:
    def __init__(self, root, head, ancestors):
        self.root, self.head, self.anc = root, head, set(ancestors)

    def __call__(self, commit):
        return commit in self.anc


class FakeGit:
    """git's answers at the process boundary (gitref.git and gitref.Ancestry): a clean
    checkout of `main` at HEAD, no remote, until a test says otherwise; a question it
    was not told about fails the test."""

    def __init__(self):
        self.repo, self.shallow, self.prefix = True, False, ""
        self.refs = {"HEAD": HEAD, "main": HEAD}    # what rev-parse --verify knows
        self.origin_head = None                     # origin/HEAD's target
        self.bases: dict[str, str] = {}             # ref -> its merge-base with HEAD
        self.status: list[str] = []                 # `git status --porcelain` entries
        self.diff: dict[str, list[str]] = {}        # commit -> files changed since it
        self.untracked: list[str] = []
        self.ancestors = {HEAD}

    def __call__(self, root, *args, check=True, timeout=30, strip=True):
        out = self.answer(args)
        if out is None and check:
            raise TaskError(f"git {' '.join(args)} failed in {root}: fake")
        return out.strip() if out is not None and strip else out

    def answer(self, a):
        if not self.repo:
            return None
        match a:
            case ("rev-parse", "--git-dir"):
                return ".git"
            case ("rev-parse", "--verify", "--quiet", ref):
                ref = ref.removesuffix("^{commit}")
                return self.refs.get(ref) or (ref if ref in self.refs.values() else None)
            case ("symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD"):
                return self.origin_head
            case ("rev-parse", "--show-prefix"):
                return self.prefix + "\n"
            case ("rev-parse", "--is-shallow-repository"):
                return "true" if self.shallow else "false"
            case ("status", "--porcelain", "-z", "--untracked-files=all", "--", "."):
                return "".join(e + "\0" for e in self.status)
            case ("merge-base", "HEAD", ref):
                return self.bases.get(ref)
            case ("diff", "--name-only", "--relative", commit):
                return "\n".join(self.diff.get(commit, []))
            case ("ls-files", "--others", "--exclude-standard"):
                return "\n".join(self.untracked)
            case ("diff", "HEAD", "--binary", "--relative"):
                return ""
        raise AssertionError(f"FakeGit was not told about: git {' '.join(a)}")


@pytest.fixture
def fake_git(monkeypatch):
    g = FakeGit()
    monkeypatch.setattr(gitref, "git", g)
    monkeypatch.setattr(gitref, "Ancestry",
                        lambda root: FakeAncestry(root, g.refs.get("HEAD"), g.ancestors))
    return g


@pytest.fixture
def fake_export(monkeypatch):
    """The baseline's export without `git archive`: an empty dir (the runner is fake)."""
    def export(root, commit, dest):
        dest.mkdir(parents=True, exist_ok=True)
        return dest
    monkeypatch.setattr(gitref, "export", export)


# -- signatures --------------------------------------------------------------------------

def test_the_same_failure_masks_addresses_ports_and_temp_paths():
    assert verdict.same_failure("OSError: [Errno 98] bind ('127.0.0.1', 45123) at 0x7f00aa",
                                "OSError: [Errno 98] bind ('127.0.0.1', 51002) at 0x7f11bb")
    assert verdict.same_failure("trio.TooSlowError", "trio.TooSlowError")
    assert not verdict.same_failure("AssertionError: assert 3 == 4", "AssertionError: assert 5 == 4")
    assert not verdict.same_failure("trio.TooSlowError", "KeyError: 'x'")
    assert not verdict.same_failure("", "")   # no signature is no evidence


# -- the baseline choice: git's answers faked (fast), then real git in tiny repos (slow) ----

def test_fake_on_an_unchanged_default_branch_the_history_decides(tmp_path, fake_git):
    root = tiny_tree(tmp_path / "r")
    fake_git.bases["main"] = HEAD
    assert gitref.choose(root, None).baseline is None


def test_fake_edits_on_the_default_branch_compare_with_head(tmp_path, fake_git):
    root = tiny_tree(tmp_path / "r")
    fake_git.bases["main"] = HEAD
    fake_git.status = [" M pkg/core.py"]
    base = gitref.choose(root, None).baseline
    assert base.commit == HEAD and base.label == "HEAD"


def test_fake_a_branch_compares_with_where_it_left_main(tmp_path, fake_git):
    root = tiny_tree(tmp_path / "r")
    fake_git.refs.update(main=MAIN, feature=HEAD)
    fake_git.bases["main"] = FORK
    fake_git.diff[FORK] = ["pkg/core.py"]
    base = gitref.choose(root, None).baseline
    assert (base.commit, base.label) == (FORK, "main")
    assert gitref.changed_since(root, base.commit) == ["pkg/core.py"]


def test_fake_the_init_shims_are_not_edits(tmp_path, fake_git):
    root = tiny_tree(tmp_path / "r")
    fake_git.bases["main"] = HEAD
    (root / "tasks.py").write_text('"""invoke tasks, from tractor-tasks."""\n')
    fake_git.status = ["?? tasks.py"]
    assert gitref.edits(root) == [] and gitref.choose(root, None).baseline is None
    (root / "notes.txt").write_text("mine")
    fake_git.status = ["?? notes.txt", "?? tasks.py"]
    assert gitref.edits(root) == ["notes.txt"]


@pytest.mark.parametrize("ref, needle", [("no-such-branch", "no such commit"),
                                         ("", "--baseline is empty")])
def test_fake_a_baseline_that_does_not_exist_is_bad_usage(tmp_path, fake_git, ref, needle):
    root = tiny_tree(tmp_path / "r")
    with pytest.raises(TaskError) as err:
        gitref.choose(root, ref)
    assert err.value.code == 2 and needle in str(err.value) and "\n" not in str(err.value)


def test_fake_outside_git_there_is_no_baseline(tmp_path, fake_git):
    fake_git.repo = False
    (tmp_path / "plain").mkdir()
    choice = gitref.choose(tmp_path / "plain", None)
    assert choice.baseline is None and "not a git checkout" in choice.note
    with pytest.raises(TaskError) as err:
        gitref.choose(tmp_path / "plain", "main")
    assert err.value.code == 2


def test_fake_a_shallow_clone_without_the_base_says_so_once(tmp_path, fake_git):
    """origin/main fetched one deep: it shares no history with HEAD in this clone."""
    clone = tiny_tree(tmp_path / "clone")
    fake_git.refs = {"HEAD": HEAD, "feature": HEAD, "origin/main": MAIN}
    fake_git.shallow = True
    choice = gitref.choose(clone, None)
    assert choice.baseline is None and "shallow" in choice.note
    with pytest.raises(TaskError) as err:
        gitref.choose(clone, FORK)
    assert err.value.code == 2 and "fetch --unshallow" in str(err.value)


def test_fake_bytecode_venvs_and_the_state_dir_are_no_edits(tmp_path, fake_git):
    root = tiny_tree(tmp_path / "r")
    fake_git.bases["main"] = HEAD
    ours = ["pkg/__pycache__/core.cpython-311.pyc", "py311/bin/python",
            ".tractor-tasks/history.sqlite"]
    fake_git.status = [f"?? {f}" for f in ours]
    fake_git.untracked = ours
    assert gitref.edits(root) == [] and gitref.choose(root, None).baseline is None
    assert gitref.changed_since(root, HEAD) == []


def test_fake_a_target_below_its_repositorys_top_sees_its_own_paths(tmp_path, fake_git):
    """git names paths from the repository's top in its status: the target's own are
    relative to it; its export is git archive run in it (the subtree)."""
    root = tiny_tree(tmp_path / "top" / "sub")
    fake_git.prefix = "sub/"
    assert gitref.edits(root) == []
    fake_git.status = [" M sub/pkg/core.py", "?? sub/new.txt"]
    assert sorted(gitref.edits(root)) == ["new.txt", "pkg/core.py"]
    archive = FakeArchive({"pkg/core.py": "X = 1\n"})
    with archive.installed():
        dest = gitref.export(root, HEAD, tmp_path / "exp" / HEAD)
    assert archive.ran == [(["git", "archive", "--format=tar", HEAD], root)]
    assert (dest / "pkg" / "core.py").read_text() == "X = 1\n"


class FakeArchive:
    """`git archive` at the process boundary: a tar stream of `files`, exit 0."""

    def __init__(self, files: dict[str, str]):
        import io
        import tarfile
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, text in files.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        self.tar, self.ran = buf.getvalue(), []

    def installed(self):
        import io
        from types import SimpleNamespace
        from unittest import mock

        def popen(argv, cwd, stdout, stderr):
            self.ran.append((argv, cwd))
            return SimpleNamespace(stdout=io.BytesIO(self.tar), stderr=io.BytesIO(b""),
                                   wait=lambda: 0)
        return mock.patch.object(gitref, "subprocess", SimpleNamespace(
            Popen=popen, PIPE=subprocess.PIPE))


def test_fake_an_export_is_read_only_and_leaves_the_repository_alone(tmp_path, fake_git):
    root = tiny_tree(tmp_path / "r")
    (root / "pkg" / "core.py").write_text("X = 3\n")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    archive = FakeArchive({"pkg/__init__.py": "", "pkg/core.py": "X = 1\n"})
    with archive.installed():
        dest = gitref.export(root, HEAD, tmp_path / "exp" / "x")
    assert (dest / "pkg" / "core.py").read_text() == "X = 1\n"
    # read-only by its modes (root, as here, could write anyway)
    assert not (dest / "pkg").stat().st_mode & 0o222
    assert not (dest / "pkg" / "core.py").stat().st_mode & 0o222
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert archive.ran == [(["git", "archive", "--format=tar", HEAD], root)]
    gitref.remove_export(dest)
    assert not dest.exists()


@pytest.mark.slow
def test_on_an_unchanged_default_branch_the_history_decides(tmp_path):
    root = tiny_repo(tmp_path / "r")
    assert gitref.choose(root, None).baseline is None


@pytest.mark.slow
def test_edits_on_the_default_branch_compare_with_head(tmp_path):
    root = tiny_repo(tmp_path / "r")
    (root / "pkg" / "core.py").write_text("X = 2\n")
    base = gitref.choose(root, None).baseline
    assert base.commit == git(root, "rev-parse", "HEAD") and base.label == "HEAD"


@pytest.mark.slow
def test_a_branch_compares_with_where_it_left_main(tmp_path):
    root = tiny_repo(tmp_path / "r")
    fork = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "-b", "feature")
    (root / "pkg" / "core.py").write_text("X = 2\n")
    git(root, "commit", "-qam", "change")
    git(root, "checkout", "-q", "main")
    (root / "pkg" / "other.py").write_text("Y = 2\n")
    git(root, "commit", "-qam", "main moves on")
    git(root, "checkout", "-q", "feature")
    base = gitref.choose(root, None).baseline
    assert (base.commit, base.label) == (fork, "main")
    assert gitref.changed_since(root, base.commit) == ["pkg/core.py"]


@pytest.mark.slow
def test_the_init_shims_are_not_edits(tmp_path):
    root = tiny_repo(tmp_path / "r")
    (root / "tasks.py").write_text('"""invoke tasks, from tractor-tasks."""\n')
    assert gitref.edits(root) == [] and gitref.choose(root, None).baseline is None
    (root / "notes.txt").write_text("mine")
    assert gitref.edits(root) == ["notes.txt"]


@pytest.mark.slow
@pytest.mark.parametrize("ref, needle", [("no-such-branch", "no such commit"),
                                         ("", "--baseline is empty")])
def test_a_baseline_that_does_not_exist_is_bad_usage(tmp_path, ref, needle):
    root = tiny_repo(tmp_path / "r")
    with pytest.raises(TaskError) as err:
        gitref.choose(root, ref)
    assert err.value.code == 2 and needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_outside_git_there_is_no_baseline(tmp_path):
    (tmp_path / "plain").mkdir()
    choice = gitref.choose(tmp_path / "plain", None)
    assert choice.baseline is None and "not a git checkout" in choice.note
    with pytest.raises(TaskError) as err:
        gitref.choose(tmp_path / "plain", "main")
    assert err.value.code == 2


@pytest.mark.slow
def test_a_shallow_clone_without_the_base_says_so_once(tmp_path):
    origin = tiny_repo(tmp_path / "origin")
    for i in range(3):
        (origin / "pkg" / "other.py").write_text(f"Y = {i}\n")
        git(origin, "commit", "-qam", f"c{i}")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{origin}", str(clone)],
                   check=True)
    git(clone, "checkout", "-q", "-b", "feature")
    git(clone, "update-ref", "-d", "refs/remotes/origin/HEAD")
    git(clone, "update-ref", "-d", "refs/remotes/origin/main")
    subprocess.run(["git", "fetch", "-q", "--depth", "1", "origin",
                    f"+{git(origin, 'rev-parse', 'HEAD~2')}:refs/remotes/origin/main"],
                   cwd=clone, check=True)
    choice = gitref.choose(clone, None)
    assert choice.baseline is None and "shallow" in choice.note
    with pytest.raises(TaskError) as err:
        gitref.choose(clone, git(origin, "rev-parse", "HEAD~3"))
    assert err.value.code == 2 and "fetch --unshallow" in str(err.value)


@pytest.mark.slow
def test_an_export_is_read_only_and_leaves_the_repository_alone(tmp_path):
    root = tiny_repo(tmp_path / "r")
    (root / "pkg" / "core.py").write_text("X = 2\n")
    git(root, "stash", "-q")
    (root / "pkg" / "core.py").write_text("X = 3\n")
    git(root, "add", "pkg/core.py")
    before = git_state(root)
    dest = gitref.export(root, git(root, "rev-parse", "HEAD"), tmp_path / "exp" / "x")
    assert (dest / "pkg" / "core.py").read_text() == "X = 1\n"
    # read-only by its modes (root, as here, could write anyway)
    assert not (dest / "pkg").stat().st_mode & 0o222
    assert not (dest / "pkg" / "core.py").stat().st_mode & 0o222
    assert git_state(root) == before
    gitref.remove_export(dest)
    assert not dest.exists()


# -- likely cause -----------------------------------------------------------------------------

def test_the_likely_cause_ranks_what_ties_a_changed_file_to_the_test(tmp_path, fake_git):
    root = tiny_tree(tmp_path / "r")
    target = load_target(root)
    base = gitref.Baseline(HEAD, "main", "test")
    t = TestResult("tests/test_core.py::test_x", O.FAILED, message="AssertionError",
                   text="tests/test_core.py:4: in test_x\nE   AssertionError")
    lines = cause.likely_cause(target, t, ["README.md", "pkg/core.py", "pkg/other.py"], base)
    assert lines[0] == "likely cause: pkg/core.py (changed since main; imported by " \
                       "tests/test_core.py)"
    assert lines[1].startswith("likely cause: pkg/other.py (changed since main; in pkg")
    assert not any("README" in ln for ln in lines)
    nothing = cause.likely_cause(target, t, ["README.md"], base)
    assert nothing == ["likely cause: nothing ties it to a change; changed since main: "
                       "README.md"]


# -- the judgement, with a fake at the process boundary -----------------------------------------

@dataclass
class FakePlan:
    target: object
    opts: RunOptions = field(default_factory=lambda: RunOptions(exitfirst=False))
    minor: str = "3.11"
    cell: object = None
    tpt: str = "tcp"
    spawn: str = "trio"


class FakeRunner:
    """Stands in for PassRunner: instead of starting pytest, a lane gives each selected
    test the next outcome its script says (what a real re-run alone would report)."""

    def __init__(self, target, script: dict[str, list[O]], opts=None):
        self.p = FakePlan(target, opts or RunOptions(exitfirst=False))
        self.script = script
        self.lanes: list[tuple[str, set]] = []
        self.run_dir = type("D", (), {"path": Path("/nonexistent/run-1")})()
        self.out = None

    def stopped(self):
        return False

    def import_check(self, at, venv=None):
        return str(at)

    made: Path | None = None   # what baseline_venv gives (None: uv could not)
    venvs: list = []           # the venv each lane ran with, by phase

    def baseline_venv(self, tree, lock_hash):
        self.synced = [*getattr(self, "synced", []), (tree, lock_hash)]
        return ((self.made, f"created in 0.1s at {self.made}") if self.made is not None
                else (None, "`uv sync --locked` of its uv.lock failed: no network"))

    def lane(self, *, only, shard, echo, opts=None, phase=None, at=None, venv=None):
        self.lanes.append((phase, set(only)))
        self.venvs = [*self.venvs, (phase, venv)]
        r = Results(self.p.target)
        for nodeid in only:
            outcome = self.script[nodeid].pop(0)   # an outcome, or (outcome, message)
            outcome, message = outcome if isinstance(outcome, tuple) else (
                outcome, "AssertionError: boom" if outcome.bad else "")
            r.tests[nodeid] = TestResult(nodeid, outcome, message=message)
        return RunResult(r)


def test_the_verdict_drives_its_runner_through_the_declared_interface():
    """verdict.py and its passes (reruns.py) use of their runner only what
    runner.Runner declares, and both the fake and PassRunner (test_passes) are Runners."""
    import ast
    import inspect

    from tractor_tasks import reruns, verdict
    from tractor_tasks.runner import Runner
    declared = {n for n in dir(Runner) if not n.startswith("_")} | \
        set(Runner.__annotations__)
    for module in (verdict, reruns):
        used = {node.attr for node in ast.walk(ast.parse(inspect.getsource(module)))
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "runner"}
        assert used and used <= declared, (module.__name__, used - declared)
    assert isinstance(FakeRunner(None, {}), Runner)


def failed(results, nodeid, message="AssertionError: boom"):
    results.tests[nodeid] = TestResult(nodeid, O.FAILED, message=message)


def test_confirmation_tells_flaky_from_confirmed_and_skips_what_the_config_explains(
        tmp_path, fake_git):
    root = tiny_tree(tmp_path / "r")
    target = load_target(root)
    object.__setattr__(target, "quarantine", (FlakyRule("test_core.py::test_q", ""),))
    r = Results(target)
    for name in ("test_flip", "test_again", "test_q", "test_known"):
        failed(r, f"tests/test_core.py::{name}")
    r.tests["tests/test_core.py::test_known"].flaky = FlakyRule("*", "boom", "known")
    runner = FakeRunner(target, {"tests/test_core.py::test_flip": [O.PASSED],
                                 "tests/test_core.py::test_again": [O.FAILED]})
    j = verdict.judge(runner, r, choice=gitref.Choice(None))
    v = {k.split("::")[1]: t.verdict for k, t in r.tests.items()}
    assert v == {"test_flip": V.FLAKY, "test_again": V.NEW, "test_q": V.QUARANTINED,
                 "test_known": V.KNOWN_FLAKY}
    # one pytest start for the module's two unexplained failures, nothing else re-run
    assert runner.lanes == [("confirm-1", {"tests/test_core.py::test_flip",
                                           "tests/test_core.py::test_again"})]
    assert j.confirmed == 2
    assert verdict.failing(r) == [r.tests["tests/test_core.py::test_again"]]
    assert verdict.headline(r, j) == "verdict: 0 regressions · 1 new · 1 flaky (passed " \
                                     "alone) · 1 known-flaky · 1 quarantined"


def test_a_parallel_failure_that_passes_alone_is_load_sensitive(tmp_path, fake_git):
    target = load_target(tiny_tree(tmp_path / "r"))
    r = Results(target)
    failed(r, "tests/test_core.py::test_deadline", "trio.TooSlowError")
    runner = FakeRunner(target, {"tests/test_core.py::test_deadline": [O.PASSED]})
    verdict.judge(runner, r, choice=gitref.Choice(None), parallel=True)
    t = r.tests["tests/test_core.py::test_deadline"]
    assert t.verdict is V.LOAD_SENSITIVE and "passed when re-run alone" in t.why


def test_confirm_n_re_runs_n_times_and_no_confirm_none(tmp_path, fake_git):
    target = load_target(tiny_tree(tmp_path / "r"))
    r = Results(target)
    failed(r, "tests/test_core.py::test_x")
    runner = FakeRunner(target, {"tests/test_core.py::test_x": [O.FAILED, O.FAILED, O.PASSED]})
    verdict.judge(runner, r, choice=gitref.Choice(None), confirm=3)
    assert len(runner.lanes) == 3 and r.tests["tests/test_core.py::test_x"].verdict is V.FLAKY
    r2 = Results(target)
    failed(r2, "tests/test_core.py::test_x")
    runner2 = FakeRunner(target, {})
    verdict.judge(runner2, r2, choice=gitref.Choice(None), confirm=0)
    assert runner2.lanes == [] and r2.tests["tests/test_core.py::test_x"].verdict is V.NEW


class RecordingHistory:
    def __init__(self):
        self.runs = []

    def past(self, ids, **cell):
        return {}

    def record(self, run, tests):
        self.runs.append(run)


@pytest.mark.parametrize("case", ["synced", "sync_fails", "same_lock"])
def test_a_baseline_whose_uv_lock_differs_runs_in_a_venv_synced_from_its_own_lock(
        tmp_path, fake_git, fake_export, monkeypatch, case):
    """A dependency bump: the baseline runs with its own lock, not HEAD's venv (said
    once), and its outcomes are recorded under its own lock; when uv cannot make that
    venv it runs with this tree's, and says why. The same lock: nothing of it."""
    from tractor_tasks import reruns
    root = tiny_tree(tmp_path / "r")
    (root / "uv.lock").write_bytes(b"version = 1\n# now\n")
    then = b"version = 1\n# now\n" if case == "same_lock" else b"version = 1\n# then\n"
    monkeypatch.setattr(gitref, "blob", lambda root_, commit, path, **kw:
                        then if (commit, path) == (HEAD, "uv.lock") else None)
    target = load_target(root)
    base = gitref.Baseline(HEAD, "main", "test")
    r = Results(target)
    failed(r, "tests/test_core.py::test_x")
    runner = FakeRunner(target, {"tests/test_core.py::test_x": [O.FAILED, O.PASSED, O.FAILED,
                                                                O.PASSED]})
    runner.made = tmp_path / "base-venv" if case == "synced" else None
    history = RecordingHistory()
    j = verdict.judge(runner, r, history=history, choice=gitref.Choice(base))
    assert r.tests["tests/test_core.py::test_x"].verdict is V.REGRESSION
    lock_now, lock_then = reruns.lock_hash(b"version = 1\n# now\n"), reruns.lock_hash(then)
    said = [n for n in j.notes if "uv.lock differs" in n]
    base_lanes = [v for ph, v in runner.venvs if ph.startswith("baseline")]
    assert len(base_lanes) == 2 and all(v is None for ph, v in runner.venvs
                                        if not ph.startswith("baseline"))
    recorded = {run.environ.rpartition("lock=")[2] for run in history.runs}
    if case == "same_lock":
        assert not said and not getattr(runner, "synced", []) and base_lanes == [None, None]
        assert recorded == {lock_now}
        return
    assert {h for _, h in runner.synced} == {lock_then}
    assert len(said) == 1, j.notes
    if case == "synced":
        assert base_lanes == [runner.made, runner.made]
        assert said[0] == ("verdict: uv.lock differs between main (1111111111) and this tree: "
                           "the baseline "
                           f"ran in a venv synced from its own lock (created in 0.1s at "
                           f"{runner.made})")
        assert recorded == {lock_then}
    else:
        assert base_lanes == [None, None]
        assert said[0].endswith("the baseline ran with this tree's venv: its own could not "
                                "be made (`uv sync --locked` of its uv.lock failed: no "
                                "network)")
        assert recorded == {lock_now}


def test_the_baseline_splits_regressions_from_pre_existing(tmp_path, fake_git, fake_export):
    root = tiny_tree(tmp_path / "r")
    target = load_target(root)
    base = gitref.Baseline(HEAD, "main", "test")
    r = Results(target)
    for name in ("test_broke", "test_old", "test_other_way", "test_brand_new"):
        failed(r, f"tests/test_core.py::{name}")
    script = {f"tests/test_core.py::{n}": [O.FAILED, O.FAILED] for n in
              ("test_broke", "test_old", "test_other_way", "test_brand_new")}
    runner = FakeRunner(target, script)
    # at the baseline (twice for a regression: the second opinion): passes, fails the
    # same way, fails differently, is not there

    def lane(*, only, shard, echo, opts=None, phase=None, at=None, venv=None):
        if not phase.startswith("baseline"):
            return FakeRunner.lane(runner, only=only, shard=shard, echo=echo, phase=phase)
        runner.lanes.append((phase, set(only)))
        res = Results(target)
        res.tests["tests/test_core.py::test_broke"] = TestResult(
            "tests/test_core.py::test_broke", O.PASSED)
        res.tests["tests/test_core.py::test_old"] = TestResult(
            "tests/test_core.py::test_old", O.FAILED, message="AssertionError: boom")
        res.tests["tests/test_core.py::test_other_way"] = TestResult(
            "tests/test_core.py::test_other_way", O.FAILED, message="KeyError: 'k'")
        return RunResult(res)
    runner.lane = lane
    verdict.judge(runner, r, choice=gitref.Choice(base))
    v = {k.split("::")[1]: (t.verdict, t.why) for k, t in r.tests.items()}
    assert v["test_broke"][0] is V.REGRESSION and "passes at main" in v["test_broke"][1]
    assert v["test_old"][0] is V.PRE_EXISTING
    assert v["test_other_way"][0] is V.REGRESSION and "differently: KeyError" in \
        v["test_other_way"][1]
    assert v["test_brand_new"][0] is V.NEW and "not in main" in v["test_brand_new"][1]
    assert "failed again in a pytest of its own, and passed at main (" in v["test_broke"][1]
    assert [ph for ph, _ in runner.lanes] == ["confirm-1", "baseline", "alone-1", "alone-2",
                                              "baseline-2"]


def test_a_regression_is_said_only_when_it_holds_in_a_pytest_of_its_own_and_at_base_twice(
        tmp_path, fake_git, fake_export):
    """tractor's deadline tests chain: the confirmation re-runs a module's failures in one
    pytest, where one missed deadline slows the next, and the baseline ran once. Each
    regression candidate runs again in a pytest of its own at HEAD, then at the baseline:
    a pass alone is flaky, a baseline that flips is flaky there too; only what holds
    both times stays a regression."""
    root = tiny_tree(tmp_path / "r")
    target = load_target(root)
    base = gitref.Baseline(HEAD, "main", "test")
    r = Results(target)
    names = ("test_chained", "test_flips_there", "test_real")
    for name in names:
        failed(r, f"tests/test_core.py::{name}")
    # confirm: all fail again (one pytest); alone: the chained one passes
    script = {"tests/test_core.py::test_chained": [O.FAILED, O.PASSED],
              "tests/test_core.py::test_flips_there": [O.FAILED, O.FAILED],
              "tests/test_core.py::test_real": [O.FAILED, O.FAILED]}
    at_base = {"baseline": {"test_chained": O.PASSED, "test_flips_there": O.PASSED,
                            "test_real": O.PASSED},
               "baseline-2": {"test_flips_there": O.FAILED, "test_real": O.PASSED}}
    runner = FakeRunner(target, script)

    def lane(*, only, shard, echo, opts=None, phase=None, at=None, venv=None):
        if not phase.startswith("baseline"):
            return FakeRunner.lane(runner, only=only, shard=shard, echo=echo, phase=phase)
        runner.lanes.append((phase, set(only)))
        res = Results(target)
        for name, outcome in at_base[phase].items():
            key = f"tests/test_core.py::{name}"
            if key in only:
                res.tests[key] = TestResult(key, outcome, message="AssertionError: boom"
                                            if outcome.bad else "")
        return RunResult(res)
    runner.lane = lane
    j = verdict.judge(runner, r, choice=gitref.Choice(base))
    v = {k.split("::")[1]: (t.verdict, t.why) for k, t in r.tests.items()}
    assert v["test_chained"][0] is V.FLAKY and "passed in a pytest of its own" in \
        v["test_chained"][1]
    assert v["test_flips_there"][0] is V.FLAKY and "it flips there too" in \
        v["test_flips_there"][1]
    assert v["test_real"][0] is V.REGRESSION and ") again" in v["test_real"][1] \
        and "and passed at main (" in v["test_real"][1]
    assert [ph for ph, _ in runner.lanes] == ["confirm-1", "baseline", "alone-1", "alone-2",
                                              "alone-3", "baseline-2"]
    assert runner.lanes[-1][1] == {"tests/test_core.py::test_flips_there",
                                   "tests/test_core.py::test_real"}
    assert j.second == 3 and j.as_dict()["second_opinion"] == 3


def test_a_baseline_that_failed_so_in_its_history_is_not_a_regression(tmp_path, fake_git,
                                                                       fake_export):
    """The history's runs at the baseline commit, not only its newest: a test that failed
    the same way there in most of them is pre-existing at once (pytest's two spellings
    of an assertion are one failure); one that passed in the newest but failed in an
    earlier one is flaky there too, not a regression (tractor's deadline tests flip
    between runs of one commit)."""
    from tractor_tasks.history import Past
    root = tiny_tree(tmp_path / "r")
    target = load_target(root)
    head = HEAD
    base = gitref.Baseline(head, "HEAD", "test")
    clean = gitref.env_state(target.verdict_env)   # a clean tree in this environment

    def row(outcome, n, sig="AssertionError: boom"):
        return Past(outcome, sig if outcome == "failed" else "", head, clean, "cell", "",
                    f"r{n}", 1000.0 - n, "host")
    rows = {"tests/test_core.py::test_mostly": [row("passed", 1), row("failed", 2),
                                                row("failed", 3, "boom")],
            "tests/test_core.py::test_sometimes": [row("passed", 1), row("failed", 2, "Xx"),
                                                   row("passed", 3)],
            "tests/test_core.py::test_broke": [row("passed", 1), row("passed", 2)],
            "tests/test_core.py::test_varies": [row("failed", 1, "KeyError: 'k'"),
                                                row("failed", 2), row("failed", 3, "x")],
            "tests/test_core.py::test_unstable": [row("failed", 1, "trio.TooSlowError"),
                                                  row("failed", 2, "+-----"),
                                                  row("passed", 3)],
            "tests/test_core.py::test_stable_else": [row("failed", 1, "KeyError: 'k'"),
                                                     row("failed", 2, "KeyError: 'k'")]}

    class History:
        def past(self, ids, **cell):
            return {i: rows[i] for i in ids if i in rows}
    r = Results(target)
    for nodeid in rows:
        failed(r, nodeid)
    runner = FakeRunner(target, {n: [O.FAILED] for n in rows})
    # the two regressions' second opinion: each fails again in a pytest of its own; the
    # history has two runs of each at the baseline already: none runs there again
    runner.script["tests/test_core.py::test_broke"] += [O.FAILED]
    runner.script["tests/test_core.py::test_stable_else"] += [O.FAILED]
    verdict.judge(runner, r, history=History(), choice=gitref.Choice(base))
    v = {k.split("::")[1]: (t.verdict, t.why) for k, t in r.tests.items()}
    assert v["test_mostly"][0] is V.PRE_EXISTING and "in 2 of its last 3" in v["test_mostly"][1]
    assert v["test_sometimes"][0] is V.FLAKY and "flaky there too" in v["test_sometimes"][1]
    assert v["test_broke"][0] is V.REGRESSION
    # failed there every time, this way once among others: pre-existing, not "differently"
    assert v["test_varies"][0] is V.PRE_EXISTING and "1 of them the same way" in \
        v["test_varies"][1]
    # failed there mostly, its message varying between runs: pre-existing; failed there
    # always one (other) way: it fails differently now, a regression
    assert v["test_unstable"][0] is V.PRE_EXISTING and "vary" in v["test_unstable"][1]
    assert v["test_stable_else"][0] is V.REGRESSION and "differently" in \
        v["test_stable_else"][1]
    # the pre-existing ones were not re-run; the first baseline run was the history's:
    # only the second opinion ran there
    regressions = {"tests/test_core.py::test_broke", "tests/test_core.py::test_stable_else"}
    assert runner.lanes[0] == ("confirm-1", {"tests/test_core.py::test_sometimes",
                                             *regressions})
    assert [ph for ph, _ in runner.lanes[1:]] == ["alone-1", "alone-2"]
    assert "passed at HEAD (" in v["test_broke"][1] and "in its last 2 runs there" in \
        v["test_broke"][1]
    assert "failed another way at HEAD (" in v["test_stable_else"][1]


# -- real runs of the sample -----------------------------------------------------------------------

VX = textwrap.dedent('''
    import os
    from pathlib import Path
    from sample_actors.discovery import _registry


    def test_ok():
        assert True


    def test_old_bug():
        assert 1 == 2, "an old bug"


    def test_uses_registry():
        assert not hasattr(_registry, "VX"), "broken by VX"


    def test_one_start_in_two():
        counter = Path(os.environ["VX_COUNTER"])
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        assert n % 2, "fails every other start"
''')


@pytest.fixture
def scratch(tmp_path):
    """A git copy of the sample on `main` with VX's tests, its venv ready."""
    from tractor_tasks.pipeline import prepare_venv
    root = copy_sample(tmp_path / "repo", git=True)
    git(root, "branch", "-M", "main")
    (root / "tests" / "test_vx.py").write_text(VX)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "vx")
    prepare_venv(load_target(root), "3.11", out=lambda line: None)
    return root


def run_vx(root, tmp_path, *args):
    return invoke("test", "tests/test_vx.py", "--no-x", *args, root=root,
                  env={"VX_COUNTER": str(tmp_path / "counter")})


def outcome(root):
    return json.loads((last_run(root) / "outcome.json").read_text())


def verdicts(root):
    return {f["nodeid"].split("::")[1]: f["verdict"] for f in outcome(root)["failures"]}


@pytest.mark.slow
def test_a_commit_that_breaks_a_test_is_a_regression_with_its_file_as_cause(scratch, tmp_path):
    git(scratch, "checkout", "-q", "-b", "feature")
    with open(scratch / "sample_actors" / "discovery" / "_registry.py", "a") as f:
        f.write("\nVX = 1\n")
    git(scratch, "commit", "-qam", "a bug")
    before = git_state(scratch)
    out = run_vx(scratch, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert verdicts(scratch) == {"test_old_bug": "pre-existing", "test_uses_registry":
                                 "regression", "test_one_start_in_two": "flaky"}
    text = out.stdout.rpartition("\nresults:")[2]   # our summary, after pytest's own output
    assert "verdict: 1 regression · 1 pre-existing (fail at main too) · 1 flaky (passed " \
           "alone)" in text
    cause = next(ln for ln in text.splitlines() if "likely cause:" in ln)
    assert "sample_actors/discovery/_registry.py (changed since main; imported by " \
           "tests/test_vx.py" in cause
    # the regression's traceback is shown, the explained failures get one line each
    assert "broken by VX" in text and "an old bug" not in text
    assert (last_run(scratch) / "baseline").is_dir()
    # the JUnit file keeps both schemas' rules; the verdict is where CI UIs show it
    suite = ET.parse(last_run(scratch) / "junit.xml").getroot()
    assert junit_rules.check(suite, junit_rules.SUREFIRE, JUNIT_EXTRAS) == []
    assert junit_rules.check(suite, junit_rules.JENKINS, JUNIT_EXTRAS) == []
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    reg = cases["test_uses_registry"]
    assert "verdict: regression" in reg.find("failure").get("message")
    assert "likely cause: sample_actors/discovery/_registry.py" in reg.findtext("system-out")
    assert "broken by VX" in reg.find("rerunFailure").findtext("stackTrace")  # failed alone
    flip = cases["test_one_start_in_two"]
    assert flip.find("failure") is None and flip.find("flakyFailure").findtext("stackTrace")
    assert "verdict: flaky" in flip.find("flakyFailure").get("message")
    # the user's repository is exactly as it was: HEAD, index, stash, work tree
    assert git_state(scratch) == before
    # a second run against the same baseline re-runs nothing there
    again = run_vx(scratch, tmp_path)
    assert again.returncode == 1 and not (last_run(scratch) / "baseline").exists()
    assert verdicts(scratch)["test_old_bug"] == "pre-existing"
    assert git_state(scratch) == before


@pytest.mark.slow
def test_only_explained_failures_pass_the_run_and_strict_fails_it(scratch, tmp_path):
    (tmp_path / "counter").write_text("1")      # the flip test passes this start
    git(scratch, "checkout", "-q", "-b", "feature")
    (scratch / "NOTES.md").write_text("an unrelated edit\n")   # the branch has edits
    out = run_vx(scratch, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert verdicts(scratch) == {"test_old_bug": "pre-existing"}
    assert outcome(scratch)["status"] == "passed"
    strict = run_vx(scratch, tmp_path, "--strict")
    assert strict.returncode == 1
    # back on main, unchanged, with no remote: a local commit, compared with HEAD~1,
    # where the failing test did not exist: new, and red
    (scratch / "NOTES.md").unlink()
    git(scratch, "checkout", "-q", "main")
    (tmp_path / "counter").write_text("1")
    local = run_vx(scratch, tmp_path, "--no-confirm")
    assert local.returncode == 1, local.stdout
    assert verdicts(scratch) == {"test_old_bug": "new"}
    assert outcome(scratch)["verdict"]["baseline"]["label"] == "HEAD~1"
    # the same commit published (origin/main is HEAD): no baseline, the history (the
    # runs at main's commit) decides
    git(scratch, "update-ref", "refs/remotes/origin/main", "HEAD")
    (tmp_path / "counter").write_text("1")
    plain = run_vx(scratch, tmp_path, "--no-confirm")
    assert plain.returncode == 0, plain.stdout
    assert verdicts(scratch) == {"test_old_bug": "pre-existing"}
    # the clean runs at ancestors are the scratch repo's own on main and the local one
    # just above (the feature branch's runs had edits in the tree: not comparable)
    assert "test_old_bug  [PRE-EXISTING]: failed the same way in 2 of its last 2 run(s) " \
           "of this cell at ancestors of HEAD" in plain.stdout


LOAD_A = textwrap.dedent('''
    import os, time
    from pathlib import Path


    def test_busy_neighbour():
        marker = Path(os.environ["VX_MARKER"])
        marker.write_text("busy")
        time.sleep(4)
        marker.unlink()
''')
LOAD_B = textwrap.dedent('''
    import os, time
    from pathlib import Path


    def test_deadline():
        time.sleep(1.5)
        assert not Path(os.environ["VX_MARKER"]).exists(), "TooSlow: a neighbour was busy"
''')


@pytest.mark.slow
def test_a_failure_only_under_parallel_load_is_load_sensitive(scratch, tmp_path):
    (scratch / "tests" / "test_load_a.py").write_text(LOAD_A)
    (scratch / "tests" / "test_load_b.py").write_text(LOAD_B)
    git(scratch, "add", "-A")
    git(scratch, "commit", "-qm", "load tests")
    env = {"VX_MARKER": str(tmp_path / "busy")}
    # a serial run first: the scheduler admits modules side by side only once their CPU
    # cost is measured (unmeasured ones run alone); both modules mostly sleep
    first = invoke("test", "tests/test_load_a.py", "tests/test_load_b.py", "--no-x",
                   root=scratch, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    out = invoke("test", "tests/test_load_a.py", "tests/test_load_b.py", "--no-x", "-n", "2",
                 root=scratch, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert verdicts(scratch) == {"test_deadline": "load-sensitive"}
    assert "1 load-sensitive (passed alone)" in out.stdout
    serial = invoke("test", "tests/test_load_a.py", "tests/test_load_b.py", "--no-x",
                    root=scratch, env=env)
    assert serial.returncode == 0 and verdicts(scratch) == {}


# -- where the class shows: history, quarantine entries, the matrix table -----------------------

def test_invoke_history_shows_each_runs_class(tmp_path, capsys, fake_git):
    from tractor_tasks.history import History, RunRow, TestRow
    from tractor_tasks.history_view import show_history
    from tractor_tasks.rundirs import State
    target = load_target(tiny_tree(tmp_path / "r"))
    h = History(State(target).history)
    h.record(RunRow("r1", 1.0, 2.0, "run", minor="3.11", tpt="tcp", spawn="trio", commit="a" * 40),
             [TestRow("tests/test_core.py::test_x", "failed", 1.0, signature="boom",
                      verdict="pre-existing")])
    h.record(RunRow("r1-baseline", 3.0, 4.0, "baseline", minor="3.11", tpt="tcp", spawn="trio",
                    commit="b" * 40), [TestRow("tests/test_core.py::test_x", "passed", 1.0)])
    show_history(target, "test_x", 10)
    out = capsys.readouterr().out
    assert "[pre-existing]" in out and "bbbbbbbbb (baseline)" in out


def test_quarantine_entries_from_the_history_are_ready_to_paste(tmp_path):
    import tomllib

    from tractor_tasks.history import FlakyCandidate, flaky_toml
    from tractor_tasks.target import _parse_flaky
    c = FlakyCandidate("tests/test_core.py::test_x[tcp]", "tests-3.13(tpt='tcp')", "3.13",
                       "tcp", "trio", 3, 5, "trio.TooSlowError", ("trio.TooSlowError",) * 2)
    text = flaky_toml([c], "tests", table="quarantine")
    assert text.startswith("[[tool.tractor-tasks.quarantine]]")
    rules = _parse_flaky(tomllib.loads(text)["tool"]["tractor-tasks"]["quarantine"], "x",
                         "quarantine")
    assert rules[0].test == "test_core.py::test_x*" and rules[0].error == "TooSlowError"


def test_the_matrix_table_has_the_verdicts_columns(tmp_path):
    from tractor_tasks.cells import Row, table_text
    row = Row.of(tmp_path / "o.json", {"cell": "tests-3.13(tpt='tcp')", "status": "passed",
                                       "seconds": 9.0, "summary": {
                                           "passed": 400, "new_failures": 3, "known_flaky": 2,
                                           "hung": 0, "skipped": 5, "leaked": 0,
                                           "regressions": 1, "pre_existing": 21, "flaky": 4}})
    head, line = table_text([row]).splitlines()
    assert head.split()[3:7] == ["regressions", "new", "pre-existing", "flaky"]
    assert line.split()[2:8] == ["400", "1", "2", "21", "4", "2"]


@pytest.mark.slow
def test_a_target_below_its_repositorys_top_sees_its_own_paths(tmp_path):
    """The bundled sample sits in examples/ of this repo: edits, changed files and the
    baseline export are the target's own, relative to it."""
    top = tmp_path / "top"
    tiny_repo(top / "sub")
    subprocess.run(["rm", "-rf", str(top / "sub" / ".git")], check=True)
    (top / "README").write_text("top\n")
    git(top, "init", "-q", "-b", "main")
    git(top, "add", "-A")
    git(top, "commit", "-qm", "base")
    root = top / "sub"
    base = git(root, "rev-parse", "HEAD")
    (top / "README").write_text("changed outside the target\n")
    assert gitref.edits(root) == []
    (root / "pkg" / "core.py").write_text("X = 2\n")
    (root / "new.txt").write_text("n")
    assert sorted(gitref.edits(root)) == ["new.txt", "pkg/core.py"]
    assert gitref.changed_since(root, base) == ["new.txt", "pkg/core.py"]
    dest = gitref.export(root, base, tmp_path / "exp" / base)
    assert (dest / "pkg" / "core.py").read_text() == "X = 1\n" and not (dest / "README").exists()


def test_runs_in_another_outcome_changing_environment_are_not_compared(tmp_path, monkeypatch,
                                                                       fake_git):
    """`verdict_env`: a pass recorded at this commit with another value of such a variable
    is no evidence that this failure is flaky (the sample's chaos switches are such)."""
    from tractor_tasks.history import History, RunRow, TestRow
    from tractor_tasks.rundirs import State
    root = tiny_tree(tmp_path / "r")
    with open(root / "pyproject.toml", "a") as f:
        f.write('verdict_env = ["VX_MODE"]\n')
    target = load_target(root)
    head = HEAD
    h = History(State(target).history)
    calm = gitref.state(root, target.verdict_env, env={})
    h.record(RunRow("calm", 1.0, 2.0, "run", minor="3.11", tpt="tcp", spawn="trio", commit=head,
                    host=__import__("os").uname().nodename, tree=calm),
             [TestRow("tests/test_core.py::test_x", "passed", 1.0)])
    assert calm == "" and gitref.state(root, target.verdict_env, env={"VX_MODE": "x"}) \
        .startswith("env-")

    def judged(mode):
        monkeypatch.setenv("VX_MODE", mode) if mode else monkeypatch.delenv("VX_MODE",
                                                                           raising=False)
        r = Results(target)
        failed(r, "tests/test_core.py::test_x")
        runner = FakeRunner(target, {"tests/test_core.py::test_x": [O.FAILED]})
        runner.p.opts = RunOptions(exitfirst=False)
        verdict.judge(runner, r, history=h, choice=gitref.Choice(None))
        return r.tests["tests/test_core.py::test_x"].verdict
    assert judged("broken") is V.NEW      # the pass was in another environment
    assert judged("") is V.FLAKY          # the same environment: it passed here before


@pytest.mark.slow
def test_bytecode_venvs_and_the_state_dir_are_no_edits(tmp_path):
    root = tiny_repo(tmp_path / "r")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\0")
    (root / "py311" / "bin").mkdir(parents=True)
    (root / "py311" / "bin" / "python").write_text("")
    (root / ".tractor-tasks").mkdir()
    (root / ".tractor-tasks" / "history.sqlite").write_text("")
    assert gitref.edits(root) == [] and gitref.choose(root, None).baseline is None
    assert gitref.changed_since(root, git(root, "rev-parse", "HEAD")) == []


DEPS = '''
import importlib.util


def test_colorama_is_not_a_dependency():
    assert importlib.util.find_spec("colorama") is None, "colorama is installed"
'''


@pytest.mark.slow
def test_a_dependency_bump_is_judged_against_the_baselines_own_lock(tmp_path):
    """Real uv, real venvs: the branch adds a dependency (pyproject.toml and a uv.lock
    made by `uv lock` from the registry), and a test fails with it. Run at the baseline
    in HEAD's venv it would fail there too (pre-existing, wrongly); run in a venv synced
    from the baseline's own lock it passes: a regression, with the lock as its cause."""
    from tractor_tasks.interpreters import uv_binary
    from tractor_tasks.pipeline import prepare_venv
    root = copy_sample(tmp_path / "repo", git=True)
    git(root, "branch", "-M", "main")
    (root / "tests" / "test_deps.py").write_text(DEPS)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "deps test")
    git(root, "checkout", "-q", "-b", "bump")
    py = root / "pyproject.toml"
    py.write_text(py.read_text().replace('"trio>=0.27",', '"trio>=0.27",\n  "colorama>=0.4",'))
    lock = subprocess.run([uv_binary(), "lock", "-q"], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert lock.returncode == 0, lock.stderr   # the registry is this machine's one network
    git(root, "commit", "-qam", "bump: colorama")
    prepare_venv(load_target(root), "3.11", out=lambda line: None)
    before = git_state(root)
    out = invoke("test", "tests/test_deps.py", "--no-x", root=root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert verdicts(root) == {"test_colorama_is_not_a_dependency": "regression"}
    text = out.stdout.rpartition("\nresults:")[2]
    said = [ln for ln in text.splitlines() if "uv.lock differs" in ln]
    assert len(said) == 1 and "the baseline ran in a venv synced from its own lock (created" \
        in said[0], text
    venvs = list((root / ".tractor-tasks" / "baseline" / "venvs").iterdir())
    assert [v.name[:5] for v in venvs] == ["lock-"] and venvs[0].name.endswith("-py311")
    has = subprocess.run([venvs[0] / "bin" / "python", "-c",
                          "import importlib.util as u; print(u.find_spec('colorama'))"],
                         capture_output=True, text=True)
    assert has.stdout.strip() == "None"   # the baseline's own dependencies, not HEAD's
    cause = [ln for ln in text.splitlines() if "likely cause:" in ln]
    assert any("uv.lock (changed since main; the lock file" in ln for ln in cause), text
    assert git_state(root) == before
    # the next run knows the baseline's outcome under its own lock: nothing runs there
    again = invoke("test", "tests/test_deps.py", "--no-x", root=root)
    assert again.returncode == 1 and not (last_run(root) / "baseline").exists()
    assert verdicts(root) == {"test_colorama_is_not_a_dependency": "regression"}
