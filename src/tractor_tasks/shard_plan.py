"""Duration-balanced shards (CI's `--shard I/N`): split a selection into groups that take
about as long, heavy modules kept apart.

Greedy longest-first onto the lightest shard (LPT), heavy groups placed first, one per
shard while a shard without one exists. A module predicted longer than a shard's fair
share (the total over n) is split at test boundaries into that many contiguous parts
when it may be (`splittable`: its tests share no module- or class-scoped fixture, which
the probe reports at collection), so the biggest modules stop setting the floor.
Without heavy groups its guarantee, used by the tests: the heaviest shard exceeds the lightest by at most the smallest group placed on the
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
         by_module: bool = True, heavy: set[str] | frozenset[str] = frozenset(),
         splittable: set[str] | frozenset[str] = frozenset()) -> list[list[str]]:
    """At most n non-empty shards of `nodeids` with balanced summed durations.

    by_module keeps each module's tests together (module-scoped fixtures are set up
    once, not once per shard). Within a shard, tests keep their order in `nodeids`.
    Fewer groups than n gives fewer shards. `heavy` names groups (modules) that must
    not share a shard while a shard without one exists: they are placed first, longest
    first, each on the lightest shard holding none yet; then the rest, LPT. A module in
    `splittable` longer than the fair share is split first (`split`); its parts are
    groups of their own (not heavy: each fits a share already).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"shard count must be an integer >= 1, not {n!r}")
    est = estimates(nodeids, durations)
    groups = _groups(nodeids, est, by_module)
    if by_module and splittable and n > 1:
        # a split module's parts are not heavy (their names are not in `heavy`): each
        # fits a share already, and as heavy they would take other heavy modules' shards
        share = sum(g[0] for g in groups) / n
        groups = [part for g in groups
                  for part in (split(g, nodeids, est, share) if g[1] in splittable else [g])]
    groups = sorted(groups, key=lambda g: (-g[0], g[1], g[2][0]))
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


def split(group: tuple[float, str, list[int]], nodeids: list[str], est: dict[str, float],
          share: float) -> list[tuple[float, str, list[int]]]:
    """A group longer than `share` seconds cut into k = ceil(weight / share) contiguous
    parts (pytest's order kept) of about weight / k each, named `module[j/k]`; a group
    that fits, or of one test, unchanged."""
    weight, name, members = group
    if share <= 0 or weight <= share * (1 + 1e-9) or len(members) < 2:
        return [group]
    k = min(math.ceil(weight / share - 1e-9), len(members))
    parts: list[list[int]] = [[]]
    done = 0.0
    for pos, idx in enumerate(members):
        left = len(members) - pos          # tests not placed yet, this one included
        need = k - len(parts)              # parts still to open after the current one
        w = est[nodeids[idx]]
        # close the current part when it has reached its share of the whole, or when
        # every part still to open needs one of the tests left
        if parts[-1] and need > 0 and (done + w / 2 > weight * len(parts) / k or left <= need):
            parts.append([])
        parts[-1].append(idx)
        done += w
    return [(sum(est[nodeids[i]] for i in part), f"{name}[{j}/{len(parts)}]", part)
            for j, part in enumerate(parts, 1)]


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
