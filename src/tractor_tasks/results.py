"""Results: JUnit files -> counts and failures, flaky classification, lastfailed.

Node ids are rebuilt from JUnit's classname (dotted module path, then any
classes) by finding the longest prefix that is a file under the target.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TaskError
from .target import FlakyRule, Target

OUTCOMES = ("passed", "failed", "errors", "skipped", "xfailed")


@dataclass
class Failure:
    nodeid: str
    kind: str            # failed | errors
    message: str
    text: str
    flaky: FlakyRule | None = None

    def short(self, lines: int = 12) -> str:
        body = self.text.strip().splitlines()
        return "\n".join(body[-lines:]) if body else self.message


@dataclass
class Summary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    found: bool = True

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def new_failures(self) -> list[Failure]:
        return [f for f in self.failures if f.flaky is None]

    @property
    def known_flaky(self) -> list[Failure]:
        return [f for f in self.failures if f.flaky is not None]

    def counts_line(self) -> str:
        parts = [f"{n} {k}" for k, n in self.counts.items() if n]
        return ", ".join(parts) or "no tests ran"


def _nodeid(target: Target, classname: str, name: str, file_attr: str | None) -> str:
    parts = [p for p in classname.split(".") if p]
    if file_attr:
        mod_parts = Path(file_attr).with_suffix("").parts
        rest = parts[len(mod_parts):] if parts[:len(mod_parts)] == list(mod_parts) else []
        return "::".join([Path(file_attr).as_posix(), *rest, name])
    for base in (target.root, target.tests_path):
        for i in range(len(parts), 0, -1):
            candidate = Path(*parts[:i]).with_suffix(".py")
            if (base / candidate).is_file():
                rel = (base / candidate).relative_to(target.root).as_posix()
                return "::".join([rel, *parts[i:], name])
    return "::".join([*parts, name])


def glob_to_regex(glob: str) -> re.Pattern:
    """A test-id glob where only * and ? are wild ([...] in ids stays literal)."""
    return re.compile(re.escape(glob).replace(r"\*", ".*").replace(r"\?", ".") + r"\Z")


def classify(target: Target, failure: Failure) -> FlakyRule | None:
    """The known-flaky rule this failure matches (id glob AND error signature), if any."""
    prefix = target.tests_dir.rstrip("/") + "/"
    rel = failure.nodeid[len(prefix):] if failure.nodeid.startswith(prefix) else failure.nodeid
    haystack = f"{failure.message}\n{failure.text}"
    for rule in target.flaky:
        if (glob_to_regex(rule.test).match(rel) or glob_to_regex(rule.test).match(failure.nodeid)) \
                and re.search(rule.error, haystack):
            return rule
    return None


def read_junit(target: Target, path: Path) -> Summary:
    summary = Summary()
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        summary.found = False
        return summary
    except ET.ParseError as err:
        raise TaskError(f"error: {path} is not valid JUnit XML ({err}); rerun the tests")
    for suite in tree.iter("testsuite"):
        summary.seconds += float(suite.get("time") or 0)
    for case in tree.iter("testcase"):
        nodeid = _nodeid(target, case.get("classname", ""), case.get("name", ""),
                         case.get("file"))
        failed = case.find("failure")
        errored = case.find("error")
        skipped = case.find("skipped")
        if failed is not None or errored is not None:
            el = failed if failed is not None else errored
            kind = "failed" if failed is not None else "errors"
            summary.counts[kind] += 1
            f = Failure(nodeid, kind, el.get("message", ""), el.text or "")
            f.flaky = classify(target, f)
            summary.failures.append(f)
        elif skipped is not None:
            summary.counts["xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"] += 1
        else:
            summary.counts["passed"] += 1
    return summary


def render(summary: Summary, *, traceback_lines: int = 12) -> list[str]:
    """The human summary: counts, then each failure with its class and short traceback."""
    lines = [f"results: {summary.counts_line()} in {summary.seconds:.1f}s"]
    for f in summary.failures:
        tag = f"known flaky ({f.flaky.note or f.flaky.error})" if f.flaky else "NEW"
        lines.append(f"  {f.kind.upper():6} {f.nodeid}  [{tag}]")
        for tb in f.short(traceback_lines).splitlines():
            lines.append(f"      {tb}")
    return lines


# -- lastfailed -------------------------------------------------------------

def lastfailed_path(cache_dir: Path) -> Path:
    return cache_dir / "v" / "cache" / "lastfailed"


def read_lastfailed(target: Target, path: Path) -> list[str] | None:
    """Node ids under the tests dir from a pytest lastfailed cache; None when absent.

    Reads the JSON directly: no collection, no import of the target.
    """
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise TaskError(f"error: {path} is not valid JSON ({err.args[0]}); it was left as it "
                        "is: delete it or rerun the tests to rewrite it")
    if not isinstance(data, dict):
        raise TaskError(f"error: {path} is not a lastfailed mapping; it was left as it is: "
                        "delete it or rerun the tests to rewrite it")
    prefix = target.tests_dir.rstrip("/") + "/"
    return sorted(k for k in data if isinstance(k, str) and k.startswith(prefix))
