"""`import tensorflow as tf`, a tf.data pipeline over file names that decodes each image in
Python (`tf.py_function(load_image, [path], tf.float32)`, PIL/cv2 in real scripts) with a
plain `.map(f)`: no num_parallel_calls, no prefetch. --fixed: one batch's decoded images
cached and repeated (the input made free)."""

import argparse
import time

import numpy as np
import tensorflow as tf
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--decode-ms", type=float, default=1.0)
args = parser.parse_args()
BATCH = 32

paths = [f"images/img_{i:05d}.jpg" for i in range(BATCH * args.steps_per_epoch)]
labels = np.random.randint(0, 5, len(paths))


def load_image(path):
    time.sleep(args.decode_ms / 1000)  # open, decode and resize the JPEG
    return np.random.rand(32, 32, 3).astype("float32")


def tf_load(path, label):
    image = tf.py_function(load_image, [path], tf.float32)
    image.set_shape((32, 32, 3))
    return image, label


ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths))
ds = ds.map(tf_load)
if args.fixed:
    ds = ds.take(BATCH).cache().repeat(args.steps_per_epoch)
ds = ds.batch(BATCH)

model = tf.keras.Sequential([
    tf.keras.layers.Input((32, 32, 3)),
    tf.keras.layers.Conv2D(16, 3, activation="relu"),
    tf.keras.layers.GlobalAveragePooling2D(),
    tf.keras.layers.Dense(5),
])
model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
model.fit(ds, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
