"""Words and git changes -> test paths (spec sections 1, 2 and 6).

A word is resolved, in order, as: a node id (`file::test`, its file part
resolved like a file), the whole tests dir (`tests`, `all`), a path relative
to the target root, a path relative to the tests dir (`test_local.py`,
`ipc/`), a bare file name found anywhere under the tests dir, and last a
pattern globbed as `tests/**/test_*<word>*.py`. Anything that resolves to
nothing, or to a place outside the tests dir, is a usage error.
"""
from __future__ import annotations

import fnmatch
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TaskError, usage
from .target import Target, under_tests

WHOLE_SUITE = ("all", ".")


def _rel(target: Target, path: Path) -> str:
    rel = path.relative_to(target.root).as_posix()
    return rel + "/" if path.is_dir() else rel


def _inside_tests(target: Target, path: Path) -> bool:
    try:
        path.resolve().relative_to(target.tests_path.resolve())
        return True
    except ValueError:
        return False


def resolve_word(target: Target, word: str) -> list[str]:
    """One word of intent -> test paths relative to the target root."""
    tests = target.tests_path
    if not tests.is_dir():
        raise usage(f"tests dir {tests} does not exist; set tests_dir in "
                    "[tool.tractor-tasks]")
    if "::" in word:
        file_part, rest = word.split("::", 1)
        files = resolve_word(target, file_part)
        if len(files) != 1 or files[0].endswith("/"):
            raise usage(f"{file_part!r} in node id {word!r} must name one test file")
        return [f"{files[0]}::{rest}"]
    if word in WHOLE_SUITE or word.rstrip("/") == target.tests_dir:
        return [_rel(target, tests)]
    for base in (target.root, tests):
        path = base / word
        if path.exists():
            if not _inside_tests(target, path):
                raise usage(f"{word!r} is outside the tests dir {target.tests_dir}/; "
                            f"name a test file or a dir under it")
            return [_rel(target, path.resolve())]
    if Path(word).is_absolute() or word.startswith(".."):
        raise usage(f"{word!r} is outside the tests dir {target.tests_dir}/ or does not "
                    "exist; name a test file or a dir under it")
    if word.endswith(".py") and not any(ch in word for ch in "*?["):
        found = sorted(tests.rglob(Path(word).name))
        found = [p for p in found if p.is_file() and "/." not in p.as_posix()]
        if found:
            return [_rel(target, p) for p in found]
    pattern = word.rstrip("/").removesuffix(".py").removeprefix("test_")
    if not pattern or "/" in pattern or pattern.strip("*?") == "" or "**" in pattern:
        raise usage(f"{word!r} is not a test file, dir, node id or name pattern under "
                    f"{target.tests_dir}/; give e.g. test_local.py, ipc/ or registrar")
    try:
        found = sorted(p for p in tests.rglob(f"test_*{pattern}*.py") if p.is_file())
    except ValueError:
        raise usage(f"{word!r} is not a usable name pattern; give a part of a test file "
                    "name, e.g. registrar")
    if found:
        return [_rel(target, p) for p in found]
    raise usage(f"no tests match {word!r} under {target.tests_dir}/; give a file "
                "(test_local.py), a dir (ipc/), a node id (file::test) or a pattern")


def resolve_words(target: Target, words) -> list[str]:
    """All words -> de-duplicated paths, in the order given; no words = the whole suite."""
    if not target.tests_path.is_dir():
        raise usage(f"tests dir {target.tests_path} does not exist; set tests_dir in "
                    "[tool.tractor-tasks]")
    out: list[str] = []
    for word in words or ():
        for path in resolve_word(target, word):
            if path not in out:
                out.append(path)
    return out or [_rel(target, target.tests_path)]


def is_single_file(paths: list[str]) -> bool:
    return len(paths) == 1 and not paths[0].endswith("/") and ".py" in paths[0]


# -- affected: git changes -> tests -------------------------------------------

def _git(root: Path, *args: str) -> list[str]:
    """Read-only git queries only (diff, ls-files, rev-parse)."""
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        msg = (out.stderr.strip().splitlines() or ["git failed"])[-1]
        raise TaskError(f"git {' '.join(args)} failed in {root}: {msg}")
    return [line for line in out.stdout.splitlines() if line.strip()]


def changed_files(root: Path, base: str | None = None) -> list[str]:
    """Files changed under `root`: committed since `base`, staged, unstaged, untracked."""
    from .options import text
    text("--base", base)   # `--base ""` refused as `--baseline ""` is, not taken as none
    _git(root, "rev-parse", "--git-dir")
    files: list[str] = []
    if base:
        try:
            _git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
        except TaskError:
            raise usage(f"--base {base!r} is not a commit in {root}; give a branch, tag "
                        "or sha (e.g. origin/main)")
        files += _git(root, "diff", "--name-only", "--relative", f"{base}...HEAD")
    files += _git(root, "diff", "--name-only", "--relative", "--cached")
    files += _git(root, "diff", "--name-only", "--relative")
    files += _git(root, "ls-files", "--others", "--exclude-standard")
    seen: dict[str, None] = {}
    for f in files:
        seen.setdefault(f, None)
    return list(seen)


def _glob_match(rel: str, glob: str) -> bool:
    if glob.endswith("/"):
        return rel.startswith(glob)
    return fnmatch.fnmatchcase(rel, glob)


@dataclass
class Affected:
    tests: list[str] = field(default_factory=list)       # words for resolve_words
    mapped: dict[str, list[str]] = field(default_factory=dict)
    fell_back: list[str] = field(default_factory=list)   # files the map does not cover
    fallback: tuple[str, ...] = ()
    files: list[str] = field(default_factory=list)       # the changed files
    base: str | None = None
    words: list[str] = field(default_factory=list)       # the tests that exist here
    missing: list[str] = field(default_factory=list)     # mapped, but not in this checkout

    def lines(self) -> list[str]:
        """What `invoke affected` says about the mapping."""
        if not self.files:
            return ["no changed files" + (f" since {self.base}" if self.base else "")
                    + "; nothing to run"]
        out = [f"{f} -> {' '.join(tests)}" for f, tests in self.mapped.items()]
        if self.fell_back:
            out.append(f"not in the change map, so the fallback ({' '.join(self.fallback)}) "
                       "runs for: " + ", ".join(self.fell_back))
        out += [f"note: {w} (from the change map) does not exist in this checkout; skipped"
                for w in self.missing]
        return out

    def check(self) -> None:
        if self.files and not self.words:
            raise TaskError("the changed files map to no test that exists here")


def affected(target: Target, base: str | None = None) -> Affected:
    """The changed files (since `base` too), mapped to the tests that exist here."""
    files = changed_files(target.root, base)
    result = map_changes(target, files) if files else Affected()
    result.files, result.base = files, base
    result.words, result.missing = existing_words(target, result.tests)
    return result


def map_changes(target: Target, files: list[str]) -> Affected:
    """Changed files -> test words via the change-to-tests map; the rest -> the fallback."""
    result = Affected(fallback=target.affected_fallback or target.smoke)
    pkg = target.package.replace(".", "/") + "/"
    for f in files:
        words: list[str] = []
        in_tests = under_tests(f, target.tests_dir)
        if in_tests is not None:
            name = Path(f).name
            if name.startswith("test_") and name.endswith(".py"):
                words = [in_tests]
            elif name == "conftest.py":
                words = [str(Path(in_tests).parent) + "/"]
                words = ["all"] if words == ["./"] else words
        elif f.startswith(pkg):
            rel = f[len(pkg):]
            for glob, tests in target.affected.items():
                if _glob_match(rel, glob):
                    words += [t for t in tests if t not in words]
        if words:
            result.mapped[f] = words
            result.tests += [w for w in words if w not in result.tests]
        else:
            result.fell_back.append(f)
    if result.fell_back:
        result.tests += [w for w in result.fallback if w not in result.tests]
    return result


def existing_words(target: Target, words: list[str]) -> tuple[list[str], list[str]]:
    """Split mapped words into those that resolve here and those that do not (stale map)."""
    ok, missing = [], []
    for w in words:
        try:
            resolve_word(target, w)
            ok.append(w)
        except TaskError:
            missing.append(w)
    return ok, missing


_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def _read_head(root: Path) -> str | None:
    """HEAD's commit read from the git dir's files (a checkout's `.git` dir, or a
    worktree's `.git` file): no process started. None when it is anything else."""
    dot = root / ".git"
    try:
        if dot.is_file():
            line = dot.read_text().strip()
            if not line.startswith("gitdir: "):
                return None
            gitdir = (root / line[len("gitdir: "):]).resolve()
        elif dot.is_dir():
            gitdir = dot
        else:
            return None
        head = (gitdir / "HEAD").read_text().strip()
        if _SHA.fullmatch(head):
            return head
        if not head.startswith("ref: refs/"):
            return None
        ref = head[len("ref: "):]
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        for base in (gitdir, common):
            if (base / ref).is_file():
                sha = (base / ref).read_text().strip()
                return sha if _SHA.fullmatch(sha) else None
        for line in (common / "packed-refs").read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _SHA.fullmatch(sha):
                return sha
    except (OSError, UnicodeDecodeError):
        return None
    return None


def head_commit(root: Path) -> str | None:
    """The checkout's HEAD commit, for the history (None outside git); read-only. Read
    from the git dir's files when they are plain (start-up), else from `git rev-parse`."""
    found = _read_head(root)
    if found is not None:
        return found
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
