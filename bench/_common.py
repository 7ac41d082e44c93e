"""Shared helpers of the benchmark scripts: arguments, a private sandbox, timing.

Every command a benchmark runs gets a private XDG_RUNTIME_DIR and TMPDIR and a
random free registry port, and runs against the sandbox's own copy of the
bundled sample (or, with --root, against the checkout given, used as is).
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample-actors"
SAMPLE_MINOR = "3.11"   # the copy of the sample gets a py311 venv
ROOT_MINOR = "3.13"     # a real tractor checkout (--root) is run with its py313 venv
_SKIP = ("py3*", ".tractor-tasks", "__pycache__", ".pytest_cache")


class BenchError(Exception):
    """A command the benchmark needs failed: the measurement means nothing."""

    def __init__(self, message: str, code: int | None = None, output: str = ""):
        super().__init__(message)
        self.code, self.output = code, output


def tool(name: str) -> str:
    """The console script next to this Python (skips pyenv's shim), else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


# -- arguments ------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(prog: str, about: str, repeat: int, root_refusal: str | None = None,
               extra: list[tuple[str, str, str]] = ()) -> argparse.Namespace:
    """--root and --repeat (and `extra` string options: (flag, default, help));
    `root_refusal` set: --root is refused with that reason."""
    p = _Parser(prog=prog, description=about)
    p.add_argument("--root", metavar="PATH",
                   help="a tractor checkout with a py313 venv, used as is "
                        "(default: a private copy of examples/sample-actors)")
    p.add_argument("--repeat", metavar="N", type=int, default=repeat,
                   help=f"repetitions per measurement; the median is printed (default {repeat})")
    for flag, default, text in extra:
        p.add_argument(flag, default=default, help=text)
    args = p.parse_args()
    if args.repeat < 1:
        p.error(f"--repeat must be 1 or more, got {args.repeat}")
    if args.root is not None and root_refusal:
        p.error(f"--root is not supported: {root_refusal}")
    if args.root is not None:
        root = Path(args.root).expanduser().resolve()
        if not (root / "pyproject.toml").is_file():
            p.error(f"--root {args.root}: no pyproject.toml there; point it at a checkout")
        if not (root / "tests").is_dir():
            p.error(f"--root {args.root}: no tests/ directory there")
        if not venv_python(root, ROOT_MINOR).exists():
            p.error(f"--root {args.root}: no {venv_name(ROOT_MINOR)}/ venv there; make it with "
                    f"`invoke venv --python {ROOT_MINOR} --root {root}`")
        args.root = root
    return args


def venv_name(minor: str) -> str:
    return "py" + minor.replace(".", "")


def venv_python(root: Path, minor: str) -> Path:
    return root / venv_name(minor) / "bin" / "python"


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 1616:
            return port


# -- the sandbox ------------------------------------------------------------------

class Sandbox:
    """Private dirs and port, and the target: a fresh copy of the sample or --root.

    Use as a context manager: the temp dirs (and the copy) are removed on exit.
    """

    def __init__(self, root: Path | None):
        # short on purpose: UDS paths under XDG_RUNTIME_DIR/TMPDIR are length-capped
        self.base = Path(tempfile.mkdtemp(prefix="ttb-", dir="/tmp"))
        os.chmod(self.base, 0o700)
        self.runtime = self._private("r")
        self.tmp = self._private("t")
        self.port = free_port()
        self.copied = root is None
        self.root = self.base / "sample-actors" if root is None else root
        self.minor = SAMPLE_MINOR if root is None else ROOT_MINOR
        self.python = venv_python(self.root, self.minor)
        self.env = {**os.environ,
                    "XDG_RUNTIME_DIR": str(self.runtime), "TMPDIR": str(self.tmp),
                    "SAMPLE_ACTORS_REGISTRY_PORT": str(self.port),
                    "TRACTOR_TASKS_REGISTRY_PORT": str(self.port),
                    "TRACTOR_TASKS_ROOT": str(self.root)}

    def _private(self, name: str) -> Path:
        path = self.base / name
        path.mkdir(mode=0o700)
        return path

    def __enter__(self) -> Sandbox:
        try:
            if self.copied:
                shutil.copytree(SAMPLE, self.root, symlinks=True, ignore=lambda d, names: [
                    n for n in names if any(fnmatch.fnmatch(n, pat) for pat in _SKIP)])
                self.run(self.invoke("venv", python=True), cwd=REPO)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def header(self, title: str, repeat: int) -> None:
        what = f"a private copy of the sample ({self.root})" if self.copied else str(self.root)
        print(f"{title}: target {what}, python {self.minor}, registry port {self.port}, "
              f"median of {repeat}", flush=True)

    def invoke(self, task: str, *args: str, python: bool = False) -> list[str]:
        return [tool("invoke"), task, *args, *(["--python", self.minor] if python else []),
                "--root", str(self.root)]

    def fresh_runtime(self) -> Path:
        """A new short private dir (like a nox cell's own), for one direct run."""
        path = Path(tempfile.mkdtemp(prefix="tt-", dir=self.tmp))
        os.chmod(path, 0o700)
        return path

    def run(self, argv: list[str], *, cwd: Path | None = None, env: dict | None = None,
            ok=(0,)) -> float:
        """Run to completion, output captured; return the wall time in seconds."""
        return self.output(argv, cwd=cwd, env=env, ok=ok)[0]

    def output(self, argv: list[str], *, cwd: Path | None = None, env: dict | None = None,
               ok=(0,)) -> tuple[float, str]:
        """Run to completion; return (wall time in seconds, stdout and stderr)."""
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd or self.root, env=env or self.env, check=False,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        secs = time.perf_counter() - t0
        if proc.returncode not in ok:
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise BenchError(f"`{shlex.join(argv)}` exited {proc.returncode}:\n{tail}",
                             proc.returncode, proc.stdout)
        return secs, proc.stdout


def parse_command(line: str, base: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """`K=V ... argv` as printed by --dry-run / command.txt -> (full env, argv).

    The tool prints a variable it prepends to as `K=new:$K`; that is expanded
    against `base`, the environment the tool itself ran with.
    """
    words = shlex.split(line)
    env = dict(base)
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        key, value = words.pop(0).split("=", 1)
        ref = f"{os.pathsep}${key}"
        if value.endswith(ref):
            value = value[: -len(ref)] + os.pathsep + base.get(key, "")
        env[key] = value
    return env, words


# -- measuring ------------------------------------------------------------------

def compare(repeat: int, a, b, warmup: bool = True) -> tuple[list[float], list[float]]:
    """Time two zero-argument callables (each returns its seconds), interleaved.

    One untimed warm-up of each first (unless the caller warmed up already);
    the order alternates per repetition so drift on a busy machine hits both
    sides alike.
    """
    if warmup:
        a(), b()
    xs, ys = [], []
    for i in range(repeat):
        if i % 2:
            ys.append(b())
            xs.append(a())
        else:
            xs.append(a())
            ys.append(b())
    return xs, ys


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def samples(name_a: str, xs: list[float], name_b: str, ys: list[float]) -> str:
    def fmt(vs: list[float]) -> str:
        return " ".join(f"{v:.2f}" for v in vs)
    return f"  samples (s): {name_a} {fmt(xs)} | {name_b} {fmt(ys)}"


def verdict(met: bool) -> str:
    return "met" if met else "not met"


def main(body) -> None:
    """Run body(), turning a failed command into one message and exit 1."""
    t0 = time.perf_counter()
    try:
        body()
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    print(f"(benchmark took {time.perf_counter() - t0:.0f}s)")
