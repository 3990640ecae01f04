"""`import tensorflow as tf`, a tf.keras CNN on MNIST-like NumPy arrays the way the tutorials
write it: `input_shape=` on the first layer, `to_categorical`, `validation_split=0.1`,
`verbose=1` (the progress bar) and the usual callbacks (ModelCheckpoint save_best_only,
EarlyStopping, CSVLogger, ReduceLROnPlateau). The doctor's probes must reach none of them:
KNOWN_RESULT counts the batches the callbacks saw, the History's epochs and the CSV rows.
--fixed: the same (the arrays are in memory: nothing to fix in the input)."""

import argparse
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()

n_train = 64 * args.steps_per_epoch
x_train = np.random.randint(0, 255, size=(n_train + n_train // 9 + 1, 28, 28)).astype("uint8")
y_train = tf.keras.utils.to_categorical(np.random.randint(0, 10, size=(len(x_train),)), 10)
x_train = (x_train.astype("float32") / 255.0)[..., np.newaxis]

model = tf.keras.models.Sequential([
    tf.keras.layers.Conv2D(16, (3, 3), activation="relu", input_shape=(28, 28, 1)),
    tf.keras.layers.MaxPooling2D((2, 2)),
    tf.keras.layers.Conv2D(32, (3, 3), activation="relu"),
    tf.keras.layers.MaxPooling2D((2, 2)),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(64, activation="relu"),
    tf.keras.layers.Dropout(0.5),
    tf.keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

out = tempfile.mkdtemp(prefix="doctor-wild-callbacks-")
try:
    timer = EpochTimes(args.steps_per_epoch)
    callbacks = [
        timer,
        tf.keras.callbacks.ModelCheckpoint(os.path.join(out, "best.keras"), save_best_only=True),
        tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
        tf.keras.callbacks.CSVLogger(os.path.join(out, "log.csv")),
        tf.keras.callbacks.ReduceLROnPlateau(),
    ]
    history = model.fit(x_train, y_train, batch_size=64, epochs=args.epochs,
                        validation_split=0.1, callbacks=callbacks, verbose=1)
    with open(os.path.join(out, "log.csv")) as log:
        csv_rows = len(log.read().strip().splitlines()) - 1  # less the header
finally:
    shutil.rmtree(out, ignore_errors=True)
timer.report(fixed=args.fixed, history_epochs=len(history.history["loss"]), csv_rows=csv_rows)
