"""What dropping a tf.data iterator that was not run to its end costs (issue 14, the
custom_train_step_jax.py row of doctor_accuracy).

Keras' JAX and torch trainers iterate a ``tf.data.Dataset`` with a fresh iterator each epoch
(``steps_per_epoch`` unset) and drop the previous one, unexhausted, when the next epoch starts:
its teardown runs between ``on_epoch_begin`` and the first batch. This times that teardown per
epoch for the pipeline of tests/scripts/doctor_wild/custom_train_step_jax.py (``shuffle`` over
file names, a sequential ``map`` of a ``py_function`` that sleeps ``--decode-ms`` an image,
``batch``) and for its fixed twin (``--fixed``: ``take(BATCH).cache().repeat(steps)``), with
the same iterator Keras uses (a Python generator over the dataset).

Measured here (2 cores, load 12-15, niced), the cost is erratic: the plain pipeline 495, 0.4,
685, 0.5 ms in one run and 19, 4, 8, 4 ms in the next; the twin 153, 53, 15, 9 ms, then 2, 41,
27, 28 ms. Inside fit the same drop took 0.24 s (cProfile between the second epoch's
``on_epoch_begin`` and its first batch, all of it in ``get_jax_iterator``), and the doctor's
records hold first steps of an epoch 0.24 s and 1.64 s busy beyond the steady step. The
twin's own clock (tests/scripts/doctor_wild/_timing.py: the mean of the epochs after the
first) has two 20-step epochs of ~60 ms, so one such drop decides its step time: 2.3 and
14.2 ms in two rounds of session 9, 28.8 and 3.4 ms in two rounds here.

    .venv/bin/python benchmarks/tf_iterator_teardown.py [--fixed] [--epochs 4]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--fixed", action="store_true", help="the fixed twin's pipeline")
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--decode-ms", type=float, default=1.0)
args = parser.parse_args()
BATCH, IMAGE = 32, 32

paths = [f"data/train/{i:05d}.png" for i in range(BATCH * args.steps_per_epoch)]
labels = np.random.randint(0, 10, len(paths)).astype("int32")


def decode(path):
    time.sleep(args.decode_ms / 1000)
    image = np.random.randint(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    return (image / 255.0).astype("float32")


def preprocess(path, label):
    image = tf.py_function(decode, [path], tf.float32)
    image.set_shape((IMAGE, IMAGE, 3))
    return image, label


dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths)).map(preprocess)
if args.fixed:
    dataset = dataset.take(BATCH).cache().repeat(args.steps_per_epoch)
dataset = dataset.batch(BATCH)


def batches():
    """As Keras' TFDatasetAdapter.get_jax_iterator iterates the dataset."""
    yield from dataset


for epoch in range(args.epochs):
    started = time.perf_counter()
    iterator = batches()
    for _ in range(args.steps_per_epoch):
        next(iterator)
    read = time.perf_counter()
    del iterator  # unexhausted: Keras never asks for the batch after the last step
    dropped = time.perf_counter()
    print(f"epoch {epoch}: {args.steps_per_epoch} batches {1e3 * (read - started):.1f} ms, "
          f"dropping the iterator {1e3 * (dropped - read):.1f} ms", flush=True)
