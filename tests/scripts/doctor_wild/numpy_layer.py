"""A NumPy call in a layer, so the model must run eagerly (as users fix the error they get).
--fixed: keras.ops.sin and a compiled step (the doctor's fix). --check-state: also report
what a probe must give back (run_eagerly, the layer's own call, the optimizer's step count)."""

import argparse

import keras
import numpy as np
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--check-state", action="store_true")
args = parser.parse_args()


class NumpySin(keras.layers.Layer):
    def call(self, inputs):
        return np.sin(inputs)


class OpsSin(keras.layers.Layer):
    def call(self, inputs):
        return keras.ops.sin(inputs)


x = np.random.rand(32 * args.steps_per_epoch, 16).astype("float32")
y = np.random.rand(len(x), 1).astype("float32")
model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64),
                          OpsSin(name="ops_sin") if args.fixed else NumpySin(name="numpy_sin"),
                          keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse", run_eagerly=not args.fixed)
timer = EpochTimes(args.steps_per_epoch)
history = model.fit(x, y, batch_size=32, epochs=args.epochs, callbacks=[timer], verbose=0)
state = {}
if args.check_state:
    state = {"run_eagerly": model.run_eagerly, "history_epochs": len(history.history["loss"]),
             "numpy_sin_call": NumpySin.call.__qualname__,
             "optimizer_iterations": int(model.optimizer.iterations.numpy())}
timer.report(fixed=args.fixed, **state)
