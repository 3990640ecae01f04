"""Keras-2 era, `from tensorflow import keras`: PNG files in class folders (written here to a
temporary folder, removed at the end), `ImageDataGenerator(rescale, shear, zoom, flip)
.flow_from_directory(...)` and `model.fit_generator(train_generator, steps_per_epoch=
train_generator.samples // batch_size)`, as the cats-vs-dogs tutorials write it. --keras3: the
same iterator through model.fit (how the plain run is timed under Keras 3, where fit_generator
does not exist). --fixed: one batch of the iterator, repeated as arrays (the input made free)."""

import argparse
import os
import shutil
import tempfile

import numpy as np
from _timing import EpochTimes
from PIL import Image
from tensorflow import keras
from tensorflow.keras.preprocessing.image import ImageDataGenerator

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--keras3", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=10)
args = parser.parse_args()
BATCH = 16

root = tempfile.mkdtemp(prefix="doctor-wild-images-")
try:
    for label in ("cats", "dogs"):
        os.makedirs(os.path.join(root, "train", label))
        for i in range(BATCH * args.steps_per_epoch // 2):
            pixels = np.random.randint(0, 255, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, "train", label, f"{i}.png"))
    train_datagen = ImageDataGenerator(rescale=1.0 / 255, shear_range=0.2, zoom_range=0.2,
                                       horizontal_flip=True)
    train_generator = train_datagen.flow_from_directory(
        os.path.join(root, "train"), target_size=(64, 64), batch_size=BATCH, class_mode="binary")

    model = keras.models.Sequential([
        keras.layers.Input((64, 64, 3)),
        keras.layers.Conv2D(16, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
    timer = EpochTimes(args.steps_per_epoch)
    steps = train_generator.samples // BATCH
    if args.fixed:
        x, y = train_generator[0]
        model.fit(np.concatenate([x] * steps), np.concatenate([y] * steps), batch_size=BATCH,
                  epochs=args.epochs, callbacks=[timer], verbose=0)
    elif args.keras3:
        model.fit(train_generator, steps_per_epoch=steps, epochs=args.epochs, callbacks=[timer],
                  verbose=0)
    else:
        model.fit_generator(train_generator, steps_per_epoch=steps, epochs=args.epochs,
                            callbacks=[timer], verbose=0)
finally:
    shutil.rmtree(root, ignore_errors=True)
timer.report(fixed=args.fixed)
