"""A model trained on the CPU, fed by a slow Python generator (NumPy work per batch, on the
same cores). --fixed: one batch made in advance."""

import argparse

import keras
import numpy as np
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()


def augment(rng):
    images = rng.random((32, 28, 28)).astype("float32")
    for _ in range(6):  # the per-batch NumPy work users do: blur, flips, noise
        images = (images + np.roll(images, 1, axis=1) + np.roll(images, 1, axis=2)) / 3.0
    return images.reshape(32, -1), rng.integers(0, 10, 32)


def batches():
    rng = np.random.default_rng(0)
    cached = augment(rng)
    while True:
        yield cached if args.fixed else augment(rng)


model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(128, activation="relu"),
                          keras.layers.Dense(10)])
model.compile(optimizer="adam",
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
timer = EpochTimes(args.steps_per_epoch)
model.fit(batches(), steps_per_epoch=args.steps_per_epoch, epochs=args.epochs,
          callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
