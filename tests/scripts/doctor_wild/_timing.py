"""The corpus scripts' own clock: steady step time (epochs after the first), printed as
``KNOWN_RESULT {json}`` (benchmarks/doctor_accuracy.py reads it)."""

import json
import statistics
import time

import keras


class EpochTimes(keras.callbacks.Callback):
    def __init__(self, steps_per_epoch):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.seconds = []
        self.batches_seen = 0  # every on_train_batch_end: the doctor's probes must add none

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.batches_seen += 1

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)

    def report(self, **extra):
        # the median steady epoch: one epoch slowed by something else on a shared machine
        # (steps of a millisecond or two, epochs of a tenth of a second) does not move it
        steady = self.seconds[1:] or self.seconds
        step_s = statistics.median(steady) / self.steps_per_epoch if steady else None
        print("KNOWN_RESULT " + json.dumps({"step_s": step_s, "epoch_s": self.seconds,
                                               "batches_seen": self.batches_seen, **extra}),
              flush=True)
