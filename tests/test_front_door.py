"""What a new user meets (issue 26, LOW 12-14): control characters from outside strings
escaped on the terminal, one message per refusal, the front door (`tractor-tasks
--help`/`--version`, `invoke --list`, `--help`'s value names). Pure decisions first
(fast); then the same through real `invoke`/`tractor-tasks` processes (slow)."""
from __future__ import annotations

import inspect
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import REPO, copy_sample, invoke

from tractor_tasks import cli, doctor, fsutil, report
from tractor_tasks.errors import TaskError
from tractor_tasks.options import RunOptions, count
from tractor_tasks.output import Output
from tractor_tasks.passes import RunResult
from tractor_tasks.results import Results
from tractor_tasks.status import Check as S, RunStatus
from tractor_tasks.target import load_target

ESC = "\x1b]0;pwned\x07"   # sets a terminal's title, then rings its bell
RAW = ("\x1b", "\x07")


def _raw_in(text: str) -> bool:
    return any(ch in text for ch in RAW)


# -- 12: control characters escaped wherever an outside string is printed -------------

def test_our_lines_escape_control_characters_and_pytests_bytes_stay_verbatim():
    buf = io.StringIO()
    out = Output(buf)
    out.line(f"$ python -m pytest 'tests/test_{ESC}.py'")
    out.status([f"running tests/test_{ESC}.py::test_x"])
    out.raw(b"\x1b[31mFAILED\x1b[0m\n")   # pytest's own colours: its output, as is
    text = buf.getvalue()
    ours, pytests = text.split("\x1b[1A\x1b[J")   # the status block is cleared before
    assert not _raw_in(ours), repr(ours)
    assert "tests/test_\\x1b]0;pwned\\x07.py" in ours
    assert pytests == "\x1b[31mFAILED\x1b[0m\n"


def test_an_error_line_stays_one_line_whatever_it_quotes():
    text = f"error: --baseline a\nresults: 5 passed{ESC}: no such commit"
    assert fsutil.shown(text, one_line=True) == \
        "error: --baseline a\\nresults: 5 passed\\x1b]0;pwned\\x07: no such commit"
    assert fsutil.shown("a\tb\nc") == "a\tb\nc"   # other text keeps its lines and tabs


# -- 13: one message per refusal ---------------------------------------------------------

def test_a_count_below_its_least_and_a_negative_one_get_one_message():
    msgs = {}
    for value in ("0", "-1", "x"):
        with pytest.raises(TaskError) as err:
            count("--limit", value, least=1)
        assert err.value.code == 2
        msgs[value] = str(err.value).replace(repr(value), "V")
    assert len(set(msgs.values())) == 1, msgs
    assert msgs["0"] == "error: --limit must be a whole number (1 or more), got V"
    assert count("--limit", "1", least=1) == 1 and count("--max-hangs", "0") == 0


def test_an_empty_smoke_list_is_refused_as_config(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 't'\n\n"
                                             "[tool.tractor-tasks]\nsmoke = []\n")
    with pytest.raises(TaskError) as err:
        load_target(tmp_path)
    assert err.value.code == 2 and "\n" not in str(err.value)
    assert "smoke" in str(err.value) and "whole suite" in str(err.value)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 't'\n\n"
                                             "[tool.tractor-tasks]\nsmoke = ['test_a.py']\n")
    assert load_target(tmp_path).smoke == ("test_a.py",)


def test_what_stands_at_a_path_is_named(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "file").write_text("{}")
    assert fsutil.what_is(fifo) == "is a FIFO"
    assert fsutil.what_is(tmp_path) == "is a directory"
    assert fsutil.what_is(tmp_path / "nope") == "no such file"
    assert fsutil.what_is(tmp_path / "file") == "is a regular file"


def test_an_empty_base_is_refused_as_an_empty_baseline_is(tmp_path):
    from tractor_tasks.selection import changed_files
    with pytest.raises(TaskError) as base:
        changed_files(tmp_path, "")   # refused before git is asked anything
    with pytest.raises(TaskError) as baseline:
        RunOptions.parse({"baseline": ""})
    assert base.value.code == baseline.value.code == 2
    assert str(base.value).replace("--base ", "X ") == \
        str(baseline.value).replace("--baseline ", "X ")


def _check(name, status, fix=""):
    return doctor.Check(name, status, "detail", fix)


def test_doctor_fix_has_work_when_only_this_checkouts_orphan_segments_warn():
    ok = [_check("python", S.OK), _check("venv", S.OK)]
    assert not doctor.worth_fixing(ok)
    assert doctor.worth_fixing(ok + [_check("shm", S.WARN, "invoke clean --shm")])
    # segments not shown to be ours: nothing --fix may do
    assert not doctor.worth_fixing(ok + [_check("shm", S.WARN, "not this checkout's to "
                                                 "remove: remove them yourself")])
    assert doctor.worth_fixing(ok + [_check("sockets", S.FAIL, "invoke clean")])


# -- 14: the front door ------------------------------------------------------------------

def test_one_ci_shard_says_which_shard_it_ran(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 't'\n")
    (tmp_path / "tests").mkdir()
    r = Results(load_target(tmp_path))
    r.seconds = 1.0
    result = RunResult(r, passes=[], shards=4)
    one = report.render(SimpleNamespace(opts=RunOptions(shard=(1, 4))), result)
    line = next(x for x in one if x.startswith("results:"))
    assert line.endswith("(shard 1/4)") and "4 shards" not in line, line
    here = report.render(SimpleNamespace(opts=RunOptions(shards=4)), result)
    assert next(x for x in here if x.startswith("results:")).endswith("(4 shards)")


@pytest.fixture(scope="module")
def tasks():
    from tractor_tasks.invoke_tasks import collection
    return collection(str(REPO / "tasks.py"))


def _parse(tasks, *argv):
    from invoke.parser import Parser
    return Parser(contexts=tasks.to_contexts()).parse_argv(list(argv))


def test_each_tasks_listed_line_is_a_whole_sentence(tasks):
    """`invoke --list` shows a docstring's first line: it must not stop mid-phrase."""
    for name in tasks.task_names:
        first = inspect.getdoc(tasks[name]).splitlines()[0]
        assert first.endswith(".") and first.count("(") == first.count(")"), (name, first)
        assert len(first) <= 100, (name, first)


def test_help_names_numeric_values_and_hides_the_no_op(tasks):
    ctx = {c.name: c for c in tasks.to_contexts()}
    test = dict(ctx["test"].help_tuples())
    assert "--timeout=SECONDS" in test and "--test-timeout=SECONDS" in test
    assert "--max-hangs=N" in test and "--confirm=N" in test and "--shard=I/N" in test
    assert "-n N|auto, --shards=N|auto" in test
    assert not any("isolate" in names for names in test), test.keys()
    assert not any(n.startswith(("--timeout=", "--max-hangs=")) and n.endswith("STRING")
                   for n in test)
    assert "--limit=N" in dict(ctx["history"].help_tuples())
    assert "--min-runs=N" in dict(ctx["flaky"].help_tuples())
    assert "--grace=SECONDS" in dict(ctx["clean"].help_tuples())
    assert "--shards=N" in dict(ctx["ci-matrix"].help_tuples())
    # hidden from the help, still accepted
    [call] = _parse(tasks, "test", "--isolate-net")
    assert call.name == "test" and call.args["isolate_net"].value is True


def test_the_flag_as_typed_is_what_an_error_names(tasks):
    from tractor_tasks import _invoke_words
    for flag in ("-n", "--shards"):
        _invoke_words.TYPED.clear()
        _parse(tasks, "test", flag, "0")
        names = _invoke_words.typed("test")
        assert names == {"shards": flag}
        with pytest.raises(TaskError) as err:
            RunOptions.parse({"shards": "0"}, flag_names=names)
        assert str(err.value).startswith(f"error: {flag} must be"), err.value


def test_the_tools_help_lists_what_it_offers_and_its_version(tasks, capsys):
    with pytest.raises(SystemExit) as end:
        cli.main(["--version"])
    assert end.value.code == 0
    from importlib.metadata import version
    assert capsys.readouterr().out.strip() == f"tractor-tasks {version('tractor-tasks')}"
    with pytest.raises(SystemExit) as end:
        cli.main(["--help"])
    assert end.value.code == 0
    text = capsys.readouterr().out
    assert "init" in text and "invoke --list" in text and "nox --list" in text
    missing = [n for n in tasks.task_names if n not in text]
    assert not missing, missing


# -- the same, through real processes ----------------------------------------------------

def _one_line(out, code: int, needle: str) -> str:
    assert out.returncode == code, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


@pytest.mark.slow
def test_outside_strings_reach_the_terminal_escaped(tmp_path):
    """The `$ ... pytest` echo, `invoke lastfailed`, and the error lines of --baseline,
    --durations-file and durations --out: each quotes a string from outside (a test's
    path, a ref, a path) that carries ESC and BEL."""
    root = copy_sample(tmp_path / "s", git=True)
    name = f"tests/test_esc{ESC}.py"
    (root / name).write_text("def test_bell():\n    assert False\n")
    run = invoke("test", name, "--no-confirm", root=root, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    echo = next(x for x in run.stdout.splitlines() if x.startswith("$ ") and "pytest" in x)
    assert not _raw_in(echo) and "test_esc\\x1b]0;pwned\\x07.py" in echo, echo
    last = invoke("lastfailed", root=root)
    assert last.returncode == 0 and not _raw_in(last.stdout), repr(last.stdout)
    assert "test_esc\\x1b]0;pwned\\x07.py::test_bell" in last.stdout, last.stdout
    for args in (["test", "--baseline", f"x{ESC}"],
                 ["test", "--durations-file", str(tmp_path / f"d{ESC}.json")],
                 ["durations", "--out", str(tmp_path / f"no{ESC}" / "d.json")]):
        out = invoke(*args, root=root)
        line = _one_line(out, out.returncode, "error: ")
        assert out.returncode in (1, 2) and not _raw_in(out.stderr), repr(out.stderr)
        assert "\\x1b]0;pwned\\x07" in line, line
    forged = invoke("test", "--baseline", "a\nresults: 5 passed", root=root)
    _one_line(forged, 2, "--baseline a\\nresults: 5 passed")   # no forged line


@pytest.mark.slow
@pytest.mark.parametrize("args, code, needle", [
    (["history", "--limit", "0"], 2, "--limit must be a whole number (1 or more), got '0'"),
    (["history", "--limit=-1"], 2, "--limit must be a whole number (1 or more), got '-1'"),
    (["flaky", "--min-runs", "1"], 2, "--min-runs must be a whole number (2 or more)"),
    (["affected", "--base", ""], 2, "--base is empty; give a value or leave it out"),
    (["test", "--baseline", ""], 2, "--baseline is empty; give a value or leave it out"),
    (["test", "-n", "0"], 2, "error: -n must be a number of shards"),
    (["test", "--shards", "0"], 2, "error: --shards must be a number of shards"),
    (["test", "-n", "2", "--shard", "1/4"], 2, "-n/--shards N runs them all"),
])
def test_refusals_are_one_line_alike(tmp_path, args, code, needle):
    root = copy_sample(tmp_path / "s", git=True)
    _one_line(invoke(*args, root=root), code, needle)
    assert not (root / ".tractor-tasks" / "runs").exists()


@pytest.mark.slow
def test_an_empty_smoke_list_and_a_fifo_durations_file_are_refused(tmp_path):
    root = copy_sample(tmp_path / "s", config="[tool.tractor-tasks]\nsmoke = []\n")
    _one_line(invoke("smoke", "--dry-run", root=root), 2, "smoke")
    root = copy_sample(tmp_path / "t")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    line = _one_line(invoke("test", "--durations-file", str(fifo), root=root), 2, "is a FIFO")
    assert "no such file" not in line


@pytest.mark.slow
def test_ci_matrix_with_stdout_closed_says_so_and_fails():
    out = subprocess.run(["sh", "-c", 'exec "$0" "$@" >&-', sys.executable, "-m", "invoke",
                          "ci-matrix"], cwd=REPO, capture_output=False, text=True,
                         stderr=subprocess.PIPE, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().startswith("error: stdout is closed"), out.stderr
    ok = invoke("ci-matrix")
    assert ok.returncode == 0 and json.loads(ok.stdout)["include"]


@pytest.mark.slow
def test_invoke_list_and_help_read_whole(tmp_path):
    listed = invoke("--list")
    assert listed.returncode == 0, listed.stderr
    entries, current = [], None
    for line in listed.stdout.splitlines()[2:]:
        if line.startswith("  ") and not line.startswith("    "):
            current = [line.split(None, 1)[1]]
            entries.append(current)
        elif line.strip() and current is not None:
            current.append(line.strip())
    texts = [" ".join(e) for e in entries]
    assert len(texts) >= 15 and all(t.endswith(".") for t in texts), texts
    help_ = invoke("test", "--help")
    assert "--timeout=SECONDS" in help_.stdout and "isolate" not in help_.stdout
    assert "-n N|auto, --shards=N|auto" in help_.stdout, help_.stdout
    dry = invoke("test", "test_local.py", "--isolate-net", "--dry-run",
                 root=copy_sample(tmp_path / "s"))
    assert dry.returncode == 0, dry.stderr   # still accepted, as the README says
    # a task whose first argument is positional: invoke hands it `--help` as the value
    for task in ("ci-report", "history"):
        shown = invoke(task, "--help")
        assert shown.returncode == 0 and shown.stdout.startswith(
            f"Usage: inv[oke] [--core-opts] {task} "), (task, shown.stdout, shown.stderr)


@pytest.mark.slow
def test_the_tractor_tasks_command_has_a_version_and_a_front_door():
    exe = Path(sys.executable).parent / "tractor-tasks"
    ver = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert ver.returncode == 0 and ver.stdout.startswith("tractor-tasks 0."), ver
    help_ = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0
    for word in ("init", "invoke --list", "nox --list", "test", "doctor", "ci-report"):
        assert word in help_.stdout, help_.stdout


@pytest.mark.slow
def test_doctor_fix_removes_this_checkouts_orphan_segment_and_keeps_others(
        sample_repo, monkeypatch):
    """The README: `--fix` applies the safe fixes, this checkout's orphan segments
    included; a warning alone (no failed check) is work for it. A segment made before
    the run is not shown to be ours: kept."""
    import uuid

    from tractor_tasks import shm
    name = f"ttt_{uuid.uuid4().hex[:12]}"
    decoy = shm.HOST / f"ttt_decoy_{uuid.uuid4().hex[:12]}"
    decoy.write_bytes(b"d" * 10)
    monkeypatch.setenv("TRACTOR_TASKS_CONTAIN", "off")   # the host's /dev/shm
    monkeypatch.setenv("SAMPLE_ACTORS_CHAOS", "shm_leak")
    monkeypatch.setenv("SAMPLE_ACTORS_SHM_NAME", name)
    try:
        run = invoke("test", "test_spawning.py::test_shm_leak", root=sample_repo)
        assert run.returncode == 0 and (shm.HOST / name).exists(), run.stdout + run.stderr
        before = invoke("doctor", "--fast", root=sample_repo)
        assert before.returncode == 0, before.stdout   # a warning, no failure
        fixed = invoke("doctor", "--fix", "--fast", root=sample_repo)
        assert f"fix: removed shared memory /dev/shm/{name}" in fixed.stdout, fixed.stdout
        assert not (shm.HOST / name).exists() and decoy.exists()
        shm_line = next(x for x in fixed.stdout.splitlines() if x.startswith("shm"))
        assert name not in shm_line and decoy.name in shm_line, fixed.stdout
    finally:
        decoy.unlink(missing_ok=True)
        (shm.HOST / name).unlink(missing_ok=True)
