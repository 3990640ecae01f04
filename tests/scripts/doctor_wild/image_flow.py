"""`from tensorflow.keras.preprocessing.image import ImageDataGenerator`: augmentation on
CIFAR-like NumPy arrays with `datagen.flow(x, y, batch_size=32)`, fed to `model.fit` with
`steps_per_epoch=len(x) // 32` (the Keras-2 tutorials' shape; under Keras 3 `flow` returns a
PyDataset with no workers, made on one Python thread). --fixed: the arrays fed directly
(no augmentation: the input made free)."""

import argparse

import numpy as np
import tensorflow as tf
from _timing import EpochTimes
from tensorflow.keras.preprocessing.image import ImageDataGenerator

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=15)
args = parser.parse_args()

x_train = np.random.rand(32 * args.steps_per_epoch, 32, 32, 3).astype("float32")
y_train = tf.keras.utils.to_categorical(np.random.randint(0, 10, len(x_train)), 10)
datagen = ImageDataGenerator(rotation_range=15, width_shift_range=0.1, height_shift_range=0.1,
                             horizontal_flip=True)
datagen.fit(x_train)

model = tf.keras.Sequential([
    tf.keras.layers.Input((32, 32, 3)),
    tf.keras.layers.Conv2D(32, 3, activation="relu"),
    tf.keras.layers.MaxPooling2D(),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(10, activation="softmax"),
])
model.compile(loss="categorical_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
if args.fixed:
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, callbacks=[timer], verbose=0)
else:
    model.fit(datagen.flow(x_train, y_train, batch_size=32),
              steps_per_epoch=len(x_train) // 32, epochs=args.epochs, callbacks=[timer],
              verbose=0)
timer.report(fixed=args.fixed)
