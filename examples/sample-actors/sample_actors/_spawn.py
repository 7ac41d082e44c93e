"""
Starting child actor processes, with one of three backends:

- ``trio``: ``python -m sample_actors._child ...`` run by
  `trio.lowlevel.open_process`;
- ``mp_spawn`` / ``mp_forkserver``: a `multiprocessing` process of that
  start method, whose target is `sample_actors._child.run`.

Either way the caller gets a `ChildProcess`: a pid, `wait()` and `kill()`.

"""
import multiprocessing
import subprocess
import sys
from typing import Protocol

import trio

from .discovery._addr import Address

SPAWN_METHODS = ('trio', 'mp_spawn', 'mp_forkserver')


def check_start_method(method: str) -> str:
    if method not in SPAWN_METHODS:
        raise ValueError(
            f'unknown spawn backend {method!r}, choose one of {SPAWN_METHODS}'
        )
    return method


class ChildProcess(Protocol):
    pid: int

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


class _MpChild:
    '''A started `multiprocessing.Process`, awaitable from trio.'''

    def __init__(self, proc: multiprocessing.process.BaseProcess) -> None:
        self._proc = proc
        self.pid: int = proc.pid

    async def wait(self) -> int:
        if self._proc.exitcode is None:
            await trio.lowlevel.wait_readable(self._proc.sentinel)
            self._proc.join()
        return self._proc.exitcode

    def kill(self) -> None:
        self._proc.kill()


async def spawn_child(
    method: str, *, name: str, parent_addr: Address, registry_addr: Address,
    loglevel: str | None,
) -> ChildProcess:
    '''Start child actor `name`; it will connect back to `parent_addr`.'''
    if check_start_method(method) == 'trio':
        cmd = [
            sys.executable, '-m', 'sample_actors._child',
            '--uid', name,
            '--parent-addr', parent_addr.maddr(),
            '--registry-addr', registry_addr.maddr(),
            '--start-method', method,
        ]
        if loglevel:
            cmd += ['--loglevel', loglevel]
        return await trio.lowlevel.open_process(cmd, stdin=subprocess.DEVNULL)

    # imported here, not at the top: `._child` imports the runtime,
    # which imports this module
    from ._child import run

    ctx = multiprocessing.get_context(method.removeprefix('mp_'))
    if method == 'mp_forkserver':
        # the fork server imports the runtime (trio & co) once, so its
        # children start warm
        ctx.set_forkserver_preload(['sample_actors', 'setproctitle'])
    proc = ctx.Process(
        target=run,
        args=(name, parent_addr.maddr(), registry_addr.maddr(), method, loglevel),
        name=name,
    )
    await trio.to_thread.run_sync(proc.start)
    return _MpChild(proc)
