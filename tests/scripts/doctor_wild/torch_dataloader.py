"""A ``torch.utils.data.DataLoader`` passed straight to ``model.fit`` on the torch backend
(Keras 3 accepts it), the script setting its backend itself; per-sample NumPy work in the
Dataset. --num-workers 0 (the default): the loader runs on the trainer's thread;
--num-workers 2: worker processes (new ones each epoch; with --persistent, kept between
epochs). --fixed: no per-sample work."""

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
parser.add_argument("--steps-per-epoch", type=int, default=16)
parser.add_argument("--num-workers", type=int, default=0)
parser.add_argument("--persistent", action="store_true")
args = parser.parse_args()


class NoisyDataset(Dataset):
    def __init__(self, n):
        self.x = np.random.rand(n, 64).astype("float32")
        self.y = np.random.randint(0, 4, n)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if not args.fixed:
            for _ in range(40):  # per-sample Python work
                x = np.tanh(x + np.random.normal(0, 0.01, x.shape)).astype("float32")
        return torch.from_numpy(x), torch.tensor(self.y[i])


loader = DataLoader(NoisyDataset(32 * args.steps_per_epoch), batch_size=32, shuffle=True,
                    num_workers=args.num_workers,
                    persistent_workers=args.persistent and args.num_workers > 0)
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                          keras.layers.Dense(4)])
model.compile(optimizer="adam", metrics=["accuracy"],
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
timer = EpochTimes(args.steps_per_epoch)
model.fit(loader, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed, num_workers=args.num_workers, persistent=args.persistent)
