"""What ``fit``'s validation costs: the ``evaluate`` calls a measured ``fit`` makes at its
epochs' ends, and the time spent inside the script's own validation generator.

The training steps never wait for validation, so the step clock does not see it; but the user
pays it every epoch, and a slow ``validation_data`` (a Python generator decoding images) can
take longer than the epoch's training. :class:`ValidationTally` collects the seconds;
:func:`timed_validation_generator` is the script's generator as the doctor hands it to Keras.
The facts land in ``record.input`` (``validation_*``), and
:func:`stoke.diagnosis.judge.findings.slow_validation` reads them.
"""

from __future__ import annotations

import threading
import time
import types

_perf_counter = time.perf_counter


class ValidationTally:
    """Seconds of each ``evaluate`` call inside a measured ``fit``, and of the user's
    validation generator (summed over the batches it made). Thread-safe: Keras runs a
    generator on a tf.data thread on TensorFlow."""

    def __init__(self):
        self._lock = threading.Lock()
        self._calls: list[float] = []
        self._input_s = 0.0
        self._input_batches = 0
        self.kind: str | None = None

    def note_call(self, seconds: float) -> None:
        with self._lock:
            self._calls.append(seconds)

    def note_batch(self, seconds: float) -> None:
        with self._lock:
            self._input_s += seconds
            self._input_batches += 1

    def input_facts(self) -> dict:
        """The ``validation_*`` facts for ``record.input`` (none when fit did not validate)."""
        with self._lock:
            if not self._calls:
                return {}
            facts: dict = {"validation_kind": self.kind, "validation_call_s": list(self._calls)}
            if self._input_batches:
                facts["validation_input_s"] = self._input_s
                facts["validation_input_batches"] = self._input_batches
            return facts


def validation_kind(validation_data) -> str | None:
    """The kind of ``fit``'s ``validation_data``, in the words of ``record.input.kind``."""
    if validation_data is None:
        return None
    if isinstance(validation_data, types.GeneratorType):
        return "generator"
    if isinstance(validation_data, (tuple, list)):
        return "arrays"
    module = type(validation_data).__module__ or ""
    if module.startswith("tensorflow"):
        return "tf.data"
    if module.startswith("torch"):
        return "torch_dataloader"
    return "pydataset" if hasattr(validation_data, "__getitem__") else "unknown"


def timed_validation_generator(generator, tally: ValidationTally):
    """The script's validation generator with each ``next()`` timed into ``tally``. A real
    generator, because Keras accepts only ``types.GeneratorType``."""
    while True:
        started = _perf_counter()
        try:
            item = next(generator)
        except StopIteration:
            return
        tally.note_batch(_perf_counter() - started)
        yield item
