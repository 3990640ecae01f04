"""What a user sees: ``verbose=1`` progress bar, ModelCheckpoint writing a file per epoch,
EarlyStopping, CSVLogger and a callback counting batches, and ``fit`` called twice (train,
then fine-tune) on a Python generator. KNOWN_RESULT says what reached the callbacks, the
history and the files: the doctor's probes must add nothing. --fixed: a batch made in advance."""

import argparse
import json
import os
import tempfile
import time

import keras
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=15)
parser.add_argument("--fine-tune-epochs", type=int, default=2)
args = parser.parse_args()


class Counter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def batches():
    rng = np.random.default_rng(0)
    cached = None
    while True:
        if args.fixed and cached is not None:
            yield cached
            continue
        x = rng.random((32, 20, 20)).astype("float32")
        if not args.fixed:
            time.sleep(0.01)  # a read
            for _ in range(10):
                x = np.sqrt(x * x + 0.01)
        cached = x.reshape(32, -1), rng.integers(0, 3, 32)
        yield cached


model = keras.Sequential([keras.Input((400,)), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dense(3)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
with tempfile.TemporaryDirectory(prefix="doctor-wild-callbacks-") as out:
    first, second = Counter(), Counter()
    started = time.perf_counter()
    history1 = model.fit(
        batches(), steps_per_epoch=args.steps_per_epoch, epochs=args.epochs, verbose=1,
        callbacks=[first, keras.callbacks.ModelCheckpoint(os.path.join(out, "ep{epoch}.keras")),
                   keras.callbacks.EarlyStopping(monitor="loss", patience=100),
                   keras.callbacks.CSVLogger(os.path.join(out, "train.csv"))])
    history2 = model.fit(batches(), steps_per_epoch=args.steps_per_epoch,
                         epochs=args.fine_tune_epochs, verbose=1,
                         callbacks=[second, keras.callbacks.CSVLogger(os.path.join(out, "tune.csv"))])
    seconds = time.perf_counter() - started
    with open(os.path.join(out, "train.csv")) as log:
        csv_rows = len(log.read().strip().splitlines()) - 1
    files = sorted(os.listdir(out))
print("KNOWN_RESULT " + json.dumps({
    "seconds": seconds, "batches_first_fit": first.batches, "batches_second_fit": second.batches,
    "history_first_fit": len(history1.history["loss"]),
    "history_second_fit": len(history2.history["loss"]),
    "files": files, "csv_rows": csv_rows, "fixed": args.fixed}), flush=True)
