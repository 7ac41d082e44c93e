"""processes.py: the one ending ladder (end_ladder, used by the sweep and by every
launched run's end in contain.py) and the one NSpid reader (nested_pid)."""
from __future__ import annotations

import re
import signal
from pathlib import Path

import psutil
import pytest

from tractor_tasks import processes
from tractor_tasks.processes import Ended, end_ladder

SRC = Path(__file__).resolve().parents[1] / "src" / "tractor_tasks"


class FakePs:
    """The psutil.Process surface the ladder uses (is_running, status, send_signal): a
    process that ends on SIGINT unless it ignores it, and always on SIGKILL; one that
    `forks` makes a new child on its first SIGKILL (a forking tree while we kill)."""

    def __init__(self, pid, *, ignores_int=False, forks=None):
        self.pid, self.ignores_int, self.forks = pid, ignores_int, forks
        self.running, self.got = True, []

    def is_running(self):
        return self.running

    def status(self):
        return psutil.STATUS_SLEEPING

    def send_signal(self, sig):
        self.got.append(sig)
        if sig == signal.SIGKILL or not self.ignores_int:
            self.running = False
        if sig == signal.SIGKILL and self.forks is not None:
            self.forks.append(FakePs(self.pid + 100, ignores_int=True))


def test_the_ladder_interrupts_then_kills_what_is_left_including_new_members():
    tree: list[FakePs] = []
    tree += [FakePs(7), FakePs(9, ignores_int=True, forks=tree), FakePs(8, ignores_int=True)]
    done = end_ladder(lambda: [p for p in tree if p.running], 0.0, kill_wait=0.0)
    assert done == Ended(interrupted=[7, 9, 8], killed=[8, 9, 109], survivors=[])
    assert tree[0].got == [signal.SIGINT] and tree[1].got == [signal.SIGINT, signal.SIGKILL]
    assert tree[3].got == [signal.SIGKILL]     # born during the first SIGKILL round
    assert done.notes() == ["SIGINT -> 3 process(es) of the run: 7, 9, 8",
                            "SIGKILL -> 3 process(es) of the run: 8, 9, 109"]


def test_a_fixed_set_gets_one_round_and_survivors_are_named():
    stuck = FakePs(5, ignores_int=True)
    stuck.send_signal = lambda sig: stuck.got.append(sig)    # D state: nothing ends it
    done = end_ladder(lambda: [stuck], 0.0, kill_wait=0.0, rounds=1)
    assert done == Ended([5], [5], [5]) and stuck.got == [signal.SIGINT, signal.SIGKILL]
    assert done.notes()[-1] == "still alive after SIGKILL: 5"


def test_one_ladder_and_one_nspid_reader_in_src():
    """No module but processes.py ends processes its own way or reads NSpid."""
    own = re.compile(r"def \w*(ns_pid|wait_gone|end_ladder|_live|_send)\b|NSpid")
    found = [f"{p.name}:{n}" for p in sorted(SRC.glob("*.py")) if p.name != "processes.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if own.search(line)]
    assert not found, found


@pytest.mark.slow
def test_the_ladder_ends_real_processes_and_nested_pid_is_none_in_our_namespace(tmp_path):
    from helpers import Procs
    procs = Procs(tmp_path)
    try:
        polite = procs.child(tmp_path)
        stubborn = procs.child(tmp_path, ignore_sigint=True)
        assert processes.nested_pid(polite.pid) is None    # our own pid namespace
        ps = [psutil.Process(polite.pid), psutil.Process(stubborn.pid)]
        interrupted, killed, survivors = processes.end(
            [processes.get(p.pid) for p in ps], grace=2.0)
        assert interrupted == [polite.pid, stubborn.pid] and killed == [stubborn.pid]
        assert survivors == [] and polite.wait(5) is not None and stubborn.wait(5) == -9
    finally:
        procs.cleanup()
