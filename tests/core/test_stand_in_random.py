"""The trainer's stand-in global random streams (stoke.executors.stand_in_random): the
user's own draws are exactly as without it, each stand-in's draws continue one stream of its
own, whatever either side does to the global state (seed, get_state/set_state, normals that
leave numpy's cached normal set), and a swap copies the state's bytes, not numpy's slow
get_state/set_state."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stoke.executors.stand_in_random import STAND_IN_INDEX, StandInRandom


class Side:
    """One side's streams: the globals (``numpy=None``), or a reference of its own."""

    def __init__(self, numpy: np.random.RandomState | None = None,
                 python: random.Random | None = None) -> None:
        self.numpy = numpy
        self.python = python
        self.saved: list = []

    def np(self):
        return self.numpy if self.numpy is not None else np.random

    def py(self):
        return self.python if self.python is not None else random


def _use(side: Side, kind: str, number: int) -> list[float]:
    """One use of a side's streams, as a user's code makes it."""
    draw, python = side.np(), side.py()
    if kind == "normal1":  # an odd count leaves numpy's cached normal set
        return [float(draw.normal())]
    if kind == "normal3":
        return draw.normal(size=3).tolist()
    if kind == "uniform":
        return draw.random_sample(2).tolist()
    if kind == "python":
        return [python.random()]
    if kind == "shuffle":
        order = list(range(5))
        python.shuffle(order)
        draw.shuffle(order)
        return [float(i) for i in order]
    if kind == "seed":
        draw.seed(number % 1000)
        return []
    if kind == "save":  # "the same noise again": a state put back later
        side.saved.append(draw.get_state())
        return []
    if kind == "restore":
        if side.saved:
            draw.set_state(side.saved[number % len(side.saved)])
        return []
    return []


KINDS = ["normal1", "normal3", "uniform", "python", "shuffle", "seed", "save", "restore",
         "nothing"]


def _seeded_like_a_stand_in(seed: int, stream: int) -> Side:
    state = np.random.SeedSequence([seed, STAND_IN_INDEX + stream, 0x90B1]).generate_state(2)
    return Side(np.random.RandomState(int(state[1])), random.Random(int(state[0])))


@pytest.fixture(autouse=True)
def _user_streams_back():
    python, numpy_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(python)
    np.random.set_state(numpy_state)


@pytest.mark.parametrize("schedule_seed", range(40))
def test_the_users_draws_and_each_stand_ins_are_each_one_unbroken_stream(schedule_seed):
    """Random schedules: the user's uses between batches, batches of two stand-ins, one
    inside the other; each side checked against streams of its own."""
    rng = np.random.default_rng(schedule_seed)
    schedule = [(str(rng.choice(["user", "a", "b", "a+b"])), str(rng.choice(KINDS)),
                 str(rng.choice(KINDS)), int(rng.integers(1 << 30))) for _ in range(50)]
    # the globals as the user's side, the stand-ins over them
    random.seed(11)
    np.random.seed(11)
    first, second = StandInRandom(seed=3, stream=1), StandInRandom(seed=3, stream=2)
    on_globals = {"user": Side(), "a": Side(), "b": Side()}
    got = []
    for who, kind, inner, number in schedule:
        if who == "user":
            got.append(("user", _use(on_globals["user"], kind, number)))
        elif who in ("a", "b"):
            with first if who == "a" else second:
                got.append((who, _use(on_globals[who], kind, number)))
        else:
            with first:
                got.append(("a", _use(on_globals["a"], kind, number)))
                with second:
                    got.append(("b", _use(on_globals["b"], inner, number)))
    got.append(("user", [float(np.random.normal()), random.random()]))
    # each side alone, on streams of its own
    alone = {"user": Side(np.random.RandomState(11), random.Random(11)),
             "a": _seeded_like_a_stand_in(3, 1), "b": _seeded_like_a_stand_in(3, 2)}
    expected = []
    for who, kind, inner, number in schedule:
        if who in ("user", "a", "b"):
            expected.append((who, _use(alone[who], kind, number)))
        else:
            expected.append(("a", _use(alone["a"], kind, number)))
            expected.append(("b", _use(alone["b"], inner, number)))
    expected.append(("user", [float(alone["user"].numpy.normal()), alone["user"].python.random()]))
    assert got == expected


def test_a_state_put_back_with_its_cached_normal_stays_the_users():
    """The review's case: a state saved with numpy's cached normal set, put back after a
    batch that left the Twister where it was: the user's next normal is the cached one."""
    np.random.seed(0)
    np.random.normal()
    saved = np.random.get_state()
    expected = np.random.normal(size=3).tolist()
    np.random.set_state(saved)
    stand_in = StandInRandom(seed=0)
    with stand_in:
        pass
    np.random.set_state(saved)
    with stand_in:
        np.random.normal()
    assert np.random.normal(size=3).tolist() == expected


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


def test_a_stand_in_that_cannot_enter_leaves_the_users_streams_as_they_were():
    # its numpy state is for the Twister, the global now has another generator
    stand_in = StandInRandom(seed=0)
    with stand_in:
        np.random.random()
    np.random.set_bit_generator(np.random.PCG64(5))
    try:
        random.seed(4)
        python_before = random.getstate()
        numpy_before = np.random.get_state(legacy=False)["state"]
        with pytest.raises(ValueError), stand_in:
            pass
        assert random.getstate() == python_before
        assert np.random.get_state(legacy=False)["state"] == numpy_before
        with StandInRandom(seed=1):  # a new one enters
            np.random.random()
    finally:
        np.random.set_bit_generator(np.random.MT19937(0))


def test_a_swap_copies_bytes_never_numpys_slow_state_copy(monkeypatch):
    """numpy's get_state/set_state copy the 624-word key one word at a time (about 32 µs
    each): the swap copies the Twister's and the cached normal's bytes instead, whatever the
    batch draws."""
    stand_in = StandInRandom(seed=0)
    np.random.seed(1)
    with stand_in:  # the first use seeds the stand-in's streams
        pass
    calls = []
    real_get, real_set = np.random.get_state, np.random.set_state
    monkeypatch.setattr(np.random, "get_state", lambda *a, **k: calls.append("get")
                        or real_get(*a, **k))
    monkeypatch.setattr(np.random, "set_state", lambda *a, **k: calls.append("set")
                        or real_set(*a, **k))
    for kind in ("nothing", "normal1", "uniform", "normal3", "nothing"):
        with stand_in:
            _use(Side(), kind, 0)
        np.random.normal()
    assert calls == []
