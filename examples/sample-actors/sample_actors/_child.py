"""
Entry point of a child actor process.

The ``trio`` spawn backend runs::

    python -m sample_actors._child --uid NAME --parent-addr MADDR \\
        --registry-addr MADDR --start-method METHOD [--loglevel LEVEL]

and the multiprocessing backends call `run()` with the same values.
The process first retitles itself ``_subactor[NAME@PID]`` (as tractor
does) and arms the SIGUSR1 stack dumper.

"""
import argparse
import os
import sys

import setproctitle
import trio

from ._runtime import child_main, enable_logging
from ._stackdump import install_stack_dumper
from .discovery._addr import parse_maddr


def run(
    name: str,
    parent_maddr: str,
    registry_maddr: str,
    start_method: str,
    loglevel: str | None = None,
) -> None:
    setproctitle.setproctitle(f'_subactor[{name}@{os.getpid()}]')
    install_stack_dumper()
    if os.environ.get('SAMPLE_ACTORS_ENABLE_STACKSCOPE'):
        from ._tasktree import install_task_tree_dumper
        install_task_tree_dumper()
    if loglevel:
        enable_logging(loglevel, name)
    try:
        trio.run(
            child_main, name, parse_maddr(parent_maddr),
            parse_maddr(registry_maddr), start_method, loglevel,
        )
    except KeyboardInterrupt:  # ^C reaches the whole process group
        sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m sample_actors._child',
        description='Run one child actor (normally started by its parent).',
    )
    parser.add_argument('--uid', required=True, help='actor name')
    parser.add_argument('--parent-addr', required=True)
    parser.add_argument('--registry-addr', required=True)
    parser.add_argument('--start-method', default='trio')
    parser.add_argument('--loglevel')
    args = parser.parse_args(argv)
    run(args.uid, args.parent_addr, args.registry_addr, args.start_method,
        args.loglevel)


if __name__ == '__main__':
    main()
