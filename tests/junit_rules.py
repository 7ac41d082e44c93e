"""Two JUnit schemas' rules, encoded by hand (their files are never copied here), and a
small checker of a parsed file against them; `xsd()` writes the same rules as an XML
Schema for a real validator.

SUREFIRE: Maven Surefire's surefire-test-report-3.0.xsd, schema version "3.0"
  (apache/maven-surefire, maven-surefire-plugin/src/site/resources/xsd/): the schema
  that defines flakyFailure/rerunFailure; one <testsuite> root; a testcase's children
  in a fixed sequence; `type` required on failure, error and the re-run elements;
  each re-run element a stackTrace (required), system-out?, system-err?.
JENKINS: Jenkins xunit-plugin's junit-10.xsd (jenkinsci/xunit-plugin, src/main/resources/
  org/jenkinsci/plugins/xunit/types/model/xsd/junit-10.xsd): the same elements in any
  order, a re-run's stackTrace optional, failure/error/skipped text only, testsuite
  timestamp/hostname allowed.
Neither allows an attribute it does not declare, nor <properties> inside a testcase.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

N = None   # maxOccurs="unbounded"
# SUREFIRE_TIME of each schema (a time attribute's pattern)
SUREFIRE_TIME = r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]{0,3})?"
JENKINS_TIME = r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?"


@dataclass
class El:
    """One element's rules: attributes (name -> (required, pattern or None)); content:
    "text" (a string, no children), "empty", ("seq", [(tag, min, max)]) in that order,
    or ("choice", tags) any of them, any number, any order; `mixed`: text among them."""
    attrs: dict[str, tuple[bool, str | None]]
    content: object = "text"
    mixed: bool = False


@dataclass
class Schema:
    name: str
    roots: tuple[str, ...]
    elements: dict[str, El] = field(default_factory=dict)


def _a(*required, time: str | None | bool = False, time_required=False, **optional):
    """Attributes: `required` names, `optional` names (=1), and `time` with its pattern
    (None: any string; False: no time attribute)."""
    out = {name: (True, None) for name in required}
    out.update({name: (False, None) for name in optional})
    if time is not False:
        out["time"] = (time_required, time)
    return out


_RERUN_S = El(_a("type", message=1), ("seq", [("stackTrace", 1, 1), ("system-out", 0, 1),
                                             ("system-err", 0, 1)]))
SUREFIRE = Schema("Maven Surefire surefire-test-report-3.0.xsd (version 3.0)", ("testsuite",), {
    "testsuite": El(_a("name", "tests", "errors", "skipped", "failures", time=SUREFIRE_TIME,
                       version=1, group=1),
                    ("seq", [("properties", 0, N), ("testcase", 0, N)])),
    "properties": El({}, ("seq", [("property", 0, N)])),
    "property": El(_a("name", "value"), "empty"),
    "testcase": El(_a("name", time=SUREFIRE_TIME, time_required=True, classname=1, group=1),
                   ("seq", [("failure", 0, N), ("rerunFailure", 0, N), ("flakyFailure", 0, N),
                            ("skipped", 0, 1), ("error", 0, 1), ("rerunError", 0, N),
                            ("flakyError", 0, N), ("system-out", 0, 1),
                            ("system-err", 0, 1)])),
    "failure": El(_a("type", message=1)),
    "error": El(_a("type", message=1)),
    "skipped": El(_a(message=1)),
    "rerunFailure": _RERUN_S, "flakyFailure": _RERUN_S,
    "rerunError": _RERUN_S, "flakyError": _RERUN_S,
    "stackTrace": El({}), "system-out": El({}), "system-err": El({}),
})

_RERUN_J = El(_a("type", message=1), ("seq", [("stackTrace", 0, 1), ("system-out", 0, 1),
                                             ("system-err", 0, 1)]), mixed=True)
JENKINS = Schema("Jenkins xunit-plugin junit-10.xsd", ("testsuites", "testsuite"), {
    "testsuites": El(_a(time=JENKINS_TIME, name=1, tests=1, failures=1, errors=1),
                     ("seq", [("testsuite", 0, N)])),
    "testsuite": El(_a("name", "tests", "failures", "errors", time=JENKINS_TIME, group=1,
                       skipped=1, timestamp=1, hostname=1, id=1, package=1, file=1, log=1,
                       url=1),
                    ("choice", ("testsuite", "properties", "testcase", "system-out",
                                "system-err"))),
    "properties": El({}, ("seq", [("property", 0, N)])),
    "property": El(_a("name", "value"), "empty"),
    "testcase": El(_a("name", time=None, classname=1, group=1),
                   ("choice", ("skipped", "error", "failure", "rerunFailure", "rerunError",
                               "flakyFailure", "flakyError", "system-out", "system-err"))),
    "failure": El(_a(type=1, message=1)),
    "error": El(_a(type=1, message=1)),
    "skipped": El(_a(type=1, message=1)),
    "rerunFailure": _RERUN_J, "flakyFailure": _RERUN_J,
    "rerunError": _RERUN_J, "flakyError": _RERUN_J,
    "stackTrace": El({}), "system-out": El({}), "system-err": El({}),
})


def check(root, schema: Schema, extras: frozenset | set = frozenset()) -> list[str]:
    """Every way the tree breaks the schema's rules, one line each ([] when it keeps
    them). `extras`: (element, attribute) pairs let through (the ones a consumer needs)."""
    errors = []
    if root.tag not in schema.roots:
        return [f"root <{root.tag}> is not one of {schema.roots}"]
    _check(root, schema, set(extras), errors, root.tag)
    return errors


def _check(el, schema, extras, errors, path):
    rule = schema.elements.get(el.tag)
    if rule is None:
        errors.append(f"{path}: element <{el.tag}> is not in the schema")
        return
    for name, value in el.attrib.items():
        if name not in rule.attrs:
            if (el.tag, name) not in extras:
                errors.append(f"{path}: attribute {name!r} is not allowed on <{el.tag}>")
            continue
        pattern = rule.attrs[name][1]
        if pattern and not re.fullmatch(pattern, value):
            errors.append(f"{path}: {name}={value!r} does not match {pattern}")
    for name, (required, _) in rule.attrs.items():
        if required and name not in el.attrib:
            errors.append(f"{path}: <{el.tag}> lacks the required attribute {name!r}")
    kids = list(el)
    texts = [el.text or ""] + [k.tail or "" for k in kids]
    if rule.content == "empty":
        if kids or "".join(texts).strip():
            errors.append(f"{path}: <{el.tag}> must be empty")
    elif rule.content == "text":
        if kids:
            errors.append(f"{path}: <{el.tag}> takes text only, has <{kids[0].tag}>")
    else:
        if not rule.mixed and "".join(texts).strip():
            errors.append(f"{path}: <{el.tag}> takes no text between its elements")
        kind, model = rule.content
        tags = [k.tag for k in kids]
        if kind == "choice":
            bad = [t for t in tags if t not in model]
            if bad:
                errors.append(f"{path}: <{bad[0]}> is not allowed in <{el.tag}>")
        else:
            errors += [f"{path}: {e}" for e in _sequence(tags, model, el.tag)]
    for i, kid in enumerate(kids):
        if kid.tag in schema.elements:
            _check(kid, schema, extras, errors, f"{path}/{kid.tag}[{i}]")
        else:
            errors.append(f"{path}: element <{kid.tag}> is not in the schema")


def _sequence(tags, model, parent):
    """xs:sequence of distinct particles, matched greedily (no ambiguity in these)."""
    errors, i = [], 0
    for tag, lo, hi in model:
        n = 0
        while i < len(tags) and tags[i] == tag and (hi is None or n < hi):
            i, n = i + 1, n + 1
        if n < lo:
            errors.append(f"<{parent}> needs <{tag}> (at least {lo}) at position {i}")
    if i < len(tags):
        errors.append(f"<{tags[i]}> is out of order or not allowed in <{parent}> "
                      f"(sequence: {[t for t, _, _ in model]})")
    return errors


def xsd(schema: Schema, extras: frozenset | set = frozenset()) -> str:
    """The same rules as an XML Schema document (what a real validator reads); `extras`
    become optional string attributes."""
    types, simple = [], {}

    def attr_decls(tag, rule):
        out = []
        for name, (required, pattern) in rule.attrs.items():
            kind = "xs:string"
            if pattern:
                kind = simple.setdefault(pattern, f"T{len(simple)}")
            use = ' use="required"' if required else ""
            out.append(f'<xs:attribute name="{name}" type="{kind}"{use}/>')
        out += [f'<xs:attribute name="{a}" type="xs:string"/>'
                for e, a in sorted(extras) if e == tag and a not in rule.attrs]
        return "".join(out)

    def occurs(lo, hi):
        return f'minOccurs="{lo}" maxOccurs="{"unbounded" if hi is None else hi}"'

    for tag, rule in schema.elements.items():
        attrs = attr_decls(tag, rule)
        name = f"E_{tag}"
        if rule.content == "text":
            types.append(f'<xs:complexType name="{name}"><xs:simpleContent><xs:extension '
                         f'base="xs:string">{attrs}</xs:extension></xs:simpleContent>'
                         "</xs:complexType>")
        elif rule.content == "empty":
            types.append(f'<xs:complexType name="{name}">{attrs}</xs:complexType>')
        else:
            kind, model = rule.content
            if kind == "seq":
                body = "<xs:sequence>" + "".join(
                    f'<xs:element name="{t}" type="E_{t}" {occurs(lo, hi)}/>'
                    for t, lo, hi in model) + "</xs:sequence>"
            else:
                body = '<xs:choice minOccurs="0" maxOccurs="unbounded">' + "".join(
                    f'<xs:element name="{t}" type="E_{t}"/>' for t in model) + "</xs:choice>"
            mixed = ' mixed="true"' if rule.mixed else ""
            types.append(f'<xs:complexType name="{name}"{mixed}>{body}{attrs}'
                         "</xs:complexType>")
    simples = [f'<xs:simpleType name="{n}"><xs:restriction base="xs:string"><xs:pattern '
               f'value="{p}"/></xs:restriction></xs:simpleType>' for p, n in simple.items()]
    roots = [f'<xs:element name="{r}" type="E_{r}"/>' for r in schema.roots]
    return ('<?xml version="1.0" encoding="utf-8"?>'
            '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
            + "".join(simples + types + roots) + "</xs:schema>")
