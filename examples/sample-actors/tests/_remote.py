"""
Functions the tests run *inside* child actors (``portal.run(remote.f)``).

A child loads the module a function comes from; keeping these out of
the test modules spares every child importing pytest (~0.3 s a start).

"""
import logging
import os

import trio

import sample_actors as sa


def whoami() -> list:
    '''[name, pid, pid of the parent *actor*]: with mp_forkserver the OS
    parent is the fork server instead.'''
    actor = sa.current_actor()
    parent = actor.parent_peer.pid if actor.parent_peer else None
    return [actor.name, os.getpid(), parent]


def add(a: int, b: int) -> int:
    return a + b


async def sleepy_echo(value: object, delay: float) -> object:
    await trio.sleep(delay)
    return value


def fail(text: str) -> None:
    raise ValueError(text)


def unjsonable() -> object:
    return object()


def runtime_loglevel() -> int:
    return logging.getLogger('sample_actors').level


async def spawn_grandchild() -> list:
    '''Start an actor of our own and ask it who it is.'''
    async with sa.open_nursery() as an:
        portal = await an.start_actor('grandchild')
        return await portal.run(whoami)


async def registry_roundtrip() -> list:
    '''Use the registry from a child, i.e. over the wire.'''
    await sa.register_actor('phantom', sa.TCPAddress('127.0.0.1', 9))
    found = await sa.query_actor('phantom')
    names = sorted(await sa.list_actors())
    removed = await sa.unregister_actor('phantom')
    return [found.maddr(), names, removed, await sa.query_actor('phantom')]


def burn(seconds: float) -> int:
    '''Compute for `seconds` of wall time (a CPU-bound actor); the loop count.'''
    import time
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += sum(i * i for i in range(1000)) and 1
    return n
