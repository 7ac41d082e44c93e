"""
Signals, as tractor's suite uses them: a test that SIGINTs itself (it
passes only when SIGINT is delivered, i.e. not ignored by whatever
started pytest); chaos 'hang2': a second test that hangs, in another
module than ``test_spawning.py::test_hang``; chaos 'reaper': a test that
reaps orphaned actors machine-wide, as tractor's per-test reaper does.

"""
import os
from pathlib import Path
import signal
import time

import pytest
import trio

import sample_actors as sa


def test_sigint_self():
    '''SIGINT to ourselves must become KeyboardInterrupt (a shell that
    ignores SIGINT hands pytest SIG_IGN, and then it never does).'''
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.05)


def test_hang_again(chaos, reg_addr, start_method):
    '''Chaos 'hang2': block forever with a live child.'''
    async def main() -> None:
        async with sa.open_root_actor(registry_addr=reg_addr, start_method=start_method):
            async with sa.open_nursery() as an:
                await an.start_actor('hanger2')
                if 'hang2' in chaos:
                    await trio.sleep_forever()

    trio.run(main)


def test_reaper(chaos):
    '''Chaos 'reaper': SIGKILL every orphan (parent pid 1) this process can
    see whose command line says ``_subactor[``, wherever it came from - what
    tractor's ``reap_subactors_per_test`` does after each test. Run it only
    contained: bare, it would kill other people's actors.'''
    if 'reaper' not in chaos:
        return
    killed = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
            ppid = next(int(line.split()[1]) for line in
                        (entry / 'status').read_text().splitlines()
                        if line.startswith('PPid:'))
        except (OSError, StopIteration, ValueError):
            continue
        if ppid == 1 and '_subactor[' in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(entry.name)
            except OSError:
                pass
    if chaos_dir := os.environ.get('SAMPLE_ACTORS_CHAOS_DIR'):
        Path(chaos_dir, 'reaped.pids').write_text(' '.join(killed) + '\n')
