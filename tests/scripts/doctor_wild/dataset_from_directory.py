"""keras.io's "Image classification from scratch", in small: JPEG files in class folders
(written here to a temporary folder, removed at the end), `keras.utils.
image_dataset_from_directory(...)` (a tf.data pipeline that decodes in a parallel map and
prefetches), `import keras`, a small CNN with `Rescaling` and `RandomFlip` in the model, the
progress bar on. --fixed: the tutorial's own advice, `.cache()` after the first epoch's decode
(the input made free from the second epoch on; prefetch is there already)."""

import argparse
import os
import shutil
import tempfile

import keras
import numpy as np
from _timing import EpochTimes
from PIL import Image

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--steps-per-epoch", type=int, default=10)
args = parser.parse_args()
BATCH = 32

root = tempfile.mkdtemp(prefix="doctor-wild-dataset-")
try:
    for label in ("cats", "dogs"):
        os.makedirs(os.path.join(root, label))
        for i in range(BATCH * args.steps_per_epoch // 2):
            pixels = np.random.randint(0, 255, (120, 120, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, label, f"{i}.jpg"))
    train_ds = keras.utils.image_dataset_from_directory(
        root, image_size=(96, 96), batch_size=BATCH, seed=1337)
    if args.fixed:
        train_ds = train_ds.cache()
    model = keras.Sequential([
        keras.Input((96, 96, 3)),
        keras.layers.Rescaling(1.0 / 255),
        keras.layers.RandomFlip("horizontal"),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    timer = EpochTimes(args.steps_per_epoch)
    model.fit(train_ds, epochs=args.epochs, callbacks=[timer], verbose=2)
    timer.report(fixed=args.fixed)
finally:
    shutil.rmtree(root)
