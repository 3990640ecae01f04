"""keras.io style: the script picks its backend itself (``os.environ["KERAS_BACKEND"] = "jax"``
before ``import keras``) and feeds a ``keras.utils.PyDataset`` doing NumPy work per batch.
--workers 1 (the default): the PyDataset runs on the trainer's thread; --workers 4
--multiprocessing: a process pool (a new one each epoch). --fixed: no per-batch work."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import argparse  # noqa: E402
import math  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import EpochTimes  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=16)
parser.add_argument("--workers", type=int, default=1)
parser.add_argument("--multiprocessing", action="store_true")
args = parser.parse_args()


class AugmentedDataset(keras.utils.PyDataset):
    def __init__(self, x_set, y_set, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x_set, y_set
        self.batch_size = batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, idx):
        low = idx * self.batch_size
        high = min(low + self.batch_size, len(self.x))
        batch_x = self.x[low:high]
        if not args.fixed:
            for _ in range(12):  # flips and blurs
                batch_x = (batch_x + np.roll(batch_x, 1, axis=1) + np.flip(batch_x, axis=2)) / 3.0
        return batch_x.astype("float32"), self.y[low:high]


x = np.random.rand(32 * args.steps_per_epoch, 32, 32, 3).astype("float32")
y = np.random.randint(0, 10, len(x))
train = AugmentedDataset(x, y, 32, workers=args.workers, use_multiprocessing=args.multiprocessing)
model = keras.Sequential([
    keras.Input((32, 32, 3)),
    keras.layers.Conv2D(16, 3, activation="relu"),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
model.fit(train, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed, backend=keras.backend.backend())
