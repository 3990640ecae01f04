"""The corpus scripts' own clock: steady step time (epochs after the first), printed as
``KNOWN_RESULT {json}`` (benchmarks/doctor_accuracy.py reads it)."""

import json
import statistics
import threading
import time

import keras


class EpochTimes(keras.callbacks.Callback):
    """``async_batch_end``: count the batches as a callback Keras may call from its thread
    pool (``async_safe``), so that fit hands each step's batch-end to that pool on JAX and
    torch, as it does in a script with no per-batch callback; else fit calls every batch-end
    on the trainer's thread (a callback overriding ``on_train_batch_end``)."""

    def __init__(self, steps_per_epoch, async_batch_end=False):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.seconds = []
        self.batches_seen = 0  # every on_train_batch_end: the doctor's probes must add none
        self.async_safe = async_batch_end
        self._counting = threading.Lock()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        with self._counting:
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
