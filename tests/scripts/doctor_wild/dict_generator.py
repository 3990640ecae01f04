"""A multi-input functional model fed by a Python generator that yields dicts
(``{"image": ..., "meta": ...}, labels``), with ``steps_per_execution=4`` on JAX; the generator
builds each batch from Python lists. --fixed: the generator yields prebuilt batches."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import EpochTimes  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=96)
args = parser.parse_args()

BATCH = 32
records = [{"pixels": np.random.rand(16, 16).tolist(), "age": float(i % 90), "site": i % 7,
            "label": i % 3} for i in range(BATCH * 8)]


def make_batch(start):
    rows = [records[(start + j) % len(records)] for j in range(BATCH)]
    image = np.array([r["pixels"] for r in rows], dtype="float32")[..., None]
    meta = np.array([[r["age"] / 90.0, *np.eye(7)[r["site"]]] for r in rows], dtype="float32")
    label = np.array([r["label"] for r in rows])
    return {"image": image, "meta": meta}, label


def batches():
    start = 0
    while True:
        yield make_batch(start)
        start += BATCH


def prebuilt():
    ready = [make_batch(k * BATCH) for k in range(8)]
    k = 0
    while True:
        yield ready[k % 8]
        k += 1


image_in = keras.Input((16, 16, 1), name="image")
meta_in = keras.Input((8,), name="meta")
x = keras.layers.Conv2D(8, 3, activation="relu")(image_in)
x = keras.layers.Flatten()(x)
x = keras.layers.concatenate([x, keras.layers.Dense(8, activation="relu")(meta_in)])
out = keras.layers.Dense(3, activation="softmax")(x)
model = keras.Model({"image": image_in, "meta": meta_in}, out)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
              steps_per_execution=4)
timer = EpochTimes(args.steps_per_epoch)
model.fit(prebuilt() if args.fixed else batches(), steps_per_epoch=args.steps_per_epoch,
          epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed, backend=keras.backend.backend())
