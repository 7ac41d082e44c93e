"""The baseline a CI event names (ci_event.baseline_of): every event kind over a fake git
(fast), then real clones made the way actions/checkout makes them (slow)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tractor_tasks import ci_event
from tractor_tasks.ci_event import ZERO


class FakeGit:
    """A commit graph: {commit: [parents]}; `present` is what the clone holds."""

    def __init__(self, graph: dict[str, list[str]], head: str, present=None, refs=None):
        self.graph = graph
        self.head = head
        self.present = set(graph) if present is None else set(present)
        self.refs = refs or {}

    def _ancestors(self, c):
        seen, todo = set(), [c]
        while todo:
            x = todo.pop()
            if x in seen or x not in self.present:
                continue
            seen.add(x)
            todo += self.graph.get(x, [])
        return seen

    def has(self, c):
        return c in self.present

    def parents(self, c):
        return list(self.graph[c]) if c in self.present else None

    def is_ancestor(self, a, b):
        return a in self._ancestors(b)

    def merge_base(self, a, b):
        common = self._ancestors(a) & self._ancestors(b)
        # the best common ancestor: one no other common ancestor descends from
        best = [c for c in common if not any(c != d and c in self._ancestors(d)
                                             for d in common)]
        return best[0] if best else None

    def resolve(self, ref):
        return self.refs.get(ref)


def gh(name, **env):
    return {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": name, **env}


REPO = {"repository": {"default_branch": "main", "full_name": "o/r"}}
#   m1 - m2 - m3 (main)        f1 - f2: a feature branch off m2; M: the PR's merge of f2
#          \- f1 - f2            onto m3 (first parent m3, second f2); x1: a force push's
#                                new tip off m1
GRAPH = {"m1": [], "m2": ["m1"], "m3": ["m2"], "f1": ["m2"], "f2": ["f1"],
         "M": ["m3", "f2"], "x1": ["m1"], "q": ["m3"]}


def pr_event(head="f2", base="m3"):
    return {**REPO, "action": "synchronize", "number": 1,
            "pull_request": {"head": {"sha": head, "ref": "feature"},
                             "base": {"sha": base, "ref": "main"}}}


def test_a_pull_request_compares_with_the_base_tip_it_was_merged_onto():
    d = ci_event.baseline_of(gh("pull_request"), pr_event(), FakeGit(GRAPH, "M"))
    assert (d.commit, d.label, d.missing) == ("m3", "main", None)


def test_a_pull_request_whose_merge_parents_are_not_fetched_stops_naming_fetch_depth():
    # fetch-depth 1: the merge commit is there, its parents are not
    d = ci_event.baseline_of(gh("pull_request"), pr_event(), FakeGit(GRAPH, "M", present={"M"}))
    assert d.commit is None and d.missing == "m3"
    line = d.stop_line()
    assert "m3" in line and "fetch-depth: 2" in line and "\n" not in line


def test_a_pull_request_checked_out_at_its_head_compares_with_its_merge_base():
    d = ci_event.baseline_of(gh("pull_request"), pr_event(), FakeGit(GRAPH, "f2"))
    assert d.commit == "m2"
    shallow = ci_event.baseline_of(gh("pull_request"), pr_event(),
                              FakeGit(GRAPH, "f2", present={"f2", "f1"}))
    assert shallow.missing == "m3" and "fetch-depth: 0" in shallow.stop_line()


def test_a_merge_commit_of_another_head_is_not_taken_on_trust():
    d = ci_event.baseline_of(gh("pull_request"), pr_event(head="zz"), FakeGit(GRAPH, "M"))
    assert d.commit is None and d.local and "neither" in d.note


def test_a_merge_group_compares_with_its_base_sha():
    ev = {**REPO, "merge_group": {"base_sha": "m3", "head_sha": "q",
                                  "base_ref": "refs/heads/main"}}
    d = ci_event.baseline_of(gh("merge_group"), ev, FakeGit(GRAPH, "q"))
    assert (d.commit, d.label) == ("m3", "main")
    assert ci_event.baseline_of(gh("merge_group"), ev,
                           FakeGit(GRAPH, "q", present={"q"})).missing == "m3"


def push(before, forced=False, ref="refs/heads/main"):
    return {**REPO, "ref": ref, "before": before, "after": "m3", "forced": forced,
            "created": before == ZERO, "deleted": False}


def test_a_push_to_main_compares_with_before():
    d = ci_event.baseline_of(gh("push"), push("m1"), FakeGit(GRAPH, "m3"))
    assert (d.commit, d.label) == ("m1", "main@before")
    # the clone is too shallow to hold `before`: stop, naming it and fetch-depth
    d = ci_event.baseline_of(gh("push"), push("m1"), FakeGit(GRAPH, "m3", present={"m3", "m2"}))
    assert d.missing == "m1" and "fetch-depth: 0" in d.stop_line()


def test_a_force_push_compares_with_where_the_old_and_new_tips_meet():
    d = ci_event.baseline_of(gh("push"), push("m3", forced=True), FakeGit(GRAPH, "x1"))
    assert d.commit == "m1" and "force push" in d.why
    # `before` not an ancestor counts as forced even when the event says otherwise
    d = ci_event.baseline_of(gh("push"), push("m3"), FakeGit(GRAPH, "x1"))
    assert d.commit == "m1"
    # the old tip is not in the clone: the local rule, said once
    d = ci_event.baseline_of(gh("push"), push("m3", forced=True),
                        FakeGit(GRAPH, "x1", present={"x1", "m1"}))
    assert d.commit is None and d.local and "not in this clone" in d.note


def test_a_push_to_a_feature_branch_compares_with_main_never_its_earlier_push():
    # before = f1 (the branch's earlier push, which may have broken a test): not the baseline
    ev = push("f1", ref="refs/heads/feature")
    d = ci_event.baseline_of(gh("push"), ev, FakeGit(GRAPH, "f2", refs={"refs/remotes/origin/main":
                                                                  "m3"}))
    assert (d.commit, d.label) == ("m2", "main")
    d = ci_event.baseline_of(gh("push"), ev, FakeGit(GRAPH, "f2"))   # origin/main not fetched
    assert d.missing == "origin/main" and "fetch-depth: 0" in d.stop_line()


def test_a_branch_created_by_the_push_and_a_tag_use_the_local_rule():
    assert ci_event.baseline_of(gh("push"), push(ZERO), FakeGit(GRAPH, "m3")).local
    assert ci_event.baseline_of(gh("push"), push("m2", ref="refs/tags/v1"), FakeGit(GRAPH, "m3")).local


@pytest.mark.parametrize("name", ["schedule", "workflow_dispatch"])
def test_a_scheduled_or_manual_run_of_main_is_a_published_tip(name):
    d = ci_event.baseline_of(gh(name, GITHUB_REF="refs/heads/main"), {**REPO, "ref": "refs/heads/main"},
                        FakeGit(GRAPH, "m3"))
    assert d.local and d.published and d.commit is None
    d = ci_event.baseline_of(gh(name, GITHUB_REF="refs/heads/feature"), REPO, FakeGit(GRAPH, "f2"))
    assert d.local and not d.published


def test_outside_ci_there_is_no_event():
    assert ci_event.baseline_of({}, None, FakeGit(GRAPH, "m3")) is None
    assert ci_event.baseline_of({"GITHUB_ACTIONS": "false", "GITHUB_EVENT_NAME": "push"}, None,
                           FakeGit(GRAPH, "m3")) is None


def test_gitlab_merge_requests_and_pushes():
    g = FakeGit(GRAPH, "M")
    mr = {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "merge_request_event",
          "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main", "CI_MERGE_REQUEST_DIFF_BASE_SHA": "m2"}
    assert ci_event.baseline_of(mr, None, g).commit == "m2"
    merged = {**mr, "CI_MERGE_REQUEST_EVENT_TYPE": "merged_result",
              "CI_MERGE_REQUEST_TARGET_BRANCH_SHA": "m3"}
    assert ci_event.baseline_of(merged, None, g).commit == "m3"
    assert "GIT_DEPTH" in ci_event.baseline_of(merged, None, FakeGit(GRAPH, "M", present={"M"})) \
        .stop_line()
    p = {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main",
         "CI_DEFAULT_BRANCH": "main", "CI_COMMIT_BEFORE_SHA": "m2"}
    assert ci_event.baseline_of(p, None, FakeGit(GRAPH, "m3")).commit == "m2"
    s = {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main",
         "CI_DEFAULT_BRANCH": "main"}
    assert ci_event.baseline_of(s, None, FakeGit(GRAPH, "m3")).published


def test_the_event_payload_is_read_from_github_event_path(tmp_path):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(push("m1")))
    d = ci_event.baseline_of(gh("push", GITHUB_EVENT_PATH=str(path)), None, FakeGit(GRAPH, "m3"))
    assert d.commit == "m1"


def test_the_machine_class_is_the_runner_kind_on_ci_and_the_host_elsewhere():
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "RUNNER_OS": "Linux",
           "ImageOS": "ubuntu24", "ImageVersion": "20250105.1"}
    assert ci_event.machine_class(env, cores=4, host="fv-az123") == \
        "ci:Linux/ubuntu24/20250105.1/4"
    assert ci_event.machine_class(env, cores=4, host="fv-az999") == \
        ci_event.machine_class(env, cores=4, host="fv-az123")
    assert ci_event.machine_class({}, cores=4, host="laptop") == "laptop"


# -- real clones, made the way actions/checkout makes them --------------------------------------

CI_TESTS = '''
from sample_actors.discovery import _registry


def test_ok():
    assert True


def test_old_bug():
    assert 1 == 2, "an old bug"


def test_uses_registry():
    assert not hasattr(_registry, "VX"), "broken by VX"
'''
REGISTRY = "sample_actors/discovery/_registry.py"


def g(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def commit(root: Path, path: str, text: str, msg: str, append: bool = False) -> str:
    f = root / path
    f.write_text((f.read_text() if append else "") + text)
    g(root, "add", "-A")
    g(root, "commit", "-qm", msg)
    return g(root, "rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path):
    """The remote: the sample on `main` with tests/test_ci.py (test_old_bug fails at every
    commit), then an unrelated commit on main."""
    from helpers import copy_sample
    root = copy_sample(tmp_path / "origin", git=True)
    g(root, "branch", "-M", "main")
    g(root, "config", "uploadpack.allowAnySHA1InWant", "true")
    commit(root, "tests/test_ci.py", CI_TESTS, "ci tests")
    commit(root, "NOTES.txt", "notes\n", "main moves on")
    return root


def checkout(origin: Path, dest: Path, sha: str, ref: str, depth: int) -> Path:
    """What actions/checkout does: an empty repo, the one commit fetched `depth` deep
    into a remote ref (fetch-depth 0: every branch, whole), that ref checked out."""
    dest.mkdir()
    g(dest, "init", "-q")
    g(dest, "remote", "add", "origin", f"file://{origin}")
    if depth:
        g(dest, "-c", "protocol.version=2", "fetch", "-q", "--no-tags", f"--depth={depth}",
          "origin", f"+{sha}:{ref}")
    else:
        g(dest, "fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*")
    if ref.startswith("refs/remotes/origin/"):
        g(dest, "checkout", "-q", "--force", "-B", ref.rsplit("/", 1)[1], ref)
    else:
        g(dest, "checkout", "-q", "--force", "--detach", sha)
    return dest


def event_env(tmp_path: Path, name: str, payload: dict, ref: str) -> dict:
    path = tmp_path / f"{name}-event.json"
    path.write_text(json.dumps(payload))
    return {"GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": name,
            "GITHUB_EVENT_PATH": str(path), "GITHUB_REF": ref}


def pull_request(origin: Path, tmp_path: Path, depth: int):
    """A PR from `feature` (it adds VX to the registry) merged onto main, as GitHub's
    refs/pull/1/merge; the clone and the event's environment."""
    base = g(origin, "rev-parse", "main")
    g(origin, "checkout", "-q", "-b", "feature", "HEAD~1")
    head = commit(origin, REGISTRY, "\nVX = 1\n", "add VX", append=True)
    g(origin, "checkout", "-q", "--detach", base)
    g(origin, "merge", "-q", "--no-ff", "-m", "Merge feature", head)
    merge = g(origin, "rev-parse", "HEAD")
    g(origin, "update-ref", "refs/pull/1/merge", merge)
    g(origin, "checkout", "-q", "main")
    clone = checkout(origin, tmp_path / f"pr-{depth}", merge, "refs/remotes/pull/1/merge", depth)
    payload = {**REPO, "action": "synchronize", "number": 1,
               "pull_request": {"number": 1, "head": {"sha": head, "ref": "feature"},
                                "base": {"sha": base, "ref": "main"}}}
    return clone, event_env(tmp_path, "pull_request", payload, "refs/pull/1/merge"), base


def run_ci(clone: Path, env: dict, *args: str):
    from helpers import invoke
    from tractor_tasks.pipeline import prepare_venv
    from tractor_tasks.target import load_target
    prepare_venv(load_target(clone), "3.11", out=lambda line: None)
    return invoke("test", "tests/test_ci.py", "--no-x", *args, root=clone, env=env)


def outcome_of(clone: Path) -> dict:
    from helpers import last_run
    return json.loads((last_run(clone) / "outcome.json").read_text())


def classes(clone: Path) -> dict:
    return {f["nodeid"].split("::")[1]: f["verdict"] for f in outcome_of(clone)["failures"]}


@pytest.mark.slow
def test_a_pull_request_that_breaks_a_test_is_red_with_the_break_a_regression(origin, tmp_path):
    clone, env, base = pull_request(origin, tmp_path, depth=2)
    res = run_ci(clone, env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert classes(clone) == {"test_uses_registry": "regression", "test_old_bug": "pre-existing"}
    out = outcome_of(clone)
    assert out["verdict"]["baseline"]["commit"] == base
    assert out["verdict"]["baseline"]["label"] == "main"
    cause = next(f["cause"] for f in out["failures"] if f["verdict"] == "regression")
    assert REGISTRY in cause[0]
    # the confirmation and baseline passes showed their progress as plain lines
    assert "verdict: re-running failures alone: tests/test_ci.py (2 tests)" in res.stdout
    assert "verdict: at the baseline main" in res.stdout
    assert out["verdict"]["at_baseline"] == 2
    # the next CI job: a fresh clone on another runner with this job's history restored
    # (as a cache or artifact is): nothing re-runs at the baseline it already knows
    from helpers import invoke
    again = checkout(origin, tmp_path / "pr-again", g(clone, "rev-parse", "HEAD"),
                     "refs/remotes/pull/1/merge", 2)
    merged = invoke("history", "--import", str(clone / ".tractor-tasks"), root=again)
    # the run, its baseline run and the second opinion's run there
    assert "merged 3 run(s)" in merged.stdout, merged.stdout + merged.stderr
    res = run_ci(again, env)
    assert res.returncode == 1 and classes(again) == classes(clone)
    known = outcome_of(again)["verdict"]
    assert (known["at_baseline"], known["known_at_baseline"]) == (0, 2)
    assert "verdict: at the baseline" not in res.stdout
    reg = next(f for f in outcome_of(again)["failures"] if f["verdict"] == "regression")
    assert "passed at main" in reg["why"] and "in its last 2 runs there" in reg["why"]


@pytest.mark.slow
def test_a_shallow_clone_that_lacks_the_events_baseline_stops_at_once(origin, tmp_path):
    clone, env, base = pull_request(origin, tmp_path, depth=1)
    from helpers import invoke, last_run
    res = invoke("test", "tests/test_ci.py", root=clone, env=env)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and base[:12] in line and "fetch-depth: 2" in line, line
    out = json.loads((last_run(clone) / "outcome.json").read_text())
    assert out["status"] == "error" and out["code"] == 2 and "fetch-depth" in out["note"]
    assert not (clone / "py311").exists()    # stopped before the venv or any test
    # a nox cell (what a CI job runs) stops the same way, its cell's outcome.json says so
    from helpers import nox
    res = nox("-s", "tests-3.11(tpt='tcp')", root=clone, env=env)
    assert res.returncode == 2 and "fetch-depth: 2" in res.stderr, res.stderr
    out = json.loads((last_run(clone, "tests-3.11-trio-tcp") / "outcome.json").read_text())
    assert out["status"] == "error" and out["code"] == 2 and base[:12] in out["note"]


@pytest.mark.slow
def test_a_push_on_main_with_a_test_failing_at_both_commits_is_green(origin, tmp_path):
    before, after = g(origin, "rev-parse", "HEAD~1"), g(origin, "rev-parse", "HEAD")
    clone = checkout(origin, tmp_path / "push", after, "refs/remotes/origin/main", 2)
    env = event_env(tmp_path, "push", {**REPO, "ref": "refs/heads/main", "before": before,
                                       "after": after, "forced": False, "created": False,
                                       "deleted": False}, "refs/heads/main")
    res = run_ci(clone, env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert classes(clone) == {"test_old_bug": "pre-existing"}
    assert outcome_of(clone)["verdict"]["baseline"]["commit"] == before


@pytest.mark.slow
def test_a_feature_push_is_compared_with_main_not_its_earlier_push(origin, tmp_path):
    """The branch's first push broke test_uses_registry, its second touches nothing: red,
    the break a regression against where the branch left main."""
    fork = g(origin, "rev-parse", "main")
    g(origin, "checkout", "-q", "-b", "feature")
    first = commit(origin, REGISTRY, "\nVX = 1\n", "add VX", append=True)
    second = commit(origin, "NOTES.txt", "more\n", "notes", append=True)
    g(origin, "checkout", "-q", "main")
    commit(origin, "NOTES.txt", "main\n", "main moves on again", append=True)
    clone = checkout(origin, tmp_path / "feature", second, "refs/remotes/origin/feature", 0)
    env = event_env(tmp_path, "push", {**REPO, "ref": "refs/heads/feature", "before": first,
                                       "after": second, "forced": False}, "refs/heads/feature")
    res = run_ci(clone, env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert classes(clone) == {"test_uses_registry": "regression", "test_old_bug": "pre-existing"}
    assert outcome_of(clone)["verdict"]["baseline"]["commit"] == fork


@pytest.mark.slow
def test_force_push_and_merge_queue_events_get_their_baselines_in_real_clones(origin, tmp_path):
    from tractor_tasks import gitref
    old = g(origin, "rev-parse", "main")
    meet = g(origin, "rev-parse", "main~1")
    g(origin, "reset", "-q", "--hard", "main~1")
    new = commit(origin, "NOTES.txt", "rewritten\n", "rewrite")
    clone = checkout(origin, tmp_path / "forced", new, "refs/remotes/origin/main", 0)
    g(clone, "fetch", "-q", "origin", f"+{old}:refs/remotes/origin/old")   # the old tip
    env = event_env(tmp_path, "push", {**REPO, "ref": "refs/heads/main", "before": old,
                                       "after": new, "forced": True}, "refs/heads/main")
    choice = gitref.choose(clone, None, env=env)
    assert choice.baseline.commit == meet and "force push" in choice.baseline.why
    # a merge queue's group: a merge of the PR onto main, checked out 2 deep
    g(origin, "checkout", "-q", "--detach", new)
    queued = commit(origin, "QUEUED.txt", "q\n", "queued")
    g(origin, "checkout", "-q", "main")
    clone = checkout(origin, tmp_path / "queue", queued,
                     "refs/remotes/origin/gh-readonly-queue/main/pr-1", 2)
    env = event_env(tmp_path, "merge_group", {**REPO, "merge_group": {
        "head_sha": queued, "base_sha": new, "base_ref": "refs/heads/main",
        "head_ref": "refs/heads/gh-readonly-queue/main/pr-1"}},
        "refs/heads/gh-readonly-queue/main/pr-1")
    choice = gitref.choose(clone, None, env=env)
    assert (choice.baseline.commit, choice.baseline.label) == (new, "main")


@pytest.mark.slow
def test_a_published_tip_is_green_and_a_local_commit_on_main_without_a_remote_is_red(
        origin, tmp_path):
    clone = tmp_path / "published"
    subprocess.run(["git", "clone", "-q", f"file://{origin}", str(clone)], check=True)
    res = run_ci(clone, {})
    assert res.returncode == 0, res.stdout + res.stderr
    assert classes(clone) == {"test_old_bug": "pre-existing"}
    assert "nothing changed to compare with" in outcome_of(clone)["failures"][0]["why"]
    # the origin itself has no remote: a commit on main that breaks a test is compared
    # with HEAD~1 (no ancestor has a recorded run there yet)
    commit(origin, REGISTRY, "\nVX = 1\n", "add VX", append=True)
    res = run_ci(origin, {})
    assert res.returncode == 1, res.stdout + res.stderr
    assert classes(origin) == {"test_uses_registry": "regression", "test_old_bug": "pre-existing"}
    assert outcome_of(origin)["verdict"]["baseline"]["label"] == "HEAD~1"


@pytest.mark.parametrize("content, why", [(None, "No such file or directory"),
                                          ("{not json", "not JSON"), ("[1, 2]",
                                                                      "not a JSON object")])
def test_an_event_file_that_cannot_be_read_is_named_not_head(tmp_path, content, why):
    """A missing or garbled $GITHUB_EVENT_PATH: the local rule, and the note names the
    file and why, never "HEAD is neither the pull request's merge commit nor its head"."""
    path = tmp_path / "event.json"
    if content is not None:
        path.write_text(content)
    d = ci_event.baseline_of(gh("pull_request", GITHUB_EVENT_PATH=str(path)), None,
                             FakeGit(GRAPH, "M"))
    assert d.local and d.commit is None
    assert d.note == (f"verdict: the event file $GITHUB_EVENT_PATH ({path}) could not be "
                      f"read ({why}); the local rule chooses the baseline")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(pr_event()))
    ok = ci_event.baseline_of(gh("pull_request", GITHUB_EVENT_PATH=str(good)), None,
                              FakeGit(GRAPH, "M"))
    assert ok.commit == "m3" and not ok.note
