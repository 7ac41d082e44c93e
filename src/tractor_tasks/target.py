"""Where the target checkout is, and its `[tool.tractor-tasks]` configuration.

The *target* is the checkout whose tests run. It is found, in order, from
`--root PATH`, the env var TRACTOR_TASKS_ROOT, `root = "..."` under
`[tool.tractor-tasks]` in the pyproject.toml next to the shims
(noxfile.py / tasks.py), else the shims' directory itself.

The target's own pyproject.toml may carry `[tool.tractor-tasks]`; every key
has a built-in default matching tractor exactly, so a tractor checkout needs
no configuration at all.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import usage
from .schedule import DEFAULT_TARGET

ENV_ROOT = "TRACTOR_TASKS_ROOT"
ENV_REGISTRY_PORT = "TRACTOR_TASKS_REGISTRY_PORT"

KNOWN_TRANSPORTS = ("tcp", "uds")
# tractor's `SpawnMethodKey` plus the in-development keys its marks may name.
KNOWN_BACKENDS = (
    "trio", "mp_spawn", "mp_forkserver",
    "subint", "subint_forkserver", "main_thread_forkserver",
)
# Minors a requires-python range is expanded over when `pythons` is not set.
KNOWN_MINORS = tuple(f"3.{m}" for m in range(8, 16))


@dataclass(frozen=True)
class FlakyRule:
    """A known-flaky failure: test id glob (relative to the tests dir) + error regex."""
    test: str
    error: str
    note: str = ""


# spec section 8
TRACTOR_FLAKY = (
    FlakyRule("devx/test_debugger.py::test_multi_nested_subactors_error_through_nurseries*",
              r"pexpect.*TIMEOUT|TIMEOUT", "debugger pexpect timing"),
    FlakyRule("test_cancellation.py::test_cancel_via_SIGINT_other_task*",
              r"TooSlowError", "signal handling race"),
    FlakyRule("test_inter_peer_cancellation.py::test_peer_spawns_and_cancels_service_subactor*",
              r"TooSlowError", "async timing (both param variants)"),
    FlakyRule("test_docs_examples.py::test_example[we_are_processes.py]",
              r"assert None == 0", "__main__ missing __file__ in subproc"),
)

# spec section 6: globs relative to the package dir -> test paths (tests dir words)
TRACTOR_AFFECTED = {
    "runtime/_runtime.py": ("test_local.py", "test_rpc.py", "test_spawning.py", "test_root_runtime.py"),
    "runtime/_state.py": ("test_local.py", "test_rpc.py", "test_spawning.py", "test_root_runtime.py"),
    "discovery/": ("discovery/", "test_multi_program.py", "test_local.py"),
    "_context.py": ("test_context_stream_semantics.py", "test_advanced_streaming.py"),
    "_streaming.py": ("test_context_stream_semantics.py", "test_advanced_streaming.py"),
    "ipc/": ("ipc/", "test_2way.py"),
    "runtime/_portal.py": ("test_rpc.py", "test_cancellation.py"),
    "runtime/_rpc.py": ("test_rpc.py", "test_cancellation.py"),
    "spawn/": ("test_spawning.py", "test_multi_program.py"),
    "devx/debug/": ("devx/test_debugger.py",),
    "to_asyncio.py": ("test_infected_asyncio.py", "test_root_infect_asyncio.py"),
    "msg/": ("msg/",),
    "_exceptions.py": ("test_remote_exc_relay.py", "test_inter_peer_cancellation.py"),
    "runtime/_supervise.py": ("test_cancellation.py", "test_spawning.py"),
}

# key -> (default, checker, description of the allowed values)
_STR = (lambda v: isinstance(v, str) and v != "", "a non-empty string")
_STRS = (lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
         "a list of non-empty strings")
_PORT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536,
         "an integer from 1 to 65535")
_SECONDS = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and v > 0, "a positive number of seconds")
_BOUND = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(v) and v >= 0, "0 (off) or a positive number of seconds")
_NONEMPTY = (lambda v: isinstance(v, list) and len(v) > 0
             and all(isinstance(x, str) and x for x in v), "a non-empty list of strings")
_MB = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
       and math.isfinite(v) and v >= 1, "a number of megabytes, 1 or more")
_UTIL = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 2,
         "a share of the cores above 0, at most 2 (e.g. 0.75)")
_FLAG = (lambda v: isinstance(v, str), "a pytest flag string (\"\" for none)")
_CORE = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
         and math.isfinite(v) and 0 < v <= 1, "a fraction of one core, above 0 and at most 1")
_TMPFS_SIZE = (lambda v: isinstance(v, str) and re.fullmatch(r"[1-9]\d{0,5}%|[1-9]\d{0,15}[kmg]?",
                                                             v) is not None
               and (not v.endswith("%") or int(v[:-1]) <= 100),
               "a tmpfs size: a percentage of RAM like \"25%\", or bytes like \"512m\" "
               "or \"2g\" (\"\" for the host's /dev/shm)")


@dataclass(frozen=True)
class Target:
    root: Path
    package: str = "tractor"
    tests_dir: str = "tests"
    registry_port: int = 1616
    transports: tuple[str, ...] = KNOWN_TRANSPORTS
    spawn_backends: tuple[str, ...] = ("trio", "mp_spawn", "mp_forkserver")
    default_spawn_backend: str = "trio"
    pythons: tuple[str, ...] = ()
    bindspace: str = "tractor"
    process_markers: tuple[str, ...] = ("_subactor[", "tractor._child", "subint-forkserv")
    capsys_backends: tuple[str, ...] = ("main_thread_forkserver",)
    smoke: tuple[str, ...] = ("test_local.py", "test_rpc.py", "test_spawning.py",
                              "discovery/test_registrar.py")
    affected: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(TRACTOR_AFFECTED))
    affected_fallback: tuple[str, ...] | None = None  # None: the smoke subset
    flaky: tuple[FlakyRule, ...] = TRACTOR_FLAKY
    quarantine: tuple[FlakyRule, ...] = ()   # run and reported, never fail the run
    verdict_env: tuple[str, ...] = ()        # env vars that change outcomes: runs with
                                             # other values are not compared by the history
    timeout_full: float = 1800.0
    timeout_file: float = 300.0
    timeout_test: float = 120.0
    test_timeouts: dict[str, float] = field(default_factory=dict)  # id glob -> seconds
    stackscope_flag: str = "--enable-stackscope"
    output_log_max_mb: float = 50.0   # a pass's output.log keeps its head and tail past this
    shm_size: str = "25%"          # a contained run's own /dev/shm ("": the host's)
    runaway_cpu: float = 0.8       # a core's share a finished test's process may not keep
    runaway_seconds: float = 10.0  # ... for this long (0: runaways are not watched)
    heavy: tuple[str, ...] = ()          # module globs that always run alone (-n)
    parallel_target_util: float = DEFAULT_TARGET   # -n admits up to cores x this of CPU
    config_file: Path | None = None

    def is_heavy(self, module: str) -> bool:
        """The config marks this module (a node id's file part) heavy: `heavy` globs, as
        the module path or relative to the tests dir."""
        rel = self.relative_id(module)
        return any(id_glob(g).match(rel) or id_glob(g).match(module) for g in self.heavy)

    def test_bound(self, nodeid: str, override: float | None = None) -> float | None:
        """The per-test bound for one test (None: off): `--test-timeout`, else the
        first matching `test_timeouts` glob, else `timeout_test`."""
        if override is not None:
            return override or None
        rel = self.relative_id(nodeid)
        for glob, seconds in self.test_timeouts.items():
            pattern = id_glob(glob)
            if pattern.match(rel) or pattern.match(nodeid):
                return seconds or None
        return self.timeout_test or None

    def relative_id(self, nodeid: str) -> str:
        """A node id relative to the tests dir (as the config's globs are written), or
        as it is when it is not under it."""
        rel = under_tests(nodeid, self.tests_dir)
        return nodeid if rel is None else rel

    @property
    def tests_path(self) -> Path:
        return self.root / self.tests_dir

    def venv_dir(self, minor: str) -> Path:
        from .interpreters import venv_name
        return self.root / venv_name(minor)

    def first_venv(self) -> Path | None:
        """The first configured minor's venv that exists (what `invoke clean` asks about
        the bindspace), else None."""
        return next((self.venv_dir(m) for m in self.pythons if self.venv_dir(m).is_dir()),
                    None)


def id_glob_body(glob: str) -> str:
    """A test-id glob as a regex: only * and ? are wild ([...] in ids stays literal)."""
    return re.escape(glob).replace(r"\*", ".*").replace(r"\?", ".")


def id_glob(glob: str) -> re.Pattern:
    """A test-id glob matching a whole id: the one place globs over ids become regexes
    (the flaky list, per-test bounds, `invoke history`)."""
    return re.compile(id_glob_body(glob) + r"\Z")


def under_tests(path: str, tests_dir: str) -> str | None:
    """`path` (a node id or a file) relative to the tests dir, None when not under it."""
    prefix = tests_dir.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_pyproject(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as err:
        raise usage(f"{path} is not valid TOML ({err}); fix the file and retry")


def _tool_table(data: dict, path: Path) -> dict:
    table = data.get("tool", {}).get("tractor-tasks", {})
    if not isinstance(table, dict):
        raise usage(f"[tool.tractor-tasks] in {path} must be a table")
    return table


def find_root(shim_dir: Path, root: str | os.PathLike | None = None,
              env: dict | None = None) -> Path:
    """The target directory, by the documented resolution order."""
    env = os.environ if env is None else env
    shim_dir = Path(shim_dir).resolve()
    if root is not None and not str(root).strip():
        raise usage("--root is empty; give the path of a checkout")
    if root:
        chosen, source = Path.cwd() / Path(root).expanduser(), "--root"
    elif env.get(ENV_ROOT):
        chosen, source = Path.cwd() / Path(env[ENV_ROOT]).expanduser(), ENV_ROOT
    else:
        pyproject = shim_dir / "pyproject.toml"
        cfg_root = _tool_table(_read_pyproject(pyproject), pyproject).get("root")
        if cfg_root is None:
            return shim_dir
        if not isinstance(cfg_root, str) or not cfg_root:
            raise usage(f"[tool.tractor-tasks] root in {pyproject} must be a path string")
        chosen, source = shim_dir / Path(cfg_root).expanduser(), f"root in {pyproject}"
    if not chosen.is_dir():
        raise usage(f"target {chosen} (from {source}) is not a directory; "
                    f"point {source} at a checkout")
    return chosen.resolve()


def minors_from_requires(spec: str | None) -> tuple[str, ...]:
    """Python minors a requires-python range admits, e.g. '>=3.13,<3.15' -> 3.13, 3.14."""
    if not spec:
        return (f"{sys.version_info[0]}.{sys.version_info[1]}",)
    simple = _simple_range(spec)
    if simple is not None:  # the common case, without importing packaging (start-up)
        return tuple(m for m in KNOWN_MINORS if simple(m))
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    try:
        spec_set = SpecifierSet(spec)
    except InvalidSpecifier:
        raise usage(f"requires-python {spec!r} is not a valid specifier; "
                    "set [tool.tractor-tasks] pythons = [\"3.13\"] instead")
    return tuple(m for m in KNOWN_MINORS
                 if spec_set.contains(f"{m}.0", prereleases=True)
                 or spec_set.contains(f"{m}.99", prereleases=True))


_CLAUSE = re.compile(r"\s*(>=|<=|>|<)\s*(\d+)\.(\d+)(?:\.(\d+))?\s*")
_CMP = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        "<": lambda a, b: a < b}


def _simple_range(spec: str):
    """For a requires-python of only `>=`, `>`, `<=`, `<` bounds on release versions
    (`>=3.11`, `>=3.13, <3.15`): a test "does minor m admit some release", the same
    answer packaging gives for m.0 or m.99; None for anything else (packaging decides)."""
    bounds = []
    for clause in spec.split(","):
        m = _CLAUSE.fullmatch(clause)
        if m is None:
            return None
        bounds.append((_CMP[m[1]], (int(m[2]), int(m[3]), int(m[4] or 0))))

    def admits(minor: str) -> bool:
        major, mi = map(int, minor.split("."))
        return any(all(ok(v, b) for ok, b in bounds) for v in ((major, mi, 0), (major, mi, 99)))
    return admits


def _check(table: dict, key: str, checker, where: str):
    ok, allowed = checker
    value = table[key]
    if not ok(value):
        raise usage(f"[tool.tractor-tasks] {key} in {where} must be {allowed}, "
                    f"got {value!r}")
    return value


def _check_names(values: list[str], key: str, known: tuple[str, ...], where: str):
    for v in values:
        if v not in known:
            raise usage(f"[tool.tractor-tasks] {key} in {where} has unknown name {v!r}"
                        f"{_suggest(v, known)}; allowed: {', '.join(known)}")


def _parse_flaky(raw, where: str, key: str = "flaky") -> tuple[FlakyRule, ...]:
    """[[tool.tractor-tasks.flaky]] (test and error required) or
    [[tool.tractor-tasks.quarantine]] (error optional: any failure of the test)."""
    need = ("test", "error") if key == "flaky" else ("test",)
    if not isinstance(raw, list):
        raise usage(f"[tool.tractor-tasks] {key} in {where} must be an array of tables "
                    f"([[tool.tractor-tasks.{key}]] with test, error, note)")
    rules = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise usage(f"[tool.tractor-tasks] {key}[{i}] in {where} must be a table")
        extra = set(item) - {"test", "error", "note"}
        if extra:
            bad = sorted(extra)[0]
            raise usage(f"unknown key {bad!r} in [tool.tractor-tasks] {key}[{i}] of "
                        f"{where}{_suggest(bad, ('test', 'error', 'note'))}; allowed: test, "
                        "error, note")
        for k in ("test", "error"):
            if (k in need or k in item) and (not isinstance(item.get(k), str) or not item[k]):
                raise usage(f"[tool.tractor-tasks] {key}[{i}].{k} in {where} must be "
                            "a non-empty string")
        error = item.get("error", "")
        try:
            re.compile(error)
        except re.error as err:
            raise usage(f"[tool.tractor-tasks] {key}[{i}].error in {where} is not a "
                        f"valid regex ({err})")
        nested = nested_repeat(error)
        if nested:
            raise usage(f"[tool.tractor-tasks] {key}[{i}].error in {where} repeats a repeat "
                        f"({nested}): Python's re can take exponential time on it; make the "
                        "inner or outer repeat possessive (++, *+) or atomic ((?>...)), or "
                        "drop one")
        rules.append(FlakyRule(item["test"], error, str(item.get("note", ""))))
    return tuple(rules)


def nested_repeat(pattern: str) -> str | None:
    """The part of `pattern` that repeats a repeat without bound (`(x+x+)+`, `(a*)*`,
    `(\\w+\\s?)*`), else None. Python's re backtracks through every way to split the
    input among such repeats, exponential in its length when nothing matches: a flaky
    rule's regex is searched in every failure's text, so such a rule is refused when
    the config loads (no time cap exists for re). Possessive repeats and atomic groups
    do not backtrack and pass."""
    from re import _constants as c, _parser as parser   # Python 3.11+

    def repeats(items, inner: bool) -> bool:
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT):
                lo, hi, sub = av
                if inner and hi > 1:
                    return True
                if hi == c.MAXREPEAT and repeats(sub, True):
                    return True
                if repeats(sub, inner):
                    return True
            elif op is c.SUBPATTERN:
                if repeats(av[-1], inner):
                    return True
            elif op is c.BRANCH:
                if any(repeats(b, inner) for b in av[1]):
                    return True
            elif op in (c.ASSERT, c.ASSERT_NOT):
                if repeats(av[1], inner):
                    return True
        return False

    try:
        tree = parser.parse(pattern)
    except Exception:  # noqa: BLE001 - re.compile says what is wrong with it
        return None
    if not repeats(list(tree), False):
        return None
    return pattern if len(pattern) <= 60 else pattern[:57] + "..."


def _parse_affected(raw, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise usage(f"[tool.tractor-tasks] affected in {where} must be a table of "
                    "glob = [test paths]")
    out = {}
    for glob, tests in raw.items():
        if not (isinstance(tests, list) and all(isinstance(t, str) and t for t in tests)):
            raise usage(f"[tool.tractor-tasks] affected.{glob!r} in {where} must be "
                        "a list of test paths")
        out[glob] = tuple(tests)
    return out


_SIMPLE_KEYS = {
    "root": _STR, "package": _STR, "tests_dir": _STR, "registry_port": _PORT,
    "transports": _NONEMPTY, "spawn_backends": _NONEMPTY, "default_spawn_backend": _STR,
    "pythons": _NONEMPTY, "bindspace": _STR, "process_markers": _STRS,
    "capsys_backends": _STRS, "smoke": _STRS, "affected_fallback": _STRS,
    "timeout_full": _SECONDS, "timeout_file": _SECONDS, "timeout_test": _BOUND,
    "stackscope_flag": _FLAG, "output_log_max_mb": _MB, "runaway_cpu": _CORE,
    "runaway_seconds": _BOUND, "heavy": _STRS, "verdict_env": _STRS,
    "parallel_target_util": _UTIL,
}
ALLOWED_KEYS = tuple(sorted((*_SIMPLE_KEYS, "affected", "flaky", "quarantine", "test_timeouts",
                             "shm_size")))


def _parse_test_timeouts(raw, where: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise usage(f"[tool.tractor-tasks] test_timeouts in {where} must be a table of "
                    "\"test id glob\" = seconds")
    for glob, value in raw.items():
        if not _BOUND[0](value):
            raise usage(f"[tool.tractor-tasks] test_timeouts.{glob!r} in {where} must be "
                        f"{_BOUND[1]}, got {value!r}")
    return {glob: float(v) for glob, v in raw.items()}


def _inside(root: Path, rel: str, key: str, where: str) -> None:
    """A configured path must stay inside the target root."""
    path = Path(rel)
    try:
        inside = not path.is_absolute() and (root / path).resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        inside = False
    if not inside or (root / path).resolve() == root:
        raise usage(f"[tool.tractor-tasks] {key} in {where} is {rel!r}, which is not a "
                    "dir inside the target; give a relative path like \"tests\"")


def load_target(root: Path, env: dict | None = None) -> Target:
    """Read and validate the target's `[tool.tractor-tasks]`; defaults are tractor's."""
    env = os.environ if env is None else env
    root = Path(root).resolve()
    pyproject = root / "pyproject.toml"
    data = _read_pyproject(pyproject)
    table = _tool_table(data, pyproject)
    where = str(pyproject)

    for key in table:
        if key not in ALLOWED_KEYS:
            raise usage(f"unknown key {key!r} in [tool.tractor-tasks] of {where}"
                        f"{_suggest(key, ALLOWED_KEYS)}; allowed keys: {', '.join(ALLOWED_KEYS)}")
    kw: dict[str, Any] = {}
    for key, checker in _SIMPLE_KEYS.items():
        if key in table and key != "root":
            value = _check(table, key, checker, where)
            kw[key] = tuple(value) if isinstance(value, list) else value

    if "transports" in kw:
        _check_names(kw["transports"], "transports", KNOWN_TRANSPORTS, where)
    if "spawn_backends" in kw:
        _check_names(kw["spawn_backends"], "spawn_backends", KNOWN_BACKENDS, where)
    if "capsys_backends" in kw:
        _check_names(kw["capsys_backends"], "capsys_backends", KNOWN_BACKENDS, where)
    if kw.get("smoke") == ():   # no words is the whole suite: no smoke subset at all
        raise usage(f"[tool.tractor-tasks] smoke in {where} is empty, so `invoke smoke` "
                    "would run the whole suite; list its test files, or leave smoke out "
                    "for the default")
    backends = kw.get("spawn_backends", Target.spawn_backends)
    default_backend = kw.get("default_spawn_backend", Target.default_spawn_backend)
    if default_backend not in backends:
        raise usage(f"[tool.tractor-tasks] default_spawn_backend in {where} is "
                    f"{default_backend!r}, not one of spawn_backends: {', '.join(backends)}")
    if "pythons" in kw:
        for m in kw["pythons"]:
            if not re.fullmatch(r"3\.\d{1,2}", m):
                raise usage(f"[tool.tractor-tasks] pythons in {where} has {m!r}; "
                            "write minors like \"3.13\"")
    else:
        requires = data.get("project", {}).get("requires-python")
        kw["pythons"] = minors_from_requires(requires)
        if not kw["pythons"]:
            raise usage(f"requires-python {requires!r} in {where} admits no Python minor "
                        "from 3.8 to 3.15; set [tool.tractor-tasks] pythons = [\"3.13\"]")
    if "tests_dir" in kw:
        _inside(root, kw["tests_dir"], "tests_dir", where)
    if "bindspace" in kw and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", kw["bindspace"]):
        raise usage(f"[tool.tractor-tasks] bindspace in {where} is {kw['bindspace']!r}; "
                    "it is the app name tractor gives platformdirs (one name, no \"/\" and "
                    "no \"..\"), like \"tractor\"")
    if "shm_size" in table:
        value = table["shm_size"]
        if value != "" and not _TMPFS_SIZE[0](value):
            raise usage(f"[tool.tractor-tasks] shm_size in {where} must be "
                        f"{_TMPFS_SIZE[1]}, got {value!r}")
        kw["shm_size"] = value
    if "test_timeouts" in table:
        kw["test_timeouts"] = _parse_test_timeouts(table["test_timeouts"], where)
    if "affected" in table:
        kw["affected"] = _parse_affected(table["affected"], where)
    if "flaky" in table:
        kw["flaky"] = _parse_flaky(table["flaky"], where)
    if "quarantine" in table:
        kw["quarantine"] = _parse_flaky(table["quarantine"], where, "quarantine")

    port_env = env.get(ENV_REGISTRY_PORT)
    if port_env:
        if not (port_env.isascii() and port_env.isdigit() and 0 < int(port_env) < 65536):
            raise usage(f"{ENV_REGISTRY_PORT}={port_env!r} must be a port number 1-65535")
        kw["registry_port"] = int(port_env)

    return Target(root=root, config_file=pyproject if pyproject.exists() else None, **kw)


def resolve(shim_dir: Path, root: str | None = None, env: dict | None = None) -> Target:
    return load_target(find_root(shim_dir, root, env), env)
