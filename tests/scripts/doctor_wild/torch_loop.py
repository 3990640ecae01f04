"""A torch training loop around a Keras model (no ``fit``), as torch users write it, with
``torch.set_num_threads(24)`` copied from a bigger machine (more than this machine's cores
in any case). The doctor measures no step here:
it must still give the static findings and say that custom loops are not measured. No twin."""

import os

os.environ["KERAS_BACKEND"] = "torch"

import argparse  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=16)
args = parser.parse_args()

torch.set_num_threads(max(24, 2 * (os.cpu_count() or 1)))
model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dense(1)])
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = torch.nn.MSELoss()
x = torch.from_numpy(np.random.rand(32 * args.steps_per_epoch, 32).astype("float32"))
y = torch.from_numpy(np.random.rand(len(x), 1).astype("float32"))
for epoch in range(args.epochs):
    for i in range(0, len(x), 32):
        optimizer.zero_grad()
        loss = loss_fn(model(x[i:i + 32]), y[i:i + 32])
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
