"""The likely cause of a regression or a new failure: the files changed since the
baseline, ranked by what ties each to the failing test (its own file, its traceback,
its module's direct imports, the change map, the package it imports).
"""
from __future__ import annotations

import ast
from pathlib import Path

from .results import TestResult


def test_file(target, nodeid: str) -> str:
    """The test's file, relative to the target root."""
    path = nodeid.partition("::")[0]
    if (target.root / path).is_file() or path.startswith(target.tests_dir.rstrip("/") + "/"):
        return path
    return f"{target.tests_dir.rstrip('/')}/{path}"


def likely_cause(target, t: TestResult, changed: list[str], base, run_dir=None) -> list[str]:
    """First the changed functions the failing test executed (its footprint, with the
    process that ran them); then the changed files ranked by what ties each to it:
    the test file itself, its traceback, its test module's direct imports, the change
    map, the package it imports."""
    if not changed:
        return [f"likely cause: nothing changed since {base.name} in the files git tracks"]
    test_path = test_file(target, t.nodeid)
    direct, packages = _imports(target.root / test_path)
    since = f"changed since {base.label}"
    from .footprints import executed_changes
    ran = [f"likely cause: {f}:{q} (the test executed it {' and '.join(f'in {w}' for w in where)}"
           f"; {since})" for f, q, where in
           executed_changes(target, t.nodeid, getattr(base, "commit", None), run_dir)][:3]
    if ran:
        return ran
    scored = []
    for f in changed:
        reasons, score = [since], 0
        if f == test_path:
            reasons.append("the test's own file")
            score += 8
        if _in_traceback(f, t.text):
            reasons.append("in its traceback")
            score += 4
        mod = _module_name(f)
        if mod and mod in direct:
            reasons.append(f"imported by {test_path}")
            score += 3
        if Path(f).name == "uv.lock":
            reasons.append("the lock file: the dependencies every test runs with")
            score += 2
        mapped = _mapped(target, f, test_path)
        if mapped:
            reasons.append(f"mapped to {mapped}")
            score += 2
        if not score and mod and mod.split(".")[0] in packages:
            reasons.append(f"in {mod.split('.')[0]}, which {test_path} imports")
            score += 1
        if score:
            scored.append((-score, f, reasons))
    if not scored:
        shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5})" if len(changed) > 5 else "")
        return [f"likely cause: nothing ties it to a change; {since}: {shown}"]
    return [f"likely cause: {f} ({'; '.join(reasons)})" for _, f, reasons in sorted(scored)[:3]]


def _module_name(path: str) -> str | None:
    if not path.endswith(".py"):
        return None
    parts = list(Path(path).with_suffix("").parts)
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or None


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules the file imports, each with its parents; top-level packages)."""
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return set(), set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    direct = set()
    for name in found:
        parts = name.split(".")
        direct.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        if len(parts) == 1:
            direct.add(name)
    return direct, {n.split(".")[0] for n in found}


def _in_traceback(path: str, text: str) -> bool:
    if not text:
        return False
    return (f"/{path}" in text or text.startswith(path) or f"\n{path}" in text
            or f" {path}" in text)


def _mapped(target, changed: str, test_path: str) -> str | None:
    """The change-map entry that ties the changed file to the test's file."""
    from .selection import _glob_match
    pkg = target.package.replace(".", "/") + "/"
    if not changed.startswith(pkg):
        return None
    rel = target.relative_id(test_path)
    for glob, tests in target.affected.items():
        if not _glob_match(changed[len(pkg):], glob):
            continue
        for word in tests:
            w = word.rstrip("/")
            w = target.relative_id(w)
            if rel == w or rel.startswith(w + "/") or Path(rel).name == w:
                return glob
    return None
