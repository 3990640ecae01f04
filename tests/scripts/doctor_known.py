"""A training script with a known answer for the doctor: a generator whose per-batch cost is
known (it sleeps ``--load-ms``), feeding a model whose cost is set by ``--width``/``--depth``.

``--cached`` removes the input cost: the generator yields one batch made in advance, no sleep
(on JAX already on the device: see ``cached_batch``).
The speedup measured between a normal run and a ``--cached`` run is what the doctor's
predicted speedup should match. The script times its own steady state (epochs after the first,
wall time per step, device synchronised at each epoch's end by Keras' logs), and what making a
batch took its generator (``input_s_per_batch``: the input's own cost in this run, whatever the
load), and prints them on a line ``KNOWN_RESULT {json}``.

Used by benchmarks/doctor_accuracy.py, benchmarks/doctor_overhead.py and
tests/backends/test_doctor_accuracy.py.
"""

import argparse
import json
import time

import keras
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--load-ms", type=float, default=20.0, help="input cost per batch (sleep)")
parser.add_argument("--cached", action="store_true", help="remove the input cost")
parser.add_argument("--width", type=int, default=32)
parser.add_argument("--depth", type=int, default=1)
parser.add_argument("--features", type=int, default=16)
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--steps-per-epoch", type=int, default=40)
parser.add_argument("--batch-size", type=int, default=32)
args = parser.parse_args()


def make_batch(rng):
    features = rng.normal(size=(args.batch_size, args.features)).astype("float32")
    labels = (features.sum(axis=1, keepdims=True) > 0).astype("float32")
    return features, labels


def cached_batch(rng):
    """The input made free: one batch made in advance, where the trainer's iterator would
    hand it over. On JAX that is on the device: Keras' JAX iterator copies each batch there,
    and that copy is inside what the doctor times as the wait (on torch and TensorFlow the
    copy happens inside the step, so the batch stays on the host)."""
    batch = make_batch(rng)
    if keras.backend.backend() == "jax":
        import jax

        batch = jax.device_put(batch)
    return batch


# what making the batches took, measured by the generator itself: [seconds, batches]
made = [0.0, 0]


def batches():
    rng = np.random.default_rng(0)
    if args.cached:
        batch = cached_batch(rng)
        while True:
            yield batch
    while True:
        started = time.perf_counter()
        if args.load_ms > 0:
            time.sleep(args.load_ms / 1000)  # reading and decoding files
        batch = make_batch(rng)
        made[0] += time.perf_counter() - started
        made[1] += 1
        yield batch


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


layers = [keras.Input((args.features,))]
layers += [keras.layers.Dense(args.width, activation="relu") for _ in range(args.depth)]
layers += [keras.layers.Dense(1)]
model = keras.Sequential(layers)
model.compile(optimizer="adam", loss="binary_crossentropy")
timer = EpochTimes()
model.fit(
    batches(),
    epochs=args.epochs,
    steps_per_epoch=args.steps_per_epoch,
    verbose=0,
    callbacks=[timer],
)
steady = timer.seconds[1:] or timer.seconds
step_s = sum(steady) / (len(steady) * args.steps_per_epoch)
result = {
    "backend": keras.backend.backend(),
    "step_s": step_s,
    "epoch_s": timer.seconds,
    "cached": args.cached,
    "load_ms": args.load_ms,
    # the input's own cost per batch in this run (0 with --cached: nothing is made)
    "input_s_per_batch": made[0] / made[1] if made[1] else 0.0,
}
print("KNOWN_RESULT " + json.dumps(result), flush=True)
