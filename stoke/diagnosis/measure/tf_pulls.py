"""What taking a batch that is already made costs, on a ``tf.data`` pipeline (TensorFlow only).

On TensorFlow the doctor pulls each batch eagerly and times it
(:mod:`stoke.diagnosis.measure.timing`); a pull costs something even when the pipeline's buffer
holds a batch ready: the eager dispatch, and the pipeline's own hand-over. Only the rest is
waiting. Three pipelines are measured by :func:`ready_pull_seconds`:

- the *floor* (``input["tf_pull_floor_s"]``, at the run's first step): a trivial in-memory
  pipeline of the run's batch structure, ``from_tensors(batch).repeat().prefetch(4)``;
- the *run's own pipeline* (the input-alone probe's ``detail["ready_pull_s"]``, mid-run): a
  fresh iterator over the dataset the trainer iterates. Keras' array adapter pipeline
  (a parallel ``map`` of ``gather`` over shuffled indices) hands a ready batch over
  0.09-0.14 ms slower than the floor (measured on 2 loaded cores: 0.38-0.45 ms against
  0.26-0.36 ms), which the doctor counted as waiting: in-memory arrays came out 10-13%
  "partly input-bound" (issue 14). The analysis takes the difference off each timed wait
  (:func:`stoke.diagnosis.judge.analysis.pipeline_handover_s`).
- for a generator or PyDataset (``input["tf_generator_pull_s"]``, at the run's first step,
  :func:`generator_ready_pull_seconds`): Keras' own ``from_generator`` pipeline of the run's
  batch structure, fed an endless generator of one cached batch, pulled back to back (no
  pause): each batch crosses a ``py_function`` (a thread hop, the GIL, NumPy to tensor) on
  the pipeline's thread, work that competes with the step for the GIL and the cores even
  when the batch is ready; back to back, a pull takes what the pipeline needs per batch.
  A pre-made batch still pays it every step; the input-free window does not (issue 14:
  a fixed generator's twin ran 1.36 ms a step, the window 0.98 ms). The analysis keeps the
  difference from the floor in the predicted step
  (:func:`stoke.diagnosis.judge.analysis.generator_handover_s`). And what that pipeline costs
  to start over (``input["tf_generator_restart_s"]``, :func:`generator_restart_seconds`): a
  new iterator's first pull beyond a ready one, which Keras pays at each epoch's first step
  of a ``PyDataset`` read to its end; the analysis counts it as the epoch's work, not
  the input's wait (:func:`stoke.diagnosis.judge.analysis.generator_restart_s`).

And what starting the pipeline over costs (:func:`iterator_start_seconds`, the input-alone
probe's ``detail["iterator_start_s"]``): Keras on TensorFlow makes a new iterator over the
training dataset when an epoch has taken all its batches and again when the next one starts
(``EpochIterator._enumerate_iterator``, Keras 3.15), each time building the whole pipeline
(a ``shuffle`` over file names and a ``py_function`` map: 8-12 ms, twice an epoch; the same
pipeline cached, 0.7 ms). That is the input's time at the epoch's boundary, which a free
input does not pay (:func:`stoke.diagnosis.judge.analysis.epoch_overhead_s_per_step`).

Owns nothing else: when each is measured belongs to the recorder and the probe.
"""

from __future__ import annotations

import statistics
import time

_perf_counter = time.perf_counter

READY_PAUSE_S = 0.0005  # between pulls: the pipeline's buffer refills, the pull finds it ready
WARMUP_PULLS = 3


def ready_pull_seconds(dataset, pulls: int = 25, pause_s: float = READY_PAUSE_S) -> float:
    """The median time of ``pulls`` eager ``next()`` calls on ``dataset`` (a ``tf.data.Dataset``),
    each after a pause of ``pause_s`` that lets its buffers refill (give a slow pipeline
    longer than it takes to make a batch): what taking a ready batch costs.
    A finite dataset is iterated again when it ends (making the iterator is not timed);
    ``StopIteration`` when it yields nothing at all."""
    iterator = iter(dataset)
    times: list[float] = []
    fresh = True
    warm = 0
    while len(times) < pulls:
        started = _perf_counter()
        try:
            next(iterator)
        except StopIteration:
            if fresh:
                raise
            iterator, fresh = iter(dataset), True
            continue
        took = _perf_counter() - started
        fresh = False
        if warm < WARMUP_PULLS:
            warm += 1
        else:
            times.append(took)
        time.sleep(pause_s)
    return statistics.median(times)


def generator_ready_pull_seconds(batch, pulls: int = 50) -> float:
    """:func:`ready_pull_seconds`, back to back, on the pipeline Keras builds on TensorFlow for
    a generator (``GeneratorDataAdapter.get_tf_dataset()``: ``from_generator`` with the output
    signature of the batches, then ``prefetch``), over an endless generator that yields
    ``batch``: what handing a batch over through that pipeline costs per batch, the
    generator's own work aside. Back to back because the pipeline's thread does its work
    while the trainer steps, not inside the pull: a paused pull finds the batch made and
    times only the floor's part (measured on 2 quiet cores: 0.17-0.41 ms paused, 0.23-0.34
    ms back to back, a floor of 0.14 ms, a fixed twin 0.3 ms a step slower than the window)."""
    return ready_pull_seconds(_keras_generator_pipeline(batch), pulls, pause_s=0.0)


def iterator_start_seconds(dataset, tries: int = 3) -> float:
    """The median time of ``tries`` ``iter(dataset)`` calls: what making a new iterator over
    the pipeline costs (no batch is pulled; each iterator is dropped before the next)."""
    times: list[float] = []
    for _ in range(tries):
        started = _perf_counter()
        iterator = iter(dataset)
        times.append(_perf_counter() - started)
        del iterator
    return statistics.median(times)


def _keras_generator_pipeline(batch):
    """The pipeline Keras builds on TensorFlow for a generator
    (``GeneratorDataAdapter.get_tf_dataset()``) over an endless generator that yields
    ``batch``."""
    from keras.src.trainers.data_adapters.generator_data_adapter import GeneratorDataAdapter

    def endless():
        while True:
            yield batch

    return GeneratorDataAdapter(endless()).get_tf_dataset()


def generator_restart_seconds(batch, tries: int = 3) -> float:
    """What Keras' ``from_generator`` pipeline (:func:`generator_ready_pull_seconds`'s) adds to
    the first pull of a new iterator, its generator's own work aside: the median over
    ``tries`` new iterators of taking the first batch less taking the second (both ready: the
    generator yields ``batch``). Making the iterator (``iter()``) is left out: Keras does it in
    the epoch's first step before the pull, outside the doctor's timed wait. Keras pays it in
    each epoch's first pull where it makes a new iterator (a ``PyDataset`` read to its end);
    a fixed or pre-made input pays it too (measured on 2 cores: 3.2 ms to make the iterator,
    7.5 ms for its first batch, 0.5 ms for the next; a ``Sequence`` of 5 batches an epoch
    waited 8.6-9.6 ms at each epoch's first step and 0.05-0.1 ms at the others, and its twin
    with the batches made once ran no faster)."""
    dataset = _keras_generator_pipeline(batch)
    times: list[float] = []
    for _ in range(tries):
        iterator = iter(dataset)
        started = _perf_counter()
        next(iterator)
        first = _perf_counter()
        next(iterator)
        times.append((first - started) - (_perf_counter() - first))
        del iterator
    return max(0.0, statistics.median(times))
