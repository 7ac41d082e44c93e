"""
The registry the root actor serves: registering, finding, dialling.

``test_default_registry_addr`` binds the *default* registry address
($SAMPLE_ACTORS_REGISTRY_PORT), like tractor's tests that use its fixed
port 1616 (the sample's is 1626); every other test uses the random ``reg_addr``.

"""
import os

import pytest
import trio

import sample_actors as sa
from sample_actors._testing import sample_test

from .. import _remote as remote


@sample_test
async def test_register_find_unregister():
    async with sa.open_nursery() as an:
        portal = await an.start_actor('clerk')
        assert await portal.run(remote.registry_roundtrip) == [
            '/ip4/127.0.0.1/tcp/9', ['clerk', 'phantom', 'root'], True, None,
        ]


@sample_test
async def test_find_actor_dials_child(tpt_proto):
    async with sa.open_nursery() as an:
        child = await an.start_actor('findme')
        addr = await sa.query_actor('findme')
        assert addr is not None and addr.proto_key == tpt_proto
        async with sa.find_actor('findme') as portal:
            assert portal is not child
            assert await portal.run(remote.whoami) == ['findme', child.pid, os.getpid()]
            # only the root serves the registry, and only its public methods
            with pytest.raises(sa.RemoteActorError, match='LookupError'):
                await portal.run_from_ns('registry', 'names')
        async with sa.find_actor('root') as root:
            with pytest.raises(sa.RemoteActorError, match='LookupError'):
                await root.run_from_ns('registry', '_table')
        async with sa.find_actor('nobody') as nobody:
            assert nobody is None


def test_default_registry_addr(tpt_proto, start_method, chaos):
    '''Without a registry address the root binds the default one (chaos
    'hold_registry': and holds it for 3 s, so two runs at once overlap).'''
    async def main() -> None:
        async with sa.open_root_actor(tpt_proto=tpt_proto, start_method=start_method) as root:
            assert root.addr == sa.default_registry_addr(tpt_proto)
            async with sa.open_nursery() as an:
                portal = await an.start_actor('fixed')
                assert await portal.run(remote.whoami) == ['fixed', portal.pid, os.getpid()]
                assert set(await sa.list_actors()) == {'root', 'fixed'}
                if 'hold_registry' in chaos:
                    await trio.sleep(3)

    trio.run(main)
