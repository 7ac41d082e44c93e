"""The scheduler's decisions on synthetic costs (milliseconds) with a fake clock: heavy
units kept apart, light ones overlapped, the budget held, the order and the assignment
deterministic. (Real lanes on the sample: test_shards_run.py.)"""
from __future__ import annotations

import itertools
import random

import pytest

from tractor_tasks.schedule import (
    ALONE_RATE, Scheduler, Unit, auto_workers, order, simulate)


def U(name, wall_ms, rate, heavy=False, n=3):
    return Unit(name, tuple(f"{name}::t{k}" for k in range(n)), wall_ms / 1000, rate, heavy)


def overlap(a, b) -> bool:
    return a.start < b.end and b.start < a.end


def test_two_cpu_heavy_units_never_overlap_and_light_ones_do():
    units = [U("tests/test_heavy_a.py", 40, 1.6), U("tests/test_heavy_b.py", 30, 1.2),
             *(U(f"tests/test_light_{k}.py", 10, 0.2) for k in range(6))]
    slots = {s.unit: s for s in simulate(units, workers=4, cores=2, target=0.8)}
    a, b = slots["tests/test_heavy_a.py"], slots["tests/test_heavy_b.py"]
    assert not overlap(a, b)
    lights = [s for name, s in slots.items() if "light" in name]
    for heavy in (a, b):  # alone: nothing beside it at all
        assert not any(overlap(heavy, s) for s in lights)
    assert any(overlap(x, y) for x, y in itertools.combinations(lights, 2))
    # the light ones overlap up to the budget: 2 cores x 0.8 / 0.2 = 8 > 4 workers
    at = lights[0].start
    assert sum(1 for s in lights if s.start <= at < s.end) == 4


def test_the_admitted_demand_stays_within_the_budget():
    rng = random.Random(5)
    units = [U(f"tests/test_{k:02}.py", rng.randint(1, 50), rng.choice((0.1, 0.3, 0.5, 0.7)))
             for k in range(30)]
    slots = simulate(units, workers=6, cores=2, target=0.75)
    rate = {u.name: u.rate for u in units}
    for s in slots:  # at each start, what runs together
        together = [x for x in slots if x.start <= s.start < x.end]
        assert len(together) <= 6
        if len(together) > 1:
            assert sum(rate[x.unit] for x in together) <= 2 * 0.75 + 1e-9
    assert sorted(s.unit for s in slots) == sorted(u.name for u in units)  # each once


def test_unmeasured_and_marked_units_run_alone():
    units = [U("tests/test_new.py", 5, None), U("tests/test_marked.py", 5, 0.1, heavy=True),
             U("tests/test_a.py", 5, 0.1), U("tests/test_b.py", 5, 0.1)]
    assert [u.alone for u in units] == [True, True, False, False]
    slots = {s.unit: s for s in simulate(units, workers=3, cores=2)}
    for name in ("tests/test_new.py", "tests/test_marked.py"):
        assert not any(overlap(slots[name], s) for k, s in slots.items() if k != name)
    assert overlap(slots["tests/test_a.py"], slots["tests/test_b.py"])
    assert U("x", 1, ALONE_RATE).alone and not U("x", 1, ALONE_RATE - 0.01).alone


def test_same_history_same_order_and_assignment():
    rng = random.Random(11)
    units = [U(f"tests/test_{k:02}.py", rng.choice((5, 10, 20)), rng.choice((0.2, 0.4, 1.5, None)))
             for k in range(20)]
    first = simulate(units, workers=3, cores=2)
    for seed in range(5):
        shuffled = units[:]
        random.Random(seed).shuffle(shuffled)
        assert simulate(shuffled, workers=3, cores=2) == first
    # longest first, ties by name
    assert [u.name for u in order(units)] == [u.name for u in sorted(units, key=lambda u: (-u.wall, u.name))]


def test_an_alone_unit_at_the_head_waits_for_the_machine_to_drain():
    now = [0.0]
    sched = Scheduler([U("a_light.py", 50, 0.2), U("b_heavy.py", 40, 1.5),
                       U("c_light.py", 10, 0.2)], workers=3, cores=2, clock=lambda: now[0])
    first = sched.admit()
    assert [r.unit.name for r in first] == ["a_light.py"]  # the heavy head waits, no backfill
    assert sched.admit() == []
    now[0] = 0.05
    sched.finish(first[0].worker)
    assert [r.unit.name for r in sched.admit()] == ["b_heavy.py"]
    assert sched.admit() == [] and "runs alone" in sched.status()


def test_a_passed_over_head_stops_the_backfill_after_its_patience():
    now = [0.0]
    sched = Scheduler([U("a.py", 100, 0.5), U("b.py", 90, 0.6), *(U(f"z{k}.py", 1, 0.1)
                                                                 for k in range(10))],
                      workers=3, cores=1, target=1.0, clock=lambda: now[0], patience=4)
    got = [r.unit.name for r in sched.admit()]
    assert got == ["a.py", "z0.py", "z1.py"]  # b (0.6) does not fit beside a (0.5)
    names = []
    while any(r.unit.name.startswith("z") for r in sched.running.values()):
        w = min(w for w, r in sched.running.items() if r.unit.name.startswith("z"))
        sched.finish(w)
        names += [r.unit.name for r in sched.admit()]
    assert names == ["z2.py", "z3.py"]  # passed over 4 times: then b waits for a to end
    sched.finish(next(iter(sched.running)))
    assert [r.unit.name for r in sched.admit()][0] == "b.py"


def test_requeue_and_close():
    sched = Scheduler([U("a.py", 10, 0.2)], workers=1, cores=2, clock=lambda: 0.0)
    (run,) = sched.admit()
    sched.finish(run.worker)
    sched.requeue(Unit("a.py (rest)", ("a.py::t2",), 0.003, 0.2))
    assert [u.name for u in sched.close()] == ["a.py (rest)"] and sched.done()
    assert sched.admit() == []


def test_auto_workers_from_the_cores_and_the_rates():
    light = [U(f"m{k}.py", 10, 0.25) for k in range(10)]
    assert auto_workers(light, cores=2, target=0.75) == 4   # 1.5 / 0.25 = 6, cap 2 x cores
    assert auto_workers(light, cores=4, target=0.5) == 8
    assert auto_workers([U("a.py", 1, None), U("b.py", 1, None), U("c.py", 1, None)], cores=2) == 2
    assert auto_workers([U("a.py", 1, 0.6)], cores=8) == 1


def test_bad_worker_count():
    with pytest.raises(ValueError):
        Scheduler([], workers=0, cores=2)


def test_load_already_on_the_machine_comes_off_the_budget():
    light = [U(f"tests/test_{k}.py", 10, 0.4) for k in range(4)]
    free = simulate(light, workers=4, cores=2, target=1.0)
    assert max(sum(1 for x in free if x.start <= s.start < x.end) for s in free) == 4
    sched = Scheduler(light, workers=4, cores=2, target=1.0, reserved=0.8, clock=lambda: 0.0)
    assert sched.budget == pytest.approx(1.2)
    assert len(sched.admit()) == 3  # 4 x 0.4 > 1.2
    assert "load not ours" in sched.status()
    # never below half the budget: other work cannot make the run serial
    busy = Scheduler(light, workers=4, cores=2, target=1.0, reserved=2.0, clock=lambda: 0.0)
    assert busy.budget == pytest.approx(1.0) and len(busy.admit()) == 2
