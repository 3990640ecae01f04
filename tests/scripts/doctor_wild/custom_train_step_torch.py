"""keras.io "Customizing what happens in fit() with PyTorch": the script sets
KERAS_BACKEND=torch itself and overrides ``train_step(self, data)`` (``self.zero_grad()``,
``loss.backward()``, ``self.optimizer.apply(gradients, trainable_weights)`` under
``torch.no_grad()``, metrics updated by hand). Fed by a ``torch.utils.data.DataLoader``
(num_workers=0) whose Dataset decodes each sample in Python. --fixed: one batch, decoded once,
handed over again each step (the input made free; the same model and train_step)."""

import os

os.environ["KERAS_BACKEND"] = "torch"

import argparse  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import EpochTimes  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--decode-ms", type=float, default=1.0)
args = parser.parse_args()
BATCH = 32
IMAGE = 32


class ImageFiles(Dataset):
    def __init__(self, n):
        self.paths = [f"data/train/{i:05d}.png" for i in range(n)]
        self.labels = np.random.randint(0, 10, n)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        time.sleep(args.decode_ms / 1000)  # read and decode the file
        image = np.random.randint(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
        return torch.from_numpy((image / 255.0).astype("float32")), int(self.labels[i])


class OneBatch(Dataset):
    """--fixed: the first batch's samples, decoded once, served again."""

    def __init__(self, dataset, n):
        self.samples = [dataset[i] for i in range(BATCH)]
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.samples[i % BATCH]


class CustomModel(keras.Model):
    def train_step(self, data):
        x, y = data
        self.zero_grad()
        y_pred = self(x, training=True)
        loss = self.compute_loss(y=y, y_pred=y_pred)
        loss.backward()
        trainable_weights = [v for v in self.trainable_weights]
        gradients = [v.value.grad for v in trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


n = BATCH * args.steps_per_epoch
data = ImageFiles(n)
if args.fixed:
    data = OneBatch(data, n)
loader = DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=0)

inputs = keras.Input((IMAGE, IMAGE, 3))
x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(10)(x)
model = CustomModel(inputs, outputs)
model.compile(optimizer="adam",
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
model.fit(loader, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed, backend=keras.backend.backend(),
             optimizer_iterations=int(model.optimizer.iterations.numpy()))
