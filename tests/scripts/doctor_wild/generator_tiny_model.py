"""A small dense model fed by a plain generator that reads and decodes on the trainer's
thread, timed by a callback Keras may call from its thread pool: fit hands each step's
batch-end to that pool (JAX, torch), as in a script with no per-batch callback of its own.
--fixed: one batch made in advance (the input free)."""

import argparse
import time

import keras
import numpy as np
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--load-ms", type=float, default=3.0)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=64)
args = parser.parse_args()

features = np.random.rand(4096, 32).astype("float32")
labels = np.random.randint(0, 10, 4096)


def batches(batch_size=64):
    if args.fixed:
        batch = (features[:batch_size], labels[:batch_size])
        while True:
            yield batch
    while True:
        for start in range(0, len(features), batch_size):
            time.sleep(args.load_ms / 1000)  # reading and decoding the files
            yield features[start:start + batch_size], labels[start:start + batch_size]


model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dense(10)])
model.compile(optimizer="adam", metrics=["accuracy"],
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
timer = EpochTimes(args.steps_per_epoch, async_batch_end=True)
model.fit(batches(), steps_per_epoch=args.steps_per_epoch, epochs=args.epochs,
          callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
