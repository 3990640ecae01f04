"""pipe.to_keras() on the backend the runner chose (KERAS_BACKEND): fit, evaluate, predict,
exactly-once epochs, determinism, device transform, distribution on 2 CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import stoke
from tests.core.helpers import GatedSamples, wait_for, with_maker, worker_processes

BACKEND = keras.backend.backend()


def data(n=96):
    rng = np.random.default_rng(0)
    x = rng.random((n, 6)).astype("float32")
    return x, (x.sum(1) > 3).astype("int64")


def small_model():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def to_numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def backend_batches(feed):
    if BACKEND == "jax":
        return feed.get_jax_iterator()
    if BACKEND == "torch":
        return feed.get_torch_dataloader()
    return iter(feed.get_tf_dataset())


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_fit_evaluate_predict(executor):
    x, y = data()
    model = small_model()
    with stoke.from_arrays(x, y).shuffle(0).batch(16).to_keras(workers=2, executor=executor) as feed, \
         stoke.from_arrays(x[:32], y[:32]).batch(16).to_keras(executor="inline") as val:
        assert len(feed) == 6 and feed.num_batches == 6
        history = model.fit(feed, epochs=3, validation_data=val, verbose=0)
        assert len(history.history["loss"]) == 3 and "val_loss" in history.history
        assert history.history["loss"][-1] < history.history["loss"][0]
        loss, accuracy = model.evaluate(val, verbose=0)
        assert np.isfinite(loss)
    with stoke.from_arrays(x[:40]).batch(16).to_keras(executor="thread", workers=2) as unlabeled:
        assert model.predict(unlabeled, verbose=0).shape == (40, 2)


def test_each_epoch_is_exactly_once_and_reshuffled_like_the_plan():
    x, y = data(50)
    pipe = stoke.from_arrays(x, y).shuffle(3).batch(8)
    with pipe.to_keras(workers=2, executor="process") as feed:
        epochs = []
        for _ in range(2):
            labels = [to_numpy(b[0])[:, 0] for b in backend_batches(feed)]
            epochs.append(np.concatenate(labels))
    for epoch, seen in enumerate(epochs):
        expected = np.concatenate([bx[:, 0] for bx, _ in pipe.iter(executor="inline", epoch=epoch, copy=True)])
        np.testing.assert_array_equal(seen, expected)
    assert not np.array_equal(epochs[0], epochs[1])
    assert sorted(epochs[0]) == sorted(x[:, 0])


def test_device_transform_runs_after_the_copy():
    images = np.random.default_rng(1).integers(0, 255, (32, 4, 4, 1), dtype=np.uint8)
    labels = np.arange(32) % 2

    def to_float(batch):
        x, y = batch
        return keras.ops.cast(x, "float32") / 255.0, y

    pipe = stoke.from_arrays(images, labels).batch(8)
    with pipe.to_keras(executor="thread", workers=2, device_transform=to_float) as feed:
        first = next(iter(backend_batches(feed)))
        assert keras.backend.standardize_dtype(first[0].dtype) == "float32"
        np.testing.assert_allclose(to_numpy(first[0]), images[:8] / 255.0, rtol=1e-6)
        model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(2)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(feed, epochs=1, verbose=0)


def test_batches_keras_holds_are_not_overwritten_by_the_ring():
    """The ring reuses slots; what the backend got must stay intact (copy done first)."""
    x = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
    with stoke.from_arrays(x).batch(4).to_keras(workers=2, executor="process",
                                                 ring_slots=2) as feed:
        held = list(backend_batches(feed))
    np.testing.assert_array_equal(np.concatenate([to_numpy(b) for b in held]), x)


def test_unbatched_pipeline_is_refused_with_the_fix():
    x, y = data(8)
    with pytest.raises(ValueError, match=r"\.batch"):
        stoke.from_arrays(x, y).to_keras()


def test_a_failing_sample_stops_fit_with_its_index():
    x, y = data(40)
    from tests.core import helpers

    labels = np.arange(40)
    pipe = stoke.from_arrays(x, labels).map(helpers.fail_on_13).batch(8)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pipe.to_keras(workers=2, executor="process") as feed:
        with pytest.raises(Exception, match="sample 13") as info:
            model.fit(feed, epochs=1, verbose=0)
    # TensorFlow wraps errors raised inside tf.data in its own type; the message stays
    assert isinstance(info.value, stoke.SampleError) or "SampleError" in str(info.value)
    assert "sample thirteen is cursed" in str(info.value)


@pytest.mark.skipif(BACKEND == "torch", reason="multi-device data parallelism: JAX and TF")
def test_distribution_on_two_cpu_devices():
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "tests/scripts/fit_distributed.py"], env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2 and report["batch_devices"] == 2
    assert len(report["losses"]) == 2 and all(np.isfinite(report["losses"]))


# -- start-up: the trainer makes the first batches while the workers start ------------------
def _gated_pipe(gate, n=40):
    x, y = data(n)
    return (stoke.from_sequence(GatedSamples(str(gate), x, y)).map(with_maker).shuffle(1)
            .batch(8))


def _inline_epoch(pipe, epoch):
    return [(bx, by) for bx, by, _ in pipe.iter(executor="inline", epoch=epoch, copy=True)]


def test_auto_makes_the_first_batches_in_the_trainer_until_a_worker_is_up(tmp_path):
    gate = tmp_path / "gate"
    pipe = _gated_pipe(gate)
    with pipe.to_keras(workers=1) as feed:  # executor="auto"
        assert len(worker_processes()) == 1  # started by to_keras(), before any batch
        numpy_state = np.random.get_state()[1].copy()
        batches = feed.iter()  # numpy batches of the next epoch, as fit gets them
        early = [next(batches) for _ in range(2)]  # no worker is up: made in the trainer
        np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
        assert [int(pid[0]) for _, _, pid in early] == [os.getpid()] * 2
        gate.touch()
        pool = feed.loader.pool
        assert wait_for(pool.hand_over_if_up, timeout_s=60.0)  # asked in this thread, between batches
        late = list(batches)
        assert os.getpid() not in {int(p) for _, _, pid in late for p in pid}  # the worker
        second = list(feed.iter())
        assert os.getpid() not in {int(p) for _, _, pid in second for p in pid}
    # the same batches as ever, each sample once per epoch, in the plan's order
    for epoch, got in enumerate([early + late, second]):
        expected = _inline_epoch(pipe, epoch)
        assert len(got) == len(expected) == 5
        for (gx, gy, _), (ex, ey) in zip(got, expected):
            np.testing.assert_array_equal(gx, ex)
            np.testing.assert_array_equal(gy, ey)


def test_auto_feeds_the_backend_exactly_once_across_the_hand_over(tmp_path):
    gate = tmp_path / "gate"
    pipe = _gated_pipe(gate, n=64)
    with pipe.to_keras(workers=1) as feed:
        epochs = []
        for number in range(2):
            got = []
            for batch in backend_batches(feed):
                got.append([to_numpy(leaf) for leaf in batch])
                if number == 0 and len(got) == 2:
                    gate.touch()  # the worker comes up while the epoch goes on
            epochs.append(got)
        assert int(epochs[0][0][2][0]) == os.getpid()  # the first batch: the trainer's
    for number, got in enumerate(epochs):
        expected = _inline_epoch(pipe, number)
        assert len(got) == len(expected) == 8
        for (gx, gy, _), (ex, ey) in zip(got, expected):
            np.testing.assert_array_equal(gx, ex)
            np.testing.assert_array_equal(gy, ey)


def test_process_executor_never_makes_a_batch_in_the_trainer(tmp_path):
    import threading

    gate = tmp_path / "gate"
    pipe = _gated_pipe(gate)
    threading.Timer(0.5, gate.touch).start()
    with pipe.to_keras(workers=1, executor="process") as feed:
        pids = {int(p) for _, _, pid in feed.iter() for p in pid}
    assert os.getpid() not in pids
