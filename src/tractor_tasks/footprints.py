"""Footprints: per test, the functions of the target's package it executed, in pytest
and in every process it started; and `affected` from them.

Recording: recorder/sitecustomize.py, put first on pytest's PYTHONPATH (recorder_env),
writes one append-only file per process into the pass's `footprints/` dir; the
supervisor adds `procs.json`, every process of the run it saw (ProcList), so that
Python processes the recorder could not load into (-I, -E, -S, a wiped environment)
are known. After the run the files are read (attribute) and kept in the history by
commit and cell (store).

Attribution: in pytest, a record belongs to the test that ran then (the probe tells
the recorder, which re-arms per test); what ran before the first test (collection,
imports, module bodies) belongs to every test of the pass; what a session- or
package-scoped fixture ran, to every later test; what a module- or class-scoped one
(or setup outside any fixture) ran, to the later tests of the module. Any other process belongs
to every test that ran while it lived (its first record to the later of its last
record and the supervisor's last sight of it), and to the test in its environment.

Selection (select): the diff from the base to the work tree; a package module's change
read from its two syntax trees (codechange.py: the functions whose own code changed,
the names bound differently at import, the effects at import). A test is selected
when its footprint executed a changed function, or a function that uses a name bound
differently; an effect at import selects the tests whose footprint touched the file;
any other file, the change map's tests for it, else the tests that name it, else the
whole suite (documentation and .github no test names: none).
A footprint recorded at another commit is used only while the code it executed is
unchanged since: a test whose footprint executed code changed since is selected.
"""
from __future__ import annotations

import ast
import bisect
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .fprint import Footprint
from .rundirs import PassDir

FP_DIR, PROCS = PassDir.FOOTPRINTS, PassDir.PROCS
READ_CAP = 64 * 1024 * 1024   # bytes of one process's records (a real one is far smaller)
ENV_DIR = "TRACTOR_TASKS_FP_DIR"
ENV_ROOTS = "TRACTOR_TASKS_FP_ROOTS"
ENV_OFF = "TRACTOR_TASKS_FOOTPRINTS"   # "0": record nothing; "1": record below 3.12 too
MONITORING = (3, 12)   # sys.monitoring: what records at a few percent; below it, settrace


def off_why(minor: str | None, env=None) -> str | None:
    """Why a run of this minor records no footprints (None: it records). Below 3.12 only
    settrace can record, at about 1.45x the run's CPU (bench/footprints.py): not paid
    unless TRACTOR_TASKS_FOOTPRINTS=1 asks for it."""
    value = (os.environ if env is None else env).get(ENV_OFF, "").strip()
    if value == "0":
        return f"{ENV_OFF}=0"
    try:
        below = tuple(int(x) for x in str(minor).split(".")[:2]) < MONITORING
    except ValueError:
        below = False
    if below and value != "1":
        return (f"Python {minor} has no sys.monitoring, and settrace would cost the run "
                f"about 45% more CPU; set {ENV_OFF}=1 to record anyway")
    return None
RECORDER_DIR = Path(__file__).with_name("recorder")
_PY = re.compile(r"python[\d.]*$")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _stable(nodeid: str) -> str:
    return _ADDRESS.sub("", nodeid)


# -- recording -------------------------------------------------------------------

def package_dirs(root: Path, package: str) -> list[Path]:
    rel = package.replace(".", "/")
    return [d for d in (root / rel, root / "src" / rel) if d.is_dir()]


def recorder_env(target, pass_dir: Path, *, at: Path | None = None,
                 base: dict | None = None, minor: str | None = None) -> dict[str, str]:
    """What pytest's environment gets so that every process of the pass records (nothing
    when off_why says why not)."""
    base = os.environ if base is None else base
    if off_why(minor, base):
        return {}
    root = Path(at or target.root)
    if at is not None and Path(pass_dir) == Path(at):
        return {}      # a look at the export (import_check), not a pass
    out = Path(pass_dir) / FP_DIR
    if Path(pass_dir).is_dir():     # not for --dry-run's placeholder
        try:
            out.mkdir(exist_ok=True)
        except OSError:
            return {}
    roots = []
    for d in package_dirs(root, target.package):
        for r, dd in ((root, d), (root.resolve(), d.resolve())):
            item = f"{r}={dd}"
            if item not in roots:
                roots.append(item)
    if not roots:
        return {}
    path = os.pathsep.join(p for p in (str(RECORDER_DIR), base.get("PYTHONPATH", "")) if p)
    return {ENV_DIR: str(out), ENV_ROOTS: os.pathsep.join(roots), "PYTHONPATH": path}


def _tick(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(stat[19])
    except (OSError, ValueError, IndexError):
        return None


_HIDING = re.compile(r"^-[A-Za-z]*[IES]")


def _hiding_flags(argv: list[str]) -> str:
    """The interpreter flags that keep sitecustomize (or PYTHONPATH) out: -I, -E, -S."""
    for a in argv[1:]:
        if a == "--" or not a.startswith("-") or a in ("-c", "-m") or a.startswith("--"):
            break
        if _HIDING.match(a):
            return a
        if a.startswith(("-c", "-m")):
            break
    return ""


class ProcList:
    """Every process of the pass the supervisor saw, for footprints: its start tick,
    first and last sight, and whether it is a Python the recorder could not load into."""

    def __init__(self, env: dict):
        d = env.get(ENV_DIR)
        self.path = Path(d) / PROCS if d else None
        self.seen: dict[tuple[int, float], dict] = {}

    def update(self, procs, now: float) -> None:
        if self.path is None:
            return
        for p in procs:
            key = (p.pid, p.create_time)
            entry = self.seen.get(key)
            if entry is not None:
                entry["last"] = now
                continue
            exe = ""
            try:
                exe = p.ps.exe() if p.ps is not None else ""
            except Exception:  # noqa: BLE001 - gone, or not ours to read
                pass
            python = bool(_PY.search(os.path.basename(exe)) or
                          _PY.search(os.path.basename((p.cmdline or "").split(" ")[0])))
            entry = {"pid": p.pid, "tick": _tick(p.pid), "first": now, "last": now,
                     "cmd": p.title[:300], "python": python}
            if python:
                argv = (p.cmdline or "").split()
                env = p.environ()
                entry["flags"] = _hiding_flags(argv)
                entry["env"] = ENV_DIR in env if env else None   # None: unreadable
            self.seen[key] = entry

    def write(self) -> None:
        if self.path is None or not self.path.parent.is_dir():
            return
        try:
            from .fsutil import atomic_write
            atomic_write(self.path, json.dumps(list(self.seen.values())), replace_link=True)
        except OSError:
            pass


# -- reading a pass's files --------------------------------------------------------

@dataclass
class ProcRecord:
    head: dict
    how: str = ""
    why: str = ""
    codes: list[tuple[float, str, int, str, str]] = field(default_factory=list)
    tests: list[tuple[float, str]] = field(default_factory=list)
    exit: float | None = None
    last: float = 0.0

    title: str = ""    # what the supervisor saw it called (setproctitle)

    @property
    def label(self) -> str:
        argv = self.head.get("argv") or []
        if self.tests:
            return "pytest"
        if "--uid" in argv[:-1]:
            return f"subactor {argv[argv.index('--uid') + 1]!r}"
        if self.head.get("forked"):
            return f"a child forked from pid {self.head.get('ppid')}" + (
                f" (`{self.title[:60]}`)" if self.title else "")
        shown = " ".join(argv)
        return f"process `{shown[:60]}`"


def read_dir(fp_dir: Path) -> list[ProcRecord]:
    out = []
    from .fsutil import read_bounded
    for f in sorted(Path(fp_dir).glob("*.fp")):
        try:   # a test can reach the dir: a link, a FIFO or /dev/zero there is not read
            text = read_bounded(f, READ_CAP).decode("utf-8", "replace")
        except OSError:
            continue
        rec = None
        for line in text.splitlines():
            kind, _, rest = line.partition("\t")
            try:
                if kind == "P":
                    rec = ProcRecord(json.loads(rest))
                    rec.last = float(rec.head.get("start") or 0.0)
                elif rec is None:
                    continue
                elif kind == "N":
                    note = json.loads(rest)
                    rec.how, rec.why = note.get("how", ""), note.get("why", "")
                elif kind == "C":
                    t, file, line_no, qual, phase = rest.split("\t")
                    rec.codes.append((float(t), file, int(line_no), qual, phase))
                    rec.last = max(rec.last, float(t))
                elif kind == "T":
                    t, nodeid = rest.split("\t", 1)
                    rec.tests.append((float(t), _stable(nodeid)))
                    rec.last = max(rec.last, float(t))
                elif kind == "H":
                    rec.last = max(rec.last, float(rest.split("\t")[0]))
                elif kind == "X":
                    rec.exit = float(rest)
                    rec.last = max(rec.last, rec.exit)
            except (ValueError, TypeError):
                continue   # a line cut short by a kill
        if rec is not None:
            out.append(rec)
    return out


def attribute(fp_dir: Path) -> dict[str, Footprint]:
    """A pass's records -> {test: Footprint}."""
    procs = read_dir(fp_dir)
    try:
        from .fsutil import read_bounded
        seen = json.loads(read_bounded(Path(fp_dir) / PROCS, READ_CAP))
    except (OSError, ValueError):
        seen = []
    last_seen: dict[int, float] = {}
    for e in seen:
        if e.get("tick") is not None:
            last_seen[e["tick"]] = max(last_seen.get(e["tick"], 0.0), e.get("last", 0.0))
    titles = {e.get("tick"): e.get("cmd", "") for e in seen if e.get("python")}
    for p in procs:
        p.title = titles.get(p.head.get("tick"), "")
    windows: list[tuple[str, float, float]] = []
    mains = [p for p in procs if p.tests]
    # the last test ran until the pass's last sign of life
    end = max([p.last for p in procs] + [e.get("last", 0.0) for e in seen] + [0.0])
    for p in mains:
        for i, (t, nodeid) in enumerate(p.tests):
            stop = p.tests[i + 1][0] if i + 1 < len(p.tests) else end
            windows.append((nodeid, t, stop))
    tests = list(dict.fromkeys(n for n, _, _ in windows))
    prints = {n: Footprint() for n in tests}
    if not tests:
        return prints
    for p in mains:
        order = [n for _, n in p.tests]
        starts = [t for t, _ in p.tests]
        later: dict[int, list[str]] = {}    # i -> this test and the later ones of its module
        for t, file, line, qual, phase in p.codes:
            i = bisect.bisect_right(starts, t) - 1
            if i < 0:
                owners = tests                        # collection, imports
            elif phase in ("setup:session", "setup:package"):
                owners = order[i:]                    # a wide fixture: every later test
            elif phase.startswith("setup") and phase != "setup:function":
                if i not in later:                    # module, class, or no fixture's
                    mod = order[i].split("::")[0]
                    later[i] = [n for n in order[i:] if n.split("::")[0] == mod]
                owners = later[i]
            else:
                owners = [order[i]]
            for n in owners:
                prints[n].add(file, qual, line, "pytest")
        if p.how == "blind":
            for n in tests:
                prints[n].blind.append(f"pytest records nothing: {p.why}")
    for p in procs:
        if p.tests:
            continue
        start = float(p.head.get("start") or 0.0)
        end = max(p.last, last_seen.get(p.head.get("tick"), 0.0))
        owners = [n for n, t0, t1 in windows if t0 <= end and t1 >= start]
        env_test = _stable(str(p.head.get("test", "")).rsplit(" (", 1)[0])
        if env_test in prints and not p.head.get("forked") and env_test not in owners:
            owners.append(env_test)
        if not owners:
            owners = tests     # lived only before the first test
        if p.how == "blind":
            for n in owners:
                prints[n].blind.append(f"{p.label} (pid {p.head.get('pid')}) records "
                                       f"nothing: {p.why}")
            continue
        for t, file, line, qual, phase in p.codes:
            for n in owners:
                prints[n].add(file, qual, line, p.label)
    ticks = {p.head.get("tick") for p in procs}
    for e in seen:
        if not e.get("python"):
            continue
        why = (f"started with {e['flags']}" if e.get("flags") else
               "without the run's environment" if e.get("env") is False else
               "no record of it" if e.get("tick") not in ticks else "")
        if not why:
            continue
        owners = [n for n, t0, t1 in windows if t0 <= e["last"] and t1 >= e["first"]]
        for n in owners or tests:
            prints[n].blind.append(f"pid {e['pid']} `{e['cmd'][:80]}` ({why}) could not "
                                   "be recorded")
    return prints


def of_run(run_dir: Path) -> dict[str, Footprint]:
    """Every pass of a run at its own tree (not the verdict's baseline) -> per test."""
    out: dict[str, Footprint] = {}
    for d in sorted(Path(run_dir).rglob(FP_DIR)):
        if not d.is_dir() or "baseline" in d.relative_to(run_dir).parts:
            continue
        for nodeid, fp in attribute(d).items():
            have = out.setdefault(nodeid, Footprint())
            for (f, q), (ln, where) in fp.funcs.items():
                for w in where:
                    have.add(f, q, ln, w)
            have.blind += [b for b in fp.blind if b not in have.blind]
    return out


# -- the diff, mapped to functions -------------------------------------------------

@dataclass(frozen=True)
class Unit:
    """A changed function or class (qual set); names bound differently at import
    (names set: the functions that use them are what can see it); or any other change
    outside a function (neither: the file's rule)."""
    file: str
    qual: str | None
    why: str = ""
    names: tuple[str, ...] = ()

    def key(self) -> tuple[str, str, str]:
        return (self.file, self.qual or "", self.why)


def _git(root: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and out.returncode != 0:
        from .errors import TaskError
        raise TaskError(f"git {' '.join(args)} failed in {root}: "
                        f"{(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return out.stdout if out.returncode == 0 else ""


@dataclass
class _Scope:
    qual: str
    start: int       # the first decorator or the def line
    body: int        # the first line of its body
    end: int
    parent: str | None   # the enclosing function's qualname, None: module or class body


def scopes(source: str) -> list[_Scope]:
    """Every function of a module with its qualname as Python spells it."""
    tree = ast.parse(source)
    out: list[_Scope] = []

    def walk(node, prefix: str, func: str | None):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = prefix + child.name
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out.append(_Scope(qual, start, child.body[0].lineno, child.end_lineno, func))
                walk(child, qual + ".<locals>.", qual)
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".", func)
            else:
                walk(child, prefix, func)

    walk(tree, "", None)
    return out


def _units_of_lines(file: str, lines: set[int], found: list[_Scope], why: str) -> set[Unit]:
    units = set()
    for ln in lines:
        inner = None
        for s in found:
            if s.start <= ln <= s.end and (inner is None or s.start >= inner.start):
                inner = s
        if inner is None:
            units.add(Unit(file, None, why or "a change outside any function"))
            continue
        units.add(Unit(file, inner.qual))
        if ln < inner.body:   # a decorator or the signature: run by the enclosing scope
            units.add(Unit(file, inner.parent) if inner.parent else
                      Unit(file, None, "a decorator or signature, run at import"))
    return units


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _hunk_lines(diff: str) -> tuple[set[int], set[int]]:
    old, new = set(), set()
    for line in diff.splitlines():
        m = _HUNK.match(line)
        if not m:
            continue
        a, b = int(m[1]), int(m[2]) if m[2] is not None else 1
        c, d = int(m[3]), int(m[4]) if m[4] is not None else 1
        old |= set(range(a, a + b))
        new |= set(range(c, c + d))
        if b == 0:      # a pure insertion after old line a: what encloses it there
            old.add(max(a, 1))
    return old, new


def _ignored(root: Path, path: str) -> bool:
    from .gitref import _is_shim, _ours
    return _ours(path) or (path in ("noxfile.py", "tasks.py") and _is_shim(root / path))


def diff_units(root: Path, rev: str, package: str, to: str | None = None) -> list[Unit]:
    """What changed from `rev` to the work tree (commits, index, edits, untracked), or
    to the commit `to` (a replay of history: bench/impact.py)."""
    pkg = package.replace(".", "/") + "/"
    status = _git(root, "diff", "--no-renames", "--name-status", "--relative", rev,
                  *([to] if to else []))
    changed: dict[str, str] = {}
    for line in status.splitlines():
        st, _, path = line.partition("\t")
        if path:
            changed[path] = st[:1]
    for path in ([] if to else
                 _git(root, "ls-files", "--others", "--exclude-standard").splitlines()):
        if path.strip():
            changed.setdefault(path.strip(), "A")
    units: set[Unit] = set()
    for path, st in sorted(changed.items()):
        if _ignored(root, path):
            continue
        in_pkg = path.startswith(pkg) or path.startswith("src/" + pkg)
        if st == "A" and in_pkg and path.endswith(".py"):
            units |= _py_units(root, rev, path, to)   # a new module: all of it is new
        elif st == "A":
            units.add(Unit(path, None, "a new file"))
        elif st == "D":
            units.add(Unit(path, None, "a deleted file"))
        elif not path.endswith(".py") or not in_pkg:
            units.add(Unit(path, None, "a change to a non-Python file"
                           if not path.endswith(".py") else "a change"))
        else:
            units |= _py_units(root, rev, path, to)
    return sorted(units, key=Unit.key)


def _py_units(root: Path, rev: str, path: str, to: str | None = None) -> set[Unit]:
    """A package module's change, read from its two syntax trees (codechange): the
    functions whose own code changed, the classes whose body or header did, the names
    bound differently at import, the module-level statements with effects. A comment,
    a docstring or a reformat is no unit at all."""
    from .codechange import module_change
    try:
        old_src = _git(root, "show", f"{rev}:{path}", check=False)   # not UTF-8: below
        new_src = _git(root, "show", f"{to}:{path}") if to else (root / path).read_text()
        ch = module_change(old_src, new_src)
    except (OSError, SyntaxError, ValueError, RecursionError):
        return {Unit(path, None, "a change (the file does not parse)")}
    units = {Unit(path, q) for q in ch.funcs | ch.classes}
    if ch.names:
        shown = ", ".join(sorted(ch.names)[:4]) + (" ..." if len(ch.names) > 4 else "")
        units.add(Unit(path, None, f"names bound differently at import: {shown}",
                       tuple(sorted(ch.names))))
    for effect in ch.effects:
        units.add(Unit(path, None, effect))
    return units


def import_time_changes(target, units: list[Unit]) -> list[str]:
    """The changed package modules still there (a header's defaults and decorators, a
    binding, an effect all run at import): importing them is the check that they still
    import."""
    pkg = target.package.replace(".", "/") + "/"
    return sorted({u.file for u in units if u.file.endswith(".py") and (
        u.file.startswith(pkg) or u.file.startswith("src/" + pkg))
        and (target.root / u.file).is_file()})


# -- selection ---------------------------------------------------------------------

def _sources(target, to: str | None) -> dict[str, str]:
    """The package's and the tests' Python files, as the work tree has them (or the
    commit `to`)."""
    root = target.root
    tops = [d.relative_to(root).as_posix() for d in package_dirs(root, target.package)]
    tops.append(target.tests_dir.rstrip("/"))
    out: dict[str, str] = {}
    if to is None:
        for top in tops:
            base = root / top
            for path in base.rglob("*.py") if base.is_dir() else ():
                rel = path.relative_to(root).as_posix()
                if any(part.startswith(".") or part == "__pycache__" for part in
                       Path(rel).parts) or rel.startswith(tuple(_venv_prefixes(root))):
                    continue
                try:
                    out[rel] = path.read_text(errors="replace")
                except OSError:
                    continue
        return out
    listing = _git(root, "ls-tree", "-r", "--name-only", to, "--",
                   *[t or "." for t in tops], check=False)
    paths = [p for p in listing.splitlines() if p.endswith(".py")]
    if not paths:
        return out
    batch = subprocess.run(["git", "cat-file", "--batch"], cwd=root, capture_output=True,
                           input="".join(f"{to}:{p}\n" for p in paths).encode())
    data, pos = batch.stdout, 0
    for p in paths:
        nl = data.index(b"\n", pos)
        head = data[pos:nl].split()
        pos = nl + 1
        if len(head) < 3 or head[1] != b"blob":
            continue
        size = int(head[2])
        out[p] = data[pos:pos + size].decode(errors="replace")
        pos += size + 1
    return out


def _venv_prefixes(root: Path) -> list[str]:
    from .interpreters import minor_of_venv
    try:
        return [d.name + "/" for d in root.iterdir() if minor_of_venv(d.name)]
    except OSError:
        return []


def _uses_in(python: Path, sources: dict[str, str]) -> dict:
    """codechange.uses of files this Python cannot parse, run in the target's own
    interpreter (a newer one: tractor's tests/devx/conftest.py has a 3.12 `type`
    statement); {} when it cannot (the files then count as using every name)."""
    import json
    from . import codechange
    from .codechange import uses_from_json
    if not Path(python).exists():
        return {}
    try:
        out = subprocess.run([str(python), "-I", codechange.__file__],
                             input=json.dumps(sources), capture_output=True, text=True,
                             timeout=120)
        doc = json.loads(out.stdout) if out.returncode == 0 else {}
        return {p: uses_from_json(d) for p, d in doc.items() if d is not None}
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return {}


def _reach(target, units: list[Unit], sources: dict[str, str], python: Path | None = None):
    """Where the names the units bind differently reach (codechange.reach); `python`,
    the target's interpreter, reads what this one cannot parse."""
    from .codechange import reach, uses
    names = {n for u in units for n in u.names}
    if not names:
        return None
    files, unread = {}, []
    for path, src in sources.items():
        try:
            files[path] = uses(src)
        except (SyntaxError, ValueError, RecursionError):
            unread.append(path)   # (newer syntax than this Python's): it may use any
    if unread and python is not None:
        read = _uses_in(python, {p: sources[p] for p in unread})
        files.update(read)
        unread = [p for p in unread if p not in read]
    r = reach(names, files)
    r.effects += [(path, "any name (it does not parse here)") for path in unread]
    # a def whose annotations use one: a test that introspects it (get_type_hints, an
    # @context endpoint of a test module) names the def, and runs in pytest
    top = target.tests_dir.rstrip("/") + "/"
    named = {q.rsplit(".", 1)[-1]: n for p, q, n in r.annotated if not p.startswith(top)}
    r.funcs += [(p, q, n) for p, q, n in r.annotated if p.startswith(top)]
    for path, u in files.items() if named else ():
        if path.startswith(top):
            r.funcs += [(path, q, named[min(used & named.keys())])
                        for q, used in u.funcs.items() if used & named.keys()]
    return r

@dataclass
class Selection:
    reasons: dict[str, str] = field(default_factory=dict)   # nodeid -> why
    words: list[str] = field(default_factory=list)          # from the change map
    whole: str = ""                                          # why the whole suite runs
    units: list[Unit] = field(default_factory=list)
    rev: str = ""
    notes: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)          # every footprinted test
    imports: list[str] = field(default_factory=list)   # unchanged files that use a name

    def select(self, nodeid: str, why: str) -> None:
        self.reasons.setdefault(nodeid, why)


def _where(where: list[str]) -> str:
    return " and ".join(f"in {w}" for w in where)


def select(target, history, base: str | None, to: str | None = None,
           prints: list | None = None, python: Path | None = None) -> Selection | None:
    """The tests the change from `base` (its merge-base with HEAD; else HEAD) to the work
    tree (or to the commit `to`) can break, from the latest footprints per test and
    cell. None: no footprints."""
    from .selection import map_changes
    root = target.root
    if prints is None:
        if not history.footprint_commits():
            return None
        rev = (_git(root, "merge-base", base, "HEAD").strip() if base else
               _git(root, "rev-parse", "HEAD").strip())
        # per test, the newest footprint at an ancestor of the base (or the base):
        # one a run on another branch recorded says less about this branch's code
        ancestors = {c for c in history.footprint_commits() if c == rev or subprocess.run(
            ["git", "merge-base", "--is-ancestor", c, rev], cwd=root,
            capture_output=True).returncode == 0}
        prints = history.latest_footprints(prefer=ancestors)
    if not prints:
        return None
    rev = (_git(root, "merge-base", base, to or "HEAD").strip() if base else
           _git(root, "rev-parse", "HEAD").strip())
    sel = Selection(units=diff_units(root, rev, target.package, to), rev=rev)
    sel.known = sorted({n for n, _, _, _ in prints})
    if not sel.units:
        return sel
    since: dict[str, list[Unit] | None] = {}

    def changed_since(commit: str | None) -> list[Unit] | None:
        if commit not in since:
            ok = bool(commit) and subprocess.run(
                ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root,
                capture_output=True).returncode == 0
            since[commit] = diff_units(root, commit, target.package, to) if ok else None
        return since[commit]

    touched: set[str] = set()
    cache: dict[str, dict[str, str]] = {}

    def sources() -> dict[str, str]:
        if "all" not in cache:
            cache["all"] = _sources(target, to)
        return cache["all"]

    names_now = _Names(target, sel.units, sources, python)
    sel.notes += names_now.notes
    sel.imports = sorted(names_now.imports)
    names_then: dict[str, _Names] = {}

    for nodeid, cell, commit, fp in sorted(prints, key=lambda r: (r[0], r[1])):
        touched |= fp.files
        if fp.blind:
            sel.select(nodeid, f"always: {fp.blind[0]}")
        for u in sel.units:
            if u.qual is not None:
                hit = fp.executed(u.file, u.qual)
                if hit:
                    sel.select(nodeid, f"executed {u.file}:{hit[0]} {_where(hit[1])}")
            elif not u.names and u.file in fp.files:
                sel.select(nodeid, f"ran code of {u.file} ({u.why})")
        why = names_now.why(nodeid, fp)
        if why:
            sel.select(nodeid, why)
        if commit == rev:
            continue
        stale = changed_since(commit)
        if stale is None:
            sel.select(nodeid, f"its footprint is from commit {commit[:10]}, not in this "
                               "checkout" if commit else "its footprint has no commit")
            continue
        test_file = nodeid.split("::")[0]
        if commit not in names_then:
            names_then[commit] = _Names(target, stale, sources, python)
        why = names_then[commit].why(nodeid, fp)
        if why:
            sel.select(nodeid, f"its footprint (at {commit[:10]}) predates a change: {why}")
        for u in stale:
            if u.qual is not None and fp.executed(u.file, u.qual):
                sel.select(nodeid, f"its footprint (at {commit[:10]}) executed "
                                   f"{u.file}:{u.qual}, changed since")
            elif u.qual is None and not u.names and (u.file in fp.files or u.file == test_file or (
                    Path(u.file).name == "conftest.py" and
                    test_file.startswith(str(Path(u.file).parent) + "/"))):
                sel.select(nodeid, f"its footprint (at {commit[:10]}) predates a change "
                                   f"to {u.file}")
    for u in sel.units:
        if u.qual is not None or u.names or u.file in touched:
            continue
        inert = _inert(target, u.file, sources)
        if inert:
            sel.notes.append(f"{u.file} ({u.why}): {inert}")
            continue
        mapped = map_changes(target, [u.file])
        if mapped.mapped:
            sel.words += [w for w in mapped.tests if w not in sel.words]
            sel.notes.append(f"{u.file} ({u.why}): no footprint touched it; the change map "
                             f"gives {' '.join(mapped.tests)}")
            continue
        named = _mentioned_by(target, u.file, sources)
        namers = _named_in_package(target, u.file, sources)
        for nodeid, _, _, fp in prints:
            for f, q, word in namers:
                hit = fp.executed(f, q)
                if hit:
                    sel.select(nodeid, f"executed {f}:{q} {_where(hit[1])}, which names "
                                       f"{word!r} ({u.file} changed)")
                    break
        if named:
            sel.words += [w for w in named if w not in sel.words]
            sel.notes.append(f"{u.file} ({u.why}): outside the package; the test file(s) "
                             f"that name it run whole: {' '.join(named)}")
        if namers:
            shown_ = ", ".join(f"{f}:{q}" for f, q, _ in namers[:3])
            sel.notes.append(f"{u.file} ({u.why}): outside the package; named by "
                             f"{shown_}: the tests that executed it")
        if not (named or namers) and not sel.whole:
            sel.whole = (f"{u.file} ({u.why}): no footprint touched it and the change map "
                         "has no entry for it")
    _unrecorded(target, history, sel)
    if not (sel.reasons or sel.words or sel.whole):
        sel.notes.append("no recorded test executed the changed code")
    return sel


_DOCS = (".md", ".rst", ".txt", ".png", ".svg", ".jpg", ".gif")


def _outside(target, path: str) -> bool:
    pkg = target.package.replace(".", "/") + "/"
    return not (path.startswith(pkg) or path.startswith("src/" + pkg)
                or path.startswith(target.tests_dir.rstrip("/") + "/"))


def _inert(target, path: str, sources) -> str:
    """Why a file outside the package and the tests changes no test's outcome
    (documentation, the CI's own configuration) when no test names it; "" otherwise."""
    if not _outside(target, path):
        return ""
    doc = path.lower().endswith(_DOCS) or Path(path).name.upper().startswith(
        ("LICENSE", "NEWS", "CHANGELOG", "AUTHORS"))
    parts = [p.lower() for p in Path(path).parts]
    if parts[0] != "docs" and any(p.startswith(("requirements", "constraints"))
                                  for p in parts):
        doc = False   # requirements-test.txt: the pins a venv is made from, not prose
    if not (doc or path.startswith(".github/")):
        return ""
    if _mentioned_by(target, path, sources):
        return ""
    return ("documentation" if doc else "the CI's configuration") + \
        ", named by no test: selects no test"


def _mentioned_by(target, path: str, sources) -> list[str]:
    """The test files that name `path`: a string with its file name in it, or (outside
    the tests dir) one whose path parts hold its top directory; a .py file's module
    imported by name."""
    from .codechange import strings_and_imports
    name, stem = Path(path).name, Path(path).stem
    top = path.split("/")[0] if "/" in path and _outside(target, path) else None
    tests_top = target.tests_dir.rstrip("/") + "/"
    found = []
    for f, src in sorted(sources().items()):
        if not f.startswith(tests_top) or not Path(f).name.startswith("test_"):
            continue
        if name not in src and (top is None or top not in src) and stem not in src:
            continue
        try:
            strings, imported = strings_and_imports(src)
        except (SyntaxError, ValueError, RecursionError):
            found.append(f)
            continue
        if any(name in s for s in strings) or (top is not None and any(
                top in s.replace("\\", "/").split("/") for s in strings)) or (
                path.endswith(".py") and stem in imported):
            found.append(f)
    return [under_tests_word(target, f) for f in found]


def _named_in_package(target, path: str, sources) -> list[tuple[str, str, str]]:
    """The package's functions whose own code holds a string naming `path` (a file
    outside the package and the tests): its file name, or its top directory as a path
    part (tractor's `_testing.examples_dir()` returns `repodir() / 'examples'`): (file,
    qualname, the string's word)."""
    from .codechange import strings_by_function
    if not _outside(target, path):
        return []
    name = Path(path).name
    top = path.split("/")[0] if "/" in path else None
    pkg = target.package.replace(".", "/") + "/"
    found = []
    for f, src in sorted(sources().items()):
        if not (f.startswith(pkg) or f.startswith("src/" + pkg)):
            continue
        if name not in src and (top is None or top not in src):
            continue
        try:
            by_func = strings_by_function(src)
        except (SyntaxError, ValueError, RecursionError):
            continue
        for qual, strings in sorted(by_func.items()):
            for text in strings:
                parts = text.replace("\\", "/").split("/")
                if name in text or (top is not None and top in parts):
                    found.append((f, qual, name if name in text else top))
                    break
    return found


def _unparametrized(nodeid: str) -> str:
    """A node id without its parameter ids: `f.py::test_x[a-b]` -> `f.py::test_x`."""
    head, sep, last = nodeid.rpartition("::")
    return f"{head}{sep}{last.split('[', 1)[0]}" if sep else nodeid


def _runnable(nodeid: str) -> str:
    """What runs a recorded test: its id, or (a parameter that is an object's repr, whose
    address the history masked: `[f=<function g>]`) its test function."""
    head, sep, last = nodeid.rpartition("::")
    params = last.partition("[")[2]
    return _unparametrized(nodeid) if "<" in params and ">" in params else nodeid


def under_tests_word(target, f: str) -> str:
    from .target import under_tests
    return under_tests(f, target.tests_dir) or f


class _Names:
    """Where the names some units bind differently reach (codechange.reach), and why a
    footprint sees them: it executed a function that uses one, its test file uses one
    (in a function or at its top), a conftest.py above it or a helper module its file
    imports uses one (pytest runs them; no footprint records them), or it ran code of
    a file whose module-level effect uses one. A file that does not parse here (newer
    syntax than this Python's) counts as using every name."""

    def __init__(self, target, units: list[Unit], sources, python: Path | None = None):
        self.tests_top = target.tests_dir.rstrip("/") + "/"
        self.by_file: dict[str, list[tuple[str, str, str | None]]] = {}
        self.effects: set[str] = set()
        self.notes: list[str] = []
        self.sources = sources
        self._importers: dict[str, set[str]] = {}
        self.imports: list[str] = []   # package files whose import-time code uses one
        reached = _reach(target, units, sources(), python) if any(u.names for u in units) \
            else None
        if reached is None:
            return
        origin = {n: u.file for u in units for n in u.names}
        for f, q, name in reached.funcs:
            self.by_file.setdefault(f, []).append((q, name, origin.get(name)))
        for f, name in reached.effects + reached.binds:
            if f.startswith(self.tests_top):   # a test module's or conftest's top: pytest
                self.by_file.setdefault(f, []).append(("<module>", name, origin.get(name)))
            elif f.endswith(".py") and f not in self.imports:
                self.imports.append(f)   # `from .a import OLD`: does it still import?
        for f, name in reached.effects:   # a module body that uses one: the file's rule
            if f.startswith(self.tests_top):
                continue
            self.effects.add(f)
            self.notes.append(f"{f}: a module-level statement with effects uses {name}, "
                              "bound differently: every test that ran code of it")

    def why(self, nodeid: str, fp: Footprint) -> str | None:
        if not (self.by_file or self.effects):
            return None
        test_file = nodeid.split("::")[0]
        for q, name, where in self.by_file.get(test_file, ())[:1]:
            return (f"its file uses {name} ({test_file}:{q}), bound differently at "
                    f"import{f' in {where}' if where else ''}")
        for f, found in sorted(self.by_file.items()):
            if f.startswith(self.tests_top) and self._serves(f, test_file):
                q, name, where = found[0]
                return (f"{f}:{q} (run by pytest, recorded by no footprint) uses {name}, "
                        f"bound differently at import{f' in {where}' if where else ''}")
        for f, found in self.by_file.items():
            if f.startswith(self.tests_top):
                continue
            for q, name, where in found:
                hit = fp.executed(f, q)
                if hit:
                    return (f"executed {f}:{q} {_where(hit[1])}, which uses {name} (bound "
                            f"differently at import{f' in {where}' if where else ''})")
        for f in sorted(self.effects):
            if f in fp.files:
                return f"ran code of {f}, whose module body uses a name bound differently"
        return None

    def _serves(self, helper: str, test_file: str) -> bool:
        """A file of the tests dir that is not a test module runs in a test's pytest:
        a conftest.py for the tests under its directory, another module for the test
        files that import it by name."""
        name = Path(helper).name
        if name.startswith("test_") or name.endswith("_test.py") or helper == test_file:
            return False
        if name == "conftest.py":
            parent = Path(helper).parent.as_posix()
            return parent in ("", ".") or test_file.startswith(parent + "/")
        if helper not in self._importers:
            from .codechange import strings_and_imports
            stem, found = Path(helper).stem, set()
            for f, src in self.sources().items():
                if f.startswith(self.tests_top) and stem in src:
                    try:
                        if stem in strings_and_imports(src)[1]:
                            found.add(f)
                    except (SyntaxError, ValueError, RecursionError):
                        found.add(f)
            self._importers[helper] = found
        return test_file in self._importers[helper]


def _covers(target, word: str, test_file: str) -> bool:
    from .errors import TaskError
    from .selection import resolve_word
    try:
        paths = resolve_word(target, word)
    except TaskError:
        return False
    return any(test_file == p or (p.endswith("/") and test_file.startswith(p)) for p in paths)


def _unrecorded(target, history, sel: Selection) -> None:
    """Tests the history ran but no footprint covers: the change map decides for them."""
    from .selection import map_changes
    bare = sorted(set(history.durations()) - set(sel.known))
    if not bare or not sel.units:
        return
    mapped = map_changes(target, sorted({u.file for u in sel.units}))
    for nodeid in bare:
        test_file = nodeid.split("::")[0]
        if mapped.fell_back:
            sel.select(nodeid, f"no footprint yet, and the change map has no entry for "
                               f"{mapped.fell_back[0]}")
            continue
        for f, words in mapped.mapped.items():
            if any(_covers(target, w, test_file) for w in words):
                sel.select(nodeid, f"no footprint yet; the change map maps {f} to it")
                break


def unrecorded_files(target, known: list[str]) -> list[str]:
    """Test files under the tests dir none of whose tests has a footprint (never run in
    a recorded run: another CI shard's, a file added since): what they execute is
    unknown, so `affected` runs them whole rather than miss what they would catch."""
    from .interpreters import minor_of_venv
    have = {n.split("::")[0] for n in known}
    top = target.tests_path
    found = set()
    for pattern in ("test_*.py", "*_test.py"):
        for path in top.rglob(pattern) if top.is_dir() else ():
            rel = path.relative_to(target.root).as_posix()
            if path.is_file() and rel not in have and not any(
                    part.startswith(".") or minor_of_venv(part) for part in path.parts):
                found.add(rel)
    return sorted(found)


def share(history, selected: list[str], known: list[str]) -> tuple[float, float]:
    """(selected seconds, all footprinted tests' seconds), from the recorded durations."""
    d = history.durations(known)
    return sum(d.get(n, 0.0) for n in selected), sum(d.values())


NO_FOOTPRINTS = object()


def _module_of(f: str) -> str | None:
    parts = list(Path(f).with_suffix("").parts)
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else None


_IMPORT = """import importlib, sys
n = int(sys.argv[1])
for m in sys.argv[2:n + 2]:
    importlib.import_module(m)
for m in sys.argv[n + 2:]:
    try:
        importlib.import_module(m)
    except Exception as err:
        print(m + "\\t" + (type(err).__name__ + ": " + str(err)).replace("\\n", " "))
"""


def import_check(target, python: Path | None, files: list[str], also: list[str] = (),
                 names: set[str] = frozenset()) -> str | None:
    """Import the package and the changed modules in the target's venv: None when they
    import, else the error's last line (an import error fails every test that imports
    the module, whatever its footprint). `also`: unchanged modules whose import-time
    code uses one of `names` (bound differently: `from .a import OLD`); one of them
    counts only when its error names one (another may not import here at all)."""
    mods = [target.package] + [m for m in map(_module_of, files) if m]
    more = [m for m in map(_module_of, also) if m and m not in mods]
    try:
        out = subprocess.run([str(python), "-c", _IMPORT, str(len(mods)), *mods, *more],
                             cwd=target.root, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "the import did not finish in 120s"
    except OSError as err:
        return f"could not start {python} ({err.strerror or err})"
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else f"exit status {out.returncode}"
    return _names_an_import_error(out.stdout, names)


def _names_an_import_error(stdout: str, names: set[str]) -> str | None:
    """Of the `also` modules' errors (module TAB error, a line each), the first that
    names a changed name, as "module: error"."""
    for line in stdout.splitlines():
        mod, _, err = line.partition("\t")
        if err and set(re.findall(r"[A-Za-z_]\w*", err)) & set(names):
            return f"{mod}: {err}"
    return None


def affected_words(target, base: str | None, list_: bool, out=print,
                   python: Path | None = None):
    """`invoke affected` from footprints: what it says, then the words to run (None:
    nothing to run); NO_FOOTPRINTS when the history has none (the change map decides).
    `python`: the target venv's interpreter, to check that the modules whose code at
    import changed still import."""
    from .history import History
    from .rundirs import State
    if not State(target).history.is_file():
        return NO_FOOTPRINTS      # nothing recorded yet (and nothing written by asking)
    history = History(State(target).history, warn=out)
    sel = select(target, history, base, python=python)
    if sel is None:
        return NO_FOOTPRINTS
    since = f"{base} (merge-base {sel.rev[:10]})" if base else f"HEAD ({sel.rev[:10]})"
    if not sel.units:
        from .selection import changed_files
        files = changed_files(target.root, base)
        out(f"changed since {since}: {', '.join(files[:3])}"
            f"{f' (+{len(files) - 3})' if len(files) > 3 else ''}: only comments, docstrings "
            "or layout (no code runs differently); nothing to run" if files else
            f"no changed files since {since}; nothing to run")
        return None
    out(f"changed since {since}:")
    for u in sel.units:
        out(f"  {u.file}:{u.qual}" if u.qual else f"  {u.file} ({u.why})")
    for line in sel.notes:
        out(line)
    at_import = import_time_changes(target, sel.units) if not sel.whole else []
    if at_import and python is not None and python.exists():
        # and the modules whose import-time code uses a name bound differently
        names = {n for u in sel.units for n in u.names}
        err = import_check(target, python, at_import, sel.imports, names)
        if err:
            sel.whole = (f"{', '.join(at_import[:3])} changed, and importing it (or a "
                         f"module that uses a name it binds) fails ({err}): every test "
                         "that imports it fails")
    elif at_import:
        out(f"note: {at_import[0]} changed; with no venv yet it was not imported here (an "
            "import error shows in every selected test)")
    if sel.whole:
        out(f"the whole suite runs: {sel.whole}")
        words = ["all"]
    else:
        gone = sorted(n for n in sel.reasons if not (target.root / n.split("::")[0]).is_file())
        for n in gone:   # its file is no more: nothing to run
            sel.reasons.pop(n)
        if gone:
            out(f"note: {len(gone)} selected test(s) whose file is gone are left out "
                f"(e.g. {gone[0]})")
        blind = [f for f in unrecorded_files(target, sel.known)
                 if not any(_covers(target, w, f) for w in sel.words)]
        if blind:
            out(f"{len(blind)} test file(s) with no footprint run whole (none of their tests "
                f"ran in a recorded run; e.g. {blind[0]}): what they execute is unknown")
        # a test file the change map selects whole runs whole: its ids are not named
        # a recorded id as it is, but one whose parameter is an object's repr (its
        # memory address masked in the history: pytest knows it with the address) as
        # its test function, every parameter id
        ids = list(dict.fromkeys(_runnable(n) for n in sorted(sel.reasons) if not any(
            _covers(target, w, n.split("::")[0]) for w in sel.words)
            and n.split("::")[0] not in blind))
        words = ids + [w for w in [*sel.words, *blind] if w not in ids]
    out(f"selected by footprints: {len(sel.reasons)} of {len(sel.known)} recorded test(s)")
    for nodeid in sorted(sel.reasons):
        out(f"  {nodeid}: {sel.reasons[nodeid]}")
    if list_:
        if not sel.whole:
            picked, total = share(history, sorted(sel.reasons), sel.known)
            if total:
                out(f"share of the suite's recorded time: {100 * picked / total:.1f}% "
                    f"({picked:.1f} s of {total:.1f} s)" +
                    (" plus the change map's tests" if sel.words else ""))
        from .selection import resolve_words
        for path in resolve_words(target, words) if words else ():
            out(path)
        return None
    if not words:
        out("nothing to run")
        return None
    return words


def executed_changes(target, nodeid: str, commit: str | None,
                     run_dir: Path | None = None) -> list[tuple[str, str, list[str]]]:
    """The functions changed since `commit` that the test executed, with where:
    [(file, qualname, [where])], from this run's own footprint (else the history's
    latest). [] when there is none or git cannot tell."""
    from .rundirs import State
    if not commit:
        return []
    try:
        key = _stable(nodeid)
        fp = of_run(run_dir).get(key) if run_dir is not None else None
        if fp is None and State(target).history.exists():
            from .history import History
            found = [f for n, _, _, f in History(State(target).history).latest_footprints()
                     if n == key]
            fp = found[0] if found else None
        if fp is None:
            return []
        out = []
        for u in diff_units(target.root, commit, target.package):
            hit = fp.executed(u.file, u.qual) if u.qual else None
            if hit:
                out.append((u.file, hit[0], hit[1]))
        return out
    except Exception:  # noqa: BLE001 - a cause is a hint: never cost the verdict
        return []


def unchanged_since(target, history, nodeid: str, rows: list) -> list:
    """Of a test's past rows (history.Past: run_id, commit), those whose footprint's code
    is unchanged since, to the work tree: a run whose test executed code changed since
    says nothing about the test today. A row without a footprint is kept (today's rules)."""
    if history is None or not rows:
        return rows
    try:
        prints = history.footprints_of(_stable(nodeid), [r.run_id for r in rows])
        if not prints:
            return rows
        changed: dict[str, list[Unit] | None] = {}
        kept = []
        for r in rows:
            fp = prints.get(r.run_id)
            if fp is None:
                kept.append(r)
                continue
            if r.commit not in changed:
                ok = bool(r.commit) and subprocess.run(
                    ["git", "cat-file", "-e", f"{r.commit}^{{commit}}"], cwd=target.root,
                    capture_output=True).returncode == 0
                changed[r.commit] = diff_units(target.root, r.commit, target.package) \
                    if ok else None
            units = changed[r.commit]
            if units is not None and not any(
                    (fp.executed(u.file, u.qual) if u.qual else u.file in fp.files)
                    for u in units):
                kept.append(r)
        return kept
    except Exception:  # noqa: BLE001 - never cost the verdict its answer
        return rows
