"""cells.py: a cell's name (its nox session) and a venv's name (py<MINOR>, interpreters.py)
are each spelled and parsed in one module; every other module calls those."""
from __future__ import annotations

import re
from pathlib import Path

from tractor_tasks.cells import PARAMS, Cell, session_name
from tractor_tasks.interpreters import check_minor, minor_of_venv, venv_name
from tractor_tasks.target import load_target

SRC = Path(__file__).resolve().parents[1] / "src" / "tractor_tasks"


def _code_lines(skip: set[str]):
    for path in sorted(SRC.rglob("*.py")):
        if path.name in skip or "probe" in path.parts:   # the probe runs in the target
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            yield f"{path.relative_to(SRC)}:{n}", line


# a cell name built by hand: f"tests-{minor}", "smoke-" + minor, f"(tpt='{...}')"
_CELL_SPELLING = re.compile(r"""f["'](tests|backends|smoke)-\{|["'](tests|backends|smoke)-["']\s*\+"""
                            r"""|\b(tpt|spawn)='\{""")
# a venv name built or read by hand: "py" + ..., f"py{...}", py3\d, startswith("py3")
_VENV_SPELLING = re.compile(r"""["']py["']\s*\+|f["']py\{|py3\\d|startswith\(["']py""")


def test_cell_names_are_spelled_in_cells_py_only():
    found = [where for where, line in _code_lines({"cells.py"})
             if _CELL_SPELLING.search(line)]
    assert not found, f"cell names spelled outside cells.py: {found}"


def test_venv_names_are_spelled_in_interpreters_py_only():
    found = [where for where, line in _code_lines({"interpreters.py"})
             if _VENV_SPELLING.search(line)]
    assert not found, f"py<MINOR> spelled outside interpreters.py: {found}"


def test_names_round_trip(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    target = load_target(tmp_path)
    for minor in ("3.9", "3.13", "3.14"):
        assert minor_of_venv(venv_name(minor)) == minor == check_minor(venv_name(minor))
    assert venv_name("3.13") == "py313" and target.venv_dir("3.13") == tmp_path / "py313"
    assert [minor_of_venv(n) for n in ("py3", "py313x", "venv", ".venv", "py2")] == [None] * 5
    for kind, params in PARAMS.items():
        cell = Cell(kind, "3.13", "uds" if params else target.transports[0],
                    "mp_spawn" if kind == "backends" else target.default_spawn_backend)
        assert cell.name.startswith(session_name(kind, "3.13"))
        assert Cell.parse(cell.name, target) == cell, cell.name
    assert Cell("backends", "3.13", "uds", "mp_spawn").name == \
        "backends-3.13(spawn='mp_spawn', tpt='uds')"
    assert Cell("smoke", "3.13", "tcp", "trio").name == "smoke-3.13"
