"""
Debugging aids: SIGUSR1 stack dumps and ``_subactor[...]`` process titles.

"""
from pathlib import Path
import subprocess
import sys
import textwrap

import sample_actors as sa
from sample_actors._testing import sample_test

# A program whose child actor gets SIGUSR1 while stuck in a known place.
# Run as a script so every backend's child (mp_forkserver's too, forked
# from a server started *there*) shares the script's stderr pipe.
NAPPER = textwrap.dedent('''
    import os, signal, sys, time
    import trio
    import sample_actors as sa

    def nap_in_a_recognizable_place(seconds):
        time.sleep(seconds)  # blocking, so this frame is on the stack

    async def main(registry, start_method):
        async with sa.open_root_actor(registry_addr=registry, start_method=start_method):
            async with sa.open_nursery() as an:
                portal = await an.start_actor('napper')
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        lambda: portal.run(nap_in_a_recognizable_place, seconds=0.6))
                    await trio.sleep(0.3)
                    os.kill(portal.pid, signal.SIGUSR1)

    if __name__ == '__main__':
        trio.run(main, *sys.argv[1:])
''')


@sample_test
async def test_child_proctitle():
    async with sa.open_nursery() as an:
        portal = await an.start_actor('titled')
        cmdline = Path(f'/proc/{portal.pid}/cmdline').read_bytes()
        assert cmdline.rstrip(b'\0').decode() == f'_subactor[titled@{portal.pid}]'


def test_child_dumps_stacks_on_sigusr1(tmp_path, reg_addr, start_method):
    script = tmp_path / 'napper.py'
    script.write_text(NAPPER)
    proc = subprocess.run(
        [sys.executable, str(script), reg_addr.maddr(), start_method],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'in nap_in_a_recognizable_place' in proc.stderr


def test_dump_goes_to_original_stderr():
    '''The dumper writes to the stderr the process started with, even
    once fd 2 points elsewhere (as under pytest's capture).'''
    script = textwrap.dedent('''
        import os, signal, time
        import sample_actors
        sample_actors.install_stack_dumper()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        def stuck_here():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.2)
        stuck_here()
    ''')
    proc = subprocess.run(
        [sys.executable, '-c', script], capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0
    assert 'in stuck_here' in proc.stderr
