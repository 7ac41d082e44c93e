"""JUnit in and out: the file every run writes for CI (`write_junit`), and JUnit files
read back into the history (`import_junit`: `invoke flaky --junit`, `invoke ci-report
--durations-out`). One module, so what we write is what we read.

The file we write follows Maven Surefire's surefire-test-report-3.0.xsd (the schema that
defines flakyFailure and rerunFailure, as cargo-nextest writes them) and Jenkins
xunit-plugin's junit-10.xsd, bar the attributes in `EXTRAS` that named consumers need
(tests/test_junit.py checks both schemas' rules against what we write):

- a failure that passed when re-run alone is written as Surefire writes a flaky test:
  no `<failure>`, a `<flakyFailure>` (or `<flakyError>`) per failing attempt, the first
  run's included; a failure that failed again keeps its `<failure>`/`<error>` and each
  failing re-run is a `<rerunFailure>`/`<rerunError>`. Each attempt has `type`,
  `message`, a `<stackTrace>`, a `<system-out>` (where and how it ran) and, when there
  is a dump, a `<system-err>` naming it;
- the verdict, its reason and the likely cause (per-testcase `<properties>` are in
  neither schema) are in the failure's `message` (after its first line, the error's
  head, which the import reads as the signature), ahead of its traceback (the text
  GitLab shows) and in the testcase's `<system-out>`;
- the per-test costs (CPU seconds, peak RSS) ride in one testsuite property, COSTS, a
  JSON object by test id: the import reads them, so a durations file made from CI
  artifacts carries costs.

Hand-built with ElementTree rather than junitparser's writer: no runtime dependency
(importing junitparser 5.0 costs ~35 ms over ElementTree here, most of it
importlib.metadata), and the element order Surefire's sequence requires is ours to
keep (`ORDER`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import TaskError
from .fsutil import atomic_write, xml_clean
from .durations import MAX_SECONDS
from .history import History, RunRow, TestRow
from .results import stable_id
from .status import TestOutcome as O

if TYPE_CHECKING:
    from .results import Results, TestResult

SUITE = "pytest"
COSTS = "tractor-tasks.costs"     # testsuite property: {test id: [cpu seconds, rss bytes]}
# Surefire 3.0's sequence inside <testcase> (junit-10 takes any order)
ORDER = ("failure", "rerunFailure", "flakyFailure", "skipped", "error", "rerunError",
         "flakyError", "system-out", "system-err")
# what we write outside Surefire 3.0, and who needs it (junit-10 has the testsuite ones)
EXTRAS = {("testsuite", "timestamp"): "when the run started: Jenkins, GitLab, our import",
          ("testsuite", "hostname"): "where it ran: Jenkins, our import",
          ("testcase", "file"): "GitLab links the file; our import's exact node ids"}
MESSAGE_MAX = 2000
_CUT = {O.HUNG, O.TIMEOUT, O.INTERRUPTED}   # an <error> whose type names the outcome
_EXC_NAME = re.compile(r"([A-Za-z_][\w]*\.)*[A-Z]\w*")   # trio.TooSlowError, Failed
_OURS = ("verdict: ", "likely cause: ", "known flaky: ")  # our lines after the head


# -- out ------------------------------------------------------------------------------

def classname(nodeid: str) -> tuple[str, str, str]:
    """(classname, name, file) as pytest's junitxml spells them."""
    path, _, rest = nodeid.partition("::")
    parts = rest.split("::") if rest else [path]
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[:-1]]), parts[-1], path


def error_type(t: TestResult) -> str:
    """The `type` of a failure element: the exception's name from the error's head line
    ("trio.TooSlowError: ..."), a stop's outcome (hung, timeout, interrupted), else the
    outcome (failed, error)."""
    if t.outcome in _CUT:
        return t.outcome.value
    head = t.message.splitlines()[0] if t.message else ""
    name = head.split(":", 1)[0].strip()
    return name if _EXC_NAME.fullmatch(name) else t.outcome.value


def verdict_lines(t: TestResult) -> list[str]:
    """What the verdict says about a failure, as lines every CI UI shows."""
    lines = []
    if t.verdict is not None:
        lines.append(f"verdict: {t.verdict.value}" + (f" ({t.why})" if t.why else ""))
        lines += [c if c.startswith("likely cause: ") else f"likely cause: {c}"
                  for c in t.cause]
    if t.flaky is not None:
        lines.append(f"known flaky: {t.flaky.note or t.flaky.error or t.flaky.test}")
    return lines


def _case_out(t: TestResult) -> list[str]:
    lines = verdict_lines(t)
    if t.baseline is not None:
        lines.append(f"at the baseline: {t.baseline.outcome.value}"
                     + (f" ({t.baseline.message.splitlines()[0]})"
                        if t.baseline.message else ""))
    if t.reruns:
        lines.append("re-run alone: " + ", ".join(r.outcome.value for r in t.reruns))
    return lines


def _message(t: TestResult, extra: list[str]) -> str:
    head = t.message.splitlines()[0] if t.message else ""
    return "\n".join([head or t.outcome.value, *extra])[:MESSAGE_MAX]


def _trace(t: TestResult) -> str:
    return t.text + (f"\n(full dump: {t.dump})" if t.dump else "")


def _final(tag: str, t: TestResult, extra: list[str]) -> ET.Element:
    """<failure> or <error>: the traceback as the element's text, after the verdict's
    lines (GitLab shows this text and neither the message nor <system-out>)."""
    el = ET.Element(tag, message=_message(t, extra), type=error_type(t))
    el.text = "\n".join([*extra, "", _trace(t)]) if extra else _trace(t)
    return el


def _attempt(tag: str, t: TestResult, what: str, extra: list[str]) -> ET.Element:
    """<rerunFailure>, <flakyFailure> (and the Error ones): stackTrace, system-out
    (which attempt, where, how it ended), system-err (the dump, when there is one)."""
    el = ET.Element(tag, message=_message(t, extra), type=error_type(t))
    ET.SubElement(el, "stackTrace").text = t.text
    where = f" ({t.where})" if t.where else ""
    ET.SubElement(el, "system-out").text = "\n".join(
        [f"{what}{where}: {t.outcome.value} in {t.duration:.2f}s", *extra])
    if t.dump:
        ET.SubElement(el, "system-err").text = f"full dump: {t.dump}"
    return el


def _kind(t: TestResult) -> str:
    return "Failure" if t.outcome.junit == "failure" else "Error"


def testcase(t: TestResult) -> tuple[ET.Element, str | None]:
    """One <testcase>, and what it counts as in the suite's totals (failures, errors,
    skipped, or None)."""
    cls, name, file = classname(stable_id(t.nodeid))
    case = ET.Element("testcase", classname=cls, name=name, file=file,
                      time=_time(t.duration))
    children: list[ET.Element] = []
    counted = None
    tag = t.outcome.junit
    if tag in ("failure", "error"):
        passed_alone = any(r.outcome is O.PASSED for r in t.reruns)
        said = verdict_lines(t)
        n = len(t.reruns)
        if passed_alone:
            children.append(_attempt(f"flaky{_kind(t)}", t, "the run", said))
        else:
            children.append(_final(tag, t, said))
            counted = "failures" if tag == "failure" else "errors"
        for i, r in enumerate(t.reruns, 1):
            if r.outcome.bad or r.outcome.cut:
                kind = "flaky" if passed_alone else "rerun"
                children.append(_attempt(f"{kind}{_kind(r)}", r,
                                         f"re-run {i} of {n}, alone", []))
    elif tag == "skipped":
        children.append(ET.Element("skipped", message=t.outcome.value))
        counted = "skipped"
    out = _case_out(t)
    if out:
        el = ET.Element("system-out")
        el.text = "\n".join(out)
        children.append(el)
    children.sort(key=lambda el: ORDER.index(el.tag))
    case.extend(children)
    return case, counted


def _time(seconds) -> str:
    """A `time` attribute both schemas' pattern takes: seconds, 3 decimals, never
    negative or not finite."""
    ok = isinstance(seconds, (int, float)) and 0 <= seconds < MAX_SECONDS
    return f"{seconds if ok else 0.0:.3f}"


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def write_junit(results: Results, path: Path, *, started: float | None = None,
                host: str | None = None) -> None:
    """One JUnit file for the whole run (every pass and shard), for CI."""
    if started is None:
        started = time.time() - results.seconds
    suite = ET.Element("testsuite", name=SUITE, tests=str(len(results.tests)),
                       failures="0", errors="0", skipped="0",
                       time=_time(results.seconds),
                       timestamp=_timestamp(started),
                       hostname=host if host is not None else os.uname().nodename)
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="leaked", value=str(results.leaks.count()))
    if results.leaks:
        ET.SubElement(props, "property", name="leaks", value=results.leaks.line(first=20))
    costs = {stable_id(t.nodeid): [round(t.cpu, 3), t.rss]
             for t in results.tests.values() if t.cpu is not None}
    if costs:
        ET.SubElement(props, "property", name=COSTS,
                      value=json.dumps(costs, sort_keys=True, separators=(",", ":")))
    written = {"failures": 0, "errors": 0, "skipped": 0}
    for t in results.tests.values():
        case, counted = testcase(t)
        suite.append(case)
        if counted:
            written[counted] += 1
    suite.attrib.update({k: str(v) for k, v in written.items()})
    xml_clean(suite)  # a test's id or message may hold ESC, BEL, NUL: XML 1.0 forbids them
    # in the run dir, which a test can reach: a link planted there is replaced
    atomic_write(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True),
                 replace_link=True)


# -- in -------------------------------------------------------------------------------

def import_junit(history: History, path: Path, *, minor: str = "", tpt: str = "",
                 spawn: str = "", cell: str = "", commit: str | None = None,
                 root: Path | None = None, follow: bool = True) -> int:
    """Record a JUnit file (ours, pytest's, a CI artifact) as one run; returns the test
    count.

    The run id is a hash of the file and the cell, so importing the same file twice
    replaces, not doubles. `root` (the dir pytest ran in) makes node ids exact when the
    file has no `file` attributes (pytest's default xunit2 family has none). The file
    is read bounded (fsutil.read_bounded: a regular file, a symlink only with `follow`).
    """
    from .fsutil import NotRegular, read_bounded
    path = Path(path)
    try:
        data = read_bounded(path, follow=follow)
        top = ET.fromstring(data)
    except NotRegular as err:
        raise TaskError(f"error: JUnit file {path} is {err.strerror}; nothing recorded", 1)
    except OSError as err:
        raise TaskError(f"cannot read JUnit file {path} ({err.strerror or err})", 1)
    except ET.ParseError as err:
        raise TaskError(f"{path} is not valid JUnit XML ({err}); nothing recorded", 1)
    if top.tag not in ("testsuites", "testsuite"):
        raise TaskError(f"{path} is XML but not JUnit (root <{top.tag}>); "
                        "nothing recorded", 1)
    warn = history.warn
    cases = list(top.iter("testcase"))
    named = [c for c in cases if (c.get("classname") or "").strip(". ")
             or (c.get("name") or "").strip(". ")]
    if len(named) < len(cases):
        warn(f"note: {len(cases) - len(named)} testcase(s) of {path} have no classname "
             "and no name; skipped")
    bad_times = sum(_seconds(c.get("time")) != _float(c.get("time")) for c in named)
    if bad_times:
        warn(f"note: {bad_times} testcase time(s) of {path} are not a number of "
             f"seconds under {MAX_SECONDS:g}; counted as 0")
    costs = _costs(top)
    tests = [_test(case, root, costs) for case in named]
    started, finished, host = _times(top, path)
    run_id = hashlib.sha256(data + repr((minor, tpt, spawn, cell, commit)).encode())
    kept = history.record(RunRow(run_id.hexdigest()[:32], started, finished, "import",
                                 cell=cell, minor=minor, tpt=tpt, spawn=spawn, commit=commit,
                                 host=host), tests)
    if kept is not None:
        warn(f"note: the history is locked by another writer; the imported rows are "
             f"kept in {kept.name} and the next write that gets the lock adds them")
    return len(tests)


_WRAPPED = re.compile(r'failed on (?:setup|teardown) with "(.*)"\Z', re.S)


def signature(message: str, text: str = "") -> str:
    """The first line of a failure's message ("trio.TooSlowError: deadline exceeded"), else
    its traceback's first E line: the same head line the probe-based results record, so
    imported and run rows of one failure share a signature. Our own verdict lines after
    the head (see verdict_lines) are not part of it."""
    head = "\n".join(ln for ln in (message or "").splitlines()
                     if not ln.startswith(_OURS)).strip()
    wrapped = _WRAPPED.match(head)  # a setup/teardown error, as pytest's junitxml words it
    if wrapped:
        head = wrapped.group(1).strip()
    if not head:
        e_lines = [ln[1:].strip() for ln in (text or "").splitlines() if ln.startswith("E ")]
        head = next((ln for ln in e_lines if ln), "")
    return head.splitlines()[0].strip()[:200] if head else ""


def _test(case: ET.Element, root: Path | None, costs: dict) -> TestRow:
    nodeid = stable_id(junit_nodeid(case.get("classname", ""), case.get("name", ""),
                                    case.get("file"), root))
    duration = _seconds(case.get("time"))
    cpu, rss = costs.get(nodeid, (None, None))
    failed, errored, skipped = case.find("failure"), case.find("error"), case.find("skipped")
    bad = failed if failed is not None else errored
    flaky = None
    if bad is None:   # a test that passed on a re-run: its first failing attempt
        flaky = next((el for el in case if el.tag in ("flakyFailure", "flakyError")), None)
    if bad is not None or flaky is not None:
        el = bad if bad is not None else flaky
        outcome = "failed" if el.tag in ("failure", "flakyFailure") else "error"
        if outcome == "error" and el.get("type") in {o.value for o in _CUT}:
            outcome = el.get("type")   # ours: a hang or a stop, as the run recorded it
        word = O(outcome).signature_word
        text = el.text if flaky is None else el.findtext("stackTrace", "")
        return TestRow(nodeid, outcome, duration, verdict="flaky" if flaky is not None else "",
                       signature=word or signature(el.get("message", ""), text or ""),
                       cpu=cpu, rss=rss)
    if skipped is not None:
        xfail = skipped.get("type") == "pytest.xfail" or skipped.get("message") == "xfailed"
        return TestRow(nodeid, "xfailed" if xfail else "skipped", duration)
    return TestRow(nodeid, "passed", duration, cpu=cpu, rss=rss)


def _costs(top: ET.Element) -> dict[str, tuple[float | None, int | None]]:
    """Our COSTS property, checked: {stable id: (cpu, rss)}; anything odd is left out."""
    out = {}
    for prop in top.iter("property"):
        if prop.get("name") != COSTS:
            continue
        try:
            doc = json.loads(prop.get("value") or "")
        except ValueError:
            continue
        for key, val in doc.items() if isinstance(doc, dict) else ():
            if not (isinstance(key, str) and isinstance(val, list) and len(val) == 2):
                continue
            cpu, rss = val
            if not _number(cpu) or not 0 <= cpu < MAX_SECONDS:
                continue
            rss = rss if isinstance(rss, int) and not isinstance(rss, bool) and rss >= 0 \
                else None
            out[stable_id(key)] = (float(cpu), rss)
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        value == value


def junit_nodeid(classname: str, name: str, file: str | None = None,
                 root: Path | None = None) -> str:
    """pytest's node id back from JUnit: classname "tests.test_x.TestC" + name "test_y[p]"
    -> "tests/test_x.py::TestC::test_y[p]".

    The module part is, in order: the `file` attribute; the longest dotted prefix that is
    a .py file under `root`; else the prefix up to the first Capitalised (class) part.
    """
    parts = [p for p in classname.split(".") if p]
    if not parts:  # a collection error: the name is the dotted module
        parts, name = name.split("."), ""
    if file:
        mod = list(Path(file).with_suffix("").parts)
        rest = parts[len(mod):] if parts[:len(mod)] == mod else []
        return "::".join([Path(file).as_posix(), *rest, *([name] if name else [])])
    cut = _module_cut(parts, root)
    module = "/".join(parts[:cut]) + ".py"
    return "::".join([module, *parts[cut:], *([name] if name else [])])


def _module_cut(parts: list[str], root: Path | None) -> int:
    if root is not None:
        for i in range(len(parts), 0, -1):
            if any("/" in p or p == ".." for p in parts[:i]):
                continue   # classname="/" or "../x": never a file under root
            try:
                if (Path(root) / Path(*parts[:i]).with_suffix(".py")).is_file():
                    return i
            except (ValueError, OSError):
                continue
    for i, part in enumerate(parts):
        if i and part[:1].isupper():
            return i
    return len(parts)


def _float(value: str | None) -> float | None:
    try:
        return float(value or 0)
    except ValueError:
        return None


def _seconds(value: str | None) -> float:
    """A JUnit time attribute; a missing, garbled or absurd one (negative, not finite,
    MAX_SECONDS or more: what a durations file refuses) counts as 0, not as a bad file."""
    seconds = _float(value)
    return seconds if seconds is not None and 0 <= seconds < MAX_SECONDS else 0.0


def _times(top: ET.Element, path: Path) -> tuple[float, float, str]:
    """(started, finished, host) from the testsuite attributes, else the file's mtime."""
    suites = [top] if top.tag == "testsuite" else list(top.iter("testsuite"))
    seconds = sum(_seconds(s.get("time")) for s in suites)
    stamps = []
    for s in suites:
        try:
            stamp = datetime.fromisoformat(s.get("timestamp") or "").timestamp()
        except (ValueError, OverflowError, OSError):
            continue
        if 0 <= stamp < 1e11:  # within years 1970..5138: else junk, the mtime stands
            stamps.append(stamp)
    host = next((s.get("hostname") for s in suites if s.get("hostname")), "")
    if stamps:
        return min(stamps), min(stamps) + seconds, host
    mtime = path.stat().st_mtime
    return mtime - seconds, mtime, host

