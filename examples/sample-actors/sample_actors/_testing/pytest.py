"""
The pytest plugin, loaded with ``-p sample_actors._testing.pytest``
(see ``addopts`` in pyproject.toml), mirroring tractor's:

- options ``--tpt-proto tcp|uds``, ``--spawn-backend trio|mp_spawn|
  mp_forkserver``, ``--ll/--loglevel``, ``--tpdb/--debug-mode``;
- session fixtures ``tpt_proto``, ``start_method``, ``loglevel``,
  ``debug_mode`` and ``reg_addr`` (a random registry address per run).

On import it arms the SIGUSR1 stack dumper, before pytest starts
capturing, so ``kill -USR1 <pytest pid>`` reaches the real stderr.

"""
import pytest

from .._spawn import SPAWN_METHODS
from .._stackdump import install_stack_dumper
from ..discovery._addr import TPT_PROTOS, Address, registry_port
from . import rando_addr

install_stack_dumper()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup('sample-actors')
    group.addoption(
        '--tpt-proto', dest='tpt_proto', default='tcp', choices=TPT_PROTOS,
        help='IPC transport between actors (default: tcp)',
    )
    group.addoption(
        '--spawn-backend', dest='spawn_backend', default='trio',
        choices=SPAWN_METHODS, help='how child actors are spawned (default: trio)',
    )
    group.addoption(
        '--ll', '--loglevel', dest='loglevel', default=None,
        help='runtime log level, passed on to every actor',
    )
    group.addoption(
        '--enable-stackscope', dest='stackscope', action='store_true',
        help='SIGUSR1 also prints the trio task tree (pytest and every actor)',
    )
    group.addoption(
        '--tpdb', '--debug-mode', dest='debug_mode', action='store_true',
        help='sets the `debug_mode` fixture (kept for parity with tractor)',
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.option.stackscope:
        from .._tasktree import install_task_tree_dumper
        install_task_tree_dumper()


def pytest_report_header(config: pytest.Config) -> str:
    opt = config.option
    return (
        f'sample-actors: tpt-proto={opt.tpt_proto} '
        f'spawn-backend={opt.spawn_backend} default registry port={registry_port()}'
    )


@pytest.fixture(scope='session')
def tpt_proto(request: pytest.FixtureRequest) -> str:
    return request.config.option.tpt_proto


@pytest.fixture(scope='session')
def start_method(request: pytest.FixtureRequest) -> str:
    return request.config.option.spawn_backend


@pytest.fixture(scope='session')
def loglevel(request: pytest.FixtureRequest) -> str | None:
    return request.config.option.loglevel


@pytest.fixture(scope='session')
def debug_mode(request: pytest.FixtureRequest) -> bool:
    return request.config.option.debug_mode


@pytest.fixture(scope='session')
def reg_addr(tpt_proto: str) -> Address:
    '''This run's registry address, so parallel runs never collide.'''
    return rando_addr(tpt_proto)
