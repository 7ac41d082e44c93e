"""Benchmark `invoke doctor`: (a) --fast vs the spec's raw shell probe,
(b) the full doctor vs the collection it runs (`pytest tests -q --co`) alone.

    python bench/doctor.py [--root PATH] [--repeat N]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Sandbox, compare, main, med, parse_args, samples

# The spec's manual preflight; pgrep only lists here, it never kills.
PROBE = ("ss -tlnp 2>/dev/null | grep ':{port}' || echo free; "
         "pgrep -af \"$(pwd)/py[0-9]*/bin/python.*_actor_child_main|subint-forkserv\" "
         "| grep -v 'grep\\|pgrep' || echo none; "
         "ls -la /tmp/registry@*.sock 2>/dev/null || echo none")


# exit 1 = the doctor found a problem in the target (e.g. another session's
# leftovers in a shared --root checkout): every check still ran, so the time counts
DOCTOR_OK = (0, 1)


def bench(args) -> None:
    with Sandbox(args.root) as sb:
        sb.header("doctor", args.repeat)

        fast = sb.invoke("doctor", "--fast", python=True)
        probe = ["bash", "-c", PROBE.format(port=sb.port)]
        xs, ys = compare(args.repeat, lambda: sb.run(fast, cwd=REPO, ok=DOCTOR_OK),
                         lambda: sb.run(probe))
        print(f"doctor --fast: invoke {med(xs):.2f}s vs raw shell probe {med(ys):.3f}s "
              f"-> ratio {med(xs) / med(ys):.1f}")
        print(samples("invoke", xs, "probe", ys), flush=True)

        full = sb.invoke("doctor", python=True)
        collect = [str(sb.python), "-m", "pytest", "tests", "-q", "--co"]
        xs, ys = compare(args.repeat, lambda: sb.run(full, cwd=REPO, ok=DOCTOR_OK),
                         lambda: sb.run(collect))
        print(f"doctor: invoke {med(xs):.2f}s vs pytest --co alone {med(ys):.2f}s "
              f"-> ratio {med(xs) / med(ys):.2f} (design goal: about 1.0)")
        print(samples("invoke", xs, "pytest --co", ys), flush=True)


if __name__ == "__main__":
    args = parse_args("bench/doctor.py", __doc__.split("\n\n")[0], repeat=5)
    main(lambda: bench(args))
