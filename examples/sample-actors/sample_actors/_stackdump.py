"""
``kill -USR1 <pid>`` prints every thread's Python stack.

Installed in each child actor at startup and in the pytest process by
the plugin (before pytest's output capture starts), so the dump goes
to the process's *original* stderr even while fd 2 is redirected.

"""
import faulthandler
import os
import signal
from typing import TextIO

_dump_file: TextIO | None = None
_installed_in: int | None = None  # pid; a forked child must re-install


def install_stack_dumper() -> None:
    '''Route SIGUSR1 to a stack dump on (a dup of) the current fd 2.'''
    global _dump_file, _installed_in
    if _installed_in == os.getpid():
        return
    # closefd=False: after a fork the inherited object may name a recycled
    # fd, and it must not close that one when it is dropped
    _dump_file = os.fdopen(os.dup(2), 'w', closefd=False)
    faulthandler.register(signal.SIGUSR1, file=_dump_file, all_threads=True)
    _installed_in = os.getpid()
