"""A torch user's loader into Keras 3 ``fit`` on the torch backend: ``DataLoader(num_workers=2,
persistent_workers=True, pin_memory=True)``, per-sample NumPy work in ``__getitem__``.
--fixed: the same loader without the per-sample work."""

import os

os.environ["KERAS_BACKEND"] = "torch"

import argparse  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import EpochTimes  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()


class SignalDataset(Dataset):
    def __init__(self, n, heavy=True):
        self.x = np.random.rand(n, 128).astype("float32")
        self.y = np.random.randint(0, 5, n)
        self.heavy = heavy

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if self.heavy:
            for _ in range(60):  # jitter and smoothing, per sample
                x = np.convolve(x + np.random.normal(0, 0.01, x.shape), [0.25, 0.5, 0.25], "same")
            x = x.astype("float32")
        return torch.from_numpy(x), torch.tensor(self.y[i])


if __name__ == "__main__":
    loader = DataLoader(SignalDataset(32 * args.steps_per_epoch, heavy=not args.fixed),
                        batch_size=32, shuffle=True, num_workers=2, persistent_workers=True,
                        pin_memory=torch.cuda.is_available())
    model = keras.Sequential([keras.Input((128,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(5)])
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = EpochTimes(args.steps_per_epoch)
    model.fit(loader, epochs=args.epochs, callbacks=[timer], verbose=0)
    timer.report(fixed=args.fixed, backend=keras.backend.backend())
