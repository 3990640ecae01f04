"""A training script on in-memory NumPy arrays, left as float64 (numpy's default), with a
model big enough that the step, not the input, takes the time. --crash raises after fit, as a
script with a bug in its evaluation code would."""

import argparse

import keras
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--crash", action="store_true")
args = parser.parse_args()

rng = np.random.default_rng(0)
x = rng.normal(size=(4096, 64))  # float64
y = rng.integers(0, 2, size=(4096, 1)).astype("float64")

model = keras.Sequential(
    [
        keras.Input((64,)),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
)
model.compile(optimizer="adam", loss="binary_crossentropy")
model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0)
if args.crash:
    raise RuntimeError("evaluation failed: no such column 'accuracy'")
print("AFTER FIT", flush=True)
