"""The pytest argv and environment for one run (spec section 2)."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from .errors import usage
from .options import RunOptions
from .scope import ENV_RUN, make_run_marker
from .target import Target

PROBE_DIR = Path(__file__).with_name("probe")
PROBE_PLUGIN = "_tractor_tasks_probe"
ENV_PROBE_DIR = "TRACTOR_TASKS_PROBE_DIR"
ENV_SELECT = "TRACTOR_TASKS_SELECT"


def check_names(target: Target, opts: RunOptions) -> None:
    if opts.tpt is not None and opts.tpt not in target.transports:
        raise usage(f"unknown transport {opts.tpt!r}; allowed: "
                    f"{', '.join(target.transports)}")
    if opts.spawn is not None and opts.spawn not in target.spawn_backends:
        raise usage(f"unknown spawn backend {opts.spawn!r}; allowed: "
                    f"{', '.join(target.spawn_backends)}")


def _has_flag(args: list[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") or (n.startswith("-") and not n.startswith("--")
               and a.startswith(n) and len(a) > len(n)) for a in args for n in names)


def pytest_args(target: Target, paths: list[str], opts: RunOptions, *,
                cache_dir: Path | None = None, color: bool = False) -> list[str]:
    """Everything after `python -m pytest`."""
    check_names(target, opts)
    extra = list(opts.extra)
    args = list(paths)
    if opts.exitfirst and not _has_flag(extra, "--maxfail", "--exitfirst", "-x"):
        args.append("-x")
    if not _has_flag(extra, "--tb"):
        args.append("--tb=short")
    if "--no-header" not in extra:
        args.append("--no-header")
    if opts.k:
        args += ["-k", opts.k]
    if opts.tpt:
        args += ["--tpt-proto", opts.tpt]
    if opts.spawn:
        args += ["--spawn-backend", opts.spawn]
        if opts.spawn in target.capsys_backends and not _has_flag(extra, "--capture", "-s"):
            args.append("--capture=sys")  # fork-based backends deadlock under --capture=fd
    if opts.ll:
        args += ["--ll", opts.ll]
    if opts.tpdb:
        args.append("--tpdb")
    if target.stackscope_flag and target.stackscope_flag not in extra:
        args.append(target.stackscope_flag)  # SIGUSR1 dumps trio task trees on a hang
    if opts.last_failed and "--lf" not in extra and "--last-failed" not in extra:
        args.append("--lf")
    if color and not _has_flag(extra, "--color"):
        args.append("--color=yes")  # its output reaches a terminal through our pipe
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
    env.pop(ENV_SELECT, None)
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
