"""Benchmark the run tasks: (a) `invoke lastfailed` vs `pytest --cache-show`,
(b) the overhead of `invoke test tests/test_local.py` over the same pytest command run directly,
(c) a contained run vs the same run with --no-contain, (d) the start-up floor (`python -c
pass`, `import invoke`, `invoke --list`), (e) (a) and (b) again with bytecode cached when
PYTHONDONTWRITEBYTECODE is set here (the cache goes to the sandbox: PYTHONPYCACHEPREFIX).

    python bench/runs.py [--root PATH] [--repeat N]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, BenchError, Sandbox, compare, main, med,
                     parse_args, parse_command, samples, verdict)

LASTFAILED_TARGET = 0.25   # ratio invoke / pytest --cache-show
OVERHEAD_TARGET = 0.3      # seconds over the bare pytest command
CONTAIN_TARGET = 0.2       # seconds a contained run costs over an uncontained one


def dry_run(sb: Sandbox, argv: list[str]) -> tuple[Path, dict, list[str]]:
    """The `cd <dir>` and the command line `invoke test --dry-run` prints."""
    _, out = sb.output([*argv, "--dry-run"], cwd=REPO)
    lines = out.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("cd "):
            env, cmd = parse_command(lines[i + 1], sb.env)
            return Path(line[3:].strip()), env, cmd
    raise BenchError(f"no `cd <root>` line in the --dry-run output:\n{out}")


def floor(sb: Sandbox, repeat: int, env: dict) -> dict[str, float]:
    """What every `invoke ...` pays before any task of ours runs."""
    py = sys.executable
    empty = sb.base / "one-empty-task"   # invoke's own floor: a tasks.py with one no-op
    empty.mkdir(exist_ok=True)
    (empty / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef noop(c):\n"
                                    "    pass\n")
    times = {}
    for name, argv, cwd in (("python -c pass", [py, "-c", "pass"], REPO),
                            ("import invoke", [py, "-c", "import invoke"], REPO),
                            ("import tractor_tasks.invoke_tasks",
                             [py, "-c", "import tractor_tasks.invoke_tasks"], REPO),
                            ("invoke --list", [py, "-m", "invoke", "--list"], REPO),
                            ("invoke noop (one empty task, no tractor-tasks)",
                             [py, "-m", "invoke", "noop"], empty)):
        sb.run(argv, cwd=cwd, env=env)
        times[name] = med([sb.run(argv, cwd=cwd, env=env) for _ in range(repeat)])
    print("start-up floor: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items()),
          flush=True)
    return times


def lastfailed_and_test(sb: Sandbox, args, env: dict, label: str = "") -> None:
    lastfailed = sb.invoke("lastfailed")
    show = [str(sb.python), "-m", "pytest", "--cache-show", "cache/lastfailed"]
    xs, ys = compare(args.repeat, lambda: sb.run(lastfailed, cwd=REPO, env=env),
                     lambda: sb.run(show, env=env))
    ratio = med(xs) / med(ys)
    print(f"lastfailed{label}: invoke {med(xs):.2f}s vs pytest --cache-show {med(ys):.2f}s "
          f"-> ratio {ratio:.2f} (target <= {LASTFAILED_TARGET}: "
          f"{verdict(ratio <= LASTFAILED_TARGET)})")
    print(samples("invoke", xs, "pytest", ys), flush=True)
    test = sb.invoke("test", "tests/test_local.py", python=True)
    cwd, direct_env, direct = dry_run(sb, test)
    direct_env = {**direct_env, **{k: v for k, v in env.items()
                                   if k.startswith("PYTHONPYCACHE")}}
    if "PYTHONDONTWRITEBYTECODE" not in env:
        direct_env.pop("PYTHONDONTWRITEBYTECODE", None)
    sb.run(test, cwd=REPO, env=env)  # warm-up
    sb.run(direct, cwd=cwd, env=direct_env)
    xs, ys = compare(args.repeat, lambda: sb.run(test, cwd=REPO, env=env),
                     lambda: sb.run(direct, cwd=cwd, env=direct_env), warmup=False)
    over = med(xs) - med(ys)
    print(f"invoke test tests/test_local.py{label}: invoke {med(xs):.2f}s vs the same pytest "
          f"command directly {med(ys):.2f}s -> overhead {over:.2f}s (target < "
          f"{OVERHEAD_TARGET}s: {verdict(over < OVERHEAD_TARGET)})")
    print(samples("invoke", xs, "pytest", ys), flush=True)


def bench(args) -> None:
    with Sandbox(args.root) as sb:
        sb.header("runs", args.repeat)

        if sb.copied:  # one real failure in the cache, so there is something to list
            chaos = {**sb.env, "SAMPLE_ACTORS_CHAOS": "fail"}
            sb.run([str(sb.python), "-m", "pytest", "tests/test_rpc.py", "-q",
                    "-k", "test_remote_math"], env=chaos, ok=(1,))
        lastfailed = sb.invoke("lastfailed")
        show = [str(sb.python), "-m", "pytest", "--cache-show", "cache/lastfailed"]
        xs, ys = compare(args.repeat, lambda: sb.run(lastfailed, cwd=REPO),
                         lambda: sb.run(show))
        ratio = med(xs) / med(ys)
        lf = (med(xs), med(ys))
        print(f"lastfailed: invoke {med(xs):.2f}s vs pytest --cache-show {med(ys):.2f}s "
              f"-> ratio {ratio:.2f} (target <= {LASTFAILED_TARGET}: "
              f"{verdict(ratio <= LASTFAILED_TARGET)})")
        print(samples("invoke", xs, "pytest", ys), flush=True)

        # a checkout given with --root may be shared: never sweep another session's processes
        test = sb.invoke("test", "tests/test_local.py", *([] if sb.copied else ["--no-sweep"]),
                         python=True)
        cwd, env, direct = dry_run(sb, test)
        try:
            sb.run(test, cwd=REPO)  # warm-up
        except BenchError as err:
            if sb.copied or "leftovers" not in err.output:
                raise
            print(f"invoke test: skipped: {sb.root} has leftovers in scope (see `invoke "
                  f"doctor --python {sb.minor} --root {sb.root}`), and this benchmark never "
                  "sweeps a checkout given with --root")
            return
        sb.run(direct, cwd=cwd, env=env)  # warm-up
        xs, ys = compare(args.repeat, lambda: sb.run(test, cwd=REPO),
                         lambda: sb.run(direct, cwd=cwd, env=env), warmup=False)
        over = med(xs) - med(ys)
        test_over = over
        print(f"invoke test tests/test_local.py: invoke {med(xs):.2f}s vs the same pytest "
              f"command directly {med(ys):.2f}s -> overhead {over:.2f}s (target < "
              f"{OVERHEAD_TARGET}s: {verdict(over < OVERHEAD_TARGET)}), "
              f"ratio {med(xs) / med(ys):.2f}")
        print(samples("invoke", xs, "pytest", ys), flush=True)

        plain = [*test, "--no-contain"]
        xs, ys = compare(args.repeat, lambda: sb.run(test, cwd=REPO),
                         lambda: sb.run(plain, cwd=REPO))
        over = med(xs) - med(ys)
        print(f"contained vs --no-contain (invoke test tests/test_local.py): {med(xs):.2f}s vs "
              f"{med(ys):.2f}s -> overhead {over:+.2f}s (goal < {CONTAIN_TARGET}s: "
              f"{verdict(over < CONTAIN_TARGET)})")
        print(samples("contained", xs, "no-contain", ys), flush=True)

        times = floor(sb, args.repeat, sb.env)
        noop = times["invoke noop (one empty task, no tractor-tasks)"]
        bare = times["python -c pass"]
        print(f"invoke's own floor: `invoke noop` alone is {noop / lf[1]:.2f} of pytest "
              f"--cache-show (lastfailed target {LASTFAILED_TARGET}); tractor-tasks adds "
              f"{lf[0] - noop:+.2f}s to it in lastfailed, and {test_over - (noop - bare):+.2f}s "
              f"over bare pytest in invoke test (invoke's start itself is "
              f"{noop - bare:.2f}s of that test's {test_over:.2f}s overhead)", flush=True)
        if sb.copied and sb.env.get("PYTHONDONTWRITEBYTECODE"):
            cached = {k: v for k, v in sb.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
            cached["PYTHONPYCACHEPREFIX"] = str(sb.base / "pycache")
            print("PYTHONDONTWRITEBYTECODE is set here: every start compiles the tool (and "
                  "pytest) from source; the same with bytecode cached, as on most machines:")
            floor(sb, args.repeat, cached)
            lastfailed_and_test(sb, args, cached, label=" (bytecode cached)")


if __name__ == "__main__":
    args = parse_args("bench/runs.py", __doc__.split("\n\n")[0], repeat=5)
    main(lambda: bench(args))
