"""A training script with a keras.utils.PyDataset fed by worker processes (Keras 3's way of
parallel loading). Each batch takes --load-ms to make; --corrupt-batch N makes the worker that
loads batch N raise, as a truncated file would."""

import argparse
import time

import keras
import numpy as np


class SlowImages(keras.utils.PyDataset):
    def __init__(self, batches, batch_size, load_ms, corrupt_batch=None, **kwargs):
        super().__init__(**kwargs)
        self.batches = batches
        self.batch_size = batch_size
        self.load_ms = load_ms
        self.corrupt_batch = corrupt_batch

    def __len__(self):
        return self.batches

    def __getitem__(self, index):
        time.sleep(self.load_ms / 1000)
        if index == self.corrupt_batch:
            raise ValueError(f"cannot decode image file for batch {index}: truncated data")
        rng = np.random.default_rng(index)
        images = rng.random((self.batch_size, 8, 8, 1), dtype=np.float32)
        labels = rng.integers(0, 10, size=(self.batch_size,))
        return images, labels


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", action="store_true")
    parser.add_argument("--load-ms", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--corrupt-batch", type=int, default=None)
    args = parser.parse_args()

    data = SlowImages(
        batches=30,
        batch_size=32,
        load_ms=args.load_ms,
        corrupt_batch=args.corrupt_batch,
        workers=args.workers,
        use_multiprocessing=args.processes,
    )
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data, epochs=args.epochs, verbose=0)
    print("AFTER FIT", flush=True)
