"""Never wrong silently, with Keras (issue 12, part B): fit on an empty feed says why on
every backend (JAX raised a bare StopIteration, torch a confusing call error); namedtuple
and numpy-integer configurations train. Run once per backend (KERAS_BACKEND)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

import stoke

keras = tf.keras  # the import style of many training scripts


def small_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


def arrays(n):
    return np.ones((n, 4), np.float32), np.ones((n, 1), np.float32)


def never(sample):
    return False


@pytest.mark.parametrize("make_pipe", [
    lambda: stoke.from_arrays(*arrays(0)).batch(8),
    lambda: stoke.from_arrays(*arrays(16)).filter(never).batch(8),
    lambda: stoke.from_arrays(*arrays(4)).batch(8, drop_remainder=True),
], ids=["no-samples", "all-filtered", "drop-remainder"])
def test_fit_on_an_empty_feed_says_the_pipeline_is_empty(make_pipe):
    model = small_model()
    with make_pipe().to_keras(workers=1, executor="thread") as feed:
        with pytest.raises(ValueError, match="the pipeline is empty"):
            model.fit(feed, epochs=1, verbose=0)


Example = collections.namedtuple("Example", ["features", "target"])


def as_example(sample):
    x, y = sample
    return Example(x, y)


def test_fit_on_namedtuple_samples_with_numpy_integer_settings():
    batch_size, workers = np.array([8, 1])
    pipe = stoke.from_arrays(*arrays(32)).map(as_example).batch(batch_size)
    model = small_model()
    with pipe.to_keras(workers=workers, executor="thread") as feed:
        history = model.fit(feed, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
