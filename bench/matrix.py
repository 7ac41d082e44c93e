"""Benchmark the nox matrix: (a) a warm cell vs its bare pytest command,
(b) two cells in parallel (`nox -j 2`) vs the same two serially.

    python bench/matrix.py [--repeat N]

Runs on a private copy of the bundled sample only: a full tractor cell
takes many minutes, so --root is refused.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, BenchError, Sandbox, compare, main, med,
                     parse_args, parse_command, samples, tool, verdict)

OVERHEAD_TARGET = 1.0   # seconds a warm cell may add to its pytest command
SPEEDUP_TARGET = 1.6    # serial / parallel, two cells on 2 cores


def bare_command(sb: Sandbox, cell_slug_glob: str) -> tuple[dict, list[str]]:
    """The pytest command (and env) the last run of the cell recorded."""
    found = sorted(sb.root.glob(f".tractor-tasks/cells/{cell_slug_glob}/last/pass-1/command.txt"))
    if len(found) != 1:
        raise BenchError(f"expected one command.txt for cells {cell_slug_glob}, found {found}")
    env, argv = parse_command(found[0].read_text().strip(), sb.env)
    env.pop("TRACTOR_TASKS_RUN", None)  # marks the nox run's processes; that run is over
    return env, argv


def run_bare(sb: Sandbox, env: dict, argv: list[str]) -> float:
    """One direct run, in a fresh private runtime dir like the cell's own."""
    runtime = sb.fresh_runtime()
    try:
        return sb.run(argv, env={**env, "XDG_RUNTIME_DIR": str(runtime),
                                 "TMPDIR": str(runtime)})
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def bench(args) -> None:
    with Sandbox(None) as sb:
        sb.header("matrix", args.repeat)
        tcp, uds = (f"tests-{sb.minor}(tpt='{t}')" for t in ("tcp", "uds"))
        nox = [tool("nox"), "--envdir", str(sb.base / "nox")]  # nothing under the repo

        one = [*nox, "-s", tcp]
        sb.run(one, cwd=REPO)  # warm-up, and it records the cell's command
        env, argv = bare_command(sb, f"tests-{sb.minor}-*-tcp")
        xs, ys = compare(args.repeat, lambda: sb.run(one, cwd=REPO),
                         lambda: run_bare(sb, env, argv), warmup=False)
        over = med(xs) - med(ys)
        print(f"warm cell {tcp}: nox {med(xs):.2f}s vs its bare pytest command {med(ys):.2f}s "
              f"-> overhead {over:.2f}s (target < {OVERHEAD_TARGET:g}s: "
              f"{verdict(over < OVERHEAD_TARGET)}), ratio {med(xs) / med(ys):.2f}")
        print(samples("nox", xs, "pytest", ys), flush=True)

        serial, parallel = [*nox, "-s", tcp, uds], [*nox, "-j", "2", "-s", tcp, uds]
        xs, ys = compare(args.repeat, lambda: sb.run(serial, cwd=REPO),
                         lambda: sb.run(parallel, cwd=REPO), warmup=False)
        speedup = med(xs) / med(ys)
        print(f"two cells ({tcp} + {uds}): serial {med(xs):.2f}s vs nox -j 2 {med(ys):.2f}s "
              f"-> speedup {speedup:.2f}x (target >= {SPEEDUP_TARGET}x: "
              f"{verdict(speedup >= SPEEDUP_TARGET)})")
        print(samples("serial", xs, "parallel", ys), flush=True)


if __name__ == "__main__":
    args = parse_args("bench/matrix.py", __doc__.split("\n\n")[0], repeat=3,
                      root_refusal="a full tractor cell takes many minutes; matrix.py "
                                   "runs only on a copy of the bundled sample")
    main(lambda: bench(args))
