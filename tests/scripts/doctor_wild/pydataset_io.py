"""A ``keras.utils.PyDataset`` that reads its batches from a slow store: ``__getitem__`` mostly
waits (``time.sleep`` stands for the disk, the network or a remote bucket) and does little
NumPy work, on a process pool (``workers=4, use_multiprocessing=True``), as the Keras docs
show for I/O-bound loading. The backend is the environment's (``KERAS_BACKEND``).

The workers use almost no CPU: more of them would keep up, on these cores too.
--fixed: the store answers at once (no wait), the same pool and NumPy work."""

import argparse
import math
import time

import keras
import numpy as np
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=16)
parser.add_argument("--workers", type=int, default=4)
parser.add_argument("--io-ms", type=float, default=60.0, help="each batch's wait on the store")
args = parser.parse_args()


class RemoteImages(keras.utils.PyDataset):
    def __init__(self, x_set, y_set, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x_set, y_set
        self.batch_size = batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, idx):
        if not args.fixed:
            time.sleep(args.io_ms / 1e3)  # the request to the store
        low = idx * self.batch_size
        high = min(low + self.batch_size, len(self.x))
        return self.x[low:high] / 255.0, self.y[low:high]


x = np.random.randint(0, 256, (32 * args.steps_per_epoch, 32, 32, 3)).astype("float32")
y = np.random.randint(0, 10, len(x))
train = RemoteImages(x, y, 32, workers=args.workers, use_multiprocessing=True)
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
