"""A training script as users write it: a Python generator that loads (here: sleeps) per
batch, feeding model.fit. Input-bound by construction: the model step is ~1 ms, the input
--load-ms per batch. Used by tests/backends/test_doctor_probes.py under `stoke doctor`.
``--finite``: the generator makes exactly the batches ``fit`` asks for, as many Keras-2-era
scripts do (a probe that took some away would end ``fit`` early)."""

import argparse
import time

import keras
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--load-ms", type=float, default=20.0)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--finite", action="store_true",
                    help="yield exactly epochs x steps-per-epoch batches, then stop")
args = parser.parse_args()


def batches():
    rng = np.random.default_rng(0)
    made = 0
    while not args.finite or made < args.epochs * args.steps_per_epoch:
        made += 1
        time.sleep(args.load_ms / 1000)  # reading and decoding files
        features = rng.normal(size=(args.batch_size, 16))  # float64, as numpy makes it
        labels = (features.sum(axis=1, keepdims=True) > 0).astype("float32")
        yield features, labels


model = keras.Sequential(
    [keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)]
)
model.compile(optimizer="adam", loss="binary_crossentropy")
history = model.fit(batches(), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, verbose=0)
print("AFTER FIT", flush=True)
print(f"EPOCHS TRAINED {len(history.history['loss'])}", flush=True)
