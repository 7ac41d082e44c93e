"""The baseline a CI event names (ci_event.decide): every event kind over a fake git
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
    d = ci_event.decide(gh("pull_request"), pr_event(), FakeGit(GRAPH, "M"))
    assert (d.commit, d.label, d.missing) == ("m3", "main", None)


def test_a_pull_request_whose_merge_parents_are_not_fetched_stops_naming_fetch_depth():
    # fetch-depth 1: the merge commit is there, its parents are not
    d = ci_event.decide(gh("pull_request"), pr_event(), FakeGit(GRAPH, "M", present={"M"}))
    assert d.commit is None and d.missing == "m3"
    line = d.stop_line()
    assert "m3" in line and "fetch-depth: 2" in line and "\n" not in line


def test_a_pull_request_checked_out_at_its_head_compares_with_its_merge_base():
    d = ci_event.decide(gh("pull_request"), pr_event(), FakeGit(GRAPH, "f2"))
    assert d.commit == "m2"
    shallow = ci_event.decide(gh("pull_request"), pr_event(),
                              FakeGit(GRAPH, "f2", present={"f2", "f1"}))
    assert shallow.missing == "m3" and "fetch-depth: 0" in shallow.stop_line()


def test_a_merge_commit_of_another_head_is_not_taken_on_trust():
    d = ci_event.decide(gh("pull_request"), pr_event(head="zz"), FakeGit(GRAPH, "M"))
    assert d.commit is None and d.local and "neither" in d.note


def test_a_merge_group_compares_with_its_base_sha():
    ev = {**REPO, "merge_group": {"base_sha": "m3", "head_sha": "q",
                                  "base_ref": "refs/heads/main"}}
    d = ci_event.decide(gh("merge_group"), ev, FakeGit(GRAPH, "q"))
    assert (d.commit, d.label) == ("m3", "main")
    assert ci_event.decide(gh("merge_group"), ev,
                           FakeGit(GRAPH, "q", present={"q"})).missing == "m3"


def push(before, forced=False, ref="refs/heads/main"):
    return {**REPO, "ref": ref, "before": before, "after": "m3", "forced": forced,
            "created": before == ZERO, "deleted": False}


def test_a_push_to_main_compares_with_before():
    d = ci_event.decide(gh("push"), push("m1"), FakeGit(GRAPH, "m3"))
    assert (d.commit, d.label) == ("m1", "main@before")
    # the clone is too shallow to hold `before`: stop, naming it and fetch-depth
    d = ci_event.decide(gh("push"), push("m1"), FakeGit(GRAPH, "m3", present={"m3", "m2"}))
    assert d.missing == "m1" and "fetch-depth: 0" in d.stop_line()


def test_a_force_push_compares_with_where_the_old_and_new_tips_meet():
    d = ci_event.decide(gh("push"), push("m3", forced=True), FakeGit(GRAPH, "x1"))
    assert d.commit == "m1" and "force push" in d.why
    # `before` not an ancestor counts as forced even when the event says otherwise
    d = ci_event.decide(gh("push"), push("m3"), FakeGit(GRAPH, "x1"))
    assert d.commit == "m1"
    # the old tip is not in the clone: the local rule, said once
    d = ci_event.decide(gh("push"), push("m3", forced=True),
                        FakeGit(GRAPH, "x1", present={"x1", "m1"}))
    assert d.commit is None and d.local and "not in this clone" in d.note


def test_a_push_to_a_feature_branch_compares_with_main_never_its_earlier_push():
    # before = f1 (the branch's earlier push, which may have broken a test): not the baseline
    ev = push("f1", ref="refs/heads/feature")
    d = ci_event.decide(gh("push"), ev, FakeGit(GRAPH, "f2", refs={"refs/remotes/origin/main":
                                                                  "m3"}))
    assert (d.commit, d.label) == ("m2", "main")
    d = ci_event.decide(gh("push"), ev, FakeGit(GRAPH, "f2"))   # origin/main not fetched
    assert d.missing == "origin/main" and "fetch-depth: 0" in d.stop_line()


def test_a_branch_created_by_the_push_and_a_tag_use_the_local_rule():
    assert ci_event.decide(gh("push"), push(ZERO), FakeGit(GRAPH, "m3")).local
    assert ci_event.decide(gh("push"), push("m2", ref="refs/tags/v1"), FakeGit(GRAPH, "m3")).local


@pytest.mark.parametrize("name", ["schedule", "workflow_dispatch"])
def test_a_scheduled_or_manual_run_of_main_is_a_published_tip(name):
    d = ci_event.decide(gh(name, GITHUB_REF="refs/heads/main"), {**REPO, "ref": "refs/heads/main"},
                        FakeGit(GRAPH, "m3"))
    assert d.local and d.published and d.commit is None
    d = ci_event.decide(gh(name, GITHUB_REF="refs/heads/feature"), REPO, FakeGit(GRAPH, "f2"))
    assert d.local and not d.published


def test_outside_ci_there_is_no_event():
    assert ci_event.decide({}, None, FakeGit(GRAPH, "m3")) is None
    assert ci_event.decide({"GITHUB_ACTIONS": "false", "GITHUB_EVENT_NAME": "push"}, None,
                           FakeGit(GRAPH, "m3")) is None


def test_gitlab_merge_requests_and_pushes():
    g = FakeGit(GRAPH, "M")
    mr = {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "merge_request_event",
          "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main", "CI_MERGE_REQUEST_DIFF_BASE_SHA": "m2"}
    assert ci_event.decide(mr, None, g).commit == "m2"
    merged = {**mr, "CI_MERGE_REQUEST_EVENT_TYPE": "merged_result",
              "CI_MERGE_REQUEST_TARGET_BRANCH_SHA": "m3"}
    assert ci_event.decide(merged, None, g).commit == "m3"
    assert "GIT_DEPTH" in ci_event.decide(merged, None, FakeGit(GRAPH, "M", present={"M"})) \
        .stop_line()
    p = {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main",
         "CI_DEFAULT_BRANCH": "main", "CI_COMMIT_BEFORE_SHA": "m2"}
    assert ci_event.decide(p, None, FakeGit(GRAPH, "m3")).commit == "m2"
    s = {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main",
         "CI_DEFAULT_BRANCH": "main"}
    assert ci_event.decide(s, None, FakeGit(GRAPH, "m3")).published


def test_the_event_payload_is_read_from_github_event_path(tmp_path):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(push("m1")))
    d = ci_event.decide(gh("push", GITHUB_EVENT_PATH=str(path)), None, FakeGit(GRAPH, "m3"))
    assert d.commit == "m1"


def test_the_machine_class_is_the_runner_kind_on_ci_and_the_host_elsewhere():
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "RUNNER_OS": "Linux",
           "ImageOS": "ubuntu24", "ImageVersion": "20250105.1"}
    assert ci_event.machine_class(env, cores=4, host="fv-az123") == \
        "ci:Linux/ubuntu24/20250105.1/4"
    assert ci_event.machine_class(env, cores=4, host="fv-az999") == \
        ci_event.machine_class(env, cores=4, host="fv-az123")
    assert ci_event.machine_class({}, cores=4, host="laptop") == "laptop"
