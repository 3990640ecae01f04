"""The step clock without Keras: what a step records, the warm-up, the sync policy."""

from __future__ import annotations

import time

import pytest

from stoke.diagnosis.measure.step_clock import StepClock
from stoke.diagnosis.record import StepSample


def test_a_step_is_its_time_from_the_previous_end_and_its_wait():
    steps: list[StepSample] = []
    clock = StepClock(100.0, steps, warmup_steps=1)
    clock.begin_call_loop()
    clock.start_if_idle(100.0)
    for number, t_end in enumerate((100.5, 100.7, 101.0)):
        clock.note_batch(wait_s=0.05, samples=16)
        clock.note_batch(wait_s=0.05, samples=16)
        assert clock.pending_wait_s() == pytest.approx(0.1)
        clock.end_step(t_end, synced=number == 2, sync_s=0.01, call_s=0.1)
    assert [s.step_s for s in steps] == pytest.approx([0.5, 0.2, 0.3])
    assert [s.wait_s for s in steps] == pytest.approx([0.1, 0.1, 0.1])
    assert [s.warmup for s in steps] == [True, False, False]
    assert [s.batch_size for s in steps] == [32, 32, 32]
    assert steps[-1].t_s == pytest.approx(1.0) and steps[-1].synced
    assert clock.steps_seen == 3 and clock.synced_steps == 1 and clock.sync_s == pytest.approx(0.01)
    # the loop's own time: step less wait less the call, steady steps only
    assert clock.loop_s_median() == pytest.approx(0.05)
    assert clock.compute_s_estimate() == pytest.approx(0.15)
    assert clock.wait_s_estimate() == pytest.approx(0.1)
    assert clock.steps_wall_s() == pytest.approx(1.0)


def _clock_after(steps: list[tuple[float, bool]]) -> StepClock:
    """A clock that has timed ``steps`` (seconds, synced), from time 0, no warm-up."""
    clock = StepClock(0.0, [], warmup_steps=0)
    clock.begin_call_loop()
    clock.start_if_idle(0.0)
    t = 0.0
    for seconds, synced in steps:
        t += seconds
        clock.end_step(t, synced=synced, sync_s=0.0)
    return clock


def test_under_asynchronous_dispatch_a_step_is_estimated_up_to_the_last_synced_step():
    # a JAX CNN on 2 cores: unsynced steps time their dispatch (2 ms), the synced one what the
    # device had queued (0.4 s): the median said 2 ms a step, and the input-free window planned
    # three times the calls its budget had room for
    clock = _clock_after([(0.4, True) if n in (2, 12) else (0.002, False) for n in range(23)])
    # the span from after the first sync through the last: 9 steps of 2 ms and one of 0.4 s
    # (the three steps after the last sync, whose queued work no step has timed yet, left out)
    assert clock.compute_s_estimate() == pytest.approx((9 * 0.002 + 0.4) / 10)
    # every step synced (no queue), or a synced step no slower than the others: a pause in
    # one step does not move the median
    for synced_every in (1, 5):
        clock = _clock_after([(0.2 if n == 7 else 0.002, n % synced_every == 0)
                              for n in range(20)])
        assert clock.compute_s_estimate() == pytest.approx(0.002)
    # without a synced step: the median, as before
    assert _clock_after([(0.002, False)] * 5).compute_s_estimate() == pytest.approx(0.002)


def test_sync_policy_first_steady_step_named_steps_and_every_nth():
    clock = StepClock(time.perf_counter(), [], warmup_steps=2, sync_every_steps=3,
                      sync_min_interval_s=0.0)
    clock.restart()
    due = []
    for _ in range(10):
        synced = clock.sync_due(also_at_steps=(8, None))
        due.append(synced)
        clock.end_step(time.perf_counter(), synced=synced, sync_s=0.0)
    # every 3rd step since the last sync (2: 3 since "step -1"), step 3 (the first steady
    # one), step 8 (named); not 9 nor 10: counted from the named sync
    assert [n + 1 for n, synced in enumerate(due) if synced] == [2, 3, 6, 8]


def test_steps_past_the_limit_are_counted_not_recorded():
    steps: list[StepSample] = []
    clock = StepClock(time.perf_counter(), steps, warmup_steps=0, max_recorded_steps=2)
    clock.restart()
    for _ in range(3):
        clock.end_step(time.perf_counter(), synced=False, sync_s=0.0)
    assert len(steps) == 2 and clock.steps_seen == 3 and clock.truncated


def test_a_passed_step_is_counted_not_recorded_and_the_next_counts_from_its_end():
    # TensorFlow's steps with Keras' own pull (measure.in_graph_steps): in the run's step
    # count (the probes' step, the step limit), not among the measured steps
    steps: list[StepSample] = []
    clock = StepClock(100.0, steps, warmup_steps=0)
    clock.begin_call_loop()
    clock.start_if_idle(100.0)
    clock.end_step(100.1, synced=False, sync_s=0.0)
    assert clock.since_last_step(100.25) == pytest.approx(0.15)
    clock.pass_step(100.25)
    clock.pass_step(100.4)
    clock.note_batch(wait_s=0.02, samples=8)
    clock.end_step(100.5, synced=False, sync_s=0.0)
    assert [s.step_s for s in steps] == pytest.approx([0.1, 0.1])
    assert [s.step for s in steps] == [0, 3]
    assert clock.steps_seen == 4 and clock.steps_in_epoch == 4
    assert clock.steps_wall_s() == pytest.approx(0.2)


def test_steps_whose_pull_cannot_be_timed_say_so():
    steps: list[StepSample] = []
    clock = StepClock(time.perf_counter(), steps, warmup_steps=0)
    clock.restart()
    clock.waits_timed = False  # TensorFlow pulling inside the compiled loop
    clock.end_step(time.perf_counter(), synced=False, sync_s=0.0)
    clock.begin_call_loop()  # a train_on_batch loop: the time between calls is timed
    clock.start_if_idle(time.perf_counter())
    clock.note_batch(wait_s=0.01, samples=8)
    clock.end_step(time.perf_counter(), synced=True, sync_s=0.0)
    assert [s.wait_timed for s in steps] == [False, True]
    assert steps[0].wait_s == 0.0 and steps[0].wait_estimated_s is None
    assert steps[1].wait_s == pytest.approx(0.01)


def test_each_step_names_the_fit_that_made_it():
    """A script that fits twice (pretrain, fine-tune): each step says which fit it belongs
    to, so the report can give each fit's batch size instead of a mean over both."""
    steps: list[StepSample] = []
    clock = StepClock(100.0, steps, warmup_steps=1)
    t = 100.0
    for batch_size in (16, 4):
        clock.begin_loop()
        clock.begin_epoch()
        for _ in range(3):
            t += 0.1
            clock.note_batch(wait_s=0.01, samples=batch_size)
            clock.end_step(t, synced=False, sync_s=0.0)
    assert [(s.fit, s.batch_size, s.warmup) for s in steps] == [
        (0, 16, True), (0, 16, False), (0, 16, False), (1, 4, True), (1, 4, False), (1, 4, False)]


def test_a_wait_between_epochs_is_carried_to_the_next_step(monkeypatch):
    # Keras drains a PyDataset's worker pool after an epoch's last step, before the next
    # epoch restarts the clock: that wait belongs to the next step, as wait and as time
    now = [10.0]
    monkeypatch.setattr("stoke.diagnosis.measure.step_clock._perf_counter", lambda: now[0])
    steps: list[StepSample] = []
    clock = StepClock(0.0, steps, warmup_steps=0)
    clock.begin_loop()
    clock.begin_epoch()
    clock.note_batch(wait_s=0.01, samples=32)
    clock.end_step(10.05, synced=False, sync_s=0.0)
    clock.carry_wait(0.3)
    now[0] = 10.6
    clock.begin_epoch()
    clock.note_batch(wait_s=0.01, samples=32)
    clock.end_step(10.65, synced=False, sync_s=0.0)
    now[0] = 11.0
    clock.begin_epoch()  # carried once, not again
    clock.note_batch(wait_s=0.01, samples=32)
    clock.end_step(11.05, synced=False, sync_s=0.0)
    assert [s.wait_s for s in steps] == pytest.approx([0.01, 0.31, 0.01])
    assert [s.step_s for s in steps] == pytest.approx([0.05, 0.35, 0.05])


def test_the_worker_pools_drain_at_an_epochs_end_is_timed_less_kerass_own_poll(monkeypatch):
    from stoke.diagnosis.measure import timing

    now = [5.0]
    monkeypatch.setattr(timing, "_perf_counter", lambda: now[0])
    noted = []

    class Recorder:
        backend = "jax"

        def begin_epoch(self):
            pass

        def note_epoch_end_wait(self, seconds):
            noted.append(seconds)

    class Adapter:
        def __init__(self, enqueuer):
            self.enqueuer = enqueuer

        def on_epoch_end(self):
            now[0] += 0.45  # the batches in flight finish, then Keras' empty poll

    class EpochIterator:
        def __init__(self, enqueuer):
            self.data_adapter = Adapter(enqueuer)

        def _enumerate_iterator(self):
            yield from ()

        def _get_iterator(self):
            return iter(())

    pooled = EpochIterator(enqueuer=object())
    timing.wrap_epoch_iterator(pooled, Recorder())
    pooled.data_adapter.on_epoch_end()
    assert noted == pytest.approx([0.45 - timing.ENQUEUER_EMPTY_POLL_S])
    # no worker pool (workers=1, a generator, arrays): nothing drains, nothing is timed
    plain = EpochIterator(enqueuer=None)
    timing.wrap_epoch_iterator(plain, Recorder())
    plain.data_adapter.on_epoch_end()
    assert len(noted) == 1


@pytest.mark.parametrize("batches, per_execution, lasts", [
    (7, 1, [0, 6, 7, 13, 14, 20]),  # each epoch's 1st and 7th step
    (10, 4, [0, 2, 3, 5, 6, 8]),  # 4 + 4 + 2 batches: the short third call ends the epoch
    (None, 1, [0, 7, 14]),  # an epoch of unknown length: its first step only
])
def test_the_recorder_syncs_each_epochs_first_and_last_step_where_keras_knows_its_length(
        batches, per_execution, lasts):
    from types import SimpleNamespace

    from stoke.diagnosis.measure.options import DoctorOptions
    from stoke.diagnosis.measure.recorder import FitContext, Recorder

    # (the clock's own sync of the first steady step, step 1 here, left aside)
    recorder = Recorder(DoctorOptions(probes=False, sync_every_steps=1000, warmup_steps=1))
    recorder.fit = FitContext(model=SimpleNamespace(steps_per_execution=per_execution),
                              arguments={}, trainer_thread=0,
                              epoch_iterator=SimpleNamespace(num_batches=batches))
    recorder.measuring = True
    clock = recorder.clock
    synced_at = []
    calls_per_epoch = -(-(batches or 7) // per_execution)
    for _epoch in range(3):
        clock.begin_epoch()
        for _ in range(calls_per_epoch):
            synced = recorder.sync_due()
            if synced and clock.steps_seen != 1:
                synced_at.append(clock.steps_seen)
            clock.end_step(time.perf_counter(), synced=synced, sync_s=0.0)
    assert synced_at == lasts
