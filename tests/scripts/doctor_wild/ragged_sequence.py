"""Variable-length sequences as tutorials batch them: a `keras.utils.Sequence` over Python
lists, each batch padded to its own longest row with `keras.utils.pad_sequences`, a smaller
last batch (sets KERAS_BACKEND=jax itself: JAX compiles the step once per batch shape).
--fixed: every batch padded to one length (MAXLEN), the last batch kept as it is."""

import argparse
import math
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import EpochTimes  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=16)
args = parser.parse_args()

MAXLEN = 120
rng = np.random.default_rng(0)
count = 64 * args.steps_per_epoch - 24  # a last batch of 40
sequences = [rng.random((int(rng.integers(10, MAXLEN)), 8)).tolist() for _ in range(count)]
targets = [float(np.mean(s)) for s in sequences]


class PaddedBatches(keras.utils.Sequence):
    def __init__(self, batch_size=64, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = batch_size

    def __len__(self):
        return math.ceil(len(sequences) / self.batch_size)

    def __getitem__(self, index):
        rows = sequences[index * self.batch_size:(index + 1) * self.batch_size]
        x = keras.utils.pad_sequences(rows, maxlen=MAXLEN if args.fixed else None,
                                      dtype="float32", padding="post")
        return x, np.array(targets[index * self.batch_size:(index + 1) * self.batch_size],
                           "float32")


model = keras.Sequential([
    keras.Input((None, 8)),
    keras.layers.Conv1D(32, 3, padding="same", activation="relu"),
    keras.layers.GlobalAveragePooling1D(),
    keras.layers.Dense(1),
])
model.compile("adam", "mse")
timer = EpochTimes(args.steps_per_epoch)
model.fit(PaddedBatches(), epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed, fit_s=sum(timer.seconds))
