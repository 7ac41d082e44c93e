"""What the verdict asks git, read-only: where the branch left the default branch, what
changed since, which commits are ancestors of HEAD, and a commit's tree exported into
a private dir (`git archive`: never a checkout, worktree, stash or reset of the
user's repository, so its HEAD, index, stash and work tree stay as they are).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import TaskError, usage
from .interpreters import VENV_NAME
from .fsutil import atomic_write
from .rundirs import EXPORT_COMPLETE, STATE_DIR

SHIM_MARK = "tractor-tasks"  # the shims `tractor-tasks init` writes carry it
STATE = STATE_DIR     # the target's state dir (rundirs.State), never an edit


def git(root: Path, *args: str, check: bool = True, timeout: float = 30,
        strip: bool = True) -> str | None:
    """A read-only git query's stdout (stripped unless not `strip`), or None when it
    fails and not `check`."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             timeout=timeout, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.TimeoutExpired) as err:
        if check:
            raise TaskError(f"git {' '.join(args)} failed in {root}: {err}") from None
        return None
    if out.returncode != 0:
        if check:
            msg = (out.stderr.strip().splitlines() or ["git failed"])[-1]
            raise TaskError(f"git {' '.join(args)} failed in {root}: {msg}")
        return None
    return out.stdout.strip() if strip else out.stdout


def is_repo(root: Path) -> bool:
    return git(root, "rev-parse", "--git-dir", check=False) is not None


def blob(root: Path, commit: str, path: str, most: int = 64 * 2**20) -> bytes | None:
    """A file's bytes as `commit` has it (None: not there, or git failed), at most
    `most` bytes."""
    try:
        out = subprocess.run(["git", "cat-file", "blob", f"{commit}:{path}"], cwd=root,
                             capture_output=True, timeout=30,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout[:most] if out.returncode == 0 else None


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


def prefix(root: Path) -> str:
    """Where the target sits inside its repository ("" at the top, "sub/dir/" below)."""
    return git(root, "rev-parse", "--show-prefix", check=False) or ""


def edits(root: Path) -> list[str]:
    """The target's changes against HEAD (staged, unstaged, untracked; only under the
    target when it is a subdirectory of its repository), relative to the target, minus
    the shims `tractor-tasks init` writes (noxfile.py, tasks.py carrying our mark)."""
    out = git(root, "status", "--porcelain", "-z", "--untracked-files=all", "--", ".",
              check=False, strip=False) or ""
    cut = prefix(root)
    files = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        if entry[0] in "RC":
            i += 1  # a rename's source path follows it
        path = entry[3:].removeprefix(cut)
        if _ours(path) or entry.startswith("??") and \
                path in ("noxfile.py", "tasks.py") and _is_shim(root / path):
            continue  # our state dir, the py<MINOR> venvs and our shims are no edits
        files.append(path)
    return files


_VENV = re.compile(VENV_NAME + "/")


def _ours(path: str) -> bool:
    """The state dir, a `py<MINOR>/` venv at the top, Python's bytecode caches (all
    untracked where the target's .gitignore does not list them): never an edit of the
    target's code."""
    return path.startswith(STATE + "/") or bool(_VENV.match(path)) or \
        "__pycache__/" in f"/{path}" or path.endswith((".pyc", ".pyo"))


def _is_shim(path: Path) -> bool:
    try:
        return SHIM_MARK in path.read_text(errors="replace")[:2000]
    except OSError:
        return False


def env_state(keys, env=None) -> str:
    """"" when none of the outcome-changing environment variables (the config's
    `verdict_env`) is set, else a short hash of their values."""
    env = os.environ if env is None else env
    found = [f"{k}={env[k]}" for k in sorted(keys) if env.get(k)]
    if not found:
        return ""
    return "env-" + hashlib.sha256("\0".join(found).encode()).hexdigest()[:12]


def state(root: Path | None, env_keys=(), env=None) -> str:
    """A run's state besides its commit, as the history keeps it: "" for a clean work
    tree and none of `env_keys` set, else "edits-<hash>", "env-<hash>" or both joined
    with "+". Runs of one commit are the same code only when their states match."""
    parts = [tree_state(root) if root is not None and is_repo(root) else "",
             env_state(env_keys, env)]
    return "+".join(p for p in parts if p)


def split_state(value: str) -> tuple[str, str]:
    """(its edits part, its environment part) of a recorded state."""
    code = env = ""
    for part in (value or "").split("+"):
        if part.startswith("env-"):
            env = part
        elif part:
            code = part
    return code, env


def tree_state(root: Path) -> str:
    """"" for a clean work tree, else a short hash of its edits (the history tells runs
    of one commit with different edits apart)."""
    files = edits(root)
    if not files:
        return ""
    h = hashlib.sha256()
    h.update((git(root, "diff", "HEAD", "--binary", "--relative", check=False) or "").encode())
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
    files = (git(root, "diff", "--name-only", "--relative", commit, check=False)
             or "").splitlines()
    files += (git(root, "ls-files", "--others", "--exclude-standard", check=False)
              or "").splitlines()
    return sorted({f for f in files if f and not _ours(f)
                   and not (f in ("noxfile.py", "tasks.py") and _is_shim(root / f))})


def unchanged_since(root: Path, commit: str | None, path: str) -> bool:
    """`path` (relative to `root`) is the same in the work tree as at `commit`."""
    if not commit:
        return False
    return git(root, "diff", "--quiet", commit, "--", path, check=False) is not None


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
    """The baseline (None: the history decides) and the one line to say about it.

    `published`: the tree is exactly a published tip of the default branch (nothing
    changed, nothing to blame); `ancestor`: no baseline yet, the rule is the newest
    ancestor of HEAD with a clean recorded run of this cell, else HEAD~1 (resolved
    with the history: `resolve_ancestor`)."""
    baseline: Baseline | None
    note: str = ""
    published: bool = False
    ancestor: bool = False
    ci: object = None      # the ci_event.Decision that chose it, in CI


class BaselineMissing(TaskError):
    """A CI event's baseline commit is not in the clone: the job stops at once."""

    def __init__(self, message: str):
        super().__init__(message, 2)


def remote_default(root: Path) -> str | None:
    """The remote's default branch as a remote-tracking ref (origin/HEAD's target, else
    origin/main, origin/master), None without one."""
    head = git(root, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD", check=False)
    for ref in ([head] if head else []) + ["origin/main", "origin/master"]:
        if commit_of(root, ref):
            return ref
    return None


def choose(root: Path, requested: str | None, env=None, event: dict | None = None) -> Choice:
    """--baseline REF; else in CI the event's own baseline (ci_event); else the local
    rule: a published tip of the default branch (HEAD equal to origin/<default>, no
    edits) has none (nothing changed: nothing to blame); a branch compares with where
    it left the default branch, edits on the default branch with HEAD; anything else
    (local commits with no remote, a detached or bisected HEAD, a shallow clone) with
    the newest ancestor that has a clean recorded run, else HEAD~1 (`ancestor`). A REF
    that does not exist, or any REF outside git, is a usage error; a CI event's
    baseline the clone lacks stops the job (BaselineMissing, exit 2)."""
    if requested is not None:
        if not requested.strip():
            raise usage("--baseline is empty; give a commit or branch, e.g. main")
        if not is_repo(root):
            raise usage(f"--baseline needs a git checkout; {root} is not one: drop "
                        "--baseline")
        commit = commit_of(root, requested)
        if commit is None:
            shallow = git(root, "rev-parse", "--is-shallow-repository", check=False) == "true"
            raise usage(f"--baseline {requested}: no such commit in this clone"
                        + ("; it is shallow: `git fetch --unshallow` brings the history"
                           if shallow else "; give a ref `git rev-parse` knows"))
        return Choice(Baseline(commit, requested, "asked for"))
    if not is_repo(root):
        return Choice(None, "verdict: no baseline (not a git checkout): the history decides")
    head = commit_of(root, "HEAD")
    if head is None:
        return Choice(None, "verdict: no baseline (no commit yet): the history decides")
    from . import ci_event
    env = os.environ if env is None else env
    if ci_event.detect(env):
        d = ci_event.baseline_of(env, event, CloneGit(root))
        if d.missing:
            raise BaselineMissing(d.stop_line())
        if d.commit:
            return Choice(Baseline(d.commit, d.label, d.why), ci=d)
        if d.published and not edits(root):
            return Choice(None, f"verdict: a {d.event} run of the default branch's tip: "
                          "nothing changed to compare with", published=True, ci=d)
        local = _local(root, head, published=False)
        local.ci = d
        if d.note:
            local.note = "; ".join(n for n in (d.note, local.note) if n)
        return local
    return _local(root, head)


def _local(root: Path, head: str, published: bool = True) -> Choice:
    dirty = bool(edits(root))
    remote = remote_default(root)
    if remote is not None:
        if published and commit_of(root, remote) == head and not dirty:
            return Choice(None, f"verdict: HEAD is {remote}'s tip with no edits: nothing "
                          "changed to compare with", published=True)
        base = git(root, "merge-base", "HEAD", remote, check=False)
        if base is not None and base != head:
            short = remote.removeprefix("origin/")
            return Choice(Baseline(base, short if commit_of(root, short) == base else remote,
                                   f"where this branch left {remote}"))
        if dirty:
            note = "" if base is not None else                 f"verdict: compared with HEAD, not {remote} ({_no_base_why(root, remote)})"
            return Choice(Baseline(head, "HEAD", "your edits against HEAD"), note)
        if base is None:
            return Choice(None, f"verdict: no base with {remote} "
                          f"({_no_base_why(root, remote)})", ancestor=True)
        return Choice(None, ancestor=True)    # an older commit of the default branch
    local = next((b for b in ("main", "master") if commit_of(root, b)), None)
    if dirty:
        return Choice(Baseline(head, "HEAD", "your edits against HEAD"))
    if local is not None:
        base = git(root, "merge-base", "HEAD", local, check=False)
        if base is not None and base != head:
            return Choice(Baseline(base, local, f"where this branch left {local}"))
    return Choice(None, ancestor=True)   # local commits with no remote, a detached HEAD


def _no_base_why(root: Path, upstream: str) -> str:
    shallow = git(root, "rev-parse", "--is-shallow-repository", check=False) == "true"
    return ("a shallow clone without the base commit: `git fetch --unshallow`" if shallow
            else f"HEAD shares no history with {upstream}")


def newest_recorded(ancestors: list[str], recorded: set[str]) -> str | None:
    """The first of `ancestors` (newest first) that has a recorded run."""
    return next((c for c in ancestors if c in recorded), None)


def resolve_ancestor(root: Path, choice: Choice, recorded: set[str]) -> Choice:
    """An `ancestor` choice made whole: the newest ancestor of HEAD (HEAD itself left
    out) with a clean recorded run of this cell, else HEAD~1; none when HEAD has no
    parent in this clone (a root commit, a shallow clone: said once)."""
    if not choice.ancestor or choice.baseline is not None:
        return choice
    out = git(root, "rev-list", "--max-count=2000", "HEAD^", check=False)
    ancestors = out.splitlines() if out else []
    note = choice.note
    found = newest_recorded(ancestors, recorded)
    if found is not None:
        return Choice(Baseline(found, found[:10], "the newest ancestor of HEAD with a clean "
                               "recorded run of this cell"), note, ci=choice.ci)
    if ancestors:
        return Choice(Baseline(ancestors[0], "HEAD~1", "the commit before HEAD (no ancestor "
                               "has a clean recorded run of this cell)"), note, ci=choice.ci)
    shallow = git(root, "rev-parse", "--is-shallow-repository", check=False) == "true"
    why = ("a shallow clone without HEAD~1: `git fetch --deepen 1`" if shallow
           else "HEAD has no parent")
    return Choice(None, "; ".join(n for n in (note, f"verdict: no baseline ({why}): the "
                                              "history decides") if n), ci=choice.ci)


def export(root: Path, commit: str, dest: Path) -> Path:
    """The commit's tree, read-only, at `dest` (made whole or not at all: a temp dir
    renamed into place; an existing complete export is reused)."""
    if (dest / EXPORT_COMPLETE).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    import tarfile  # here: only a baseline export needs it (start-up)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        # run in a subdirectory of its repository, git archive takes only that subtree
        proc = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(tmp, filter="data")
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise TaskError(f"git archive {commit[:10]} failed in {root}: "
                            f"{err.splitlines()[-1] if err else 'no output'}")
        atomic_write(tmp / EXPORT_COMPLETE, commit + "\n")
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


class CloneGit:
    """ci_event.Git over a real clone (read-only queries, each asked once)."""

    def __init__(self, root: Path):
        self.root = root
        self.head = commit_of(root, "HEAD")
        self._anc = Ancestry(root)

    def has(self, commit: str) -> bool:
        return bool(commit) and git(self.root, "cat-file", "-e", f"{commit}^{{commit}}",
                                    check=False) is not None

    def parents(self, commit: str) -> list[str] | None:
        """The parent ids the commit object names (a shallow clone's grafts hide them
        from rev-list, not from the object itself)."""
        raw = git(self.root, "cat-file", "commit", commit, check=False)
        if raw is None:
            return None
        head, _, _ = raw.partition("\n\n")
        return [ln.split()[1] for ln in head.splitlines() if ln.startswith("parent ")]

    def is_ancestor(self, a: str, b: str) -> bool:
        if b == self.head:
            return self._anc(a)
        return subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=self.root,
                              capture_output=True).returncode == 0

    def merge_base(self, a: str, b: str) -> str | None:
        return git(self.root, "merge-base", a, b, check=False)

    def resolve(self, ref: str) -> str | None:
        return commit_of(self.root, ref)
