"""
``--enable-stackscope`` (tractor's name for it): on SIGUSR1, print the
trio task tree of this process (each task with the frame it waits in)
to stderr, in pytest and, through ``SAMPLE_ACTORS_ENABLE_STACKSCOPE``,
in every child actor, followed by every thread's Python stack (what
the plain SIGUSR1 dumper prints). A Python-level SIGUSR1 handler
installed before it still runs (it is chained).

"""
import faulthandler
import os
import signal
import sys

import trio

ENV = 'SAMPLE_ACTORS_ENABLE_STACKSCOPE'


def task_tree() -> str:
    '''The current trio run's tasks, as an indented tree.'''
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return '(no trio run in this thread)'
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        frame = getattr(task.coro, 'cr_frame', None)
        where = (
            f' @ {frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}'
            f':{frame.f_lineno})' if frame else ''
        )
        lines.append(f"{'  ' * depth}- {task.name}{where}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(root, 0)
    return '\n'.join(lines)


def install_task_tree_dumper() -> None:
    '''Chain a task-tree dump onto SIGUSR1 (main thread only).'''
    prev = signal.getsignal(signal.SIGUSR1)

    def dump(signum, frame):
        sys.stderr.write(
            f'--- trio task tree of pid {os.getpid()} (stackscope) ---\n{task_tree()}\n'
        )
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        if callable(prev):
            prev(signum, frame)

    signal.signal(signal.SIGUSR1, dump)
    os.environ[ENV] = '1'
