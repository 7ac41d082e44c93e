"""
Suite-wide fixtures. The runtime ones (``reg_addr``, ``tpt_proto``,
``start_method``, ...) come from the `sample_actors._testing.pytest`
plugin; this adds the chaos switches.

"""
import os

import pytest


@pytest.fixture(scope='session')
def chaos() -> frozenset[str]:
    '''The flags in $SAMPLE_ACTORS_CHAOS (comma-separated), normally none.

    A test that honours a flag misbehaves on purpose when it is set (see
    the README), and passes otherwise.'''
    raw = os.environ.get('SAMPLE_ACTORS_CHAOS', '')
    return frozenset(flag.strip() for flag in raw.split(',') if flag.strip())


def pytest_collection_finish(session: pytest.Session) -> None:
    '''Chaos 'hang_session': hang after collection, before any test starts
    (a stuck session fixture or plugin: no test is running).'''
    if 'hang_session' in os.environ.get('SAMPLE_ACTORS_CHAOS', ''):
        import time
        while True:
            time.sleep(1)
