"""
Actor nurseries: start child actors, and make sure every one of them is
gone when the block exits - cancelled politely, killed if it won't go.

"""
from contextlib import asynccontextmanager
import logging
from typing import AsyncIterator

import trio

from ._exceptions import ActorStartError
from ._runtime import Actor, Peer, Portal, current_actor, open_collapsing_nursery
from ._spawn import ChildProcess, spawn_child

log = logging.getLogger('sample_actors')

STARTUP_TIMEOUT = 15.0  # generous: a cold interpreter on a busy box
CANCEL_GRACE = 3.0


class ActorNursery:
    '''Starts and supervises the child actors of the current actor.'''

    def __init__(self, actor: Actor) -> None:
        self._actor = actor
        self._children: list[tuple[ChildProcess, Portal]] = []

    async def start_actor(self, name: str) -> Portal:
        '''Spawn child actor `name` and return a portal to it once it is
        up (registered and connected back to us).'''
        actor = self._actor
        assert actor.addr is not None
        proc = await spawn_child(
            actor.start_method, name=name, parent_addr=actor.addr,
            registry_addr=actor.registry_addr, loglevel=actor.loglevel,
        )
        try:
            with trio.fail_after(STARTUP_TIMEOUT):
                peer = await _await_child(actor, proc, name)
        except BaseException:
            with trio.CancelScope(shield=True):
                proc.kill()
                await proc.wait()
            raise
        log.info(f'started actor {name!r} (pid {proc.pid})')
        portal = Portal(peer)
        self._children.append((proc, portal))
        return portal

    async def cancel(self, grace: float = CANCEL_GRACE) -> None:
        '''Cancel all children at once; kill those still up after `grace`.'''
        async with trio.open_nursery() as reapers:
            for proc, portal in self._children:
                reapers.start_soon(_reap, proc, portal, grace)
        self._children.clear()


async def _await_child(actor: Actor, proc: ChildProcess, name: str) -> Peer:
    '''Wait for the child's hello, failing fast if the process dies first.'''
    async def died() -> None:
        code = await proc.wait()
        raise ActorStartError(f'actor {name!r} exited ({code}) before connecting')

    async with open_collapsing_nursery() as nursery:
        nursery.start_soon(died)
        peer = await actor.wait_for_child(proc.pid)
        nursery.cancel_scope.cancel()
    return peer


async def _reap(proc: ChildProcess, portal: Portal, grace: float) -> None:
    '''Ask one child to exit and wait for it; kill it after `grace`.'''
    with trio.move_on_after(grace):
        await portal.cancel_actor(timeout=grace)
        await proc.wait()
        return
    log.warning(f'{portal.name!r} ignored cancel for {grace}s: killing pid {proc.pid}')
    proc.kill()
    await proc.wait()


@asynccontextmanager
async def open_nursery() -> AsyncIterator[ActorNursery]:
    '''
    ``async with open_nursery() as an:`` spawn children with
    `an.start_actor()`; leaving the block (normally or not) cancels the
    ones still running and waits until they are gone.

    '''
    nursery = ActorNursery(current_actor())
    try:
        yield nursery
    finally:
        with trio.CancelScope(shield=True):
            await nursery.cancel()
