"""`import tensorflow as tf`, a tf.data pipeline from the tutorials: from_tensor_slices ->
shuffle -> batch -> prefetch, no map. --fixed: the same (nothing to fix in the input)."""

import argparse

import numpy as np
import tensorflow as tf
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=30)
args = parser.parse_args()

x = np.random.rand(64 * args.steps_per_epoch, 32).astype("float32")
y = np.random.randint(0, 10, size=(len(x),))
ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1024).batch(64).prefetch(tf.data.AUTOTUNE)
model = tf.keras.Sequential([tf.keras.Input((32,)), tf.keras.layers.Dense(256, activation="relu"),
                             tf.keras.layers.Dense(256, activation="relu"),
                             tf.keras.layers.Dense(10)])
model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
timer = EpochTimes(args.steps_per_epoch)
model.fit(ds, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
