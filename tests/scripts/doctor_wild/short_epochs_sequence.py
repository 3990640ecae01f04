"""A small tabular dataset in a tf.keras Sequence: 5 batches an epoch, many epochs, `np.empty`
float64 buffers filled per sample, `np.random.shuffle` in on_epoch_end, `import tensorflow as
tf`. On TensorFlow Keras starts its from_generator pipeline over at each epoch's first step,
which the script pays with any input. --fixed: the batches made once, float32."""

import argparse
import math

import numpy as np
import tensorflow as tf
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=12)
parser.add_argument("--steps-per-epoch", type=int, default=5)
args = parser.parse_args()


class Batches(tf.keras.utils.Sequence):
    def __init__(self, n, batch_size=32):
        super().__init__()
        self.x = np.random.rand(n, 64)
        self.y = (self.x.sum(axis=1) > 32).astype("float32")
        self.batch_size = batch_size
        self.order = np.arange(n)
        self.made = [self.make(i) for i in range(len(self))] if args.fixed else None

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def make(self, i):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        out = np.empty((len(idx), 64))
        for j, k in enumerate(idx):
            out[j] = np.sqrt(self.x[k]) * np.log1p(self.x[k])
        return (out.astype("float32") if args.fixed else out), self.y[idx]

    def __getitem__(self, i):
        return self.made[i] if args.fixed else self.make(i)

    def on_epoch_end(self):
        np.random.shuffle(self.order)


model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(64, activation="relu"),
                             tf.keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
model.fit(Batches(32 * args.steps_per_epoch), epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
