"""The tutorial keras.utils.Sequence: np.empty float64 buffers filled per sample, np.random in
on_epoch_end, `from tensorflow import keras`. --fixed: float32, one batch made in advance."""

import argparse

import numpy as np
from _timing import EpochTimes
from tensorflow import keras

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()


class DataGenerator(keras.utils.Sequence):
    def __init__(self, count, batch_size=32, dim=(32, 32), **kwargs):
        super().__init__(**kwargs)
        self.count, self.batch_size, self.dim = count, batch_size, dim
        self.indexes = np.arange(count)

    def __len__(self):
        return self.count // self.batch_size

    def __getitem__(self, index):
        if args.fixed:
            return self.cached
        X = np.empty((self.batch_size, *self.dim, 1))  # float64, as in the tutorial
        y = np.empty((self.batch_size), dtype=int)
        for i, ID in enumerate(self.indexes[index * self.batch_size:(index + 1) * self.batch_size]):
            rng = np.random.default_rng(ID)
            X[i,] = rng.normal(size=(*self.dim, 1))
            y[i] = ID % 10
        return X, y

    def on_epoch_end(self):
        np.random.shuffle(self.indexes)


data = DataGenerator(32 * args.steps_per_epoch)
if args.fixed:
    data.cached = (np.random.rand(32, 32, 32, 1).astype("float32"), np.arange(32) % 10)
model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
model.compile(optimizer="adam",
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
timer = EpochTimes(args.steps_per_epoch)
model.fit(data, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
