"""The chooser (stoke/executors/choose.py): which options are tuned, which pool each gets,
what ``to_keras`` and ``stoke run`` ask of it; and host limits read in one place."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import stoke
from stoke.executors import choose, host
from stoke.executors.auto import AutoPool
from stoke.executors.options import LoaderOptions


def double(sample):
    return sample * 2


class Batches:
    """A Sequence without Keras: 6 batches of 4 rows."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int):
        return np.full((4, 2), index, np.float32), np.full(4, index, np.int64)


def test_host_limits():
    assert host.available_cores() == len(host.allowed_cpus() or range(host.available_cores()))
    assert host.available_cores() >= 1
    assert host.memory_budget_bytes(12345) == 12345
    default = host.memory_budget_bytes()
    assert 0 < default <= host.available_memory_bytes()


@pytest.mark.parametrize(("workers", "executor", "tuned"), [
    ("auto", "auto", True), ("auto", "process", True), ("auto", "thread", True),
    (3, "auto", True), (1, "auto", False), (2, "process", False), (2, "thread", False),
    ("auto", "inline", False), ("auto", "ray", False),
])
def test_which_options_are_tuned(workers, executor, tuned):
    assert choose.tunes(LoaderOptions(workers=workers, executor=executor)) is tuned


def test_first_workers_stay_within_the_core_budget():
    assert choose.first_workers(LoaderOptions(workers=5)) == 5
    assert choose.first_workers(LoaderOptions(cpu_budget_cores=1)) == 1
    assert choose.first_workers(LoaderOptions()) == min(2, host.available_cores())


def test_a_tuned_loader_gets_an_auto_pool_and_a_tuner_a_fixed_one_neither():
    program = stoke.from_arrays(np.arange(8.0)).map(double).batch(4).program
    pool = choose.start_pool(program, LoaderOptions(executor="thread"))
    try:
        assert isinstance(pool, AutoPool)
        tuner = choose.finish_start(pool, LoaderOptions(executor="thread"))
        assert tuner is not None and tuner.config == ("thread", pool.workers)
    finally:
        pool.close()
    fixed = LoaderOptions(workers=2, executor="thread")
    pool = choose.start_pool(program, fixed)
    try:
        assert not isinstance(pool, AutoPool) and (pool.kind, pool.workers) == ("thread", 2)
        assert choose.finish_start(pool, fixed) is None
        assert choose.tune_pinned(pool, fixed, resizer=None) is None  # a fixed count stays
    finally:
        pool.close()


def test_to_keras_runs_processes_when_the_program_travels_else_threads():
    picklable = stoke.from_arrays(np.arange(8.0)).map(double).program
    lock = threading.Lock()
    unpicklable = stoke.from_arrays(np.arange(8.0)).map(lambda s, lock=lock: s).program
    assert choose.for_training(picklable, "auto", "auto") == ("auto", "process")
    assert choose.for_training(unpicklable, "auto", "auto") == ("auto", "thread")
    assert choose.for_training(picklable, 3, "thread") == (3, "thread")
    assert choose.for_training(picklable, "auto", "ray") == (
        max(1, host.available_cores() - 1), "ray")


def test_stoke_run_tunes_the_workers_within_the_cores_the_script_asked_for():
    cores = host.available_cores()
    assert choose.for_legacy_script(3, 8) == {"workers": 3}  # stoke run --workers 3: fixed
    assert choose.for_legacy_script("auto", 4) == {"workers": "auto",
                                                   "cpu_budget_cores": min(4, cores)}
    for asked in (None, 1, True, "many"):  # Keras 2's default (1) was rarely a choice
        assert choose.for_legacy_script("auto", asked) == {"workers": "auto"}


def test_an_accelerated_sequence_with_a_core_budget_is_tuned_within_it():
    acc = stoke.accelerate(Batches(), executor="process", cpu_budget_cores=1)
    try:
        assert [int(x[0, 0]) for x, _ in acc.iter()] == list(range(6))
        tuning = acc.tuning()
        assert tuning.tuned and tuning.cpu_budget_cores == 1 and tuning.workers == 1
    finally:
        acc.close()
