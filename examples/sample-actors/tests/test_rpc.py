"""
Calling functions in another actor: results, errors, deadlines - and
two chaos tests, ``test_remote_math`` (flag 'fail') and
``test_slow_reply`` (flag 'tooslow').

"""
import os

import pytest
import trio

import sample_actors as sa
from sample_actors._testing import sample_test

from . import _remote as remote


@sample_test
async def test_remote_math(chaos):
    async with sa.open_nursery() as an:
        portal = await an.start_actor('mathy')
        result = await portal.run(remote.add, a=2, b=2)
    assert result == (5 if 'fail' in chaos else 4)  # 'fail': a "new" failure


@sample_test
async def test_slow_reply(chaos):
    '''The reply must beat its deadline ('tooslow': it doesn't).'''
    delay = 3.0 if 'tooslow' in chaos else 0.01
    async with sa.open_nursery() as an:
        portal = await an.start_actor('sleepy')
        with trio.fail_after(1):
            assert await portal.run(remote.sleepy_echo, value=7, delay=delay) == 7


@sample_test
async def test_calls_and_errors():
    '''Sync, async and builtin functions run remotely; a remote exception,
    an unknown function and an unsendable result come back as errors.'''
    async with sa.open_nursery() as an:
        portal = await an.start_actor('worker')
        assert await portal.run(os.getpid) == portal.pid != os.getpid()
        assert await portal.run(remote.sleepy_echo, value=[1, 'a'], delay=0) == [1, 'a']

        with pytest.raises(sa.RemoteActorError) as err:
            await portal.run(remote.fail, text='boom')
        assert (err.value.etype, err.value.text, err.value.src) == (
            'ValueError', 'boom', 'worker',
        )
        assert 'in fail' in err.value.tb

        with pytest.raises(sa.RemoteActorError, match='AttributeError'):
            await portal.run_from_ns(remote.__name__, 'no_such_function')
        with pytest.raises(sa.RemoteActorError, match='not JSON serializable'):
            await portal.run(remote.unjsonable)

        assert await portal.run(remote.add, a=1, b=1) == 2  # still connected


@sample_test
async def test_concurrent_calls():
    '''Calls over one connection run concurrently on the far side (here
    the root itself, dialled through its own listener).'''
    results = []
    async with sa.find_actor('root') as portal:
        async def one(i: int) -> None:
            results.append(await portal.run(remote.sleepy_echo, value=i, delay=0.5))

        # one after another would take 2.5 s: the margin is for a busy machine
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(one, i)
    assert sorted(results) == list(range(5))


@sample_test
async def test_only_module_level_functions():
    def nested() -> None:
        pass

    async with sa.find_actor('root') as portal:
        for fn in (nested, lambda: None):
            with pytest.raises(TypeError, match='not a module-level function'):
                await portal.run(fn)
