"""NumPy arrays in memory, `import keras`: nothing to fix in the input. --fixed: the same."""

import argparse

import keras
import numpy as np
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=30)
args = parser.parse_args()

batch_size = 64
x = np.random.rand(batch_size * args.steps_per_epoch, 32).astype("float32")
y = np.random.randint(0, 10, size=(len(x),))
model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
model.compile(optimizer="adam",
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
model.fit(x, y, batch_size=batch_size, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
