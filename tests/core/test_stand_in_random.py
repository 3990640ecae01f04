"""The trainer's stand-in global random streams (stoke.executors.stand_in_random): the
user's own draws are exactly as without it, the stand-in's draws continue one stream of its
own, and a batch that draws nothing is not charged numpy's slow get_state/set_state."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stoke.data.program import seed_worker_globals
from stoke.executors.stand_in_random import STAND_IN_INDEX, StandInRandom


def _draw(kind: str) -> list[float]:
    """One use of the global streams, as a user's code makes it: normals in odd counts (they
    leave numpy's cached normal set), uniforms, Python's random, or nothing."""
    if kind == "normal1":
        return [float(np.random.normal())]
    if kind == "normal3":
        return np.random.normal(size=3).tolist()
    if kind == "uniform":
        return np.random.random(2).tolist()
    if kind == "python":
        return [random.random()]
    if kind == "shuffle":
        order = list(range(5))
        random.shuffle(order)
        np.random.shuffle(order)
        return [float(i) for i in order]
    return []


KINDS = ["normal1", "normal3", "uniform", "python", "shuffle", "nothing"]


def _schedule(seed: int, length: int = 60) -> list[tuple[str, str]]:
    """(who, kind) pairs: the trainer's own draws between batches, the batches' inside."""
    rng = np.random.default_rng(seed)
    return [(str(rng.choice(["trainer", "batch"])), str(rng.choice(KINDS)))
            for _ in range(length)]


@pytest.fixture(autouse=True)
def _user_streams_back():
    python, numpy_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(python)
    np.random.set_state(numpy_state)


@pytest.mark.parametrize("schedule_seed", range(8))
def test_the_users_draws_and_the_stand_ins_are_each_one_unbroken_stream(schedule_seed):
    schedule = _schedule(schedule_seed)
    # the user's draws alone, and the stand-in's alone, each from its own seeding
    random.seed(11)
    np.random.seed(11)
    user_alone = [_draw(kind) for who, kind in schedule if who == "trainer"]
    seed_worker_globals(3, STAND_IN_INDEX + 1)
    stand_in_alone = [_draw(kind) for who, kind in schedule if who == "batch"]

    random.seed(11)
    np.random.seed(11)
    stand_in = StandInRandom(seed=3, stream=1)
    user, batches = [], []
    for who, kind in schedule:
        if who == "trainer":
            user.append(_draw(kind))
        else:
            with stand_in:
                batches.append(_draw(kind))
    assert user == user_alone
    assert batches == stand_in_alone


def test_another_global_bit_generator_is_swapped_exactly_too():
    np.random.set_bit_generator(np.random.PCG64(5))
    try:
        user_alone = np.random.random(4).tolist()
        np.random.set_bit_generator(np.random.PCG64(5))
        stand_in = StandInRandom(seed=0)
        user = [np.random.random()]
        with stand_in:
            first = np.random.random()
        user.append(np.random.random())
        with stand_in:
            second = np.random.random()
        user += np.random.random(2).tolist()
        assert user == user_alone
        assert first != second
    finally:
        np.random.set_bit_generator(np.random.MT19937(0))


def test_a_batch_that_draws_nothing_costs_no_full_state_copy(monkeypatch):
    """numpy's get_state/set_state copy the 624-word key one word at a time (about 32 µs
    each): the swap of an unmoved stream with no cached normal takes the raw bytes instead."""
    stand_in = StandInRandom(seed=0)
    np.random.seed(1)
    for _ in range(2):  # the first uses read each side in full once
        with stand_in:
            pass
    calls = []
    real_get, real_set = np.random.get_state, np.random.set_state
    monkeypatch.setattr(np.random, "get_state", lambda *a, **k: calls.append("get")
                        or real_get(*a, **k))
    monkeypatch.setattr(np.random, "set_state", lambda *a, **k: calls.append("set")
                        or real_set(*a, **k))
    before = real_get()[1].copy()
    for _ in range(20):
        with stand_in:
            np.zeros(3)
    assert calls == []
    np.testing.assert_array_equal(real_get()[1], before)
