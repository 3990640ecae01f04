"""keras.io PyDataset tutorial style on JAX, with a thread pool: ``workers=2,
use_multiprocessing=False`` and NumPy augmentation (random crops, flips, brightness) per batch.
--fixed: the same batches without the augmentation."""

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
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()


class AugmentingDataset(keras.utils.PyDataset):
    def __init__(self, images, labels, batch_size=32, augment=True, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.augment = augment
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, idx):
        batch = self.images[idx * self.batch_size:(idx + 1) * self.batch_size]
        labels = self.labels[idx * self.batch_size:(idx + 1) * self.batch_size]
        if not self.augment:
            return batch[:, 4:36, 4:36, :], labels
        out = np.empty((len(batch), 32, 32, 3), dtype="float32")
        for i, image in enumerate(batch):  # per image, as the tutorials do
            top, left = self.rng.integers(0, 8, size=2)
            crop = image[top:top + 32, left:left + 32, :]
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1, :]
            crop = np.clip(crop * self.rng.uniform(0.8, 1.2), 0.0, 1.0)
            for _ in range(6):  # a small blur
                crop = (crop + np.roll(crop, 1, axis=0) + np.roll(crop, 1, axis=1)) / 3.0
            out[i] = crop
        return out, labels


images = np.random.rand(32 * args.steps_per_epoch, 40, 40, 3).astype("float32")
labels = np.random.randint(0, 10, len(images))
train = AugmentingDataset(images, labels, augment=not args.fixed, workers=2,
                          use_multiprocessing=False)
model = keras.Sequential([
    keras.Input((32, 32, 3)),
    keras.layers.Conv2D(8, 3, activation="relu"),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
model.fit(train, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed, backend=keras.backend.backend())
