"""Shards: deterministic, balanced within LPT's proven bounds, modules kept whole, pytest's
order kept inside each shard."""
from __future__ import annotations

import itertools
import random

import pytest

from tractor_tasks.shard_plan import describe, estimates, module_of, plan


def _suite(seed: int, modules: int = 12, per_module: int = 8):
    """Synthetic node ids in pytest's order, with skewed (long-tailed) durations."""
    rng = random.Random(seed)
    ids = [f"tests/test_m{m:02}.py::test_{t}[p{t % 3}]"
           for m in range(modules) for t in range(rng.randint(1, per_module))]
    return ids, {i: round(rng.expovariate(1.0) * rng.choice((0.1, 1, 10)), 3) for i in ids}


def _loads(shards, durations):
    est = estimates([t for s in shards for t in s], durations)
    return [sum(est[t] for t in s) for s in shards]


def _is_subsequence(part, whole):
    it = iter(whole)
    return all(x in it for x in part)


def test_same_input_same_shards_whatever_the_dict_order():
    ids, durations = _suite(1)
    shuffled = list(durations.items())
    random.Random(7).shuffle(shuffled)
    for by_module in (True, False):
        first = plan(ids, durations, 4, by_module=by_module)
        assert plan(ids, durations, 4, by_module=by_module) == first
        assert plan(ids, dict(shuffled), 4, by_module=by_module) == first


def test_every_test_once_and_pytest_order_kept_within_each_shard():
    ids, durations = _suite(2)
    for by_module in (True, False):
        shards = plan(ids, durations, 3, by_module=by_module)
        assert sorted(t for s in shards for t in s) == sorted(ids)
        assert all(_is_subsequence(s, ids) for s in shards)


def test_by_module_keeps_each_module_in_one_shard():
    ids, durations = _suite(3)
    shards = plan(ids, durations, 4)
    homes = {}
    for k, shard in enumerate(shards):
        for t in shard:
            assert homes.setdefault(module_of(t), k) == k


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("by_module", [True, False])
def test_balanced_within_the_largest_group(seed, by_module):
    """Greedy onto the lightest shard: the heaviest shard was the lightest when it got its
    last group, so heaviest - lightest <= that group <= the largest group."""
    ids, durations = _suite(seed)
    shards = plan(ids, durations, 4, by_module=by_module)
    loads = _loads(shards, durations)
    groups = {}
    for t in ids:
        key = module_of(t) if by_module else t
        groups[key] = groups.get(key, 0) + durations[t]
    assert len(shards) == 4
    assert max(loads) - min(loads) <= max(groups.values()) + 1e-9


@pytest.mark.parametrize("seed", range(30))
def test_within_four_thirds_of_the_optimum_on_small_cases(seed):
    """LPT's bound: makespan <= (4/3 - 1/(3n)) * optimum; the optimum by brute force."""
    rng = random.Random(seed)
    n = rng.choice((2, 3))
    weights = [rng.choice((1, 2, 3, 5, 8)) * rng.random() + 0.1 for _ in range(rng.randint(n, 7))]
    ids = [f"tests/test_{k}.py::test" for k in range(len(weights))]
    durations = dict(zip(ids, weights))
    optimum = min(
        max(sum(w for w, s in zip(weights, assign) if s == k) for k in range(n))
        for assign in itertools.product(range(n), repeat=len(weights)))
    makespan = max(_loads(plan(ids, durations, n), durations))
    assert makespan <= (4 / 3 - 1 / (3 * n)) * optimum + 1e-9


def test_the_textbook_case_lpt_gets_right():
    ids = [f"tests/test_{w}.py::t" for w in "abcdef"]
    durations = dict(zip(ids, (7, 6, 5, 4, 3, 3)))  # optimum 14 / 14
    assert sorted(_loads(plan(ids, durations, 2), durations)) == [14, 14]


def test_unknown_durations_get_the_median_of_the_known_ones():
    ids = ["tests/test_a.py::a", "tests/test_a.py::b", "tests/test_a.py::c",
           "tests/test_b.py::new"]
    durations = {ids[0]: 1.0, ids[1]: 3.0, ids[2]: 20.0, "tests/test_z.py::gone": 500.0}
    assert estimates(ids, durations)[ids[3]] == 3.0  # median of the selection's known ones
    assert estimates(["x::y", "x::z"], {}) == {"x::y": 1.0, "x::z": 1.0}
    # weighing 3 s (not 1 s, not the 500 s of a test outside the selection), the new test
    # ties with b, so the 1 s test joins b and the new test gets a shard of its own
    shards = plan(ids, durations, 3, by_module=False)
    assert shards == [[ids[2]], ids[:2], [ids[3]]]
    assert describe(shards, durations)[-1].endswith("~3.0s")


def test_fewer_groups_than_shards_gives_fewer_shards_never_an_empty_one():
    ids = ["tests/test_a.py::x", "tests/test_a.py::y", "tests/test_b.py::z"]
    assert plan(ids, {}, 5) == [["tests/test_a.py::x", "tests/test_a.py::y"],
                                ["tests/test_b.py::z"]]
    assert len(plan(ids, {}, 5, by_module=False)) == 3
    zero = {t: 0.0 for t in ids}  # equal loads still spread, by test count
    assert len(plan(ids, zero, 3, by_module=False)) == 3
    assert plan([], {}, 3) == []
    assert plan(ids, {}, 1) == [ids]


@pytest.mark.parametrize("n", [0, -1, 2.5, None])
def test_an_invalid_shard_count_is_refused(n):
    with pytest.raises(ValueError):
        plan(["tests/test_a.py::x"], {}, n)


def test_describe_says_tests_modules_and_seconds():
    ids = ["tests/test_a.py::x", "tests/test_a.py::y", "tests/test_b.py::z"]
    lines = describe(plan(ids, {ids[0]: 2, ids[1]: 2, ids[2]: 1}, 2, by_module=False),
                     {ids[0]: 2, ids[1]: 2, ids[2]: 1})
    assert lines == ["shard 1/2: 2 tests in 2 modules, ~3.0s",
                     "shard 2/2: 1 test in 1 module, ~2.0s"]


def _big_suite():
    ids = [f"tests/test_big.py::t{i}" for i in range(10)] + \
          [f"tests/test_s{i}.py::x" for i in range(6)]
    durations = {i: 10.0 for i in ids[:10]} | {i: 5.0 for i in ids[10:]}
    return ids, durations


@pytest.mark.parametrize("n", [2, 4, 8])
def test_a_splittable_module_longer_than_a_share_is_cut_into_contiguous_parts(n):
    ids, durations = _big_suite()
    whole = plan(ids, durations, n)
    cut = plan(ids, durations, n, splittable={"tests/test_big.py"})
    assert max(_loads(cut, durations)) < max(_loads(whole, durations))
    # every test once, pytest's order kept in each shard, the module's parts contiguous
    assert sorted(t for s in cut for t in s) == sorted(ids)
    for shard in cut:
        assert _is_subsequence(shard, ids)
        big = [ids.index(t) for t in shard if module_of(t) == "tests/test_big.py"]
        assert big == list(range(big[0], big[0] + len(big))) if big else True
    assert plan(ids, durations, n, splittable={"tests/test_big.py"}) == cut  # deterministic
    # total 130 s: the best split is at most the share plus one test's 10 s
    assert max(_loads(cut, durations)) <= 130 / n + 10


def test_a_module_not_splittable_or_within_its_share_stays_whole():
    ids, durations = _big_suite()
    for shards in (plan(ids, durations, 4, splittable={"tests/test_s0.py"}),
                   plan(ids, durations, 1, splittable={"tests/test_big.py"})):
        assert sum(any(module_of(t) == "tests/test_big.py" for t in s) for s in shards) == 1


def test_a_heavy_modules_parts_spread_over_the_shards():
    ids, durations = _big_suite()
    shards = plan(ids, durations, 4, heavy={"tests/test_big.py"},
                  splittable={"tests/test_big.py"})
    holders = [s for s in shards if any(module_of(t) == "tests/test_big.py" for t in s)]
    # 100 s of 130 s over a 32.5 s share: four parts of 25 s, one per shard
    assert len(holders) == 4
    assert all(sum(module_of(t) == "tests/test_big.py" for t in s) in (2, 3) for s in holders)


def test_split_parts_are_named_and_balanced():
    from tractor_tasks.shard_plan import split
    ids = [f"tests/test_m.py::t{i}" for i in range(7)]
    est = dict(zip(ids, [1, 1, 1, 1, 1, 1, 4]))
    parts = split((10.0, "tests/test_m.py", list(range(7))), ids, est, 5.0)
    assert [p[1] for p in parts] == ["tests/test_m.py[1/2]", "tests/test_m.py[2/2]"]
    assert [p[2] for p in parts] == [[0, 1, 2, 3, 4], [5, 6]]
    assert split((10.0, "m", [0, 1]), ids, est, 20.0) == [(10.0, "m", [0, 1])]
    assert len(split((10.0, "m", [0, 1]), ids, est, 0.5)) == 2   # never more parts than tests


def test_the_probe_reports_shared_scopes_and_says_nothing_for_an_unknown_shape():
    """The probe's scopes.json: per module the module- and class-scoped fixtures its
    tests use; a test without fixture info it can read makes its module None (kept
    whole). Stand-ins for pytest items: only what the probe reads of them."""
    import enum
    import importlib.util
    from types import SimpleNamespace as NS
    from tractor_tasks.command import PROBE_DIR
    spec = importlib.util.spec_from_file_location("probe_for_test",
                                                  PROBE_DIR / "_tractor_tasks_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)

    class Scope(enum.Enum):
        Module = "module"

    def item(nodeid, **scopes):
        defs = {name: (NS(scope=s),) for name, s in scopes.items()}
        return NS(nodeid=nodeid, _fixtureinfo=NS(name2fixturedefs=defs))
    got = probe._shared_scopes([
        item("tests/test_a.py::x", tmp_path="function", reg_addr="session"),
        item("tests/test_b.py::C::y", conn="class", tmp_path="function"),
        item("tests/test_b.py::z", db=Scope.Module),
        item("tests/test_c.py::w"), NS(nodeid="tests/test_c.py::v")])
    assert got == {"tests/test_a.py": [], "tests/test_b.py": ["conn", "db"],
                   "tests/test_c.py": None}
    from tractor_tasks.sharding import splittable
    ids = ["tests/test_a.py::x", "tests/test_b.py::z", "tests/test_c.py::w"]
    assert splittable(got, ids) == {"tests/test_a.py"}
    assert splittable(None, ids) == set()
