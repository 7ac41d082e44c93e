"""The pytest argv and environment for one run or one cell (spec section 2)."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .errors import usage
from .scope import ENV_RUN, make_run_marker
from .target import Target

PROBE_DIR = Path(__file__).with_name("probe")
PROBE_PLUGIN = "_tractor_tasks_probe"
ENV_PROBE_DIR = "TRACTOR_TASKS_PROBE_DIR"


@dataclass
class Request:
    """What a person asked for, in pytest's terms."""
    paths: list[str]
    keyword: str | None = None
    tpt: str | None = None
    spawn: str | None = None
    loglevel: str | None = None
    tpdb: bool = False
    exitfirst: bool = True          # the spec's default -x; --no-x drops it
    extra: list[str] = field(default_factory=list)  # after `--`, passed through verbatim
    last_failed: bool = False

    @property
    def interactive(self) -> bool:
        """A debugger may take the terminal: Ctrl-C then belongs to it."""
        return self.tpdb or any(a in ("--pdb", "--trace", "--tpdb", "--debug-mode")
                                for a in self.extra)

    def check(self, target: Target) -> None:
        if self.tpt is not None and self.tpt not in target.transports:
            raise usage(f"error: unknown transport {self.tpt!r}; allowed: "
                        f"{', '.join(target.transports)}")
        if self.spawn is not None and self.spawn not in target.spawn_backends:
            raise usage(f"error: unknown spawn backend {self.spawn!r}; allowed: "
                        f"{', '.join(target.spawn_backends)}")


def _has_flag(args: list[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") or (n.startswith("-") and not n.startswith("--")
               and a.startswith(n) and len(a) > len(n)) for a in args for n in names)


def pytest_args(target: Target, req: Request, *, junit: Path | None = None,
                cache_dir: Path | None = None) -> list[str]:
    """Everything after `python -m pytest`."""
    req.check(target)
    extra = list(req.extra)
    args = list(req.paths)
    if req.exitfirst and not _has_flag(extra, "--maxfail", "--exitfirst", "-x"):
        args.append("-x")
    if not _has_flag(extra, "--tb"):
        args.append("--tb=short")
    if "--no-header" not in extra:
        args.append("--no-header")
    if req.keyword:
        args += ["-k", req.keyword]
    if req.tpt:
        args += ["--tpt-proto", req.tpt]
    spawn = req.spawn
    if spawn:
        args += ["--spawn-backend", spawn]
        if spawn in target.capsys_backends and not _has_flag(extra, "--capture", "-s"):
            args.append("--capture=sys")  # fork-based backends deadlock under --capture=fd
    if req.loglevel:
        args += ["--ll", req.loglevel]
    if req.tpdb:
        args.append("--tpdb")
    if req.last_failed and "--lf" not in extra and "--last-failed" not in extra:
        args.append("--lf")
    if junit is not None:
        args.append(f"--junitxml={junit}")
    if cache_dir is not None:
        args += ["-o", f"cache_dir={cache_dir}"]
    args += ["-p", PROBE_PLUGIN]
    return args + extra


def run_env(target: Target, venv: Path, probe_dir: Path, base: dict | None = None,
            extra: dict | None = None) -> dict[str, str]:
    """The venv "activated", the run marked as ours, the probe plugin importable."""
    env = dict(os.environ if base is None else base)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONHOME", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROBE_DIR), env.get("PYTHONPATH")) if p)
    env[ENV_RUN] = make_run_marker(target.root)
    env[ENV_PROBE_DIR] = str(probe_dir)
    env.update(extra or {})
    return env


def show(argv: list[str], env: dict[str, str], base: dict | None = None) -> str:
    """The exact command, with the environment it adds or changes, for --dry-run."""
    base = os.environ if base is None else base
    changed = {k: v for k, v in env.items() if base.get(k) != v}
    parts = []
    for k, v in sorted(changed.items()):
        old = base.get(k)
        if old and v.endswith(os.pathsep + old):  # PATH, PYTHONPATH: show only what we add
            parts.append(f"{k}={shlex.quote(v[: -len(old) - 1])}{os.pathsep}${k}")
        else:
            parts.append(f"{k}={shlex.quote(v)}")
    prefix = " ".join(parts)
    return (prefix + " " if prefix else "") + shlex.join(argv)
