"""A layer that takes its tensor to NumPy the way Keras 3 users do it,
``np.sin(keras.ops.convert_to_numpy(x))`` (--asarray: ``np.asarray(x)``, in a
``keras.layers.Lambda`` as red-team s06_lambda_numpy.py wrote its NumPy), so the model is
compiled with ``run_eagerly=True``. Functional model, the backend the runner picked.
--fixed: keras.ops.sin and a compiled step (the doctor's fix)."""

import argparse

import keras
import numpy as np
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--asarray", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()


class SinFeatures(keras.layers.Layer):
    def call(self, x):
        if args.fixed:
            return keras.ops.sin(x)
        return keras.ops.convert_to_tensor(np.sin(keras.ops.convert_to_numpy(x)))


def host_sin(x):
    return keras.ops.convert_to_tensor(np.sin(np.asarray(x)))


x = np.random.rand(32 * args.steps_per_epoch, 16).astype("float32")
y = np.random.rand(len(x), 1).astype("float32")
inputs = keras.Input((16,))
sin = (keras.layers.Lambda(host_sin, name="sin_lambda") if args.asarray and not args.fixed
       else SinFeatures(name="sin_features"))
hidden = keras.layers.Dense(32, activation="relu")(sin(inputs))
model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
model.compile(optimizer="adam", loss="mse", run_eagerly=not args.fixed)
timer = EpochTimes(args.steps_per_epoch)
model.fit(x, y, batch_size=32, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
