"""Target resolution and [tool.tractor-tasks] configuration."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import REPO, SAMPLE, invoke
from tractor_tasks.errors import TaskError
from tractor_tasks.target import KNOWN_MINORS, find_root, load_target, minors_from_requires

TRACTOR_PYPROJECT = """
[project]
name = "tractor"
requires-python = ">=3.13, <3.15"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_match_tractor_exactly(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACTOR_TASKS_REGISTRY_PORT")
    write(tmp_path / "pyproject.toml", TRACTOR_PYPROJECT)
    t = load_target(tmp_path)
    assert t.package == "tractor" and t.tests_dir == "tests"
    assert t.registry_port == 1616
    assert t.transports == ("tcp", "uds")
    assert t.spawn_backends == ("trio", "mp_spawn", "mp_forkserver")
    assert t.default_spawn_backend == "trio"
    assert t.pythons == ("3.13", "3.14")
    assert t.bindspace == "tractor"
    assert "_subactor[" in t.process_markers and "tractor._child" in t.process_markers
    assert t.smoke == ("test_local.py", "test_rpc.py", "test_spawning.py",
                       "discovery/test_registrar.py")
    assert t.affected["ipc/"] == ("ipc/", "test_2way.py")
    assert [r.error for r in t.flaky].count("TooSlowError") == 2
    assert (t.timeout_full, t.timeout_file, t.timeout_test) == (1800, 300, 120)
    assert t.stackscope_flag == "--enable-stackscope"
    assert t.test_bound("tests/test_x.py::t") == 120 and t.test_bound("x", 0) is None
    assert t.venv_dir("3.13") == tmp_path.resolve() / "py313"


@pytest.mark.parametrize("spec, minors", [
    (">=3.13, <3.15", ("3.13", "3.14")),
    (">=3.11,<3.14", ("3.11", "3.12", "3.13")),
    ("~=3.12.1", ("3.12",)),
    (">=3.12.1", ("3.12", "3.13", "3.14", "3.15")),
    ("==3.13.*", ("3.13",)),
])
def test_minors_come_from_requires_python(spec, minors):
    assert minors_from_requires(spec) == minors



@pytest.mark.parametrize("spec", [">=3.11", ">3.11", "<=3.13", "<3.12.5", ">=3.10.2, <3.14",
                                  " > 3.12 , < 3.14 ", ">=3.9,<4", ">=3.11,!=3.12.*", "<3"])
def test_the_fast_path_for_simple_ranges_agrees_with_packaging(spec):
    from packaging.specifiers import SpecifierSet
    s = SpecifierSet(spec)
    assert minors_from_requires(spec) == tuple(
        m for m in KNOWN_MINORS
        if s.contains(f"{m}.0", prereleases=True) or s.contains(f"{m}.99", prereleases=True))

def test_resolution_order(tmp_path, monkeypatch):
    shim = tmp_path / "shim"
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    write(shim / "pyproject.toml", '[tool.tractor-tasks]\nroot = "../c"\n')
    env = {"TRACTOR_TASKS_ROOT": str(b)}
    assert find_root(shim, str(a), env) == a.resolve()           # --root wins
    assert find_root(shim, None, env) == b.resolve()              # then the env var
    assert find_root(shim, None, {}) == c.resolve()               # then the shim's config
    (shim / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert find_root(shim, None, {}) == shim.resolve()            # else the shim dir


def test_this_repo_points_at_the_bundled_sample():
    assert find_root(REPO, None, {}) == SAMPLE.resolve()
    assert load_target(SAMPLE).package == "sample_actors"


@pytest.mark.parametrize("config, needle", [
    ('trasnports = ["tcp"]', "unknown key 'trasnports'"),
    ('transports = ["tcp", "quic"]', "unknown name 'quic'"),
    ('spawn_backends = ["trio", "mp_spwan"]', "did you mean 'mp_spawn'"),
    ('registry_port = "1616"', "registry_port"),
    ('registry_port = 70000', "an integer from 1 to 65535"),
    ('smoke = "test_local.py"', "smoke"),
    ('default_spawn_backend = "mp_spawn"\nspawn_backends = ["trio"]', "default_spawn_backend"),
    ('pythons = ["3.x"]', "write minors like"),
    ('timeout_full = -1', "positive number of seconds"),
    ('timeout_full = inf', "positive number of seconds"),
    ('timeout_file = nan', "positive number of seconds"),
    ('timeout_test = -5', "0 (off) or a positive number"),
    ('tests_dir = "/etc"', "not a dir inside the target"),
    ('tests_dir = "../.."', "not a dir inside the target"),
    ('tests_dir = "."', "not a dir inside the target"),
    ('pythons = []', "a non-empty list"),
    ('bindspace = "../../.."', "bindspace"),
    ('bindspace = "/etc"', "bindspace"),
    ('bindspace = ""', "bindspace"),
    ('[tool.tractor-tasks.test_timeouts]\n"test_x.py::*" = "soon"', "test_timeouts"),
    ('[[tool.tractor-tasks.flaky]]\ntest = "x"\nerorr = "y"', "unknown key 'erorr'"),
    ('[[tool.tractor-tasks.flaky]]\ntest = "x"\nerror = "("', "not a valid regex"),
    # issue 26 MED 6: a catastrophic regex spun the supervisor forever; refused at load
    ('[[tool.tractor-tasks.flaky]]\ntest = "x"\nerror = "(x+x+)+y"', "repeats a repeat ((x+x+)+y)"),
    ('[[tool.tractor-tasks.quarantine]]\ntest = "x"\nerror = "(\\\\w+\\\\s?)*$"',
     "possessive"),
    ('[tool.tractor-tasks.affected]\n"ipc/" = "test_x.py"', "affected"),
])
def test_bad_config_is_one_clear_usage_error(tmp_path, config, needle):
    body = config if config.startswith("[[") or config.startswith("[tool.tractor-tasks.") \
        else f"[tool.tractor-tasks]\n{config}"
    write(tmp_path / "pyproject.toml", body + "\n")
    with pytest.raises(TaskError) as err:
        load_target(tmp_path)
    assert err.value.code == 2
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and str(tmp_path) in msg


def test_a_repeat_inside_a_repeat_is_refused_and_what_cannot_backtrack_passes():
    """Python's re has no time cap, so a flaky rule's regex is checked when the config
    loads: a repeat inside an unbounded repeat backtracks exponentially on a failure
    message it does not match; possessive repeats and atomic groups do not."""
    import re
    from tractor_tasks.target import nested_repeat
    for bad in ("(x+x+)+y", "(a*)*", r"(\w+\s?)*$", "((ab)+)+", "(a{1,3})+z",
                r"x(?=(a+)+)", "(?:(?:a|b)+c?)*d"):
        assert nested_repeat(bad), bad
    for ok in ("(?:x+x+)++y", "(?>(x+)+)y", "(foo|bar)+ baz", "AssertionError: .*boom",
               r"trio\.TooSlowError", r"\d+ of \d+", "(ab){2,5}", "[a-z]+(?:_[a-z])*"):
        assert nested_repeat(ok) is None, ok
    # the possessive twin the refusal points to answers (the plain one took minutes)
    assert re.search("(?:x+x+)++y", "x" * 40) is None


def test_per_test_bounds_from_the_config(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.tractor-tasks]\ntimeout_test = 30\n'
          '[tool.tractor-tasks.test_timeouts]\n"devx/test_debugger.py::*" = 300\n'
          '"test_x.py::test_free[*]" = 0\n')
    t = load_target(tmp_path)
    assert t.test_bound("tests/devx/test_debugger.py::test_a[x]") == 300
    assert t.test_bound("tests/test_x.py::test_free[1]") is None   # 0: no bound
    assert t.test_bound("tests/test_y.py::t") == 30
    assert t.test_bound("tests/devx/test_debugger.py::t", 5) == 5  # --test-timeout wins


def test_requires_python_that_admits_no_known_minor(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nrequires-python = ">=3.40"\n')
    with pytest.raises(TaskError, match="admits no Python minor") as err:
        load_target(tmp_path)
    assert err.value.code == 2


@pytest.mark.slow
def test_bad_config_through_invoke_exits_2_with_one_line(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.tractor-tasks]\nspawn_backends = ["trio", "bogus"]\n')
    before = (tmp_path / "pyproject.toml").read_bytes()
    out = invoke("doctor", root=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown name 'bogus'" in lines[0]
    assert "allowed: trio, mp_spawn, mp_forkserver" in lines[0]
    assert (tmp_path / "pyproject.toml").read_bytes() == before
    assert not (tmp_path / ".tractor-tasks").exists()


def test_invalid_toml_and_missing_root(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.tractor-tasks\n")
    with pytest.raises(TaskError, match="not valid TOML") as err:
        load_target(tmp_path)
    assert err.value.code == 2
    with pytest.raises(TaskError, match="is not a directory") as err:
        find_root(tmp_path, str(tmp_path / "nope"), {})
    assert err.value.code == 2


def test_registry_port_override_is_validated(tmp_path):
    write(tmp_path / "pyproject.toml", TRACTOR_PYPROJECT)
    assert load_target(tmp_path, {"TRACTOR_TASKS_REGISTRY_PORT": "4242"}).registry_port == 4242
    with pytest.raises(TaskError) as err:
        load_target(tmp_path, {"TRACTOR_TASKS_REGISTRY_PORT": "port"})
    assert err.value.code == 2
