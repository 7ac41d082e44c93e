"""The baseline a CI job's own event names, with no flags: pure decisions over the
job's environment, its event payload and a git oracle (`Git`: what the clone holds).

GitHub Actions (`GITHUB_ACTIONS`, `GITHUB_EVENT_NAME`, `GITHUB_EVENT_PATH`):
- pull_request: HEAD is the merge commit actions/checkout checks out; its first
  parent (the base branch's tip the PR was merged onto) once its second parent is
  checked to be the event's `pull_request.head.sha`; a job that checked out the
  PR's head itself compares with its merge-base with `pull_request.base.sha`;
- merge_group: the event's `merge_group.base_sha`;
- push to the default branch: `before` when it is an ancestor of HEAD; a force push
  (`forced`, or `before` not an ancestor) the merge-base of HEAD and `before` when
  the clone has it, else the local rule (gitref.choose);
- push to another branch: its merge-base with the default branch;
- schedule, workflow_dispatch: the local rule; on the default branch the tree is a
  published tip (nothing to blame).
GitLab CI (`GITLAB_CI`): a merge request pipeline compares with the target branch's
tip (merged results) or the diff base; a push like GitHub's push.

A baseline the event names that the clone lacks is `Decision.missing`: the job stops
at once with one line naming the commit and what to set.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ZERO = "0" * 40

DEPTH_PR = ("the clone lacks it: set `fetch-depth: 2` (or 0) on actions/checkout so the "
            "merge commit's parents are fetched")
DEPTH_ALL = ("the clone lacks it: set `fetch-depth: 0` on actions/checkout (the whole "
             "history and every branch)")
DEPTH_GITLAB = ("the clone lacks it: set `GIT_DEPTH: 0` (or deep enough) in the job's "
                "variables")


class Git(Protocol):
    """What the decisions ask of the clone (gitref.CloneGit asks real git)."""
    head: str | None

    def has(self, commit: str) -> bool: ...                 # the commit object is here
    def parents(self, commit: str) -> list[str] | None: ...  # raw parent ids, even shallow
    def is_ancestor(self, a: str, b: str) -> bool: ...
    def merge_base(self, a: str, b: str) -> str | None: ...
    def resolve(self, ref: str) -> str | None: ...


@dataclass(frozen=True)
class Decision:
    """What the CI event says about the baseline.

    commit: the baseline; missing: the commit the event names that the clone lacks
    (with `fix`, what to set); local: no event baseline, the local rule decides
    (`published`: the job runs a published tip of the default branch)."""
    ci: str
    event: str
    commit: str | None = None
    label: str = ""
    why: str = ""
    missing: str | None = None
    fix: str = ""
    local: bool = False
    published: bool = False
    note: str = ""

    def stop_line(self) -> str:
        """The one line a job that lacks its baseline stops with."""
        return (f"error: the {self.ci} {self.event} event's baseline {self.missing[:12]} "
                f"({self.why}) is not in this clone; {self.fix}")


def detect(env) -> str | None:
    """"github" or "gitlab" when the environment is that CI's job, else None."""
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_EVENT_NAME"):
        return "github"
    if env.get("GITLAB_CI") == "true" and env.get("CI_PIPELINE_SOURCE"):
        return "gitlab"
    return None


def read_event(env) -> dict:
    """The GitHub event payload at GITHUB_EVENT_PATH ({} when absent or unreadable)."""
    return _event_file(env)[0]


def _event_file(env) -> tuple[dict, str]:
    """(the payload, why it could not be read: "" when it was, or none is set)."""
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return {}, ""
    from .fsutil import read_bounded
    try:   # a FIFO or /dev/zero there never blocks nor fills memory (a regular file, capped)
        data = json.loads(read_bounded(path, follow=True))
    except OSError as err:
        return {}, err.strerror or str(err)
    except (ValueError, RecursionError):
        return {}, "not JSON"
    return (data, "") if isinstance(data, dict) else ({}, "not a JSON object")


def baseline_of(env, event: dict | None, git: Git) -> Decision | None:
    """The CI event's baseline (see the module's docstring); None outside CI."""
    ci = detect(env)
    if ci == "github":
        if event is None:
            event, problem = _event_file(env)
            if problem:   # the file is at fault, never HEAD: say which and why
                from .fsutil import shown
                return Decision(ci="GitHub", event=env.get("GITHUB_EVENT_NAME", ""),
                                local=True, note="verdict: the event file $GITHUB_EVENT_PATH "
                                f"({shown(env['GITHUB_EVENT_PATH'])}) could not be read "
                                f"({problem}); the local rule chooses the baseline")
        return _github(env, event, git)
    if ci == "gitlab":
        return _gitlab(env, git)
    return None


def _default_branch(env, event: dict) -> str:
    repo = event.get("repository") if isinstance(event.get("repository"), dict) else {}
    return str(repo.get("default_branch") or env.get("CI_DEFAULT_BRANCH") or "main")


def _get(d, *keys):
    """A nested field of the payload: a string, else None (a payload is not trusted)."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d if isinstance(d, str) and d else None


def _github(env, event: dict, git: Git) -> Decision:
    name = env.get("GITHUB_EVENT_NAME", "")
    default = _default_branch(env, event)
    d = dict(ci="GitHub", event=name)
    if name == "pull_request":
        head_sha = _get(event, "pull_request", "head", "sha")
        base_sha = _get(event, "pull_request", "base", "sha")
        base_ref = _get(event, "pull_request", "base", "ref") or default
        parents = git.parents(git.head) if git.head else None
        if parents and len(parents) == 2 and head_sha and parents[1] == head_sha:
            why = f"the tip of {base_ref} the pull request was merged onto"
            if not git.has(parents[0]):
                return Decision(**d, missing=parents[0], why=why, fix=DEPTH_PR)
            return Decision(**d, commit=parents[0], label=base_ref, why=why)
        if head_sha and git.head == head_sha and base_sha:
            # the job checked out the PR's own head: where it left the base branch
            why = f"where the pull request left {base_ref}"
            if not git.has(base_sha):
                return Decision(**d, missing=base_sha, why=f"{base_ref}'s tip",
                                fix=DEPTH_ALL)
            mb = git.merge_base(git.head, base_sha)
            if mb is None:
                return Decision(**d, missing=base_sha, why=why, fix=DEPTH_ALL)
            return Decision(**d, commit=mb, label=base_ref, why=why)
        return Decision(**d, local=True,
                        note="verdict: HEAD is neither the pull request's merge commit nor "
                             "its head; the local rule chooses the baseline")
    if name == "merge_group":
        base_sha = _get(event, "merge_group", "base_sha")
        base_ref = str(_get(event, "merge_group", "base_ref") or default)
        base_ref = base_ref.removeprefix("refs/heads/")
        why = f"the merge queue's base on {base_ref}"
        if not base_sha:
            return Decision(**d, local=True, note="verdict: the merge_group event has no "
                            "base_sha; the local rule chooses the baseline")
        if not git.has(base_sha):
            return Decision(**d, missing=base_sha, why=why, fix=DEPTH_PR)
        return Decision(**d, commit=base_sha, label=base_ref, why=why)
    if name == "push":
        ref = str(event.get("ref") or env.get("GITHUB_REF") or "")
        if not ref.startswith("refs/heads/") or event.get("deleted"):
            return Decision(**d, local=True)   # a tag, a deleted branch
        branch = ref.removeprefix("refs/heads/")
        return _push(d, git, branch, default, str(event.get("before") or ""),
                     bool(event.get("forced")), DEPTH_ALL)
    if name in ("schedule", "workflow_dispatch"):
        ref = str(env.get("GITHUB_REF") or event.get("ref") or "")
        return Decision(**d, local=True, published=ref == f"refs/heads/{default}")
    return Decision(**d, local=True)


def _push(d: dict, git: Git, branch: str, default: str, before: str, forced: bool,
          fix: str) -> Decision:
    if branch == default:
        if not before or before == ZERO:
            return Decision(**d, local=True, note=f"verdict: the push created {branch}; "
                            "the local rule chooses the baseline")
        have = git.has(before)
        if have and not forced and git.head and git.is_ancestor(before, git.head):
            return Decision(**d, commit=before, label=f"{branch}@before",
                            why=f"{branch} before this push")
        if not have and not forced:
            return Decision(**d, missing=before, why=f"{branch} before this push", fix=fix)
        # a force push: where the old tip and the new one meet
        mb = git.merge_base(git.head, before) if have and git.head else None
        if mb is not None:
            return Decision(**d, commit=mb, label=f"{branch}@before",
                            why=f"where this force push left {branch}'s old tip")
        return Decision(**d, local=True, note=f"verdict: a force push whose old tip "
                        f"{before[:10]} {'shares no history with HEAD' if have else 'is not in this clone'}"
                        "; the local rule chooses the baseline")
    # a feature branch: its earlier pushes are part of the change, never its baseline
    why = f"where {branch} left {default}"
    tip = git.resolve(f"refs/remotes/origin/{default}")
    if tip is None:
        return Decision(**d, missing=f"origin/{default}", why=f"{default}'s tip", fix=fix)
    mb = git.merge_base(git.head, tip) if git.head else None
    if mb is None:
        return Decision(**d, missing=tip, why=why, fix=fix)
    return Decision(**d, commit=mb, label=default, why=why)


def _gitlab(env, git: Git) -> Decision:
    source = env.get("CI_PIPELINE_SOURCE", "")
    default = env.get("CI_DEFAULT_BRANCH") or "main"
    d = dict(ci="GitLab", event=source)
    if source in ("merge_request_event", "external_pull_request_event"):
        target = env.get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME") or default
        if env.get("CI_MERGE_REQUEST_EVENT_TYPE") == "merged_result" and \
                env.get("CI_MERGE_REQUEST_TARGET_BRANCH_SHA"):
            sha = env["CI_MERGE_REQUEST_TARGET_BRANCH_SHA"]
            why = f"the tip of {target} the merge request was merged onto"
        else:
            sha = env.get("CI_MERGE_REQUEST_DIFF_BASE_SHA") or ""
            why = f"where the merge request left {target}"
        if not sha:
            return Decision(**d, local=True)
        if not git.has(sha):
            return Decision(**d, missing=sha, why=why, fix=DEPTH_GITLAB)
        return Decision(**d, commit=sha, label=target, why=why)
    if source == "push" and env.get("CI_COMMIT_BRANCH"):
        return _push(d, git, env["CI_COMMIT_BRANCH"], default,
                     env.get("CI_COMMIT_BEFORE_SHA") or "", False, DEPTH_GITLAB)
    if source in ("schedule", "web", "api", "trigger", "pipeline"):
        return Decision(**d, local=True, published=env.get("CI_COMMIT_BRANCH") == default)
    return Decision(**d, local=True)


def runner_image(env=None) -> str:
    """The CI runner's image ("ubuntu24/20250105.1"), "" off a hosted runner."""
    env = os.environ if env is None else env
    if env.get("ImageOS") or env.get("ImageVersion"):
        return f"{env.get('ImageOS', '')}/{env.get('ImageVersion', '')}"
    return ""


def machine_class(env=None, cores: int | None = None, host: str | None = None) -> str:
    """What the no-baseline history rule keys on: on a CI runner its OS, image and core
    count (every job gets a new hostname there); elsewhere the hostname."""
    env = os.environ if env is None else env
    cores = os.cpu_count() if cores is None else cores
    if detect(env) or env.get("CI") == "true":
        osname = env.get("RUNNER_OS") or env.get("ImageOS") or os.uname().sysname
        return f"ci:{osname}/{runner_image(env) or '-'}/{cores}"
    return host if host is not None else os.uname().nodename
