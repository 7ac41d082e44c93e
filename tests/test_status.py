"""status.py: the run's end is decided in one function. Fast: reads src/ only."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import tractor_tasks

SRC = Path(tractor_tasks.__file__).parent


WORDS = ("RunStatus", "Ending", "conclude", "exit_code", "decide", "_WORST")


def _modules():
    """Every module but status.py that names any of WORDS (the rest cannot decide)."""
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if path.name != "status.py" and any(w in text for w in WORDS):
            yield path, ast.parse(text, str(path))


def _parents(tree):
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def test_the_run_status_and_exit_code_are_decided_in_one_function():
    """Outside status.py no module names a run status except to compare with one, builds
    an Ending or a RunStatus (cells.py parses a stored one), or decides; `conclude` is
    called from one place (RunResult.end), and the old deciders are gone."""
    found, calls = [], []
    for path, tree in _modules():
        parents = _parents(tree)
        rel = path.relative_to(SRC)
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "RunStatus":
                up = parents.get(node)
                while isinstance(up, ast.Tuple):
                    up = parents.get(up)
                if not isinstance(up, ast.Compare):
                    found.append(f"{where}: RunStatus.{node.attr} outside a comparison")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                if name == "Ending" or (name == "RunStatus" and path.name != "cells.py"):
                    found.append(f"{where}: {name}(...)")
                if name == "conclude":
                    calls.append(where)
            if isinstance(node, (ast.FunctionDef, ast.Attribute, ast.Name)) and \
                    getattr(node, "name", getattr(node, "attr", getattr(node, "id", ""))) in (
                        "exit_code", "decide", "_WORST"):
                found.append(f"{where}: a second decider ({ast.dump(node)[:40]})")
    assert found == []
    assert calls == ["passes.py:" + calls[0].split(":")[1]] and len(calls) == 1, calls


def test_the_guard_sees_a_decision_outside_status_py(tmp_path, monkeypatch):
    """The guard above can fail: a module that sets a status of its own is caught."""
    (tmp_path / "rogue.py").write_text(
        "from .status import RunStatus\n\n\ndef f(r):\n    return RunStatus.PASSED\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    try:
        test_the_run_status_and_exit_code_are_decided_in_one_function()
    except AssertionError as err:
        assert "rogue.py:5: RunStatus.PASSED outside a comparison" in str(err)
    else:
        raise AssertionError("the guard passed a module that decides a status")
