"""
Load: ``test_cpu_burn`` keeps two child actors computing (chaos 'cpu':
for 3 s each; normally a blink), the CPU-heavy kind of test that starves
the deadline tests of ``test_rpc.py`` when both run at once; and
``test_worker_dies`` (chaos 'die'): it kills its own pytest, the way an
OOM kill or a crashed interpreter ends a worker in the middle of a module
(the tests after it must still run somewhere, or be reported not run).

"""
import os
import signal

import trio

import sample_actors as sa
from sample_actors._testing import sample_test

from . import _remote as remote


@sample_test
async def test_cpu_burn(chaos):
    seconds = 3.0 if 'cpu' in chaos else 0.01
    results = []
    async with sa.open_nursery() as an:
        portals = [await an.start_actor(f'burner{k}') for k in range(2)]

        async def one(portal):
            results.append(await portal.run(remote.burn, seconds=seconds))

        async with trio.open_nursery() as nursery:
            for portal in portals:
                nursery.start_soon(one, portal)
    assert len(results) == 2 and all(n > 0 for n in results)


def test_worker_dies(chaos):
    if 'die' in chaos:
        os.kill(os.getpid(), signal.SIGKILL)


def test_after_the_death():
    pass


def test_after_the_death_too():
    pass
