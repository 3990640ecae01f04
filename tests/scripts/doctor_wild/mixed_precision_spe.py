"""`from tensorflow import keras`, a tuned-for-speed script: the `mixed_float16` policy,
`steps_per_execution=8`, a `class_weight` dict for an imbalanced label set, NumPy arrays in
memory. The input is free already: the doctor must not call it slow, nor suggest what the run
already does (steps_per_execution). --fixed: the same fit on one cached batch repeated for an
epoch's steps (input made free a second way). Keras makes a new iterator over the arrays each
epoch, and so over this finite dataset: the once-an-epoch restart (the first call of each epoch,
tens of ms on 2 cores) stays on both sides, as the doctor counts it on both sides of an input
fix. Repeated forever with `steps_per_epoch`, one iterator served every epoch: the twin took
the restart away too, and measured x2.16 against the doctor's x1.00 (session 9). This twin,
quiet: x1.28-x1.38; what is left is Keras' array pipeline starting again more slowly than this
one (~30 ms an epoch, at the first call of each epoch; its steady calls match the doctor's
model-alone probe)."""

import argparse

import numpy as np
from _timing import EpochTimes
from tensorflow import keras

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=24)
args = parser.parse_args()
BATCH = 64
SPE = 8

keras.mixed_precision.set_global_policy("mixed_float16")

n = BATCH * args.steps_per_epoch
x = np.random.rand(n, 128).astype("float32")
y = (np.random.rand(n) < 0.1).astype("int32")  # 10% positives
class_weight = {0: 1.0, 1: 9.0}

inputs = keras.Input((128,))
h = keras.layers.Dense(512, activation="relu")(inputs)
h = keras.layers.Dense(512, activation="relu")(h)
h = keras.layers.Dense(256, activation="relu")(h)
outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(h)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
              metrics=[keras.metrics.AUC()], steps_per_execution=SPE)
timer = EpochTimes(args.steps_per_epoch)
if args.fixed:
    import tensorflow as tf

    weights = np.where(y[:BATCH] == 1, 9.0, 1.0).astype("float32")
    ds = tf.data.Dataset.from_tensors((x[:BATCH], y[:BATCH], weights)).cache()
    model.fit(ds.repeat(args.steps_per_epoch), epochs=args.epochs, callbacks=[timer], verbose=0)
else:
    model.fit(x, y, batch_size=BATCH, epochs=args.epochs, class_weight=class_weight,
              callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
