"""A script that calls ``fit`` more than once, as users write it: pretrain with one batch size,
then fine-tune with another (``--mode finetune``), or the same ``fit`` in a loop
(``--mode loop``). The generator loads (sleeps) ``--load-ms`` per batch, so part of each step
waits for input. Used by tests/backends/ doctor tests: the report must name each fit's batch
size and steps, never a mean over fits."""

import argparse
import time

import keras
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--mode", choices=("finetune", "loop"), default="finetune")
parser.add_argument("--load-ms", type=float, default=5.0)
parser.add_argument("--pretrain-load-ms", type=float, default=None,
                    help="finetune: the pretraining input's load per batch (default: --load-ms)")
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()


def batches(batch_size, load_ms=None):
    load_ms = args.load_ms if load_ms is None else load_ms
    rng = np.random.default_rng(0)
    while True:
        time.sleep(load_ms / 1000)  # reading and decoding files
        features = rng.normal(size=(batch_size, 16)).astype("float32")
        labels = (features.sum(axis=1, keepdims=True) > 0).astype("float32")
        yield features, labels


model = keras.Sequential(
    [keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)]
)
model.compile(optimizer="adam", loss="binary_crossentropy")
if args.mode == "finetune":
    model.fit(batches(16, args.pretrain_load_ms), epochs=2, steps_per_epoch=args.steps_per_epoch, verbose=0)
    model.fit(batches(4), epochs=1, steps_per_epoch=args.steps_per_epoch, verbose=0)
else:
    for _ in range(4):
        model.fit(batches(8), epochs=1, steps_per_epoch=args.steps_per_epoch, verbose=0)
print("AFTER FIT", flush=True)
