"""Benchmark shards: the whole suite serially vs split into `-n 2` contained shards, as
wall-time ratio (goal 0.6 or lower), and the two pass/fail sets side by side.

    python bench/shards.py [--root PATH] [--repeat N]

The serial run goes first, so the results history has the durations the shards are
balanced on. With --root (a tractor checkout) a repetition takes many minutes.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Sandbox, compare, main, med, parse_args, samples, verdict

from tractor_tasks.results import stable_id

RATIO_TARGET = 0.6   # sharded / serial wall time


def outcomes(root: Path) -> dict[str, str]:
    """node id -> passed/failed/skipped, from the last run's JUnit file."""
    out = {}
    for case in ET.parse(root / ".tractor-tasks" / "last" / "junit.xml").iter("testcase"):
        nodeid = stable_id(f"{case.get('file')}::{case.get('name')}")
        bad = case.find("failure") is not None or case.find("error") is not None
        out[nodeid] = "failed" if bad else "skipped" if case.find("skipped") is not None \
            else "passed"
    return out


def bench(args, shards: int) -> None:
    with Sandbox(args.root) as sb:
        sb.header(f"shards (-n {shards})", args.repeat)
        serial = sb.invoke("test", "--no-x", python=True)
        sharded = sb.invoke("test", "--no-x", "-n", str(shards), python=True)
        ok = (0, 1)  # a flaky failure is a result here, not an error
        sb.run(serial, cwd=REPO, ok=ok)        # warm-up, and durations for the plan
        first = outcomes(sb.root)
        sb.run(sharded, cwd=REPO, ok=ok)       # warm-up
        split = outcomes(sb.root)
        xs, ys = compare(args.repeat, lambda: sb.run(serial, cwd=REPO, ok=ok),
                         lambda: sb.run(sharded, cwd=REPO, ok=ok), warmup=False)
        ratio = med(ys) / med(xs)
        print(f"whole suite: serial {med(xs):.2f}s vs -n {shards} {med(ys):.2f}s -> ratio "
              f"{ratio:.2f} (goal <= {RATIO_TARGET}: {verdict(ratio <= RATIO_TARGET)})")
        print(samples("serial", xs, f"-n {shards}", ys))
        counts = {name: {k: sum(1 for v in res.values() if v == k)
                         for k in ("passed", "failed", "skipped")}
                  for name, res in (("serial", first), (f"-n {shards}", split))}
        for name, c in counts.items():
            print(f"  {name:8} {c['passed']} passed, {c['failed']} failed, "
                  f"{c['skipped']} skipped")
        differ = sorted(k for k in first.keys() | split.keys() if first.get(k) != split.get(k))
        print(f"  same pass/fail set: {'yes' if not differ else 'no'}")
        for nodeid in differ:
            print(f"    {nodeid}: serial {first.get(nodeid, 'not run')}, "
                  f"-n {shards} {split.get(nodeid, 'not run')}")


if __name__ == "__main__":
    args = parse_args("bench/shards.py", __doc__.split("\n\n")[0], repeat=3)
    main(lambda: bench(args, 2))
