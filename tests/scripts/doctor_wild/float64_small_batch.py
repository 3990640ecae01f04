"""A beginner's regression script: a pandas-style float64 table straight into ``fit`` with
``batch_size=16`` and ``validation_data``, ``verbose=1``. --fixed: the arrays cast to float32
(the float64 finding's fix), the same batch size."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import argparse  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import EpochTimes  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=60)
args = parser.parse_args()

batch = 16
n = 16 * args.steps_per_epoch
features = np.random.rand(n, 20)  # float64, as np.random and pandas give it
target = features @ np.linspace(-1, 1, 20) + 0.1 * np.random.rand(n)
if args.fixed:
    features, target = features.astype("float32"), target.astype("float32")
split = int(0.9 * n)
model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse", metrics=["mae"])
timer = EpochTimes(max(1, -(-split // batch)))
model.fit(features[:split], target[:split], batch_size=batch, epochs=args.epochs,
          validation_data=(features[split:], target[split:]), callbacks=[timer], verbose=1)
timer.report(fixed=args.fixed, backend=keras.backend.backend(), batch=batch)
