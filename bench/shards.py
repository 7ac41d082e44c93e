"""Benchmark parallel runs: the whole suite serially vs `-n 2` (the scheduler), as
wall-time ratio, the two failure sets side by side, and what a per-unit lane costs.

    python bench/shards.py [--root PATH] [--repeat N] [--chaos FLAGS]

On the sample the runs carry SAMPLE_ACTORS_CHAOS=cpu by default: test_load.py's
CPU-heavy test (two actors computing 3 s) then runs beside the deadline tests of
test_rpc.py unless the scheduler keeps it apart. The serial run goes first, so the
history has the costs (wall, CPU rate) the queue is admitted by. With --root (a
tractor checkout) a repetition takes many minutes.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Sandbox, compare, main, med, parse_args, samples, verdict

from tractor_tasks.results import stable_id

RATIO_TARGET = 0.7   # parallel / serial wall time, with the same failure set


def outcomes(root: Path) -> dict[str, tuple[str, float]]:
    """node id -> (passed/failed/skipped, seconds), from the last run's JUnit file."""
    out = {}
    for case in ET.parse(root / ".tractor-tasks" / "last" / "junit.xml").iter("testcase"):
        nodeid = stable_id(f"{case.get('file')}::{case.get('name')}")
        bad = case.find("failure") is not None or case.find("error") is not None
        out[nodeid] = ("failed" if bad else "skipped" if case.find("skipped") is not None
                       else "passed", float(case.get("time") or 0))
    return out


def lane_overhead(root: Path, tests: dict[str, tuple[str, float]]) -> str:
    """From the last parallel run's units.json: each unit's lane wall minus its tests'
    own seconds, i.e. what starting a contained pytest per unit costs."""
    try:
        units = json.loads((root / ".tractor-tasks" / "last" / "units.json").read_text())
    except (OSError, ValueError):
        return "no units.json"
    extra = []
    for u in units:
        mods = u["unit"].split(" + ")
        own = sum(s for k, (_, s) in tests.items() if k.split("::")[0] in mods)
        extra.append((u["ended"] - u["started"]) - own)
    return (f"{len(units)} lanes, per-lane start/teardown overhead median {med(extra):.2f}s "
            f"(total {sum(extra):.1f}s)")


def bench(args, workers: int) -> None:
    with Sandbox(args.root) as sb:
        if args.root is None and args.chaos:
            sb.env["SAMPLE_ACTORS_CHAOS"] = args.chaos
        sb.header(f"parallel (-n {workers}, chaos {args.chaos or 'none'})", args.repeat)
        serial = sb.invoke("test", "--no-x", python=True)
        parallel = sb.invoke("test", "--no-x", "-n", str(workers), python=True)
        ok = (0, 1)  # a failure is a result here, not an error
        sb.run(serial, cwd=REPO, ok=ok)        # warm-up, and costs for the queue
        first = outcomes(sb.root)
        sb.run(parallel, cwd=REPO, ok=ok)      # warm-up
        split = outcomes(sb.root)
        overhead = lane_overhead(sb.root, split)
        xs, ys = compare(args.repeat, lambda: sb.run(serial, cwd=REPO, ok=ok),
                         lambda: sb.run(parallel, cwd=REPO, ok=ok), warmup=False)
        ratio = med(ys) / med(xs)
        print(f"whole suite: serial {med(xs):.2f}s vs -n {workers} {med(ys):.2f}s -> ratio "
              f"{ratio:.2f} (goal <= {RATIO_TARGET}: {verdict(ratio <= RATIO_TARGET)})")
        print(samples("serial", xs, f"-n {workers}", ys))
        print(f"  lanes: {overhead}")
        for name, res in (("serial", first), (f"-n {workers}", split)):
            c = {k: sum(1 for v, _ in res.values() if v == k)
                 for k in ("passed", "failed", "skipped")}
            fails = sorted(k for k, (v, _) in res.items() if v == "failed")
            print(f"  {name:8} {c['passed']} passed, {c['failed']} failed, {c['skipped']} "
                  f"skipped; failures: {', '.join(fails) or 'none'}")
        differ = sorted(k for k in first.keys() | split.keys()
                        if first.get(k, ("not run",))[0] != split.get(k, ("not run",))[0])
        print(f"  same pass/fail set: {'yes' if not differ else 'no'}")
        for nodeid in differ:
            print(f"    {nodeid}: serial {first.get(nodeid, ('not run',))[0]}, "
                  f"-n {workers} {split.get(nodeid, ('not run',))[0]}")


if __name__ == "__main__":
    args = parse_args("bench/shards.py", __doc__.split("\n\n")[0], repeat=3,
                      extra=[("--chaos", "cpu", "SAMPLE_ACTORS_CHAOS for the sample's runs "
                              "(default cpu; '' for none)")])
    main(lambda: bench(args, 2))
