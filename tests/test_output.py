"""output.py is the one place that writes to the user: say() (a task's lines) and Output
(a run's) escape control characters and survive a lost stdout; src/ prints nowhere else."""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from tractor_tasks.output import say

SRC = Path(__file__).resolve().parents[1] / "src" / "tractor_tasks"
# print() calls allowed outside output.py, by file: none. (Code that runs in another
# interpreter, e.g. preflight's import probe, is a string here, not a call.)
ALLOWED: dict[str, int] = {}


def test_src_prints_only_through_output_py():
    found: dict[str, list[int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id == "print":
                found.setdefault(str(path.relative_to(SRC)), []).append(node.lineno)
    over = {f: lines for f, lines in found.items() if len(lines) > ALLOWED.get(f, 0)}
    assert not over, f"print() outside output.py (use output.say): {over}"


def test_say_escapes_control_characters_and_keeps_an_error_line_one_line(capsys):
    say("test \x1b[31mred\u202e\nnext")
    say("error: bad\nref \x07", err=True, one_line=True)
    out, err = capsys.readouterr()
    assert out == "test \\x1b[31mred\\u202e\nnext\n"
    assert err == "error: bad\\nref \\x07\n"


def test_say_into_a_pipe_whose_reader_is_gone_goes_on_quietly(monkeypatch):
    read, write = os.pipe()
    os.close(read)
    stream = open(write, "w")
    monkeypatch.setattr(sys, "stdout", stream)
    try:
        say("first")    # EPIPE: the fd now points at /dev/null
        say("second")
        assert os.path.samestat(os.fstat(write), os.stat(os.devnull))
    finally:
        monkeypatch.undo()
        stream.close()
