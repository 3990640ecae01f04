"""Record formats under ``to_keras()`` on the backend the runner chose (KERAS_BACKEND):
TFRecords written by TensorFlow's writer (in a subprocess) and WebDataset tar shards feed
``fit``, and ``predict`` sees every record exactly once, in the plan's order."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import stoke
from tests.core.formats_helpers import (
    example_features,
    sample_id,
    write_tfrecords_with_tf,
    write_webdataset,
)

SIZES = [30, 41, 25]
TOTAL = sum(SIZES)


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return write_tfrecords_with_tf(tmp_path_factory.mktemp("tfr"), SIZES)


def model_of(inputs: int):
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_fit_on_tfrecords(tfrecords, executor):
    pipe = stoke.from_tfrecord(tfrecords, cycle_length=2, buffer_size=16).shuffle(0).map(
        example_features).batch(16)
    model = model_of(3)
    with pipe.to_keras(workers=2, executor=executor) as feed:
        assert len(feed) == -(-TOTAL // 16)
        history = model.fit(feed, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def identity_model(inputs: int):
    x = keras.Input((inputs,))
    return keras.Model(x, keras.layers.Lambda(lambda t: t)(x))


def test_predict_sees_each_record_once_in_plan_order(tfrecords):
    pipe = stoke.from_tfrecord(tfrecords, cycle_length=2, buffer_size=16).shuffle(3).map(
        example_features).batch(16)
    expected = [int(x[0]) for x, _ in pipe.iter(executor="inline", copy=True) for x in x]
    with pipe.to_keras(workers=2, executor="process") as feed:
        out = identity_model(3).predict(feed, verbose=0)
    got = [int(round(v)) for v in np.asarray(out)[:, 0]]
    assert got == expected and sorted(got) == list(range(TOTAL))


def tar_features(sample):
    i = int(sample_id(sample))
    return np.array([i, len(sample["bin"])], np.float32), np.int64(i % 2)


def test_fit_and_predict_on_webdataset(tmp_path):
    shards = write_webdataset(tmp_path, [20, 17])
    pipe = stoke.from_webdataset(shards).shuffle(1).map(tar_features).batch(8)
    with pipe.to_keras(workers=2, executor="process") as feed:
        history = model_of(2).fit(feed, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    with pipe.to_keras(workers=2, executor="thread") as feed:
        out = identity_model(2).predict(feed, verbose=0)
    assert sorted(int(round(v)) for v in np.asarray(out)[:, 0]) == list(range(37))


def test_fit_on_lazily_indexed_tfrecords(tfrecords):
    """index="lazy" (the default past 1,024 files): the epoch's length is unknown, so Keras
    runs each epoch to its end; every record is seen once per epoch."""
    pipe = stoke.from_tfrecord(tfrecords, index="lazy", cycle_length=2, buffer_size=16).shuffle(
        2).map(example_features).batch(16)
    with pipe.to_keras(workers=2, executor="process") as feed:
        assert feed.num_batches is None
        history = model_of(3).fit(feed, epochs=2, verbose=0)
        assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    with pipe.to_keras(workers=2, executor="thread") as feed:
        out = identity_model(3).predict(feed, verbose=0)
    assert sorted(int(round(v)) for v in np.asarray(out)[:, 0]) == list(range(TOTAL))
