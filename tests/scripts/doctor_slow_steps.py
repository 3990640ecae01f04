"""A training script whose steps are slow (the model sleeps ``--step-ms`` on the host inside
every training step, as a large model would compute) and whose generator sleeps ``--load-ms``
per batch: the doctor's probes, left unbounded, would take several times the budget
(tests/backends/test_doctor_probes.py checks they do not). Sleeping keeps the shared cores free.
"""

import argparse
import time

import keras
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--step-ms", type=float, default=150.0, help="model time per step (sleep)")
parser.add_argument("--load-ms", type=float, default=80.0, help="input time per batch (sleep)")
parser.add_argument("--epochs", type=int, default=100)
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()
STEP_S = args.step_ms / 1000


def sleep_like(values):
    time.sleep(STEP_S)
    return values


class SlowStep(keras.layers.Layer):
    """Sleeps STEP_S on the host inside each training step, on every backend."""

    def call(self, x):
        backend = keras.backend.backend()
        if backend == "torch":
            time.sleep(STEP_S)  # torch runs the step eagerly: the layer runs every step
            return x
        if backend == "jax":
            import jax

            jax.debug.callback(lambda: time.sleep(STEP_S))
            return x
        import tensorflow as tf

        slept = tf.numpy_function(sleep_like, [x], x.dtype, stateful=True)
        return x + 0.0 * tf.stop_gradient(tf.reshape(slept, tf.shape(x)))


def batches():
    rng = np.random.default_rng(0)
    while True:
        time.sleep(args.load_ms / 1000)
        features = rng.normal(size=(32, 16)).astype("float32")
        yield features, features.sum(axis=1, keepdims=True)


model = keras.Sequential(
    [keras.Input((16,)), keras.layers.Dense(32, activation="relu"), SlowStep(), keras.layers.Dense(1)]
)
model.compile(optimizer="adam", loss="mse")
model.fit(batches(), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, verbose=0)
