"""When stoke.accelerate starts its workers (stoke.accelerate.worker_start): the rule on
clocks the test drives, then an accelerated Sequence that defers them and one that starts them."""

import os
import warnings

import numpy as np
import pytest

import stoke
from stoke.accelerate.worker_start import (
    FIRST_LOOK,
    HANDOVER_S,
    LOOK_AGAIN,
    MIN_GAIN,
    MIN_SAVED_S,
    STARTUP_CPU_CAP_S,
    WorkerStart,
    gain,
    startup_cost_s,
    when_workers_start,
)


class Clocks:
    """Wall, process-CPU and thread-CPU clocks that move only when told."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.thread = 0.0

    def rule(self, cores=2, batches_per_epoch=1000, workers=2, startup_cpu_s=4.0):
        return WorkerStart(cores, batches_per_epoch, workers, startup_cpu_s,
                           clock=lambda: self.wall, cpu_clock=lambda: self.cpu,
                           thread_clock=lambda: self.thread)

    def batches(self, rule, n, make_s, rest_s, rest_cores):
        """n batches: __getitem__ takes make_s (all CPU), the step make_s after it rest_s
        using rest_cores cores; the answers should_start gave."""
        answers = []
        for _ in range(n):
            began = rule.now()
            self.wall += make_s
            self.cpu += make_s
            self.thread += make_s
            rule.made(began, rule.now())
            answers.append(rule.should_start())
            self.wall += rest_s
            self.cpu += rest_s * rest_cores
        return answers


def test_gain_is_the_batch_made_beside_the_step_bounded_by_the_step_and_the_cores():
    # a slow __getitem__ before a GPU step: the step becomes the rest alone (and the handover)
    assert gain(0.050, 0.050, 0.010, 0.2, 16) == pytest.approx(0.060 / (0.010 + HANDOVER_S))
    # a model filling 2 cores on the CPU: the batch's CPU comes out of the same cores
    assert gain(0.001, 0.001, 0.010, 2.0, 2) == pytest.approx(
        0.011 / ((0.001 + 0.020 + 2 * HANDOVER_S) / 2))
    # a batch cheaper than handing it over: workers only slow it
    assert gain(0.0001, 0.0001, 0.0, 1.0, 2) < 1.0


def test_startup_cost_is_what_the_trainer_leaves_no_idle_core_for():
    assert startup_cost_s(4.0, 2, 0.0, 2) == 0.0  # idle cores: the imports run beside
    assert startup_cost_s(4.0, 2, 1.0, 2) == 0.0  # one core idle takes them one by one
    assert startup_cost_s(4.0, 2, 1.5, 2) == pytest.approx(2.0)
    assert startup_cost_s(4.0, 2, 2.0, 2) == pytest.approx(4.0)  # every core busy
    assert startup_cost_s(4.0, 2, 8.0, 2) == pytest.approx(4.0)  # never beyond all of them
    assert startup_cost_s(4.0, 2, 1.6, 16) == 0.0  # a GPU run's trainer on a big host


def test_a_slow_getitem_before_a_gpu_step_starts_the_workers_after_the_first_look():
    clocks = Clocks()
    rule = clocks.rule(cores=16)
    answers = clocks.batches(rule, FIRST_LOOK + 1, make_s=0.050, rest_s=0.010, rest_cores=0.3)
    assert answers == [False] * FIRST_LOOK + [True]
    (answer,) = rule.answers
    assert answer.start and answer.gain > 5
    assert answer.saved_s > answer.startup_cost_s
    assert "workers started" in answer.why()


def test_a_model_that_fills_the_cores_keeps_the_batches_in_the_trainer():
    clocks = Clocks()
    rule = clocks.rule(cores=2)
    answers = clocks.batches(rule, FIRST_LOOK + 1, make_s=0.001, rest_s=0.010, rest_cores=2.0)
    assert not any(answers)
    assert rule.answers[0].gain < MIN_GAIN
    assert "workers would need" in rule.answers[0].why()
    # asked again after LOOK_AGAIN more batches, on fresh numbers: the step did not change
    answers = clocks.batches(rule, LOOK_AGAIN, make_s=0.001, rest_s=0.010, rest_cores=2.0)
    assert not any(answers) and len(rule.answers) == 2


def test_workers_that_pay_per_step_but_not_their_start_up_stay_off_until_the_run_is_long():
    # x1.33 a step on cores the model fills, 20 batches an epoch: 0.1 s saved an epoch where
    # two workers' imports (4 CPU-s each on 2 busy cores) cost 4 s
    clocks = Clocks()
    rule = clocks.rule(cores=2, batches_per_epoch=20)
    clocks.batches(rule, FIRST_LOOK + 1, make_s=0.010, rest_s=0.010, rest_cores=2.0)
    answer = rule.answers[0]
    assert answer.gain >= MIN_GAIN and not answer.start
    assert answer.saved_s < answer.startup_cost_s == pytest.approx(4.0)
    assert "start-up costs" in answer.why()
    # the run goes on: the saving is counted over as many batches as it made so far, and
    # once those save more than the start-up costs, the workers start
    answers = clocks.batches(rule, 3000, make_s=0.010, rest_s=0.010, rest_cores=2.0)
    started_at = FIRST_LOOK + 1 + answers.index(True) + 1
    saved_per_batch_s = 0.020 * (1 - 1 / gain(0.010, 0.010, 0.010, 2.0, 2))
    needed = (4.0 + MIN_SAVED_S) / saved_per_batch_s
    assert rule.answers[-1].start and needed <= started_at <= needed + LOOK_AGAIN + 1
    # the same numbers with a long epoch pay for the start-up at once
    clocks = Clocks()
    rule = clocks.rule(cores=2, batches_per_epoch=5000)
    assert clocks.batches(rule, FIRST_LOOK + 1, make_s=0.010, rest_s=0.010, rest_cores=2.0)[-1]


def test_the_start_up_cpu_is_the_trainers_own_so_far_capped():
    assert WorkerStart(2, 10, cpu_clock=lambda: 3.5).startup_cpu_s == 3.5
    assert WorkerStart(2, 10, cpu_clock=lambda: 1e4).startup_cpu_s == STARTUP_CPU_CAP_S


def test_an_epoch_end_among_the_rests_is_left_out():
    clocks = Clocks()
    rule = clocks.rule(cores=16)
    clocks.batches(rule, 4, make_s=0.050, rest_s=0.010, rest_cores=0.3)
    clocks.batches(rule, 1, make_s=0.050, rest_s=5.0, rest_cores=0.3)  # validation, say
    clocks.batches(rule, FIRST_LOOK, make_s=0.050, rest_s=0.010, rest_cores=0.3)
    assert rule.answers[0].rest_ms == pytest.approx(10.0)


class Augmenting:
    """A tutorial Sequence: float64 batches from np.empty, augmented with np.random."""

    def __init__(self, batches: int, make_s: float = 0.0) -> None:
        self.batches = batches
        self.make_s = make_s

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int):
        import time

        time.sleep(self.make_s)
        x = np.empty((4, 3))
        x[:] = index + np.random.random((4, 1)) * 1e-3
        return x, np.full(4, os.getpid(), np.int64)


def test_a_cheap_sequence_is_fed_by_the_trainer_with_no_worker_started():
    acc = stoke.accelerate(Augmenting(40), shuffle=False, keep_float64=True)
    try:
        assert acc.worker_count == 0 and acc.executor == "inline"
        batches = [acc[i] for i in range(40)]
        assert [int(x[0, 0]) for x, _ in batches] == list(range(40))
        assert {int(y[0]) for _, y in batches} == {os.getpid()}  # made in the trainer
        assert acc.worker_count == 0  # a cheap __getitem__ gains nothing from workers
        decisions = [d for d in acc.tuning().decisions if d.what == "start"]
        assert decisions and not decisions[0].choice
        assert "batches made in the trainer" in repr(acc)
    finally:
        acc.close()


def test_a_slow_sequence_starts_its_workers_and_they_take_over(tmp_path):
    acc = stoke.accelerate(Augmenting(400, make_s=0.02), shuffle=False, keep_float64=True)
    try:
        stream = (acc[i] for i in range(400))
        made = [next(stream) for _ in range(FIRST_LOOK + 1)]
        assert {int(y[0]) for _, y in made} == {os.getpid()}
        assert acc.worker_count >= 1  # started after FIRST_LOOK timed batches
        rest = list(stream)
        assert [int(x[0, 0]) for x, _ in made + rest] == list(range(400))  # once, in order
        assert {int(y[0]) for _, y in rest} - {os.getpid()}  # the workers made some
        assert any(d.what == "start" and d.choice for d in acc.tuning().decisions)
    finally:
        acc.close()


def test_an_explicit_worker_count_or_executor_starts_the_workers_at_once():
    for kwargs in ({"workers": 1}, {"executor": "process"}):
        acc = stoke.accelerate(Augmenting(4), keep_float64=True, **kwargs)
        try:
            assert acc.worker_count >= 1
        finally:
            acc.close()


class Reshuffling:
    """The tutorial DataGenerator: on_epoch_end reshuffles its indexes with np.random."""

    def __init__(self) -> None:
        self.on_epoch_end()

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        return np.full((2, 1), self.indexes[index], np.float32), np.zeros(2, np.float32)

    def on_epoch_end(self) -> None:
        self.indexes = np.random.permutation(100)


def test_a_batch_made_before_a_hook_changed_the_dataset_is_made_again():
    # Keras 3 reads batch 0 to learn the structure, then calls on_epoch_end before the epoch
    # (fromtf_fit_generator.py under stoke run: the peeked batch 0 was delivered again, from
    # the indexes before the reshuffle, and the loss differed from Keras' own)
    acc = stoke.accelerate(Reshuffling())
    try:
        peeked = acc[0]
        acc.on_epoch_end()
        indexes = acc.dataset.indexes
        epoch = [int(acc[i][0][0, 0]) for i in range(4)]
        assert acc.worker_count == 0
        assert epoch == [int(v) for v in indexes[:4]]
        assert int(peeked[0][0, 0]) != epoch[0] or indexes[0] == peeked[0][0, 0]
    finally:
        acc.close()


class Ragged:
    """Five batches, the last one smaller (2 rows of 4)."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int):
        rows = 2 if index == 4 else 4
        return np.full((rows, 3), index, np.float32), np.full(rows, index, np.int64)


def test_workers_whose_first_batch_is_the_smaller_last_one_lay_the_ring_out_for_full_ones():
    # a shuffled order that begins with the last batch (or workers that take over at a pass's
    # end): a ring laid out for its 2 rows fit no other batch, and every later batch was made
    # again in the trainer (float64 kept, the user's random drawn), with a warning
    orders = []
    for seed in range(40):
        acc = stoke.accelerate(Ragged(), shuffle=True, seed=seed, executor="process",
                               workers=1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", stoke.StokeWarning)  # no batch misfits
                batches = [(int(x[0, 0]), x.shape[0]) for x, _ in acc.iter(epochs=2)]
        finally:
            acc.close()
        orders.append(batches[0][0])
        if batches[0][0] == 4:
            assert sorted(batches) == sorted([(i, 2 if i == 4 else 4) for i in range(5)] * 2)
            break
    assert orders[-1] == 4, orders  # a seed whose first pass begins with the last batch


def test_a_change_made_after_a_batch_was_made_in_the_trainer_makes_it_again():
    # Keras takes batch 0 to build the model; a callback's on_train_begin then changes the
    # dataset (a curriculum switch): the batch made before the change is not the epoch's
    acc = stoke.accelerate(Reshuffling())
    try:
        acc[0]  # Keras' look at batch 0
        acc.dataset.indexes = np.arange(100)[::-1]
        acc.on_epoch_begin()
        assert [int(acc[i][0][0, 0]) for i in range(4)] == [99, 98, 97, 96]
        assert acc.worker_count == 0
    finally:
        acc.close()


def test_two_wrapped_sequences_draw_other_numbers_in_the_trainer():
    # a training and a validation set, or a Sequence wrapped again for each fit
    draws = []
    for _ in range(2):
        acc = stoke.accelerate(GaussianNoise())
        try:
            draws.append([float(acc[i][0][0, 0]) for i in range(3)])
        finally:
            acc.close()
    assert draws[0] != draws[1]


class GaussianNoise:
    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int):
        return np.random.normal(size=(2, 1)).astype(np.float32), np.zeros(2, np.float32)


@pytest.mark.parametrize("make_s, rest_s, rest_cores, per_epoch, startup_cpu_s", [
    (0.0012, 0.0011, 0.9, 16, 3.0),    # s05: a cheap Sequence, short epochs: late
    (0.0012, 0.0011, 1.9, 16, 3.0),    # the same beside a trainer that fills both cores
    (0.030, 0.010, 0.5, 100, 4.0),     # a slow __getitem__ before a short step: at once
    (0.0001, 0.0100, 1.0, 1000, 4.0),  # a cheap batch beside a long step: never
])
def test_the_doctors_forecast_of_the_start_is_what_the_rule_does(
        make_s, rest_s, rest_cores, per_epoch, startup_cpu_s):
    """when_workers_start (what stoke doctor predicts stoke.accelerate does) gives the batch
    at which WorkerStart, fed those timings batch after batch, says start (or never)."""
    run_batches = 3000
    clocks = Clocks()
    rule = clocks.rule(batches_per_epoch=per_epoch, startup_cpu_s=startup_cpu_s)
    answers = clocks.batches(rule, run_batches, make_s, rest_s, rest_cores)
    started = answers.index(True) + 1 if True in answers else None
    forecast, answer = when_workers_start(make_s, make_s, rest_s, rest_cores, 2.0, per_epoch,
                                          run_batches, 2, startup_cpu_s)
    assert forecast == started
    assert answer.start is (started is not None)
