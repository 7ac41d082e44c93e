"""options.py: the run options are one declaration (RunOptions' fields and their Opts);
RUN_OPTIONS, the invoke tasks and the nox cell's parser are read off it."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tractor_tasks import options
from tractor_tasks.errors import TaskError
from tractor_tasks.options import (KINDS, RUN_OPTIONS, Opt, RunOptions, cell_options,
                                   cell_parser)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_field_carries_its_flags_and_every_flag_comes_from_a_field():
    """Adding a field with its Opt is the only step: no second table to keep in step."""
    for f in dataclasses.fields(RunOptions):
        assert "flags" in f.metadata, f"{f.name} has no flags metadata (options._option)"
        for o in f.metadata["flags"]:
            assert isinstance(o, Opt) and o.kind in KINDS and o.help, (f.name, o)
    declared = [o for f in dataclasses.fields(RunOptions) for o in f.metadata["flags"]]
    assert len(RUN_OPTIONS) == len(declared) == len({o.name for o in RUN_OPTIONS})
    for o in RUN_OPTIONS:
        assert o.dest is None if o.ignored else o.dest in RunOptions.__dataclass_fields__
    assert RUN_OPTIONS == options._declared()   # derived, never a table of its own


def test_a_field_added_with_its_opt_reaches_invoke_nox_and_parse(monkeypatch):
    """A new field (made here on a copy of RunOptions) is a keyword, a cell flag and a
    parsed value with nothing else written."""
    @dataclasses.dataclass
    class More(RunOptions):
        wobble: int | None = options._option(None, Opt("how much", "count",
                                                        cell="--cell-wobble"))
    monkeypatch.setattr(options, "RunOptions", More)
    monkeypatch.setattr(options, "RUN_OPTIONS", options._declared())
    new = options.RUN_OPTIONS[-1]
    assert (new.name, new.dest, new.default, new.fronts) == ("wobble", "wobble", None,
                                                             ("invoke", "nox"))
    assert More.parse({"wobble": "4"}).wobble == 4
    with pytest.raises(TaskError, match="--wobble must be a whole number"):
        More.parse({"wobble": "x"})
    got = options.cell_options(["--cell-wobble", "2", "-v"], env={})
    assert got.wobble == 2 and got.extra == ["-v"]


def _readme_run_options() -> str:
    text = README.read_text()
    start = text.index("**Run options**")
    return text[start:text.index("They are declared once", start)]


def test_every_flag_the_readme_lists_is_declared_with_its_cell_spelling():
    para = _readme_run_options()
    by_flag = {}
    for o in RUN_OPTIONS:
        by_flag[("-" if len(o.name) == 1 else "--") + o.name.replace("_", "-")] = o
        if o.short:
            by_flag["-" + o.short] = o
        if o.kind == "flag" and o.default is True:     # invoke's own --no-X
            by_flag["--no-" + o.name.replace("_", "-")] = o
    # `--flag ARG` (cell: `--x`) | (cell) after each item
    items = re.findall(r"`(-[-\w]*\w)[^`]*`(?:/`(--[-\w]+)`)?( \(cell(?:: `([-\w]+)`)?\))?",
                       para)
    listed = set()
    for flag, alias, cell, cell_spelling in items:
        assert flag in by_flag, f"README lists {flag}: no such run option"
        o = by_flag[flag]
        listed.add(o.name)
        if alias:
            assert by_flag.get(alias) is o, alias
        if cell:
            assert o.cell == (cell_spelling or alias or flag), (flag, o.cell)
        else:
            assert o.cell is None, f"{flag} is a cell option: the README should say (cell)"
    unlisted = {o.name for o in RUN_OPTIONS if not o.ignored} - listed
    assert not unlisted, f"run options the README's Run options paragraph misses: {unlisted}"
    parser_flags = {a.option_strings[0] for a in cell_parser()._actions}
    assert parser_flags == {o.cell for o in RUN_OPTIONS if o.cell}


def test_every_option_declares_a_known_kind_and_a_real_field():
    fields = set(RunOptions.__dataclass_fields__)
    for o in RUN_OPTIONS:
        assert o.kind in KINDS, o.name
        assert o.dest is None or o.dest in fields, o.name
    got = RunOptions.parse({"no_x": True, "no_contain": True, "sweep": False, "tpdb": True,
                            "isolate_net": True, "max_hangs": "0", "test_timeout": "0",
                            "timeout": "2.5", "shards": "auto", "shard": "2/3", "k": "x"},
                           extra=["-v"])
    assert got == RunOptions(k="x", tpdb=True, timeout=2.5, test_timeout=0.0, max_hangs=0,
                             sweep=False, exitfirst=False, contain=False, shards="auto",
                             shard=(2, 3), extra=["-v"])
    assert RunOptions.parse({}) == RunOptions()
    assert cell_options(["--cell-timeout=30", "--max-hangs", "1", "-k", "y"], env={}) == \
        RunOptions(timeout=30.0, max_hangs=1, exitfirst=False, extra=["-k", "y"])


@pytest.mark.parametrize("value, ok", [("0", True), ("100", True), ("101", False),
                                       ("100000", False)])
def test_a_run_count_past_a_hundred_is_a_typo(value, ok):
    """--confirm 100000 would re-run each failure that often (the verdict's time bound
    only ends it): refused, one line, exit 2."""
    from tractor_tasks.errors import TaskError
    if ok:
        assert RunOptions.parse({"confirm": value}).confirm == int(value)
        return
    with pytest.raises(TaskError) as err:
        RunOptions.parse({"confirm": value})
    assert err.value.code == 2
    assert str(err.value) == f"error: --confirm must be a whole number from 0 to 100, got '{value}'"
