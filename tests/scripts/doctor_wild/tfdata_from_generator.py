"""`import tensorflow as tf`, the user's own Python generator wrapped in
`tf.data.Dataset.from_generator(..., output_signature=...)`: each sample is "decoded" in
Python (NumPy work on a raw buffer, as PIL/cv2 code does), then `.batch(32).prefetch(AUTOTUNE)`.
The prefetch cannot help: the generator holds the GIL in one tf.data thread. --fixed: one
batch's decoded samples cached and repeated (the input made free)."""

import argparse

import numpy as np
import tensorflow as tf
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--decode-work", type=int, default=6)
args = parser.parse_args()
BATCH = 32
IMG = 48
rng = np.random.default_rng(0)
raw = rng.integers(0, 255, (64, IMG * IMG * 3), dtype=np.uint8)  # "JPEG bytes" on disk


def decode(buffer):
    image = buffer.reshape(IMG, IMG, 3).astype(np.float32) / 255.0
    for _ in range(args.decode_work):  # colour jitter, blur, resize: Python + NumPy per image
        image = 0.5 * image + 0.25 * (np.roll(image, 1, axis=0) + np.roll(image, 1, axis=1))
    return image[::2, ::2]


def sample_generator():
    i = 0
    while True:
        yield decode(raw[i % len(raw)]), np.int32(i % 10)
        i += 1


ds = tf.data.Dataset.from_generator(
    sample_generator,
    output_signature=(tf.TensorSpec(shape=(IMG // 2, IMG // 2, 3), dtype=tf.float32),
                      tf.TensorSpec(shape=(), dtype=tf.int32)))
if args.fixed:
    ds = ds.take(BATCH).cache().repeat()
ds = ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)

model = tf.keras.Sequential([
    tf.keras.layers.Input((IMG // 2, IMG // 2, 3)),
    tf.keras.layers.Conv2D(16, 3, activation="relu"),
    tf.keras.layers.MaxPooling2D(),
    tf.keras.layers.Conv2D(32, 3, activation="relu"),
    tf.keras.layers.GlobalAveragePooling2D(),
    tf.keras.layers.Dense(10),
])
model.compile(optimizer="adam",
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
model.fit(ds, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=[timer],
          verbose=0)
timer.report(fixed=args.fixed)
