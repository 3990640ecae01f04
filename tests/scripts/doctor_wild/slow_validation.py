"""`import tensorflow as tf`, training on in-memory arrays but `validation_data` from the
user's Python generator with a slow per-sample "decode" and `validation_steps`: the epoch
spends much of its time in validation, which the training step never waits for. --fixed:
validation on in-memory arrays (what the user would do once told)."""

import argparse

import numpy as np
import tensorflow as tf
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--validation-steps", type=int, default=10)
parser.add_argument("--decode-rounds", type=int, default=24)
args = parser.parse_args()
BATCH = 32
IMG = 24

x_train = np.random.rand(BATCH * args.steps_per_epoch, IMG, IMG, 3).astype("float32")
y_train = np.random.randint(0, 10, len(x_train))
x_val = np.random.rand(BATCH * args.validation_steps, IMG, IMG, 3).astype("float32")
y_val = np.random.randint(0, 10, len(x_val))


def preprocess(image):
    for _ in range(args.decode_rounds):  # the "decode + resize" of a validation image, in NumPy
        image = 0.5 * image + 0.25 * (np.roll(image, 1, axis=0) + np.roll(image, 1, axis=1))
    return image


def val_generator():
    while True:
        for start in range(0, len(x_val), BATCH):
            images = np.stack([preprocess(im) for im in x_val[start:start + BATCH]])
            yield images.astype("float32"), y_val[start:start + BATCH]


model = tf.keras.Sequential([
    tf.keras.layers.Input((IMG, IMG, 3)),
    tf.keras.layers.Conv2D(32, 3, activation="relu"),
    tf.keras.layers.Conv2D(32, 3, activation="relu"),
    tf.keras.layers.GlobalAveragePooling2D(),
    tf.keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
validation = (x_val, y_val) if args.fixed else val_generator()
model.fit(x_train, y_train, batch_size=BATCH, epochs=args.epochs, validation_data=validation,
          validation_steps=args.validation_steps, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
