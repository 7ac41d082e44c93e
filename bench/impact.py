"""Benchmark `invoke affected` from footprints (issue 24): does it miss anything, and how
much of the suite does it pick?

    python bench/impact.py                      # the sample: recall on seeded bugs
    python bench/impact.py --root PATH [--commits N]
                                                # a checkout: replay its last N commits

The sample (a private copy, committed to git): one recorded full run, then for each
seeded one-line bug (each in another module): `invoke affected --list` with the bug
in the work tree, and a full run with the bug; recall = the failing tests the
selection holds / the failing tests. A selection must hold every one (recall 100%).

--root: nothing is run and nothing in the checkout changes. Its history must hold
footprints from one recorded full run (`invoke test --no-x` there, at an earlier
commit). For each of its last N commits that change the package, the selection
from the commit's parent to it is computed from git objects alone: the share of the
suite's recorded time it selects (the change map's and the naming tests' files
counted whole; median and p90), and how many commits fell back to the whole suite
and why; and the same with the footprints taken as each commit's parent's own (its
change alone, without the drift since the recording). What a replay cannot do: import the commit's modules (`affected` checks
that a changed module still imports; these commits are history, they did).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, BenchError, Sandbox, main, parse_args

# (file, the line as it is, the bug): each makes at least one test of the sample fail
BUGS = [
    ("sample_actors/discovery/_api.py",
     "    return {name: parse_maddr(maddr) for name, maddr in table.items()}",
     "    return {name: parse_maddr(maddr) for name, maddr in table.items() if name[:1] != 'p'}"),
    ("sample_actors/discovery/_registry.py",
     "        return dict(self._table)",
     "        return dict(sorted(self._table.items())[:1])"),
    ("sample_actors/_runtime.py",
     "            'src': self.actor.name,",
     "            'src': 'root',"),
]


def git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", *args],
                         cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def _failures(root: Path) -> set[str]:
    outcome = json.loads((root / ".tractor-tasks" / "last" / "outcome.json").read_text())
    return {f["nodeid"] for f in outcome.get("failures", [])}


def _selection(out: str) -> tuple[set[str] | None, str]:
    """(the node ids selected, None for the whole suite; the share line)."""
    lines = out.splitlines()
    share = next((ln for ln in lines if ln.startswith("share of")), "")
    if any(ln.startswith("the whole suite runs") for ln in lines):
        return None, "the whole suite"
    return {ln.split(": ", 1)[0].strip() for ln in lines
            if ln.startswith("  ") and "::" in ln and ": " in ln}, share


def sample(args) -> None:
    with Sandbox(None) as sb:
        sb.header("impact: recall of `affected` on seeded bugs", 1)
        root = sb.root
        git(root, "init", "-q")
        git(root, "add", "-A")
        git(root, "commit", "-qm", "sample")
        sb.run(sb.invoke("test", "--no-x"), cwd=REPO, ok=(0, 1))
        print("recorded: one full run", flush=True)
        misses = 0
        for file, line, bug in BUGS:
            path = root / file
            text = path.read_text()
            if line not in text:
                raise BenchError(f"{file}: the line to seed a bug in is gone: {line!r}")
            path.write_text(text.replace(line, bug))
            try:
                _, out = sb.output(sb.invoke("affected", "--list"), cwd=REPO)
                picked, share = _selection(out)
                sb.run(sb.invoke("test", "--no-x", "--no-confirm"), cwd=REPO, ok=(0, 1))
                failed = _failures(root)
            finally:
                path.write_text(text)
            held = failed if picked is None else failed & picked
            misses += len(failed - held)
            recall = f"{len(held)}/{len(failed)}" if failed else "no test failed"
            print(f"{file}: {len(failed)} failing, selected {len(picked or [])} "
                  f"({share or 'the whole suite'}); recall {recall}"
                  + (f"; MISSED {sorted(failed - held)}" if failed - held else ""),
                  flush=True)
        print(f"recall: {'100%' if not misses else f'{misses} failing test(s) missed'}")


def replay(args) -> None:
    from tractor_tasks.footprints import select, share
    from tractor_tasks.history import History
    from tractor_tasks.rundirs import State
    from tractor_tasks.target import load_target
    target = load_target(args.root)
    history = History(State(target).history)
    prints = history.latest_footprints()
    if not prints:
        raise BenchError(f"no footprints in {State(target).history}: record one full run "
                         "first (`invoke test --no-x` there)")
    # the target's own interpreter reads what this one cannot parse (newer syntax)
    venvs = sorted(args.root.glob("py3*/bin/python")) if hasattr(args.root, "glob") else \
        sorted(Path(args.root).glob("py3*/bin/python"))
    python = venvs[-1] if venvs else None
    pkg = target.package.replace(".", "/")
    shas = git(args.root, "log", f"-{int(args.commits)}", "--format=%H", "--no-merges",
               "--", pkg).split()
    shares, whole = [], []
    known = sorted({n for n, _, _, _ in prints})
    from tractor_tasks.footprints import _covers
    own: list[float] = []   # the same, with the footprints taken as the parent's own
    for sha in shas:
        parent = git(args.root, "rev-parse", f"{sha}^").strip()
        fresh = select(target, history, f"{sha}^", to=sha,
                       prints=[(n, c, parent, fp) for n, c, _, fp in prints], python=python)
        if fresh.whole:
            own.append(1.0)
        else:
            mapped = {n for n in known if any(_covers(target, w, n.split("::")[0])
                                              for w in fresh.words)}
            got, total = share(history, sorted(set(fresh.reasons) | mapped), known)
            own.append(got / total if total else 0.0)
        sel = select(target, history, f"{sha}^", to=sha, prints=prints, python=python)
        if sel.whole:
            whole.append(f"{sha[:10]}: {sel.whole}")
            shares.append(1.0)
            print(f"{sha[:10]}: the whole suite ({sel.whole})", flush=True)
            continue
        # the tests of the files the change map (or a test naming the file) runs whole
        # count too
        mapped = {n for n in known if any(_covers(target, w, n.split("::")[0])
                                          for w in sel.words)}
        picked, total = share(history, sorted(set(sel.reasons) | mapped), known)
        shares.append(picked / total if total else 0.0)
        units = ", ".join(sorted({u.file.rsplit("/", 1)[-1] for u in sel.units}))[:60]
        print(f"{sha[:10]}: {len(set(sel.reasons) | mapped)} test(s), "
              f"{100 * shares[-1]:.1f}% of the time (its own change alone: "
              f"{100 * own[-1]:.1f}%) ({units or 'no code change'})"
              + (f" (+ {' '.join(sel.words)})" if sel.words else ""), flush=True)
    if not shares:
        print("no commit changes the package")
        return
    p90 = statistics.quantiles(shares, n=10)[-1] if len(shares) > 1 else shares[0]
    print(f"share of the suite's time selected over {len(shares)} commits: median "
          f"{100 * statistics.median(shares):.1f}%, p90 {100 * p90:.1f}%")
    p90own = statistics.quantiles(own, n=10)[-1] if len(own) > 1 else own[0]
    print(f"with the footprints taken as each commit's parent's own (each commit's change "
          f"alone, no drift since the recording): median {100 * statistics.median(own):.1f}%, "
          f"p90 {100 * p90own:.1f}%")
    print(f"fell back to the whole suite: {len(whole)}")
    for line in whole:
        print(f"  {line}")


if __name__ == "__main__":
    args = parse_args("impact", __doc__.splitlines()[0], 1,
                      extra=[("--commits", "30", "commits to replay with --root")])
    main(lambda: replay(args) if args.root else sample(args))
