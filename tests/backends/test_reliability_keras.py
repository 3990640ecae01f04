"""Never wrong silently, through Keras (issue 12, part A), on the backend in KERAS_BACKEND:
``model.predict`` over a generator on ``pipe.iter()`` (Keras holds the batches it peeks at),
``fit(stoke.accelerate(seq), steps_per_epoch=k)`` continuing the stream as Keras' own adapter
does, ``to_keras`` predictions in order, and ``to_keras`` after a worker death raising the
real error at every later call."""

from __future__ import annotations

import collections
import os

import keras
import numpy as np
import pytest

import stoke


def labelled(n: int):
    """Sample i is (x = [i, i, i, i], label i)."""
    return [(np.full(4, i, np.float32), np.int64(i)) for i in range(n)]


def kill_at(sample):
    x, y = sample
    if int(y) == 20:
        os.kill(os.getpid(), 9)
    return x, y


class IdSequence(keras.utils.PyDataset):
    """8 batches of 8 sample ids; x is the id."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def __len__(self):
        return 8

    def __getitem__(self, index):
        ids = np.arange(index * 8, index * 8 + 8)
        return ids[:, None].astype("float32"), np.zeros((8, 1), "float32")


def summing_model():
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(loss="mse")
    return model


def test_predict_over_a_generator_on_pipe_iter_sees_every_batch():
    """Keras peeks at the first batches of a generator and keeps them."""
    pipe = stoke.from_sequence(labelled(160)).batch(16)

    def batches():
        for x, _ in pipe.iter(workers=2, executor="process"):
            yield (x,)

    predicted = summing_model().predict(batches(), verbose=0)[:, 0]
    np.testing.assert_allclose(predicted, 4 * np.arange(160))


def test_to_keras_predictions_come_in_order():
    pipe = stoke.from_sequence(labelled(160)).batch(16)
    with pipe.to_keras(workers=2, executor="process") as feed:
        predicted = summing_model().predict(feed, verbose=0)[:, 0]
    np.testing.assert_allclose(predicted, 4 * np.arange(160))


def _batches_trained(data, steps_per_epoch: int, epochs: int, module=keras, shuffle=False,
                     **fit_kwargs) -> list[list[int]]:
    """The sample ids of every batch the model ran on (training, then validation), in order."""
    seen: list[list[int]] = []

    def record(t):
        try:
            seen.append(module.ops.convert_to_numpy(t)[:, 0].astype(int).tolist())
        except Exception:  # noqa: BLE001 - a symbolic call while Keras builds the model
            pass
        return t

    module.utils.set_random_seed(0)  # the same Python, numpy and Keras draws in every run
    model = module.Sequential([module.Input((1,)), module.layers.Lambda(record),
                               module.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=shuffle, verbose=0,
              **fit_kwargs)
    return seen


def _keras_and_stoke(make, steps_per_epoch, epochs, **fit_kwargs):
    """What the model sees from Keras' own adapter, and from stoke.accelerate, on the same
    Sequence (made afresh by ``make``; validation_data made by ``make`` too, when given)."""
    validation = fit_kwargs.pop("validation", None)
    if validation is not None:
        fit_kwargs["validation_data"] = validation()
    keras_own = _batches_trained(make(), steps_per_epoch, epochs, **fit_kwargs)
    acc = stoke.accelerate(make(), workers=2, executor="process")
    accelerated_validation = None
    try:
        if validation is not None:
            accelerated_validation = stoke.accelerate(validation(), workers=1,
                                                      executor="process")
            fit_kwargs["validation_data"] = accelerated_validation
        ours = _batches_trained(acc, steps_per_epoch, epochs, **fit_kwargs)
    finally:
        acc.close()
        if accelerated_validation is not None:
            accelerated_validation.close()
    return keras_own, ours


def _seen_counts(batches):
    return collections.Counter(i for batch in batches for i in batch)


@pytest.mark.parametrize(("steps_per_epoch", "epochs"), [(3, 4), (1, 10), (2, 6)])
def test_fit_with_fewer_steps_per_epoch_continues_the_stream(steps_per_epoch, epochs):
    """Keras' own adapter keeps one iterator across epochs: with 3 steps, batches 0-2, 3-5,
    6-7, 0-2: all 64 samples, not 24. With 1 or 2 steps too (no epoch is taken for a probe)."""
    keras_own, ours = _keras_and_stoke(IdSequence, steps_per_epoch, epochs)
    assert ours == keras_own
    assert len({i for batch in ours for i in batch}) == 64


def test_fit_with_fewer_steps_per_epoch_and_keras_shuffle_continues_the_stream():
    """fit's default shuffle=True: Keras draws one order for the iterator it continues."""
    keras_own, ours = _keras_and_stoke(IdSequence, 3, 4, shuffle=True)
    assert ours == keras_own
    assert len({i for batch in ours for i in batch}) == 64


class ValidationSequence(IdSequence):
    """Ids 1000 and up: validation batches are told apart from training ones."""

    def __getitem__(self, index):
        x, y = super().__getitem__(index)
        return x + 1000, y


def test_fit_with_accelerated_validation_steps_sees_what_keras_gives():
    """Keras makes a new iterator for every evaluation: the first validation_steps batches
    each epoch; training goes on across epochs."""
    keras_own, ours = _keras_and_stoke(IdSequence, 3, 4, validation=ValidationSequence,
                                       validation_steps=2)
    assert ours == keras_own
    validation = [batch for batch in ours if batch[0] >= 1000]
    assert len(validation) == 4 * 2


class TutorialSequence(keras.utils.PyDataset):
    """The tutorial Sequence: an index array that np.random reshuffles in on_epoch_end."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.indexes = np.arange(64)

    def __len__(self):
        return 8

    def __getitem__(self, index):
        ids = self.indexes[index * 8:(index + 1) * 8]
        return ids[:, None].astype("float32"), np.zeros((8, 1), "float32")

    def on_epoch_end(self):
        np.random.shuffle(self.indexes)


def test_fit_with_fewer_steps_per_epoch_and_a_reshuffling_sequence_sees_what_keras_gives():
    """The stream goes on after on_epoch_end reshuffled the samples: the next indices, with
    the new order, as Keras' own adapter gives them: each sample as many times.

    On TensorFlow, tf.data's thread asks ahead while the trainer calls on_epoch_end: which
    state a prefetched batch comes from is a race in Keras' own run as in stoke's, so there
    both only train on 16 whole batches (3 + 3 + 2 a pass of 8) of 8 distinct samples."""
    keras_own, ours = _keras_and_stoke(TutorialSequence, 3, 6)
    if os.environ.get("KERAS_BACKEND") == "tensorflow":
        for seen in (keras_own, ours):
            assert len(seen) == 16 and all(len(set(batch)) == 8 for batch in seen)
        return
    assert _seen_counts(ours) == _seen_counts(keras_own)
    assert ours == keras_own


def test_fit_with_fewer_steps_per_epoch_through_tf_keras():
    """``import tensorflow as tf; tf.keras...``: the same Keras 3, the same continuation."""
    tf = pytest.importorskip("tensorflow")

    class TfKerasSequence(tf.keras.utils.Sequence):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def __len__(self):
            return 8

        def __getitem__(self, index):
            ids = np.arange(index * 8, index * 8 + 8)
            return ids[:, None].astype("float32"), np.zeros((8, 1), "float32")

    keras_own = _batches_trained(TfKerasSequence(), 3, 4, module=tf.keras)
    acc = stoke.accelerate(TfKerasSequence(), workers=2, executor="thread")
    try:
        ours = _batches_trained(acc, 3, 4, module=tf.keras)
    finally:
        acc.close()
    assert ours == keras_own
    assert _seen_counts(ours) == collections.Counter(range(64)) + collections.Counter(range(24))


def test_to_keras_after_a_worker_death_raises_the_real_error_every_time():
    pipe = stoke.from_sequence(labelled(64)).map(kill_at).batch(8)
    model = summing_model()
    with pipe.to_keras(workers=1, executor="process") as feed:
        for _ in range(3):
            with pytest.raises(Exception) as info:
                model.fit(feed, epochs=1, verbose=0)
            error = info.value
            assert isinstance(error, stoke.WorkerDiedError) or "WorkerDiedError" in str(error) \
                or "worker process" in str(error), repr(error)
        with pytest.raises(stoke.WorkerDiedError):
            model.predict(feed, verbose=0)


class ReshufflingSequence(keras.utils.PyDataset):
    """The tutorial Sequence: np.random reshuffles in on_epoch_end; batch 0 is slow, so
    later batches are back first (and buffered) when Keras ends an epoch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.indexes = np.arange(96)

    def __len__(self):
        return 12

    def __getitem__(self, index):
        if index == 0:
            import time

            time.sleep(0.1)
        ids = self.indexes[index * 8:(index + 1) * 8]
        return np.repeat(ids[:, None], 4, axis=1).astype("float32"), ids.astype("float32")

    def on_epoch_end(self):
        np.random.shuffle(self.indexes)


def test_fit_with_thread_workers_and_on_epoch_end_does_not_stall():
    """Issue 12 item 3: 'abandoned batches did not come back' after timeout_s. A stall
    raises after timeout_s (120 s); a run that ends without one takes far less (7.6 s at
    load 17; 36 s once in a fully loaded suite, past the old 25 s bound)."""
    import time

    acc = stoke.accelerate(ReshufflingSequence(), workers=2, executor="thread", timeout_s=120)
    try:
        started = time.monotonic()
        history = summing_model().fit(acc, epochs=3, steps_per_epoch=5, verbose=0)
        assert len(history.history["loss"]) == 3
        assert time.monotonic() - started < 110
    finally:
        acc.close()


def test_fit_on_to_keras_stays_zero_copy():
    """Safe zero-copy costs fit nothing: no ring slot is retired while Keras trains."""
    pipe = stoke.from_sequence(labelled(320)).shuffle(seed=0).batch(16)
    model = summing_model()
    with pipe.to_keras(workers=2, executor="process") as feed:
        model.fit(feed, epochs=2, verbose=0)
        assert feed.loader.batches_kept == 0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data's generators")
def test_a_tf_data_iterator_left_suspended_keeps_no_ring_slot():
    """Keras starts the next epoch's tf.data iterator while tf.data may still hold the last
    one's generator suspended (found as a rare ``batches_kept == 1`` in a CI fit): that frame
    holds only copies, so the next epoch retires no slot."""
    pipe = stoke.from_sequence(labelled(320)).shuffle(seed=0).batch(16)
    with pipe.to_keras(workers=2, executor="process") as feed:
        dataset = feed.get_tf_dataset()
        first = iter(dataset)
        for _ in range(3):
            next(first)
        second = iter(dataset)  # first's generator is still suspended at its yield
        labels = np.concatenate([y.numpy() for _, y in second])
        assert sorted(labels.tolist()) == list(range(320))
        assert feed.loader.batches_kept == 0
        del first, second


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data's generators")
def test_a_tf_data_dataset_kept_after_its_feed_says_so():
    """TensorFlow keeps a from_generator dataset's generator for good, so the dataset holds
    its feed weakly: a dataset read after its feed was collected raises, naming why."""
    import gc

    import tensorflow as tf

    feed = stoke.from_sequence(labelled(32)).batch(8).to_keras(workers=1, executor="process")
    dataset = feed.get_tf_dataset()
    del feed
    gc.collect()
    assert workers_stop_within(60)  # a dropped feed's workers exit once they get a CPU
    with pytest.raises(tf.errors.OpError, match="stoke feed that was garbage collected"):
        next(iter(dataset))


class FailingAt(IdSequence):
    """IdSequence whose batch ``bad`` raises (a corrupt file); -1: none does."""

    def __init__(self, bad: int, **kwargs):
        super().__init__(**kwargs)
        self.bad = bad

    def __getitem__(self, index):
        if index == self.bad:
            raise ValueError(f"corrupt file in batch {index}")
        return super().__getitem__(index)


@pytest.mark.parametrize("kind", ["trains", "fails", "to_keras", "generator",
                                  "generator-no-steps"])
def test_fits_in_a_loop_leave_no_feed_behind(kind):
    """k-fold loops, hyperparameter searches, a notebook's retry loop: each
    ``fit(stoke.accelerate(seq))``, ``fit(stoke.accelerate(gen_fn))`` (with steps or of
    unknown length) or ``fit(pipe.to_keras())`` (that trains, or whose sample fails and is
    caught) leaves nothing alive once the user drops the feed: not the feed, not its workers, not its ring
    (on TensorFlow, tf.data's from_generator keeps what it reads for good: the feed must be
    held weakly there)."""
    import gc
    import weakref

    alive = None
    try:
        for _ in range(2):
            model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
            model.compile(loss="mse")
            if kind == "to_keras":
                feed = stoke.from_sequence(labelled(64)).map(first_of_x).batch(8).to_keras(
                    workers=1, executor="process")
            elif kind == "generator":
                feed = stoke.accelerate(id_batches, steps_per_epoch=8, executor="process")
            elif kind == "generator-no-steps":  # read as a plain generator (keras_face)
                feed = stoke.accelerate(id_batches, executor="process")
            else:
                feed = stoke.accelerate(FailingAt(5 if kind == "fails" else -1), workers=1,
                                        executor="process")
            alive = weakref.ref(feed)
            try:
                model.fit(feed, epochs=2, verbose=0)
            except Exception as error:  # noqa: BLE001 - the notebook's catch-all
                assert kind == "fails" and "corrupt file in batch 5" in str(error), error
            else:
                assert kind != "fails"
            del feed, model
            gc.collect()
            assert alive() is None
            assert workers_stop_within(60)  # a dropped feed's workers exit once they get a CPU
    finally:  # what a failed check left alive: closed, so that no worker outlives the test
        if alive is not None and alive() is not None:
            alive().close()


def id_batches():
    """IdSequence's 8 batches, from a generator."""
    sequence = IdSequence()
    for index in range(len(sequence)):
        yield sequence[index]


def workers_stop_within(seconds: float) -> bool:
    """Whether every stoke worker of this process has ended within ``seconds`` (a feed's
    workers stop once it is collected: its prefetch thread first sees that it is)."""
    import time

    import psutil

    deadline = time.monotonic() + seconds
    while True:
        gc_collect()
        workers = []
        for child in psutil.Process().children(recursive=True):
            try:
                if " -m stoke" in " " + " ".join(child.cmdline()):
                    workers.append(child)
            except psutil.Error:  # ended while we looked
                pass
        if not workers or time.monotonic() > deadline:
            return not workers
        time.sleep(0.1)


def gc_collect() -> None:
    import gc

    gc.collect()


def first_of_x(sample):
    x, y = sample
    return x[:1], np.float32(y)
