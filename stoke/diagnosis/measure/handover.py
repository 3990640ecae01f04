"""What taking a ready batch in costs on JAX and torch, timed warm: the hand-over.

A script's generator runs on the trainer's thread inside the timed ``next()``: each timed
wait is the generator's own time plus Keras taking its batch in (the data adapter's
conversion; on an accelerator the device copy), one after the other. A fixed or faster
input still pays the second part every step, so the analysis keeps it in the predicted step
(:func:`stoke.diagnosis.judge.analysis.handover_s_per_step`). Read off the run's own steps
(the wait less the generator's time) it is timed right after the generator's work, cold:
issue 14 measured the trainer's own work 2-3x slower right after a 20 ms wait than back to
back (JAX, a tiny model: the doctor predicted x36.6 where the fixed twin ran x87).

:func:`ready_handover_seconds` times it warm, back to back, on the trainer's thread at the
end of the input-free window (:mod:`stoke.diagnosis.measure.input_free`): the backend's own
input path (a fresh ``EpochIterator._get_iterator()``, as the input-alone probe builds it)
over Keras' generator adapter fed an endless generator of one host copy of the run's batch.
The doctor's own wrappers are not on that path: a fixed input does not pay them.

TensorFlow's hand-over (a ``from_generator`` pipeline) is :mod:`stoke.diagnosis.measure.tf_pulls`'.
Owns nothing else.
"""

from __future__ import annotations

import statistics
import time

_perf_counter = time.perf_counter

WARMUP_PULLS = 3


def ready_handover_seconds(epoch_iterator, backend: str, batch, pulls: int = 30) -> float:
    """The median time of ``pulls`` back-to-back ``next()`` calls down the trainer's own input
    path (``epoch_iterator``'s, on ``backend``) over an endless generator of ``batch`` (as a
    host copy: what a generator yields), after ``WARMUP_PULLS`` untimed ones."""
    import numpy as np
    from keras import tree
    from keras.src.trainers.data_adapters.generator_data_adapter import GeneratorDataAdapter

    from stoke.diagnosis.measure.model_probe import fresh_trainer_iterator

    host = tree.map_structure(lambda leaf: None if leaf is None else np.asarray(leaf), batch,
                              none_is_leaf=True)
    if isinstance(host, list):  # torch's DataLoader hands a tuple over as a list
        host = tuple(host)

    def endless():
        while True:
            yield host

    iterator, _how = fresh_trainer_iterator(epoch_iterator, GeneratorDataAdapter(endless()), backend)
    iterator = iter(iterator)
    try:
        for _ in range(WARMUP_PULLS):
            next(iterator)
        times = []
        for _ in range(pulls):
            started = _perf_counter()
            next(iterator)
            times.append(_perf_counter() - started)
        return statistics.median(times)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
