"""What the verdict asks git, read-only: where the branch left the default branch, what
changed since, which commits are ancestors of HEAD, and a commit's tree exported into
a private dir (`git archive`: never a checkout, worktree, stash or reset of the
user's repository, so its HEAD, index, stash and work tree stay as they are).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import TaskError, usage

SHIM_MARK = "tractor-tasks"  # the shims `tractor-tasks init` writes carry it


def git(root: Path, *args: str, check: bool = True, timeout: float = 30) -> str | None:
    """A read-only git query's stdout (stripped), or None when it fails and not `check`."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             timeout=timeout, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.TimeoutExpired) as err:
        if check:
            raise TaskError(f"error: git {' '.join(args)} failed in {root}: {err}") from None
        return None
    if out.returncode != 0:
        if check:
            msg = (out.stderr.strip().splitlines() or ["git failed"])[-1]
            raise TaskError(f"error: git {' '.join(args)} failed in {root}: {msg}")
        return None
    return out.stdout.strip()


def is_repo(root: Path) -> bool:
    return git(root, "rev-parse", "--git-dir", check=False) is not None


def commit_of(root: Path, ref: str) -> str | None:
    return git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)


def default_branch(root: Path) -> str | None:
    """The upstream default branch (origin/HEAD's target), else origin/main, origin/master,
    main, master: the first that exists."""
    head = git(root, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD", check=False)
    for ref in ([head] if head else []) + ["origin/main", "origin/master", "main", "master"]:
        if commit_of(root, ref):
            return ref
    return None


def edits(root: Path) -> list[str]:
    """The work tree's changes against HEAD (staged, unstaged, untracked), minus the shims
    `tractor-tasks init` writes (noxfile.py, tasks.py carrying our mark)."""
    out = git(root, "status", "--porcelain", "--untracked-files=all", check=False) or ""
    files = []
    for line in out.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        if line.startswith("??") and path in ("noxfile.py", "tasks.py") and _is_shim(root / path):
            continue
        files.append(path)
    return files


def _is_shim(path: Path) -> bool:
    try:
        return SHIM_MARK in path.read_text(errors="replace")[:2000]
    except OSError:
        return False


def tree_state(root: Path) -> str:
    """"" for a clean work tree, else a short hash of its edits (the history tells runs
    of one commit with different edits apart)."""
    files = edits(root)
    if not files:
        return ""
    h = hashlib.sha256()
    h.update((git(root, "diff", "HEAD", "--binary", check=False) or "").encode())
    for rel in sorted(files):
        p = root / rel
        if p.is_file() and not p.is_symlink():
            try:
                h.update(rel.encode() + b"\0" + p.read_bytes()[:1 << 20])
            except OSError:
                pass
    return "edits-" + h.hexdigest()[:12]


def changed_since(root: Path, commit: str) -> list[str]:
    """Files that differ between `commit` and the work tree (commits since it, staged,
    unstaged), plus untracked files; paths relative to the repository root."""
    files = (git(root, "diff", "--name-only", commit, check=False) or "").splitlines()
    files += (git(root, "ls-files", "--others", "--exclude-standard", check=False)
              or "").splitlines()
    return sorted({f for f in files
                   if f and not (f in ("noxfile.py", "tasks.py") and _is_shim(root / f))})


class Ancestry:
    """`is an ancestor of HEAD`, asked of git once per commit."""

    def __init__(self, root: Path):
        self.root = root
        self.head = commit_of(root, "HEAD")
        self._known: dict[str, bool] = {}

    def __call__(self, commit: str | None) -> bool:
        if not commit or not self.head:
            return False
        if commit not in self._known:
            out = subprocess.run(["git", "merge-base", "--is-ancestor", commit, self.head],
                                 cwd=self.root, capture_output=True)
            self._known[commit] = out.returncode == 0
        return self._known[commit]


@dataclass(frozen=True)
class Baseline:
    """The commit the run's failures are compared against."""
    commit: str
    label: str            # what the summary calls it: "main", "origin/main", "HEAD"
    why: str              # how it was chosen

    @property
    def short(self) -> str:
        return self.commit[:10]

    @property
    def name(self) -> str:
        return f"{self.label} ({self.short})"


@dataclass
class Choice:
    """The baseline (None: the history decides) and the one line to say about it."""
    baseline: Baseline | None
    note: str = ""


def choose(root: Path, requested: str | None) -> Choice:
    """--baseline REF, else the default: where the branch (with its edits) left the
    upstream default branch; on the default branch with no edits, none (the history
    decides). A REF that does not exist, or any REF outside git, is a usage error."""
    if requested is not None:
        if not requested.strip():
            raise usage("error: --baseline is empty; give a commit or branch, e.g. main")
        if not is_repo(root):
            raise usage(f"error: --baseline needs a git checkout; {root} is not one: drop "
                        "--baseline")
        commit = commit_of(root, requested)
        if commit is None:
            shallow = git(root, "rev-parse", "--is-shallow-repository", check=False) == "true"
            raise usage(f"error: --baseline {requested}: no such commit in this clone"
                        + ("; it is shallow: `git fetch --unshallow` brings the history"
                           if shallow else "; give a ref `git rev-parse` knows"))
        return Choice(Baseline(commit, requested, "asked for"))
    if not is_repo(root):
        return Choice(None, "verdict: no baseline (not a git checkout): the history decides")
    head = commit_of(root, "HEAD")
    if head is None:
        return Choice(None, "verdict: no baseline (no commit yet): the history decides")
    upstream = default_branch(root)
    dirty = bool(edits(root))
    if upstream is None:
        if dirty:
            return Choice(Baseline(head, "HEAD", "your edits against HEAD"))
        return Choice(None, "verdict: no baseline (no default branch found): the history "
                      "decides")
    base = git(root, "merge-base", "HEAD", upstream, check=False)
    if base is None:
        shallow = git(root, "rev-parse", "--is-shallow-repository", check=False) == "true"
        why = ("a shallow clone without the base commit: `git fetch --unshallow`" if shallow
               else f"HEAD shares no history with {upstream}")
        if dirty:
            return Choice(Baseline(head, "HEAD", "your edits against HEAD"),
                          f"verdict: compared with HEAD, not {upstream} ({why})")
        return Choice(None, f"verdict: no baseline ({why}): the history decides")
    if base == head:
        if not dirty:
            return Choice(None)  # on the default branch, nothing changed: history decides
        return Choice(Baseline(head, "HEAD", "your edits against HEAD"))
    return Choice(Baseline(base, upstream.removeprefix("origin/")
                           if commit_of(root, upstream.removeprefix("origin/")) == base
                           else upstream, f"where this branch left {upstream}"))


def export(root: Path, commit: str, dest: Path) -> Path:
    """The commit's tree, read-only, at `dest` (made whole or not at all: a temp dir
    renamed into place; an existing complete export is reused)."""
    if (dest / ".tt-export-complete").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        proc = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(tmp, filter="data")
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise TaskError(f"error: git archive {commit[:10]} failed in {root}: "
                            f"{err.splitlines()[-1] if err else 'no output'}")
        (tmp / ".tt-export-complete").write_text(commit + "\n")
        _read_only(tmp)
        try:
            tmp.rename(dest)
        except OSError:  # another run exported it first
            remove_export(tmp)
        return dest
    except BaseException:
        remove_export(tmp)
        raise


def _read_only(top: Path) -> None:
    for d, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode & ~0o222)
    for d, dirs, _ in os.walk(top, topdown=False):
        os.chmod(d, 0o555)


def remove_export(path: Path) -> None:
    """An export (read-only dirs) removed whole."""
    if not path.exists():
        return
    for d, dirs, _ in os.walk(path):
        os.chmod(d, 0o755)
    shutil.rmtree(path, ignore_errors=True)
