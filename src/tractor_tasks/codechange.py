"""What a change to a Python module does, read from its two versions' syntax trees
rather than its lines: the functions whose own code changed (a comment, a docstring
or a reformat is no change), the names a module- or class-level statement binds
differently, and the module-level statements with effects at import. And, for the
names, who uses them: the functions and module-level statements of a set of files
that mention a name (footprints.select maps those to the tests that executed them).

A function's own code is its body without its docstring and with each nested
function reduced to its header (the nested body is that function's own code; its
header, decorators and defaults, run when the enclosing code runs). Module and class
bodies are read as statements, in order (a statement moved is changed: a field's
order, a name used above its binding; a `def` only moved is not, unless a statement
of its scope uses or rebinds its name or binds what its header uses): a `def` or
`class` header, a binding (an assignment, an import, or an `if`/`try`/`with` made
only of those), or an effect (anything else: a call at import, a `del`, a loop, a
`from __future__` import, which compiles the whole module differently). A new or
deleted special method (`__eq__`, `__post_init__`) changes its class's name too: it
runs where no code names it. A name is followed through a binding part by part (each
name of `from m import a, b` on its own). Annotations inside functions are not uses (they
are not evaluated); at module and class level they are (msgspec and dataclasses read
them); a def's own (parameters, return) are reported apart (Reach.annotated): code
that introspects the def reads them, its calls do not.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_TYPE_ALIAS = (ast.TypeAlias,) if hasattr(ast, "TypeAlias") else ()   # `type X = ...`, 3.12+
_BINDS = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Import, ast.ImportFrom, ast.Pass,
          *_DEFS, ast.ClassDef, *_TYPE_ALIAS)
_COMPOUND = (ast.If, ast.Try, ast.With, ast.AsyncWith) + (
    (ast.TryStar,) if hasattr(ast, "TryStar") else ())


@dataclass
class ModuleChange:
    """One module's change, old version to new."""
    funcs: set[str] = field(default_factory=set)     # qualnames whose own code changed
    gone: set[str] = field(default_factory=set)      # qualnames only the old version has
    names: set[str] = field(default_factory=set)     # names bound differently at import
    classes: set[str] = field(default_factory=set)   # classes whose body or header changed
    effects: list[str] = field(default_factory=list)  # module-level effects that changed

    @property
    def import_time(self) -> bool:
        """Code that runs at import changed (a header, a binding, an effect)."""
        return bool(self.names or self.classes or self.effects)


@dataclass
class _Entry:
    kind: str            # def | class | bind | effect
    scope: str           # the enclosing class's qualname, "" at module level
    qual: str            # def/class: its qualname
    names: set[str]      # what it binds
    refs: set[str]       # the identifiers it mentions
    dump: str
    line: int
    header: set[str] = field(default_factory=set)   # a def's: annotations too (evaluated)
    links: list = field(default_factory=list)   # a binding's (uses, binds) by part


def _doc_stripped(body: list) -> list:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def _dump(node) -> str:
    return ast.dump(node, annotate_fields=False, include_attributes=False)


class _Headers(ast.NodeTransformer):
    """A copy with every nested function's body reduced to `pass` (its header kept)
    and docstrings dropped."""

    def __init__(self, keep_top: bool):
        self.keep_top = keep_top   # the outermost node is the function being read

    def _fn(self, node):
        if self.keep_top:
            self.keep_top = False
            node.body = [self.visit(s) for s in _doc_stripped(node.body)] or [ast.Pass()]
            node.decorator_list = []   # its header is the enclosing code's
            return node
        node.body = [ast.Pass()]
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = _fn

    def visit_ClassDef(self, node):
        self.keep_top = False
        node.body = [self.visit(s) for s in _doc_stripped(node.body)] or [ast.Pass()]
        return node


def _copy(node):
    import copy
    return copy.deepcopy(node)


def own_code(node) -> str:
    """A function's own code, as a comparable string (see the module's docstring)."""
    return _dump(_Headers(keep_top=True).visit(_copy(node)))


def _header(node) -> str:
    """A def's or a class's header: name, arguments or bases, decorators."""
    return _dump(_header_node(node))


def idents(node, *, annotations: bool = True, names: bool = True) -> set[str]:
    """The identifiers a node mentions: names (unless not `names`), attributes,
    imported names, and string constants that are identifiers (getattr(x, "name"));
    nested function bodies excluded (their own code), and annotations unless
    `annotations`."""
    out: set[str] = set()

    def walk(n, top: bool):
        if isinstance(n, _DEFS) and not top:
            for d in n.decorator_list:
                walk(d, False)
            for d in n.args.defaults + [d for d in n.args.kw_defaults if d is not None]:
                walk(d, False)
            return
        if not annotations:
            if isinstance(n, ast.arg):
                return
            if isinstance(n, ast.AnnAssign):
                walk(n.target, False)
                if n.value is not None:
                    walk(n.value, False)
                return
        if isinstance(n, ast.Name):
            if names:
                out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.alias):
            out.add((n.asname or n.name).split(".")[0])
            out.add(n.name.rsplit(".", 1)[-1])
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) \
                and n.value.isidentifier():
            out.add(n.value)
        for child in ast.iter_child_nodes(n):
            if not annotations and isinstance(n, _DEFS) and child is n.returns:
                continue
            walk(child, False)

    walk(node, True)
    return out


def _bound(st) -> set[str]:
    """The names a module- or class-level binding statement binds."""
    out: set[str] = set()
    if isinstance(st, (*_DEFS, ast.ClassDef)):
        return {st.name}
    if isinstance(st, (ast.Import, ast.ImportFrom)):
        for a in st.names:
            out.add(a.asname or a.name.split(".")[0])
        return out
    if _TYPE_ALIAS and isinstance(st, _TYPE_ALIAS):
        return {st.name.id}
    if _mutated(st) is not None:
        return {_mutated(st)}
    targets = st.targets if isinstance(st, ast.Assign) else [st.target] \
        if isinstance(st, (ast.AnnAssign, ast.AugAssign)) else []
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name):
                out.add(n.id)
            elif isinstance(n, ast.Attribute):
                out.add(n.attr)
    if "__all__" in out and getattr(st, "value", None) is not None:
        # what a star import binds: the names listed are bound differently there
        out |= {e.value for n in ast.walk(st.value) if isinstance(n, (ast.List, ast.Tuple,
                                                                       ast.Set))
                for e in n.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    for sub in _inner(st):
        out |= _bound(sub)
    return out


def _inner(st) -> list:
    """A compound statement's statements (not inside functions)."""
    if not isinstance(st, _COMPOUND):
        return []
    out = []
    for name in ("body", "orelse", "finalbody"):
        out += getattr(st, name, []) or []
    for h in getattr(st, "handlers", []) or []:
        out += h.body
    return out


# a list's, dict's or set's own methods: called on a module-level name, they change
# what that name holds and nothing else (`if HAS_UDS: _address_protos.append(...)`)
_MUTATORS = frozenset({"append", "extend", "insert", "update", "add", "setdefault",
                       "remove", "discard", "clear", "pop", "sort", "reverse"})


def _mutated(st) -> str | None:
    """The name a `NAME.append(...)`-like statement changes, else None."""
    if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
        f = st.value.func
        if isinstance(f, ast.Attribute) and f.attr in _MUTATORS \
                and isinstance(f.value, ast.Name):
            return f.value.id
    return None


def _is_binding(st) -> bool:
    if isinstance(st, ast.ImportFrom) and st.module == "__future__":
        return False   # a compiler flag: every function of the module reads differently
    if isinstance(st, _BINDS) or _mutated(st) is not None:
        return True
    if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant):
        return True   # a bare string or constant: nothing runs
    if isinstance(st, _COMPOUND):
        return all(_is_binding(s) for s in _inner(st))
    return False


def _entries(body: list, scope: str, out: list[_Entry]) -> None:
    for st in _doc_stripped(body):
        qual = f"{scope}.{st.name}" if scope and hasattr(st, "name") else getattr(st, "name", "")
        if isinstance(st, _DEFS):
            # its defaults and decorators (its annotations change no call)
            out.append(_Entry("def", scope, qual, {st.name},
                              idents(_header_node(st), annotations=False), _header(st),
                              st.lineno, idents(_header_node(st))))
        elif isinstance(st, ast.ClassDef):
            out.append(_Entry("class", scope, qual, {st.name}, idents(_header_node(st)),
                              _header(st), st.lineno))
            _entries(st.body, qual, out)
        else:
            # a compound's inner defs are entries too; the statement itself without them
            kind = "bind" if _is_binding(st) else "effect"
            clone = _Headers(keep_top=False).visit(_copy(st))
            out.append(_Entry(kind, scope, "", _bound(st) if kind == "bind" else set(),
                              idents(st), _dump(clone), st.lineno,
                              links=_links(st) if kind == "bind" else []))


def _links(st) -> list[tuple[set[str], set[str]]]:
    """A binding statement by its independent parts: (what a part uses, what it binds).
    Each name of `from m import a, b` is its own part; a compound's condition (or
    handler) binds all its names; a nested def or class binds its name from its header."""
    if isinstance(st, (ast.Import, ast.ImportFrom)):
        return [(idents(a), _bound(ast.Import([a]))) for a in st.names]
    if isinstance(st, (*_DEFS, ast.ClassDef)):
        return [(idents(_header_node(st)), {st.name})]
    if not isinstance(st, _COMPOUND):
        return [(idents(st), _bound(st))]
    head: set[str] = set()
    for name in ("test", "items"):
        part = getattr(st, name, None)
        for n in (part if isinstance(part, list) else [part] if part else []):
            head |= idents(n)
    for h in getattr(st, "handlers", []) or []:
        head |= idents(h.type) if h.type is not None else set()
        if h.name:
            head.add(h.name)
    out = [(head, _bound(st))] if head else []
    for sub in _inner(st):
        out += _links(sub)
    return out


def _header_node(st):
    clone = _copy(st)
    clone.body = [ast.Pass()]
    return clone


def _scopes(tree) -> dict[str, list[str]]:
    """Each function's qualname (as Python spells it) -> its own code, per definition."""
    found: dict[str, list[str]] = {}

    def walk(node, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _DEFS):
                qual = prefix + child.name
                # with its decorators: a def inside an `if`/`try` has no header entry
                found.setdefault(qual, []).append(
                    own_code(child) + "".join(map(_dump, child.decorator_list)))
                walk(child, qual + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def module_change(old_src: str | None, new_src: str | None) -> ModuleChange:
    """What changed from `old_src` to `new_src` (None: the module is new, or gone).
    SyntaxError when either does not parse."""
    old = ast.parse(old_src) if old_src is not None else ast.Module([], [])
    new = ast.parse(new_src) if new_src is not None else ast.Module([], [])
    ch = ModuleChange()
    a, b = _scopes(old), _scopes(new)
    for qual in a.keys() | b.keys():
        if a.get(qual, []) != b.get(qual, []):   # in order: the last `def` of a name wins
            ch.funcs.add(qual)
    ch.gone = set(a) - set(b)
    olds, news = [], []
    _entries(old.body, "", olds)
    _entries(new.body, "", news)
    changed = _changed_in_order(olds, news)
    for e in changed:
        if e.kind == "def":   # a header: its callers executed the function itself
            ch.funcs.add(e.qual)
            if (e.qual in a) != (e.qual in b):   # a new or a deleted one: its name too
                name = e.qual.rsplit(".", 1)[-1]
                ch.names.add(name)
                if e.scope and name.startswith("__") and name.endswith("__"):
                    # a special method (__eq__, __post_init__) runs where no code names
                    # it: where the class's instances are made and used
                    ch.names.add(e.scope.rsplit(".", 1)[-1])
        elif e.kind == "class":
            ch.classes.add(e.qual)
            ch.names.add(e.qual.rsplit(".", 1)[-1])
        elif e.kind == "bind":
            ch.names |= e.names
        else:
            ch.effects.append(f"line {e.line}: {_first_line(e)}")
        if e.scope and e.kind != "def":   # a class's body changed: another class object
            ch.classes.add(e.scope)
            ch.names.add(e.scope.rsplit(".", 1)[-1])
    return ch


def _changed_in_order(olds: list[_Entry], news: list[_Entry]) -> list[_Entry]:
    """The statements of each scope (module, class) not in the longest common sequence
    of its old and new statements: a statement moved is a change (a field's order, a
    name used above its binding), except a `def` only moved that no other statement of
    its scope uses or rebinds, and whose header uses nothing they bind (a function's
    body reads globals when called)."""
    from difflib import SequenceMatcher
    by_scope: dict[str, tuple[list, list]] = {}
    for side, entries in ((0, olds), (1, news)):
        for e in entries:
            by_scope.setdefault(e.scope, ([], []))[side].append(e)
    changed: list[_Entry] = []
    for scope in sorted(by_scope):
        x, y = by_scope[scope]
        sm = SequenceMatcher(None, [(e.kind, e.dump) for e in x],
                             [(e.kind, e.dump) for e in y], autojunk=False)
        gone, came = [], []
        for tag, i1, i2, j1, j2 in sm.get_opcodes():
            if tag != "equal":
                gone += x[i1:i2]
                came += y[j1:j2]
        left: dict[tuple, list[_Entry]] = {}
        for e in gone:
            left.setdefault((e.kind, e.dump), []).append(e)
        for e in came:
            twin = left.get((e.kind, e.dump))
            if not (twin and e.kind == "def"):
                changed.append(e)
                continue
            rest = [o for o in x + y if (o.kind, o.dump) != (e.kind, e.dump)]
            bound = set().union(*[o.names for o in rest])
            used = set().union(*[o.refs for o in rest]) | bound
            old = twin.pop()
            if e.qual.rsplit(".", 1)[-1] in used or e.header & bound:
                changed += [old, e]   # it, or what its decorators and defaults use, moved
        changed += [e for es in left.values() for e in es]
    return changed


def _first_line(e: _Entry) -> str:
    if e.dump.startswith("ImportFrom('__future__'"):
        return "a `from __future__` import (every function of the module compiles differently)"
    return f"a statement with effects at import (mentions {', '.join(sorted(e.refs)[:3])})"


# -- who uses a name -----------------------------------------------------------------------

@dataclass
class Uses:
    """Of one file: each function's uses (qualname -> identifiers, annotations left
    out), and its module- and class-level statements."""
    funcs: dict[str, set[str]] = field(default_factory=dict)
    entries: list[_Entry] = field(default_factory=list)


def _locals(fn) -> tuple[set[str], set[str]]:
    """(the names a function binds in its own scope: its parameters, assignment, loop,
    `with`, `except` and import targets, nested def and class names; the names it
    declares `global` or `nonlocal`). A name bound in a function is local throughout it
    (Python's rule): a read of it there is never the module's name."""
    a = fn.args
    bound = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]}
    bound |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    declared: set[str] = set()
    stack = list(fn.body)
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            declared |= set(n.names)
            continue
        if isinstance(n, (*_DEFS, ast.ClassDef)):
            bound.add(n.name)
            continue   # its body is its own scope
        if isinstance(n, ast.Lambda):
            continue   # its parameters are its own
        if isinstance(n, ast.comprehension):
            # its own scope's; counted as the function's (`for _ in range(n)` in a
            # comprehension is no use of a module's `_`; the same word read as a global
            # elsewhere in the function is the one case this misses)
            bound |= {t.id for t in ast.walk(n.target) if isinstance(t, ast.Name)}
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            bound.add(n.id)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound |= {al.asname or al.name.split(".")[0] for al in n.names}
        stack.extend(ast.iter_child_nodes(n))
    return bound - declared, declared


def uses(source: str) -> Uses:
    tree = ast.parse(source)
    u = Uses()

    def walk(node, prefix: str, outer: set[str]):
        """`outer`: the enclosing functions' locals (a nested function reads them as
        closures, not as the module's names)."""
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _DEFS):
                qual = prefix + child.name
                body = ast.Module(child.body, [])
                mine, declared = _locals(child)
                every = idents(body, annotations=False)
                # a local name (or a closure's) read here is not the module's name,
                # unless the same word is also an attribute, an import or a string
                shadow = ((mine | outer) - declared) - idents(body, annotations=False,
                                                               names=False)
                u.funcs.setdefault(qual, set()).update(every - shadow)
                walk(child, qual + ".<locals>.", (outer | mine) - declared)
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".", outer)
            else:
                walk(child, prefix, outer)

    walk(tree, "", set())
    _entries(tree.body, "", u.entries)
    return u


@dataclass
class Reach:
    """Where changed names reach: (file, qualname, the name) of each function that
    uses one, the files whose module-level effects use one, every name reached
    (the changed ones and what module-level bindings made from them), and the files
    whose module- or class-level bindings or def/class headers use one (run at
    import: such a file may no longer import), and the module- and class-level defs
    whose annotations (only) use one."""
    funcs: list[tuple[str, str, str]] = field(default_factory=list)
    effects: list[tuple[str, str]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    binds: list[tuple[str, str]] = field(default_factory=list)   # bindings, headers
    annotated: list[tuple[str, str, str]] = field(default_factory=list)   # only there


def reach(names: set[str], files: dict[str, Uses]) -> Reach:
    """Follow `names` through module- and class-level bindings of `files` that use them
    (a constant made from a changed one is changed too), to a fixpoint; then the
    functions that use any (in their body, or in a default or decorator of their
    header) and the module-level effects that do."""
    r = Reach(names=set(names))
    grew = True
    while grew:
        grew = False
        for u in files.values():
            for e in u.entries:
                if e.kind in ("effect", "def") or not (e.refs & r.names):
                    continue   # a def header that uses one: its calls (below)
                more = set().union(*[b for u, b in e.links if u & r.names]) \
                    if e.links else set(e.names)
                more |= {e.scope.rsplit(".", 1)[-1]} if e.scope else set()
                if more - r.names:
                    r.names |= more
                    grew = True
    for path, u in sorted(files.items()):
        for qual, used in sorted(u.funcs.items()):
            hit = used & r.names
            if hit:
                r.funcs.append((path, qual, sorted(hit)[0]))
        for e in u.entries:
            hit = sorted(e.refs & r.names)
            if not hit and e.kind == "def" and e.header & r.names:
                # only in its annotations: read where it is introspected (get_type_hints,
                # tractor's @context), not by its calls
                r.annotated.append((path, e.qual, sorted(e.header & r.names)[0]))
            if not hit:
                continue
            if e.kind == "effect":
                r.effects.append((path, hit[0]))
            elif e.kind == "bind":
                r.binds.append((path, hit[0]))
            elif e.kind in ("def", "class"):
                # a default, a decorator, a base evaluated at import: every call of the
                # function (every method of the class) sees it
                r.funcs.append((path, e.qual, hit[0]))
                r.binds.append((path, hit[0]))
    return r


def strings_and_imports(source: str) -> tuple[list[str], set[str]]:
    """A file's string constants, and the module names it imports (each dotted part)."""
    strings, imported = [], set()
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            strings.append(n.value)
        elif isinstance(n, ast.Import):
            for a in n.names:
                imported |= set(a.name.split("."))
        elif isinstance(n, ast.ImportFrom):
            imported |= set((n.module or "").split("."))
            imported |= {a.name for a in n.names}
    return strings, imported


def strings_by_function(source: str) -> dict[str, list[str]]:
    """Each function's own string constants (nested functions' are theirs), by
    qualname."""
    out: dict[str, list[str]] = {}

    def walk(node, prefix: str, qual: str | None):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _DEFS):
                q = prefix + child.name
                walk(child, q + ".<locals>.", q)
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".", qual)
            else:
                if qual is not None and isinstance(child, ast.Constant) \
                        and isinstance(child.value, str):
                    out.setdefault(qual, []).append(child.value)
                walk(child, prefix, qual)

    walk(ast.parse(source), "", None)
    return out


# -- a file this Python cannot parse (newer syntax), read by the target's own -------------

def uses_json(u: Uses) -> dict:
    """A Uses as JSON (sets as sorted lists), to cross from another interpreter."""
    return {"funcs": {q: sorted(v) for q, v in u.funcs.items()},
            "entries": [{"kind": e.kind, "scope": e.scope, "qual": e.qual,
                         "names": sorted(e.names), "refs": sorted(e.refs), "dump": e.dump,
                         "line": e.line, "header": sorted(e.header),
                         "links": [[sorted(a), sorted(b)] for a, b in e.links]}
                        for e in u.entries]}


def uses_from_json(doc: dict) -> Uses:
    return Uses({q: set(v) for q, v in doc["funcs"].items()},
                [_Entry(d["kind"], d["scope"], d["qual"], set(d["names"]), set(d["refs"]),
                        d["dump"], d["line"], set(d["header"]),
                        [(set(a), set(b)) for a, b in d["links"]]) for d in doc["entries"]])


def _main() -> None:
    """`python codechange.py` in the target's interpreter: {path: source} on stdin,
    {path: uses_json or null} on stdout (a file that interpreter cannot parse: null)."""
    import json
    import sys
    out = {}
    for path, src in json.load(sys.stdin).items():
        try:
            out[path] = uses_json(uses(src))
        except (SyntaxError, ValueError, RecursionError):
            out[path] = None
    sys.stdout.write(json.dumps(out))   # to the caller (footprints._uses_in), not a user


if __name__ == "__main__":
    _main()
