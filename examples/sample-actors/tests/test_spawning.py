"""
Spawning child actors: lifecycles, nesting, supervision - plus chaos
tests, ``test_daemon_leak`` (flags 'leak', 'ignore_sigint'),
``test_strays`` (flag 'stray'), ``test_shm_leak`` (flag 'shm_leak'),
``test_flood`` (flag 'flood'), ``test_runaway`` and
``test_runaway_outlived`` (flag 'runaway') and ``test_hang`` (flag 'hang').

"""
import logging
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import NoReturn

import pytest
import setproctitle
import trio

import sample_actors as sa
from sample_actors import ipc
from sample_actors._testing import sample_test

from . import _remote as remote


def _by_name(portal_name: str) -> str:
    return portal_name


def _by_upper(portal_name: str) -> str:
    return portal_name.upper()


# ids=repr, as some of tractor's tests have: the ids hold memory addresses
# (`<function _by_name at 0x7f...>`), a different node id in every pytest process
@pytest.mark.parametrize('namer', [_by_name, _by_upper], ids=repr)
def test_ids_with_addresses(namer):
    assert namer('pup') in ('pup', 'PUP')


@sample_test
async def test_start_and_cancel():
    async with sa.open_nursery() as an:
        portal = await an.start_actor('doggy')
        assert await portal.run(remote.whoami) == ['doggy', portal.pid, os.getpid()]
        assert await sa.query_actor('doggy') is not None
        assert await portal.cancel_actor()
        assert await sa.query_actor('doggy') is None
        with pytest.raises(sa.TransportClosed):
            await portal.run(remote.whoami)


@sample_test
async def test_concurrent_spawns():
    async with sa.open_nursery() as an:
        results = {}

        async def start(name: str) -> None:
            portal = await an.start_actor(name)
            results[name] = await portal.run(remote.whoami)

        async with trio.open_nursery() as nursery:
            for name in ('pup0', 'pup1'):
                nursery.start_soon(start, name)
        assert {name: ppid for name, _, ppid in results.values()} == {
            'pup0': os.getpid(), 'pup1': os.getpid(),
        }
        assert set(await sa.list_actors()) == {'root', 'pup0', 'pup1'}
    assert set(await sa.list_actors()) == {'root'}


@sample_test
async def test_nested_actors():
    async with sa.open_nursery() as an:
        portal = await an.start_actor('parent')
        name, _, ppid = await portal.run(remote.spawn_grandchild)
        assert (name, ppid) == ('grandchild', portal.pid)


@sample_test
async def test_child_exits_when_parent_hangs_up():
    async with sa.open_nursery() as an:
        portal = await an.start_actor('clingy')
        await portal.aclose()
        with trio.fail_after(5):  # it unregisters itself on the way out
            while await sa.query_actor('clingy') is not None:
                await trio.sleep(0.02)


@sample_test
async def test_error_reaps_children():
    with pytest.raises(KeyError):
        async with sa.open_nursery() as an:
            portal = await an.start_actor('bystander')
            raise KeyError('oops')
    assert not Path(f'/proc/{portal.pid}').exists()
    assert await sa.query_actor('bystander') is None


def test_loglevel_propagates(reg_addr, start_method):
    async def main() -> int:
        async with sa.open_root_actor(
            registry_addr=reg_addr, start_method=start_method, loglevel='info',
        ):
            async with sa.open_nursery() as an:
                portal = await an.start_actor('chatty')
                return await portal.run(remote.runtime_loglevel)

    logger = logging.getLogger('sample_actors')
    before = logger.level
    try:
        assert trio.run(main) == logging.INFO
    finally:
        logger.setLevel(before)


# -- chaos --------------------------------------------------------------

def squat_on_registry(tpt_proto: str, ignore_sigint: bool) -> int:
    '''Runs in the 'leaker' actor (only under chaos 'leak', so it may live
    here rather than in `_remote`): double-fork an orphan that holds the
    default registry address, and return the orphan's pid.'''
    rfd, wfd = os.pipe()
    middle = os.fork()
    if middle == 0:  # new session, fork the orphan, vanish
        try:
            os.setsid()
            if (pid := os.fork()) == 0:
                _squat(tpt_proto, ignore_sigint)
            os.write(wfd, str(pid).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    os.waitpid(middle, 0)
    with os.fdopen(rfd) as pipe:
        return int(pipe.read())


def _squat(tpt_proto: str, ignore_sigint: bool) -> NoReturn:
    '''The orphan's life; it never returns into the trio run it was
    forked from.'''
    try:
        os.closerange(3, 1 << 16)  # the actor's sockets are not ours to hold
        signal.set_wakeup_fd(-1)
        signal.signal(
            signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL,
        )
        setproctitle.setproctitle(f'_subactor[leaker@{os.getpid()}]')
        sa.install_stack_dumper()
        addr = sa.default_registry_addr(tpt_proto)
        if isinstance(addr, sa.TCPAddress):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr.host, addr.port))
        else:
            ipc.clear_stale_socket(addr.path)
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(addr.path)
        sock.listen()
        while True:
            signal.pause()
    finally:
        os._exit(1)


async def wait_until_listening(addr: sa.TCPAddress | sa.UDSAddress) -> None:
    with trio.fail_after(5):
        while True:
            try:
                chan = await ipc.connect(addr)
            except OSError:
                await trio.sleep(0.02)
            else:
                await chan.aclose()
                return


@sample_test
async def test_daemon_leak(chaos, tpt_proto):
    '''Chaos 'leak': leave an orphaned actor squatting on the default
    registry address, like a daemon some crashed test forgot.'''
    async with sa.open_nursery() as an:
        portal = await an.start_actor('leaker')
        if 'leak' in chaos:
            pid = await portal.run(
                squat_on_registry, tpt_proto=tpt_proto,
                ignore_sigint='ignore_sigint' in chaos,
            )
            await wait_until_listening(sa.default_registry_addr(tpt_proto))
            if chaos_dir := os.environ.get('SAMPLE_ACTORS_CHAOS_DIR'):
                Path(chaos_dir, 'leaked.pid').write_text(f'{pid}\n')
        assert await portal.cancel_actor()


_STRAY = """
import os, sys, time, setproctitle
if os.fork():
    os._exit(0)
os.setsid()
setproctitle.setproctitle(f'_subactor[stray@{os.getpid()}]')
open('stray.pid', 'w').write(str(os.getpid()))
time.sleep(3600)
"""


def test_strays(chaos, tmp_path):
    '''Chaos 'stray': leave processes the way tractor's pexpect-driven
    debugger tests sometimes do, which no cwd/env marker points back to:
    a detached daemon whose cwd is `tmp_path`, started with a clean
    environment, and an un-awaited plain child with cwd `/`.'''
    if 'stray' not in chaos:
        return
    clean_env = {'PATH': os.environ.get('PATH', '')}
    subprocess.run([sys.executable, '-c', _STRAY], cwd=tmp_path, env=clean_env, check=True)
    child = subprocess.Popen(
        [sys.executable, '-c', 'import time; time.sleep(3600)'], cwd='/', env=clean_env,
    )
    deadline = time.monotonic() + 10
    while not (tmp_path / 'stray.pid').exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)  # both exist for a while, as a real test's would
    if chaos_dir := os.environ.get('SAMPLE_ACTORS_CHAOS_DIR'):
        Path(chaos_dir, 'strays.pid').write_text(
            f"{(tmp_path / 'stray.pid').read_text()} {child.pid}\n")
    child.returncode = 0  # left running on purpose: keep Popen from warning about it


def make_segment(name: str, size: int) -> str:
    '''Runs in the 'shmleaker' actor: create POSIX shared memory the way
    `shm_open` does (a file in /dev/shm), fill it, and never unlink it: what
    an actor leaves when it dies with multiprocessing's resource tracker off,
    as tractor runs. The actor keeps it mapped until it exits, as a
    SharedMemory user does.'''
    import mmap
    fd = os.open(f'/dev/shm/{name}', os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, b'\x5a' * size)
        _MAPPED.append(mmap.mmap(fd, size))
    finally:
        os.close(fd)
    return name


_MAPPED: list = []   # the shmleaker actor's mappings, held until it exits


@sample_test
async def test_shm_leak(chaos):
    '''Chaos 'shm_leak': an actor leaves a 25 KB shared memory segment
    (`$SAMPLE_ACTORS_SHM_NAME`, else `sample_actors_<random>`); its name goes
    to `$SAMPLE_ACTORS_CHAOS_DIR/shm.name`.'''
    if 'shm_leak' not in chaos:
        return
    name = os.environ.get('SAMPLE_ACTORS_SHM_NAME') or f'sample_actors_{uuid.uuid4().hex[:12]}'
    async with sa.open_nursery() as an:
        portal = await an.start_actor('shmleaker')
        assert await portal.run(make_segment, name=name, size=25_000) == name
        if chaos_dir := os.environ.get('SAMPLE_ACTORS_CHAOS_DIR'):
            Path(chaos_dir, 'shm.name').write_text(f'{name}\n')
        await trio.sleep(1.2)   # the actor uses its segment a while (a supervisor sees it)
        assert await portal.cancel_actor()


_FLOOD = """
import os, setproctitle
setproctitle.setproctitle(f'_subactor[flooder@{os.getpid()}]')
frame = ('Traceback (most recent call last):\\n  File "_runtime.py", line 1, in _invoke\\n'
         'sample_actors.RemoteActorError: cancelled while cancelling\\n').encode()
for _ in range(100_000):  # far more than a pipe holds (64 KB)
    os.write(2, frame)
"""


def test_flood(chaos):
    '''Chaos 'flood': a child floods its stderr, a pipe this test holds and
    never reads (the error-log burst of a cancel cascade): the child blocks in
    write(), the test waits for it forever.'''
    if 'flood' not in chaos:
        return
    child = subprocess.Popen([sys.executable, '-c', _FLOOD], stderr=subprocess.PIPE)
    child.wait()


_SPIN = """
import os, sys, time, setproctitle
setproctitle.setproctitle(f'_subactor[spinner@{os.getpid()}]')
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""


def test_runaway(chaos):
    '''Chaos 'runaway': leave a child that keeps a core busy for a few
    seconds (`$SAMPLE_ACTORS_SPIN_SECONDS`, default 4) after this test
    ended, then exits on its own.'''
    if 'runaway' not in chaos:
        return
    spin = os.environ.get('SAMPLE_ACTORS_SPIN_SECONDS', '4')
    child = subprocess.Popen([sys.executable, '-c', _SPIN, spin])
    time.sleep(0.3)  # the rest of the test: talking to it, as a real one would
    if chaos_dir := os.environ.get('SAMPLE_ACTORS_CHAOS_DIR'):
        Path(chaos_dir, 'spinner.pid').write_text(f'{child.pid}\n')
    child.returncode = 0  # left running on purpose: keep Popen from warning about it


def test_runaway_outlived(chaos):
    '''Chaos 'runaway': the next test takes a while, so the spinner runs on
    while pytest is still going (what a supervisor can see).'''
    if 'runaway' in chaos:
        time.sleep(float(os.environ.get('SAMPLE_ACTORS_SPIN_SECONDS', '4')) + 2)


def test_hang(chaos, reg_addr, start_method):
    '''Chaos 'hang': block forever with a live child (and no timeout).'''
    async def main() -> None:
        async with sa.open_root_actor(registry_addr=reg_addr, start_method=start_method):
            async with sa.open_nursery() as an:
                await an.start_actor('hanger')
                if 'hang' in chaos:
                    await trio.sleep_forever()

    trio.run(main)
