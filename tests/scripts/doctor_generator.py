"""A training script as users write it: a Python generator that loads (here: sleeps) per
batch, feeding model.fit. Input-bound by construction: the model step is ~1 ms, the input
--load-ms per batch. Used by tests/backends/test_doctor_probes.py under `stoke doctor`."""

import argparse
import time

import keras
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--load-ms", type=float, default=20.0)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--batch-size", type=int, default=32)
args = parser.parse_args()


def batches():
    rng = np.random.default_rng(0)
    while True:
        time.sleep(args.load_ms / 1000)  # reading and decoding files
        features = rng.normal(size=(args.batch_size, 16))  # float64, as numpy makes it
        labels = (features.sum(axis=1, keepdims=True) > 0).astype("float32")
        yield features, labels


model = keras.Sequential(
    [keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)]
)
model.compile(optimizer="adam", loss="binary_crossentropy")
model.fit(batches(), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, verbose=0)
print("AFTER FIT", flush=True)
