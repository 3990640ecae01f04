"""The script's generator as the doctor feeds it to Keras: the batches the input-alone probe
takes are kept and handed to training first, in order, and the steps they feed are left out."""

from __future__ import annotations

import time

import numpy as np

from stoke.diagnosis.measure import timing
from stoke.diagnosis.measure.recorder import DoctorOptions, Recorder
from stoke.diagnosis.measure.timing import UserGenerator


def numbered(count: int):
    for number in range(count):
        yield np.full((4, 2), number, dtype="float32"), np.zeros((4, 1), "float32")


def recorder() -> Recorder:
    made = Recorder(DoctorOptions(probes=False, warmup_steps=2), argv=["t.py"], script="t.py")
    made.measuring = True
    return made


def test_the_probes_batches_are_trained_on_next_in_order_and_none_is_lost():
    feed = UserGenerator(numbered(10), recorder())
    batches = feed.batches()
    assert next(batches)[0][0, 0] == 0
    with feed.lock:
        taken = [feed.take_for_probe()[0][0, 0] for _ in range(4)]
    assert taken == [1, 2, 3, 4] and feed.kept_batches == 4
    assert [batch[0][0, 0] for batch in batches] == list(range(1, 10))  # each once, in order
    assert feed.kept_batches == 0


def test_a_generator_the_probe_ran_dry_still_gives_training_every_batch():
    feed = UserGenerator(numbered(3), recorder())
    with feed.lock:
        taken = []
        try:
            while True:
                taken.append(feed.take_for_probe())
        except StopIteration:
            pass
    assert len(taken) == 3
    assert [batch[0][0, 0] for batch in feed.batches()] == [0, 1, 2]


def test_the_kept_batches_are_bounded_in_bytes(monkeypatch):
    monkeypatch.setattr(timing, "KEPT_BATCHES_MAX_BYTES", 3 * 48)  # each batch: 32 + 16 bytes
    feed = UserGenerator(numbered(10), recorder())
    with feed.lock:
        feed.take_for_probe()
        feed.take_for_probe()
        assert not feed.kept_full()
        feed.take_for_probe()
        assert feed.kept_full()


def test_steps_fed_a_kept_batch_are_left_out_with_the_warm_up_after_them():
    measuring = recorder()
    clock = measuring.clock
    feed = UserGenerator(numbered(12), measuring)
    batches = feed.batches()
    clock.restart()
    for _ in range(4):  # two warm-up steps, two steady ones
        measuring.note_batch(next(batches), 0.0)
        clock.end_step(time.perf_counter(), synced=False, sync_s=0.0)
    with feed.lock:
        feed.take_for_probe()
        feed.take_for_probe()
    for _ in range(6):
        measuring.note_batch(next(batches), 0.0)
        clock.end_step(time.perf_counter(), synced=False, sync_s=0.0)
    # steps 4 and 5 took the kept batches; step 6 is the warm-up after them
    assert [s.warmup for s in clock.steps] == [True, True, False, False,
                                                True, True, True, False, False, False]


def test_a_later_fit_on_the_same_generator_still_gets_the_kept_batches():
    # a Keras-2 loop: for epoch in range(n): model.fit(generator, epochs=1, ...)
    measuring = recorder()
    generator = numbered(6)
    first = measuring.feed_generator(generator)
    with first.lock:
        first.take_for_probe()
        first.take_for_probe()
    again = measuring.feed_generator(generator)
    assert again is first
    assert [batch[0][0, 0] for batch in again.batches()] == list(range(6))
    assert measuring.feed_generator(numbered(1)) is not first
    measuring.finish()
