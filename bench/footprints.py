"""Benchmark footprint recording (issue 24): the same run with and without it.

    python bench/footprints.py [--root PATH] [--repeat N] [--tests WORDS] [--python 3.13]

Each side is `invoke test --no-x <tests>` (default: the whole suite), run alternately
`--repeat` times; footprints are switched off on one side with
TRACTOR_TASKS_FOOTPRINTS=0. Printed: the median wall and CPU seconds of each side (CPU:
ours, pytest's and every process of the run, as the kernel accounts reaped children)
and their ratios. The goal is a CPU ratio of at most 1.05. The recorder this measures
is the one the target's Python gets: sys.settrace below 3.12 (the sample's py311),
sys.monitoring from 3.12 (tractor's py313).
"""
from __future__ import annotations

import resource
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Sandbox, main, med, parse_args, venv_python

GOAL = 1.05


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def one(sb: Sandbox, argv: list[str], on: bool) -> tuple[float, float]:
    env = dict(sb.env)
    if on:
        env["TRACTOR_TASKS_FOOTPRINTS"] = "1"   # below 3.12 recording is asked for by name
    else:
        env["TRACTOR_TASKS_FOOTPRINTS"] = "0"
    cpu0, t0 = children_cpu(), time.perf_counter()
    sb.run(argv, cwd=REPO, env=env, ok=(0, 1))
    return time.perf_counter() - t0, children_cpu() - cpu0


def bench(args) -> None:
    sb = Sandbox(args.root)
    if args.python and args.root is None:
        sb.minor = args.python          # the copy of the sample gets this venv instead
        sb.python = venv_python(sb.root, sb.minor)
    with sb:
        sb.header("footprints: the same run with and without recording", args.repeat)
        argv = sb.invoke("test", "--no-x", *shlex.split(args.tests or ""), python=True)
        print(f"command: {shlex.join(argv)}", flush=True)
        one(sb, argv, False)   # warm: bytecode, caches
        walls = {True: [], False: []}
        cpus = {True: [], False: []}
        for i in range(args.repeat):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                wall, cpu = one(sb, argv, on)
                walls[on].append(wall)
                cpus[on].append(cpu)
                print(f"  run {i + 1} {'with' if on else 'without'}: wall {wall:.1f}s, "
                      f"cpu {cpu:.1f}s", flush=True)
        w_on, w_off = med(walls[True]), med(walls[False])
        c_on, c_off = med(cpus[True]), med(cpus[False])
        print(f"without footprints: wall {w_off:.1f}s, cpu {c_off:.1f}s")
        print(f"with footprints:    wall {w_on:.1f}s, cpu {c_on:.1f}s")
        print(f"ratio with/without: wall {w_on / w_off:.3f}, cpu {c_on / c_off:.3f} "
              f"(goal: cpu at most {GOAL}) -> "
              f"{'met' if c_on / c_off <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main(lambda: bench(parse_args("footprints", __doc__.splitlines()[0], 3, extra=[
        ("--tests", "", "test words for `invoke test` (default: the whole suite)"),
        ("--python", "", "the sample's venv minor, e.g. 3.13 (default 3.11)")])))
