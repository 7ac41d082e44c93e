"""The run options, declared once: `invoke test/smoke/rerun/affected` and the nox
cells (their own posargs) are both built from this table, and every value is
checked here, before anything runs or is written.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field

from .errors import usage


@dataclass(frozen=True)
class Opt:
    name: str            # the keyword (invoke turns _ into -: no_x -> --no-x)
    help: str
    default: object = None    # invoke's default for the keyword
    kind: str = "str"    # how its value is checked: a key of KINDS
    cell: str | None = None   # the nox cell's own flag for it, when cells take it
    short: str | None = None
    field: str | None = ""    # the RunOptions field it sets ("": its name; None: none)
    negate: bool = False      # a flag that turns its field off (--no-x: exitfirst)
    sets: object = None       # a flag that sets its field to this (--no-confirm: confirm 0)

    @property
    def dest(self) -> str | None:
        return self.name if self.field == "" else self.field


RUN_OPTIONS: tuple[Opt, ...] = (
    Opt("k", "pytest -k expression"),
    Opt("tpt", "transport: tcp or uds (default: the plugin's, tcp)"),
    Opt("spawn", "spawn backend: trio, mp_spawn, mp_forkserver"),
    Opt("ll", "tractor log level (--ll)"),
    Opt("tpdb", "enable tractor's multi-process debugger (--tpdb)", False, "flag"),
    Opt("python", "Python minor whose py<MINOR> venv to use, e.g. 3.13"),
    Opt("timeout", "whole-run bound in seconds (default from the config: 1800 for a suite, "
        "300 for one file)",
        None, "seconds", cell="--cell-timeout"),
    Opt("test_timeout", "per-test bound in seconds; a test past it is dumped, ended and "
        "reported HUNG, and the rest of the run resumes (0 = off; default from the config)",
        None, "bound", cell="--test-timeout"),
    Opt("max_hangs", "resume after at most this many hung tests (default 3)", None, "count",
        cell="--max-hangs"),
    Opt("dry_run", "print the exact command and environment; run nothing", False, "flag"),
    Opt("sweep", "sweep in-scope leftovers before the run (--no-sweep: stop instead)",
        True, "flag"),
    Opt("no_x", "do not stop at the first failure (drop the default -x)", False, "flag",
        field="exitfirst", negate=True),
    Opt("retry_flaky", "rerun known-flaky failures once and report both outcomes", False,
        "flag", cell="--retry-flaky"),
    Opt("no_contain", "run pytest uncontained (no own pid/net/user namespaces)", False,
        "flag", cell="--no-contain", field="contain", negate=True),
    Opt("isolate_net", "kept for old scripts: contained runs already have their own network",
        False, "flag", cell="--isolate-net", field=None),
    Opt("fail_on_leak", "fail the run when it leaves processes, listeners or sockets",
        False, "flag", cell="--fail-on-leak"),
    Opt("shards", "run the tests' modules on N parallel contained workers, admitted by "
        "their recorded CPU cost (N or auto)", None, "shards", cell="--shards", short="n"),
    Opt("shard", "run only shard I of N (I/N), as a CI job of a sharded matrix does", None,
        "shard", cell="--shard"),
    Opt("durations_file", "durations for shards from this JSON file (what `invoke "
        "durations` writes) instead of the history", None, cell="--durations-file"),
    Opt("confirm", "re-run each failure not already explained (pre-existing, known-flaky, "
        "quarantined) alone this many times after the run (default 1)", None, "count",
        cell="--confirm"),
    Opt("no_confirm", "no confirmation re-runs: failures are judged on their one outcome",
        False, "flag", cell="--no-confirm", field="confirm", sets=0),
    Opt("baseline", "compare failures with this commit or branch (default: where the branch "
        "left the default branch when there are changes; none on an unchanged default "
        "branch, where the history decides)", None, cell="--baseline"),
    Opt("strict", "every failure fails the run (pre-existing, flaky, known-flaky and "
        "quarantined ones too)", False, "flag", cell="--strict"),
)


def seconds(name: str, value, *, allow_zero: bool = False) -> float | None:
    """A finite positive number of seconds (0 too when `allow_zero`), else usage error.
    ASCII only; a value so small it rounds to 0 is not 0."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        n = float(text) if text.isascii() and text else math.nan
    except (TypeError, ValueError):
        n = math.nan
    zero = bool(re.fullmatch(r"[+]?0*\.?0*", text)) and any(ch == "0" for ch in text)
    ok = math.isfinite(n) and (n > 0 or (allow_zero and n == 0 and zero))
    if not ok or isinstance(value, bool):
        need = "0 or a positive" if allow_zero else "a positive"
        raise usage(f"{name} must be {need} number of seconds, got {value!r}")
    return n


def count(name: str, value, least: int = 0) -> int | None:
    """A whole number, `least` or more: one message for every value refused (0, -1, x)."""
    if value is None:
        return None
    text = str(value)
    if not (text.isascii() and text.isdigit()) or int(text) < least:
        raise usage(f"{name} must be a whole number ({least} or more), got {value!r}")
    return int(text)


MAX_SHARDS = 256  # GitHub's limit of jobs per matrix, and far more than cores


def shards(name: str, value) -> int | str | None:
    """N (1 to MAX_SHARDS) or 'auto'."""
    if value is None:
        return None
    text = str(value).strip()
    if text == "auto":
        return "auto"
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_SHARDS:
        raise usage(f"{name} must be a number of shards (1 to {MAX_SHARDS}) or auto, "
                    f"got {value!r}")
    return int(text)


def shard(name: str, value) -> tuple[int, int] | None:
    """I/N with 1 <= I <= N."""
    if value is None:
        return None
    i, _, n = str(value).partition("/")
    if not (i.isascii() and i.isdigit() and n.isascii() and n.isdigit()) or \
            not 1 <= int(i) <= int(n) <= MAX_SHARDS:
        raise usage(f"{name} must be I/N with 1 <= I <= N <= {MAX_SHARDS} (e.g. 2/4), "
                    f"got {value!r}")
    return int(i), int(n)


def text(name: str, value) -> str | None:
    """A value that is not empty (or only blanks)."""
    if value is not None and not str(value).strip():
        raise usage(f"{name} is empty; give a value or leave it out")
    return value


def flag(name: str, value) -> bool | None:
    return None if value is None else bool(value)


# each option kind's check: (flag shown in errors, value) -> the field's value, or None
# for the field's default
KINDS = {
    "str": text,
    "flag": flag,
    "seconds": seconds,
    "bound": lambda name, value: seconds(name, value, allow_zero=True),
    "count": count,
    "shards": shards,
    "shard": shard,
}


@dataclass
class RunOptions:
    """Everything a run is asked to do besides which tests (the words)."""
    k: str | None = None
    tpt: str | None = None
    spawn: str | None = None
    ll: str | None = None
    tpdb: bool = False
    python: str | None = None
    timeout: float | None = None
    test_timeout: float | None = None   # None: the config's; 0: off
    max_hangs: int = 3
    dry_run: bool = False
    sweep: bool = True
    exitfirst: bool = True
    retry_flaky: bool = False
    contain: bool = True
    fail_on_leak: bool = False
    shards: int | str | None = None
    shard: tuple[int, int] | None = None
    durations_file: str | None = None
    confirm: int = 1                    # confirmation re-runs per failure (0: none)
    baseline: str | None = None         # --baseline REF (None: the default choice)
    strict: bool = False
    extra: list[str] = field(default_factory=list)   # pytest args, verbatim
    last_failed: bool = False

    @property
    def interactive(self) -> bool:
        """A debugger may take the terminal: Ctrl-C then belongs to it."""
        return self.tpdb or any(a in ("--pdb", "--trace", "--tpdb", "--debug-mode")
                                for a in self.extra)

    @classmethod
    def parse(cls, values: dict, *, extra=(), flag_names: dict | None = None) -> RunOptions:
        """From invoke keywords or argparse results: each option's value checked by its
        declared kind (exit 2); a value left out keeps the field's default."""
        fields = {}
        for o in RUN_OPTIONS:
            shown = (flag_names or {}).get(o.name) or "--" + o.name.replace("_", "-")
            value = KINDS[o.kind](shown, values.get(o.name))
            if value is None or o.dest is None:
                continue
            if o.sets is not None:
                if not value:
                    continue
                if fields.get(o.dest) not in (None, o.sets):
                    raise usage(f"{shown} contradicts the {o.dest} given with it; give one "
                                "of them")
                value = o.sets
            elif o.negate:
                value = not value
            fields[o.dest] = value
        return cls(**fields, extra=list(extra))


# -- the nox cell's own posargs ---------------------------------------------------

ENV_TIMEOUT = "TRACTOR_TASKS_TIMEOUT"
ENV_CONTAIN_OFF = "TRACTOR_TASKS_NO_CONTAIN"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise usage(f"{message} (a cell's own options: "
                    + ", ".join(o.cell for o in RUN_OPTIONS if o.cell) + ")")


def cell_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nox -s CELL --", add_help=False, allow_abbrev=False)
    for o in RUN_OPTIONS:
        if not o.cell:
            continue
        if o.kind == "flag":
            p.add_argument(o.cell, dest=o.name, action="store_true")
        else:
            p.add_argument(o.cell, dest=o.name)
    return p


def cell_options(posargs: list[str], env: dict | None = None) -> RunOptions:
    """A cell's options from its posargs (`--cell-timeout 30` and `=30` alike); what is
    not the cell's goes to pytest. TRACTOR_TASKS_TIMEOUT is the bound's env default."""
    env = os.environ if env is None else env
    known, rest = cell_parser().parse_known_args(posargs)
    values = vars(known)
    names = {o.name: o.cell for o in RUN_OPTIONS if o.cell}
    if values.get("timeout") is None and env.get(ENV_TIMEOUT):
        values["timeout"] = env[ENV_TIMEOUT]
        names["timeout"] = ENV_TIMEOUT
    if env.get(ENV_CONTAIN_OFF, "") not in ("", "0"):
        values["no_contain"] = True
    values["no_x"] = True  # cells run the whole suite
    return RunOptions.parse(values, extra=rest, flag_names=names)
