"""``stoke.legacy.keras2_stream``: a Sequence read as Keras 2's ``fit_generator`` read it
(one stream of passes, ``on_epoch_end`` between passes), with nothing fed by stoke; on the
backend in ``KERAS_BACKEND``, in the trainer (no worker, no thread of its own)."""

from __future__ import annotations

import random

import keras
import numpy as np

from stoke.legacy.keras2_stream import keras2_stream


class Passes(keras.utils.PyDataset):
    """5 batches; batch i is [i + 10 * passes ended]; the hooks are counted."""

    def __init__(self, length=5):
        super().__init__()
        self.length = length
        self.ended = 0
        self.begun = 0

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        value = index + 10 * self.ended
        return np.full((2, 1), value, np.float32), np.full((2, 1), value, np.float32)

    def on_epoch_begin(self):
        self.begun += 1

    def on_epoch_end(self):
        self.ended += 1


def _value(batch) -> int:
    return int(batch[0][0, 0])


def test_batches_are_the_stream_of_passes_with_on_epoch_end_between():
    sequence = Passes()
    stream = keras2_stream(sequence, shuffle=False)
    assert isinstance(stream, keras.utils.PyDataset) and stream.num_batches is None
    stream.on_epoch_begin()  # Keras' epochs: not the Sequence's passes
    stream.on_epoch_end()
    assert sequence.ended == sequence.begun == 0
    first = [_value(stream[i]) for i in range(7)]
    assert first == [0, 1, 2, 3, 4, 10, 11]
    assert sequence.ended == 1 and sequence.begun == 2
    # TensorFlow's signature probe and Keras' build ask the first indices again: the same
    # pass's order, no hook
    assert [_value(stream[i]) for i in (0, 1)] == [10, 11]  # the Sequence's state now
    assert sequence.ended == 1
    assert [_value(stream[i]) for i in range(7, 11)] == [12, 13, 14, 20]
    assert sequence.ended == 2 and sequence.begun == 3


def test_shuffle_draws_each_pass_from_pythons_random_as_keras2_did():
    sequence = Passes()
    random.seed(3)
    expected = []
    for _ in range(3):
        order = list(range(5))
        random.shuffle(order)
        expected.append(order)
    random.seed(3)
    stream = keras2_stream(sequence, shuffle=True)
    got = [_value(stream[i]) % 10 for i in range(15)]
    assert [got[0:5], got[5:10], got[10:15]] == expected
    assert all(sorted(p) == list(range(5)) for p in expected) and expected[0] != expected[1]


def test_a_longer_sequence_after_a_pass_is_read_whole():
    """Keras reads ``len()`` again every pass; so does the stream (its passes' starts)."""
    sequence = Passes(length=2)
    stream = keras2_stream(sequence, shuffle=False)
    assert [_value(stream[i]) for i in range(2)] == [0, 1]
    sequence.length = 3
    assert [_value(stream[i]) for i in range(2, 8)] == [10, 11, 12, 20, 21, 22]


def test_fit_trains_keras2_steps_from_the_stream():
    """Through ``fit`` (the shim's path under ``--no-accelerate``): ``steps_per_epoch=4`` of
    5 batches gives three epochs of 4 steps, wrapping around, not Keras 3's 4, 1, 4."""
    steps: list[int] = []

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    sequence = Passes()
    history = model.fit(keras2_stream(sequence, shuffle=False), steps_per_epoch=4, epochs=3,
                        shuffle=False, verbose=0, callbacks=[Count()])
    assert steps == [4, 4, 4] and len(history.history["loss"]) == 3
    assert sequence.ended >= 2  # 12 batches: two passes ended (Keras may read ahead)
