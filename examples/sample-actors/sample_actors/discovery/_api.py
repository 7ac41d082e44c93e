"""
Registry queries for code running inside any actor.

"""
from contextlib import asynccontextmanager
from typing import AsyncIterator

from .._runtime import Portal, current_actor
from ._addr import Address, parse_maddr


async def register_actor(name: str, addr: Address) -> None:
    await current_actor().ask_registry('register', name=name, maddr=addr.maddr())


async def unregister_actor(name: str) -> bool:
    return await current_actor().ask_registry('unregister', name=name)


async def query_actor(name: str) -> Address | None:
    '''Where the actor called `name` listens, or None if it's unknown.'''
    maddr = await current_actor().ask_registry('find', name=name)
    return parse_maddr(maddr) if maddr else None


async def list_actors() -> dict[str, Address]:
    table = await current_actor().ask_registry('names')
    return {name: parse_maddr(maddr) for name, maddr in table.items()}


@asynccontextmanager
async def find_actor(name: str) -> AsyncIterator[Portal | None]:
    '''Connect to the actor called `name`: yields a `Portal`, or None.'''
    addr = await query_actor(name)
    if addr is None:
        yield None
        return
    portal = Portal(await current_actor().connect(addr))
    try:
        yield portal
    finally:
        await portal.aclose()
