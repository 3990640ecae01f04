"""`import tensorflow as tf`, transfer-learning style: pretrain a small CNN, freeze its base,
recompile and fine-tune (two `fit` calls, a ModelCheckpoint writing a file each epoch), then
`evaluate` and `predict`, on NumPy arrays. The doctor measures the first fit; its probes must
reach neither fit's callbacks, History or checkpoints: KNOWN_RESULT counts them.
--fixed: the same (the arrays are in memory: nothing to fix in the input)."""

import argparse
import glob
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
parser.add_argument("--finetune-epochs", type=int, default=2)
args = parser.parse_args()

x = np.random.rand(32 * args.steps_per_epoch, 24, 24, 1).astype("float32")
y = np.random.randint(0, 4, len(x))
base = tf.keras.Sequential([tf.keras.Input((24, 24, 1)),
                            tf.keras.layers.Conv2D(16, 3, activation="relu"),
                            tf.keras.layers.GlobalAveragePooling2D()])
model = tf.keras.Sequential([base, tf.keras.layers.Dense(4, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

out = tempfile.mkdtemp(prefix="doctor-wild-finetune-")
try:
    pretrain = EpochTimes(args.steps_per_epoch)
    history = model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=2, callbacks=[
        pretrain, tf.keras.callbacks.ModelCheckpoint(os.path.join(out, "pre_{epoch}.keras"))])
    base.trainable = False
    model.compile(tf.keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    finetune = EpochTimes(args.steps_per_epoch)
    history2 = model.fit(x, y, batch_size=32, epochs=args.finetune_epochs, verbose=2, callbacks=[
        finetune, tf.keras.callbacks.ModelCheckpoint(os.path.join(out, "ft_{epoch}.keras"))])
    loss, accuracy = model.evaluate(x[:256], y[:256], verbose=0)
    predictions = model.predict(x[:64], verbose=0)
    checkpoints = len(glob.glob(os.path.join(out, "*.keras")))
finally:
    shutil.rmtree(out, ignore_errors=True)
pretrain.report(fixed=args.fixed, finetune_batches_seen=finetune.batches_seen,
                history_epochs=len(history.history["loss"]),
                finetune_history_epochs=len(history2.history["loss"]),
                checkpoints=checkpoints, predictions=len(predictions))
