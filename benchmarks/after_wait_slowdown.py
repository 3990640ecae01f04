"""How much slower the trainer's own work runs right after a wait than back to back (issue 14).

One JAX ``fit`` of a tiny model fed by a generator that sleeps ``--sleep-ms`` before the
batches of every other block of ``--block`` steps: per step, the fit loop's own time (outside
the train function), the train function less its ``next()``, and the hand-over (``next()``
less the generator's own time), medians over the steps after a sleep and over those with
none. The doctor's input-free window times the train function and the hand-over back to
back and counts the loop at the train function's ratio (stoke/diagnosis/measure/input_free.py).

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu .venv/bin/python benchmarks/after_wait_slowdown.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--sleep-ms", type=float, default=20.0)
parser.add_argument("--block", type=int, default=30)
parser.add_argument("--blocks", type=int, default=20)
args = parser.parse_args()

perf = time.perf_counter
rng = np.random.default_rng(0)
step_no = [0]
generator_s = [0.0]


def sleeping(step: int) -> bool:
    return (step // args.block) % 2 == 1


def batches():
    while True:
        started = perf()
        if sleeping(step_no[0]):
            time.sleep(args.sleep_ms / 1000)
        batch = (rng.normal(size=(32, 16)).astype("float32"),
                 rng.normal(size=(32, 1)).astype("float32"))
        generator_s[0] = perf() - started
        yield batch


class TimedNext:
    def __init__(self, inner):
        self.inner, self.wait_s = inner, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        started = perf()
        batch = next(self.inner)
        self.wait_s = perf() - started
        return batch


model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="binary_crossentropy")
model.make_train_function()
original = model.train_function
wrapped: dict[int, TimedNext] = {}
last_return = [None]
rows: list[tuple[int, float, float, float]] = []


def timed_train_function(*call_args):
    iterator = call_args[-1]
    timed = wrapped.setdefault(id(iterator), TimedNext(iterator))
    called = perf()
    result = original(*call_args[:-1], timed)
    returned = perf()
    if last_return[0] is not None:
        rows.append((step_no[0], called - last_return[0],
                     returned - called - timed.wait_s, timed.wait_s - generator_s[0]))
    last_return[0] = returned
    step_no[0] += 1
    return result


model.train_function = timed_train_function
model.fit(batches(), steps_per_epoch=args.block * args.blocks, epochs=1, verbose=0)
for after_sleep in (True, False):
    kept = [r for r in rows if r[0] >= 2 * args.block and r[0] % args.block >= 3
            and sleeping(r[0]) == after_sleep]
    medians = [statistics.median(r[i] for r in kept) for i in (1, 2, 3)]
    print(f"{'after a sleep' if after_sleep else 'back to back':14s} {len(kept):4d} steps: "
          f"loop {medians[0] * 1e6:7.1f} us  train function {medians[1] * 1e6:7.1f} us  "
          f"hand-over {medians[2] * 1e6:7.1f} us  sum {sum(medians) * 1e6:7.1f} us")
