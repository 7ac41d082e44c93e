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
    outcomes: dict[str, str] = field(default_factory=dict)  # node id -> outcome

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


def read_probe(target: Target, path: Path) -> Summary:
    """Results from the probe's per-report log, for runs killed before JUnit was written."""
    summary = Summary()
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        summary.found = False
        return summary
    final: dict[str, tuple[str, dict]] = {}
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        nodeid, when, outcome = rec["nodeid"], rec["when"], rec["outcome"]
        summary.seconds += rec.get("duration", 0.0)
        prev = final.get(nodeid, ("", {}))[0]
        if outcome == "failed":
            kind = "failed" if when == "call" else "errors"
            if prev != "failed":
                final[nodeid] = (kind, rec)
        elif outcome == "skipped" and not prev:
            final[nodeid] = ("xfailed" if rec.get("xfail") else "skipped", rec)
        elif outcome == "passed" and when == "call" and not prev:
            final[nodeid] = ("passed", rec)
    for nodeid, (kind, rec) in final.items():
        summary.counts[kind] += 1
        summary.outcomes[nodeid] = kind
        if kind in ("failed", "errors"):
            text = rec.get("longrepr", "")
            last = next((ln for ln in reversed(text.splitlines()) if ln.startswith("E ")), "")
            f = Failure(nodeid, kind, last[1:].strip(), text)
            f.flaky = classify(target, f)
            summary.failures.append(f)
    return summary


def write_junit(summary: Summary, path: Path) -> None:
    """A minimal JUnit file for a summary (used when pytest could not write its own)."""
    suite = ET.Element("testsuite", name="pytest", tests=str(summary.total),
                       failures=str(summary.counts["failed"]), errors=str(summary.counts["errors"]),
                       skipped=str(summary.counts["skipped"] + summary.counts["xfailed"]),
                       time=f"{summary.seconds:.3f}")
    failed = {f.nodeid: f for f in summary.failures}
    for nodeid, kind in summary.outcomes.items():
        path_part, _, rest = nodeid.partition("::")
        parts = rest.split("::") if rest else [""]
        classname = ".".join([path_part.removesuffix(".py").replace("/", "."), *parts[:-1]])
        case = ET.SubElement(suite, "testcase", classname=classname, name=parts[-1])
        if nodeid in failed:
            f = failed[nodeid]
            el = ET.SubElement(case, "failure" if f.kind == "failed" else "error", message=f.message)
            el.text = f.text
        elif kind in ("skipped", "xfailed"):
            ET.SubElement(case, "skipped", type="pytest.xfail" if kind == "xfailed" else "pytest.skip")
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


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
