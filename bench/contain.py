"""Benchmark contained launches: the cost of a run's own namespaces (and of the fallbacks)
over a plain child, for a trivial command (`python -c pass`).

    python bench/contain.py [--repeat N]

Each side is a full cycle: launch, wait for the exit, end the run, close it. The bare
side is `subprocess.run`. Nothing but the trivial command is started, and nothing is
killed but what the cycle itself started.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BenchError, compare, main, med, parse_args, samples

from tractor_tasks.contain import detect, launch
from tractor_tasks.errors import TaskError

COMMAND = [sys.executable, "-c", "pass"]


def bare(cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(COMMAND, cwd=cwd, check=True)
    return time.perf_counter() - t0


def cycle(cwd: str, containment) -> float:
    t0 = time.perf_counter()
    run = launch(COMMAND, cwd=cwd, env=dict(os.environ), containment=containment)
    try:
        if not run.wait(60) or run.poll() != 0:
            raise BenchError(f"`python -c pass` ({containment.mode}) did not exit 0: "
                             f"{run.poll()}")
        run.end()
    finally:
        run.close()
    return time.perf_counter() - t0


def bench(args) -> None:
    cwd = tempfile.gettempdir()
    modes = ["off", "namespaces", "subreaper"]   # subreaper last: it changes this process
    print(f"contain: `python -c pass`, launch -> wait -> end -> close vs subprocess.run, "
          f"median of {args.repeat}", flush=True)
    for mode in modes:
        try:
            containment = detect(mode, env={})
        except TaskError as err:
            print(f"{mode}: skipped: {err}")
            continue
        xs, ys = compare(args.repeat, lambda: cycle(cwd, containment), lambda: bare(cwd))
        print(f"{mode}: {med(xs):.3f}s vs bare {med(ys):.3f}s -> overhead "
              f"{med(xs) - med(ys):+.3f}s, ratio {med(xs) / med(ys):.2f}")
        print(samples(mode, xs, "bare", ys), flush=True)


if __name__ == "__main__":
    args = parse_args("bench/contain.py", __doc__.split("\n\n")[0], repeat=10,
                      root_refusal="this measures launches of a trivial command, no target")
    main(lambda: bench(args))
