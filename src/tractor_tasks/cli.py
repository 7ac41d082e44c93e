"""`tractor-tasks init [PATH]`: put the noxfile.py and tasks.py shims into a checkout.

The rest of the tool is the checkout's `invoke` tasks and `nox` sessions, which the
shims load; `tractor-tasks --help` says so, `--version` names the installed version."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import TaskError, usage
from .fsutil import atomic_write, check_destination
from .output import say

SHIMS = {
    "noxfile.py": '''"""nox sessions for this checkout's test matrix, from tractor-tasks (see `nox --list`)."""
from tractor_tasks.nox_sessions import register

register(__file__)
''',
    "tasks.py": '''"""invoke tasks for this checkout's tests, from tractor-tasks (see `invoke --list`)."""
from tractor_tasks.invoke_tasks import collection

ns = collection(__file__)
''',
}


def init(path: Path, force: bool = False) -> int:
    if not path.is_dir():
        raise usage(f"{path} is not a directory; give the checkout to set up")
    existing = [name for name in SHIMS if (path / name).exists()]
    if existing and not force:
        raise usage(f"{', '.join(existing)} already exist in {path}; nothing written "
                    "(use --force to overwrite)")
    for name in SHIMS:
        check_destination(path / name)   # a link or FIFO there: refused before any write
    for name, text in SHIMS.items():
        atomic_write(path / name, text)   # a link there is refused, never written through
        say(f"wrote {path / name}")
    if not (path / "pyproject.toml").exists():
        say(f"note: {path} has no pyproject.toml; the defaults (tractor's) apply")
    say("next: `invoke doctor`, `invoke test`, `nox --list` (the shims are yours to commit "
        "or to keep untracked; tractor-tasks never runs git)")
    return 0


EPILOG = """\
what it offers, once `init` has put the shims in a checkout (run these there):
  invoke --list        the tasks: test, smoke, rerun, affected, quick, lastfailed,
                       doctor, clean, venv, history, flaky, durations, report,
                       ci-matrix, ci-report (`invoke --help TASK`: its options)
  nox --list           the test matrix: one session per Python x transport cell
                       (and the smoke and backend cells)
start with `invoke doctor`, then `invoke test`; the README has the rest."""


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as dist_version
    try:
        return dist_version("tractor-tasks")
    except PackageNotFoundError:   # run from a source tree that is not installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tractor-tasks", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="nox sessions and invoke tasks that run tractor's multi-process test\n"
                    "suite (a tractor-style checkout's) contained, bounded, and leaving\n"
                    "the machine clean.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"tractor-tasks {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    p_init = sub.add_parser("init", help="write noxfile.py and tasks.py shims into a checkout")
    p_init.add_argument("path", nargs="?", default=".", help="the checkout (default: .)")
    p_init.add_argument("--force", action="store_true", help="overwrite existing shims")
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            return init(Path(args.path).resolve(), args.force)
    except TaskError as err:
        say(str(err), one_line=True, err=True)
        return err.code
    return 2


if __name__ == "__main__":
    sys.exit(main())
