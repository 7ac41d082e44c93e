"""
The root actor on its own: runtime guards and the registry it serves.

"""
import os

import pytest
import trio

import sample_actors as sa
from sample_actors._testing import sample_test

from . import _remote as remote


def test_no_runtime():
    '''Actor APIs need a runtime: `open_root_actor()` comes first.'''
    async def main():
        async with sa.find_actor('doggy'):
            pass

    with pytest.raises(sa.NoRuntime):
        trio.run(main)


def test_unknown_spawn_backend(reg_addr):
    async def main():
        async with sa.open_root_actor(registry_addr=reg_addr, start_method='nope'):
            pass

    with pytest.raises(ValueError, match='unknown spawn backend'):
        trio.run(main)


@sample_test
async def test_one_root_per_process(reg_addr):
    with pytest.raises(RuntimeError, match='already runs'):
        async with sa.open_root_actor(registry_addr=reg_addr):
            pass


@sample_test
async def test_root_is_registered(reg_addr):
    root = sa.current_actor()
    assert root.name == 'root' and root.addr == reg_addr
    assert await sa.query_actor('root') == reg_addr
    assert await sa.query_actor('doggy') is None


@sample_test
async def test_portal_to_self():
    '''The root can dial its own address like anyone else.'''
    async with sa.find_actor('root') as portal:
        assert portal.name == 'root'
        assert await portal.run(remote.whoami) == ['root', os.getpid(), None]
