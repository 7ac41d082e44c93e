"""Duration-balanced shards (CI's `--shard I/N`): split a selection into groups that take
about as long, heavy modules kept apart.

Greedy longest-first onto the lightest shard (LPT), heavy groups placed first, one per
shard while a shard without one exists. Without heavy groups its guarantee, used by the
tests:
the heaviest shard exceeds the lightest by at most the smallest group placed on the
heaviest one, and is within 4/3 of the best possible split. Every tie is broken by
name or index, so the same input always gives the same shards.
"""
from __future__ import annotations

import math
import statistics

UNKNOWN_DEFAULT = 1.0  # seconds per test when no duration at all is known


def estimates(nodeids: list[str], durations: dict[str, float]) -> dict[str, float]:
    """Seconds per test: its recorded duration, else the median of the known ones."""
    known = {n: max(float(durations[n]), 0.0) for n in nodeids
             if n in durations and not math.isnan(float(durations[n]))}
    fill = statistics.median(known.values()) if known else UNKNOWN_DEFAULT
    return {n: known.get(n, fill) for n in nodeids}


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def plan(nodeids: list[str], durations: dict[str, float], n: int, *,
         by_module: bool = True, heavy: set[str] | frozenset[str] = frozenset()
         ) -> list[list[str]]:
    """At most n non-empty shards of `nodeids` with balanced summed durations.

    by_module keeps each module's tests together (module-scoped fixtures are set up
    once, not once per shard). Within a shard, tests keep their order in `nodeids`.
    Fewer groups than n gives fewer shards. `heavy` names groups (modules) that must
    not share a shard while a shard without one exists: they are placed first, longest
    first, each on the lightest shard holding none yet; then the rest, LPT.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"shard count must be an integer >= 1, not {n!r}")
    est = estimates(nodeids, durations)
    groups = sorted(_groups(nodeids, est, by_module), key=lambda g: (-g[0], g[1], g[2][0]))
    shards: list[list[int]] = [[] for _ in range(min(n, len(groups)))]
    loads = [[0.0, 0] for _ in shards]   # per shard: summed seconds, tests so far
    has_heavy = [False] * len(shards)
    for weight, name, members in [g for g in groups if g[1] in heavy] + \
            [g for g in groups if g[1] not in heavy]:
        free = [i for i in range(len(shards)) if not has_heavy[i]]
        pool = free if name in heavy and free else range(len(shards))
        # the lightest; equal loads (think zero durations) still spread, ties by index
        i = min(pool, key=lambda k: (loads[k][0], loads[k][1], k))
        shards[i].extend(members)
        loads[i][0] += weight
        loads[i][1] += len(members)
        has_heavy[i] = has_heavy[i] or name in heavy
    return [[nodeids[k] for k in sorted(shard)] for shard in shards if shard]


def predicted(shard: list[str], durations: dict[str, float], every: list[str]) -> float:
    """The predicted seconds of one shard (unknown tests at the median of the known)."""
    est = estimates(every, durations)
    return sum(est[t] for t in shard)


def _groups(nodeids: list[str], est: dict[str, float],
            by_module: bool) -> list[tuple[float, str, list[int]]]:
    """(summed seconds, name, indexes into nodeids) per module, or per test."""
    found: dict[str, list[int]] = {}
    for k, nodeid in enumerate(nodeids):
        found.setdefault(module_of(nodeid) if by_module else f"{nodeid}\0{k}", []).append(k)
    return [(sum(est[nodeids[k]] for k in ks), name, ks) for name, ks in found.items()]


def describe(shards: list[list[str]], durations: dict[str, float]) -> list[str]:
    """One line per shard: how many tests and modules, and the estimated seconds."""
    est = estimates([t for shard in shards for t in shard], durations)
    lines = []
    for i, shard in enumerate(shards, 1):
        modules = len({module_of(t) for t in shard})
        seconds = sum(est[t] for t in shard)
        lines.append(f"shard {i}/{len(shards)}: {_count(len(shard), 'test')} in "
                     f"{_count(modules, 'module')}, ~{seconds:.1f}s")
    return lines


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
