"""The run options, declared once: each `RunOptions` field carries its flags (an `Opt`
in the field's metadata: spelling, help, kind, the nox cell's spelling), and
RUN_OPTIONS, `invoke test/smoke/rerun/affected` and the nox cells' parser are all
derived from those fields. Adding a field with its `Opt` is the only step in code
(the README's Run options paragraph lists it: tests/test_options.py checks). Every
value is checked here, before anything runs or is written.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field, fields, replace

from .errors import usage


@dataclass(frozen=True)
class Opt:
    """One flag of a run option: declared on the RunOptions field it sets (the field's
    metadata), so the field, its flags, their help and their kinds are one declaration."""
    help: str
    kind: str = "str"    # how its value is checked: a key of KINDS
    cell: str | None = None   # the nox cell's own flag for it (None: invoke's only)
    short: str | None = None
    name: str = ""       # the invoke keyword ("": the field's name; invoke turns _ into -)
    negate: bool = False      # a flag that turns its field off (--no-x: exitfirst)
    sets: object = None       # a flag that sets its field to this (--no-confirm: confirm 0)
    ignored: bool = False     # accepted and dropped (kept for old scripts)
    dest: str | None = None   # the field it sets (filled in from the field; None: ignored)
    default: object = None    # invoke's default for the keyword (filled in)

    @property
    def fronts(self) -> tuple[str, ...]:
        """The front ends that take it: every run task, and the nox cells when `cell`."""
        return ("invoke", "nox") if self.cell else ("invoke",)


def _option(default, *flags: Opt, factory=None):
    """A RunOptions field and the flags that set it (none: set by the front end itself)."""
    meta = {"flags": flags}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


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


MAX_COUNT = 100   # re-runs of each failure, hangs to resume after: past it is a typo


def count(name: str, value, least: int = 0, most: int | None = None) -> int | None:
    """A whole number, `least` or more (and `most` or less): one message for every
    value refused (0, -1, x, 100000)."""
    if value is None:
        return None
    text = str(value)
    if not (text.isascii() and text.isdigit()) or int(text) < least:
        raise usage(f"{name} must be a whole number ({least} or more), got {value!r}")
    if most is not None and int(text) > most:
        raise usage(f"{name} must be a whole number from {least} to {most}, got {value!r}")
    return int(text)


def run_count(name: str, value) -> int | None:
    """A run option's count (re-runs of each failure, hangs to resume after)."""
    return count(name, value, most=MAX_COUNT)


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
    "count": run_count,
    "shards": shards,
    "shard": shard,
}


@dataclass
class RunOptions:
    """Everything a run is asked to do besides which tests (the words). Each field
    carries its flags (`Opt`, in its metadata): RUN_OPTIONS, the invoke tasks' keywords
    and help, and the nox cell's parser are all read off these fields."""
    k: str | None = _option(None, Opt("pytest -k expression"))
    tpt: str | None = _option(None, Opt("transport: tcp or uds (default: the plugin's, tcp)"))
    spawn: str | None = _option(None, Opt("spawn backend: trio, mp_spawn, mp_forkserver"))
    ll: str | None = _option(None, Opt("tractor log level (--ll)"))
    tpdb: bool = _option(False, Opt("enable tractor's multi-process debugger (--tpdb)",
                                    "flag"))
    python: str | None = _option(None, Opt("Python minor whose py<MINOR> venv to use, "
                                           "e.g. 3.13"))
    timeout: float | None = _option(None, Opt(
        "whole-run bound in seconds (default from the config: 1800 for a suite, 300 for "
        "one file)", "seconds", cell="--cell-timeout"))
    test_timeout: float | None = _option(None, Opt(   # None: the config's; 0: off
        "per-test bound in seconds; a test past it is dumped, ended and reported HUNG, and "
        "the rest of the run resumes (0 = off; default from the config)", "bound",
        cell="--test-timeout"))
    max_hangs: int = _option(3, Opt("resume after at most this many hung tests (default 3)",
                                    "count", cell="--max-hangs"))
    dry_run: bool = _option(False, Opt("print the exact command and environment; run nothing",
                                       "flag"))
    sweep: bool = _option(True, Opt("sweep in-scope leftovers before the run (--no-sweep: "
                                     "stop instead)", "flag"))
    exitfirst: bool = _option(True, Opt("do not stop at the first failure (drop the default "
                                        "-x)", "flag", name="no_x", negate=True))
    retry_flaky: bool = _option(False, Opt("rerun known-flaky failures once and report both "
                                           "outcomes", "flag", cell="--retry-flaky"))
    contain: bool = _option(
        True,
        Opt("run pytest uncontained (no own pid/net/user namespaces)", "flag",
            cell="--no-contain", name="no_contain", negate=True),
        Opt("kept for old scripts: contained runs already have their own network", "flag",
            cell="--isolate-net", name="isolate_net", ignored=True))
    fail_on_leak: bool = _option(False, Opt("fail the run when it leaves processes, "
                                            "listeners or sockets", "flag",
                                            cell="--fail-on-leak"))
    shards: int | str | None = _option(None, Opt(
        "run the tests' modules on N parallel contained workers, admitted by their recorded "
        "CPU cost (N or auto)", "shards", cell="--shards", short="n"))
    shard: tuple[int, int] | None = _option(None, Opt(
        "run only shard I of N (I/N), as a CI job of a sharded matrix does", "shard",
        cell="--shard"))
    durations_file: str | None = _option(None, Opt(
        "durations for shards from this JSON file (what `invoke durations` writes) instead "
        "of the history", cell="--durations-file"))
    confirm: int = _option(   # confirmation re-runs per failure (0: none)
        1,
        Opt("re-run each failure not already explained (pre-existing, known-flaky, "
            "quarantined) alone this many times after the run (default 1)", "count",
            cell="--confirm"),
        Opt("no confirmation re-runs: failures are judged on their one outcome", "flag",
            cell="--no-confirm", name="no_confirm", sets=0))
    baseline: str | None = _option(None, Opt(   # None: the default choice
        "compare failures with this commit or branch (default: where the branch left the "
        "default branch when there are changes; none on an unchanged default branch, where "
        "the history decides)", cell="--baseline"))
    strict: bool = _option(False, Opt("every failure fails the run (pre-existing, flaky, "
                                      "known-flaky and quarantined ones too)", "flag",
                                      cell="--strict"))
    extra: list[str] = _option(None, factory=list)   # pytest args, verbatim (after --)
    last_failed: bool = _option(False)               # `invoke rerun` sets it

    @property
    def interactive(self) -> bool:
        """A debugger may take the terminal: Ctrl-C then belongs to it."""
        return self.tpdb or any(a in ("--pdb", "--trace", "--tpdb", "--debug-mode")
                                for a in self.extra)

    @classmethod
    def parse(cls, values: dict, *, extra=(), flag_names: dict | None = None) -> RunOptions:
        """From invoke keywords or argparse results: each option's value checked by its
        declared kind (exit 2); a value left out keeps the field's default."""
        given = {}
        for o in RUN_OPTIONS:
            shown = (flag_names or {}).get(o.name) or "--" + o.name.replace("_", "-")
            value = KINDS[o.kind](shown, values.get(o.name))
            if value is None or o.dest is None:
                continue
            if o.sets is not None:
                if not value:
                    continue
                if given.get(o.dest) not in (None, o.sets):
                    raise usage(f"{shown} contradicts the {o.dest} given with it; give one "
                                "of them")
                value = o.sets
            elif o.negate:
                value = not value
            given[o.dest] = value
        return cls(**given, extra=list(extra))


def _declared() -> tuple[Opt, ...]:
    """Every flag, in field order, with its field (dest), its invoke keyword and its
    invoke default filled in from the field it is declared on."""
    out = []
    for f in fields(RunOptions):
        for o in f.metadata["flags"]:
            flag_default = o.kind == "flag" and not (o.negate or o.ignored or
                                                     o.sets is not None)
            out.append(replace(o, name=o.name or f.name, dest=None if o.ignored else f.name,
                               default=(f.default if flag_default else
                                        False if o.kind == "flag" else None)))
    return tuple(out)


RUN_OPTIONS: tuple[Opt, ...] = _declared()


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
