"""The timed wrappers that sit in the user's Keras run: how a step and its wait are timed.

Owns the stand-ins for the training ``EpochIterator``'s batches (:class:`_TimedBatches`) and for
``model.train_function`` (:class:`TimedTrainFunction`), how the wait is measured on each
backend (:func:`wait_method`, :func:`tf_pull_outside_graph`), the per-backend device sync, the
TensorFlow ready-pull calibration, the script's generator as the doctor feeds it to Keras
(:class:`UserGenerator`) and its tally (:class:`GeneratorTally`), the batches a probe took from
training's own iterator and keeps for it (:class:`TrainingPulls`), and the hooks' own untimed
cost. They measure and feed the :class:`~stoke.diagnosis.measure.recorder.Recorder`, which decides.

How a step is timed. A step is one call of Keras' train function; it ends when the call
returns; now and then (see :meth:`~stoke.diagnosis.measure.recorder.Recorder.sync_due`) after the
device finished (``synced=True``).
``step_s`` is the time from the previous step's end; the first step of each epoch counts from
the moment the epoch's batches were asked for, so validation and epoch-end callbacks are not
inside any step. ``wait_s`` is the time the trainer was blocked pulling its batch:

- JAX: ``next()`` runs on the trainer's thread inside the train function; the iterator the
  training ``EpochIterator`` hands over is wrapped and each ``next()`` is timed (this includes
  Keras' one-batch-ahead ``device_put`` on accelerators).
- torch: ``EpochIterator.__next__`` pulls from a worker-less ``DataLoader`` (Keras converts each
  batch to a tensor on the device there, synchronously); the same wrapper times it.
- TensorFlow: Keras pulls inside a ``tf.function``, out of Python's sight. With
  ``steps_per_execution == 1`` and no distribution strategy the doctor pulls the batch itself,
  eagerly (timed), and hands it to Keras' own step function (the path Keras takes for Python
  iterators): same step, one graph boundary moved. An eager ``next()`` costs ~0.2-0.8 ms of
  dispatch even when a batch is waiting; that cost, measured once on a ready in-memory
  dataset of the same structure (``input["tf_pull_floor_s"]``), is taken off each wait.
  Otherwise (``steps_per_execution > 1``, a strategy) the pull stays in the graph: the steps
  are marked ``wait_timed=False`` and their wait is estimated after the run as step time minus
  the model-alone step time, into ``wait_estimated_s`` (``input["wait_method"]`` says which).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stoke.diagnosis.measure.facts import keras_backend

if TYPE_CHECKING:
    from stoke.diagnosis.measure.input_free import InputFreeWindow
    from stoke.diagnosis.measure.recorder import Recorder

_perf_counter = time.perf_counter


def _no_iterator() -> None:
    return None


class TrainingPulls:
    """Batches the input-alone probe took from the iterator training reads, handed to the
    next steps in order, for an input that a second iterator would change: a ``tf.data``
    pipeline that reshuffles each epoch from a fixed seed (``input["tf_data_seeded_reshuffle"]``:
    every iterator made over it draws the next order, so a probe's fresh iterator made the
    epochs after it train on other orders, and a seeded run on other weights). The trainer's
    side calls :meth:`next_for_training` with the iterator it reads; the probe
    :meth:`take_for_probe`."""

    def __init__(self) -> None:
        # the iterator training reads now, weakly (an epoch's iterator, with its workers, is
        # not kept alive past its epoch)
        self._iterator_ref: Callable[[], Any] = _no_iterator
        self.kept: deque = deque()

    @property
    def iterator(self):
        """The iterator training reads now (None: none seen yet, or no longer alive)."""
        return self._iterator_ref()

    def next_for_training(self, iterator):
        """The next batch for training from ``iterator``: a kept one first. Kept batches of
        an iterator training no longer reads (a new epoch's, a new fit's) are dropped."""
        if iterator is not self._iterator_ref():
            self.kept.clear()
            try:
                self._iterator_ref = weakref.ref(iterator)
            except TypeError:  # not weakly referenceable: held until the fit ends
                self._iterator_ref = lambda: iterator
        if self.kept:
            return self.kept.popleft()
        return next(iterator)

    def forget(self) -> None:
        """The fit is over: no iterator, no kept batch."""
        self._iterator_ref = _no_iterator
        self.kept.clear()

    def take_for_probe(self):
        """One batch from training's iterator, kept for training."""
        batch = next(self.iterator)
        self.kept.append(batch)
        return batch


class _TimedBatches:
    """The trainer's batch iterator with each ``next()`` timed into the recorder."""

    __slots__ = ("_inner", "_recorder")

    def __init__(self, inner, recorder: Recorder):
        self._inner = inner
        self._recorder = recorder

    def __iter__(self):
        return self

    def __next__(self):
        recorder = self._recorder
        if not recorder.measuring:
            return next(self._inner)
        window = recorder.input_free
        if window is not None:
            return window.batch  # the input-free window: the input costs nothing
        started = _perf_counter()
        batch = recorder.training_pulls.next_for_training(self._inner)
        arrived = _perf_counter()
        recorder.note_batch(batch, arrived - started)
        recorder.add_overhead(_perf_counter() - arrived)
        return batch


class _TimedBatchIterable:
    """What the wrapped ``EpochIterator._get_iterator`` returns: Keras calls ``iter()`` on it."""

    __slots__ = ("_inner", "_recorder")

    def __init__(self, inner, recorder: Recorder):
        self._inner = inner
        self._recorder = recorder

    def __iter__(self):
        return _TimedBatches(iter(self._inner), self._recorder)


# what wrap_epoch_iterator sets on the epoch iterator's instance (unwrap_epoch_iterator removes)
EPOCH_ITERATOR_WRAPPERS = ("_get_iterator", "_enumerate_iterator", "_stoke_doctor_recorder")


def unwrap_epoch_iterator(epoch_iterator) -> None:
    """Take the doctor's wrappers off a training EpochIterator once its ``fit`` is over. They
    hold the iterator in a reference cycle (a closure over its own bound method): left on,
    it outlived the ``fit``, and with it the epoch's torch ``DataLoader`` iterator and its
    worker processes, until the collection at the script's end, whose shut-down of them
    waited ~5 s a worker (a DataLoader with ``num_workers=2``: 11.4 s past the script's
    end, the run under the doctor 2.3-2.8x the plain one)."""
    if epoch_iterator is None:
        return
    for name in EPOCH_ITERATOR_WRAPPERS:
        epoch_iterator.__dict__.pop(name, None)
    adapter = getattr(epoch_iterator, "data_adapter", None)
    if adapter is not None and getattr(adapter.__dict__.get("on_epoch_end"), "__name__", "") == (
            "timed_on_epoch_end"):
        del adapter.__dict__["on_epoch_end"]


def wrap_epoch_iterator(epoch_iterator, recorder: Recorder) -> None:
    """Time the training EpochIterator's batches (JAX, torch) and mark epoch starts."""
    if getattr(epoch_iterator, "_stoke_doctor_recorder", None) is recorder:
        return
    epoch_iterator._stoke_doctor_recorder = recorder
    original_enumerate = epoch_iterator._enumerate_iterator

    def enumerate_marking_epochs():
        recorder.begin_epoch()
        yield from original_enumerate()

    epoch_iterator._enumerate_iterator = enumerate_marking_epochs
    if recorder.backend == "tensorflow":
        return  # TensorFlow pulls inside the train function: see TimedTrainFunction.
    _time_worker_drain(epoch_iterator, recorder)
    original_get_iterator = epoch_iterator._get_iterator

    def timed_get_iterator():
        return _TimedBatchIterable(original_get_iterator(), recorder)

    epoch_iterator._get_iterator = timed_get_iterator


# Keras' OrderedEnqueuer.stop() polls its queue of batches in flight with this timeout, and
# blocks that long once it is empty, at every epoch's end, however fast the input (Keras 3.15)
ENQUEUER_EMPTY_POLL_S = 0.1


def _time_worker_drain(epoch_iterator, recorder: Recorder) -> None:
    """A PyDataset with workers (Keras' ``OrderedEnqueuer``): at each epoch's end, after the
    last step and before the next epoch restarts the step clock, Keras' ``stop()`` waits for
    every batch in flight (up to ``max_queue_size``, made for the next epoch) to finish. That
    is the input's time the trainer waits for, outside every step. Carried to the next step
    as its wait, less the poll a fast input pays too (``ENQUEUER_EMPTY_POLL_S``). Timed on
    JAX, 2 threads doing NumPy (the wild corpus' pydataset_threads.py), load ~15: 0.100-0.135
    s a drain, of which the batches in flight 0-35 ms, against ~1 s epochs of 20 steps."""
    adapter = getattr(epoch_iterator, "data_adapter", None)
    if adapter is None or getattr(adapter, "enqueuer", None) is None:
        return
    original_end = adapter.on_epoch_end

    def timed_on_epoch_end():
        started = _perf_counter()
        try:
            return original_end()
        finally:
            recorder.note_epoch_end_wait(_perf_counter() - started - ENQUEUER_EMPTY_POLL_S)

    adapter.on_epoch_end = timed_on_epoch_end


class TimedTrainFunction:
    """Stands in for ``model.train_function``: times the call, syncs the device on sampled
    steps, and (TensorFlow) pulls the batch outside the graph. ``original`` is Keras' own."""

    def __init__(self, original, recorder: Recorder, model):
        self.original = original
        self.recorder = recorder
        self.model = model
        self.backend = keras_backend()
        self._sync = _device_sync_function(self.backend, model)
        self._tf_iterator_types: tuple = ()
        # TensorFlow: the element specs Keras' step was traced for before the doctor fed it
        # the batches it pulled (stoke.diagnosis.measure.tf_step_trace)
        self._traced_specs: list = []
        if self.backend == "tensorflow":
            import tensorflow as tf

            self._tf_iterator_types = (tf.data.Iterator, tf.distribute.DistributedIterator)

    def __call__(self, *args):
        recorder = self.recorder
        if not recorder.measuring or recorder.in_train_on_batch:
            return self.original(*args)
        t_enter = _perf_counter()
        not_overhead_s = 0.0  # the pull itself and a one-time calibration
        if recorder.tf_pull_outside_graph and len(args) == 1:
            iterator = args[0]
            if isinstance(iterator, self._tf_iterator_types):
                if recorder.in_graph_step_due():  # Keras' own pull, timed (.in_graph_steps)
                    return recorder.run_in_graph_step(self.original, iterator, self._sync)
                pull_started = _perf_counter()
                try:
                    data = recorder.training_pulls.next_for_training(iterator)
                except StopIteration:
                    # the data ran out: Keras' own step meets the end, as without the doctor
                    # (its graph still runs what needs no batch: the optimizer's step count,
                    # which Adam's next steps read; the red-team's s04_padded_batch.py ended
                    # with 252 iterations under the doctor against 256 without)
                    return self.original(*args)
                pulled = _perf_counter()
                if recorder.tf_pull_floor_s is None:
                    recorder.calibrate_tf_pull(data)
                # An eager get_next costs its dispatch even when a batch is ready; Keras'
                # in-graph pull costs about as much inside its step. Only the rest is waiting.
                recorder.note_batch(data, max(0.0, pulled - pull_started - recorder.tf_pull_floor_s))
                # the step traced for the dataset's spec once, at the fit's first step (a
                # warm-up step, which traces anyway): the step's time, not the doctor's
                self._trace_for(iterator)
                not_overhead_s = _perf_counter() - pull_started  # the calibration included
                args = (iter((data,)),)
        wait_before_call = recorder.pending_wait_s()
        watch = recorder.compile_watch
        if watch is not None:
            watch.start()
        t_call = _perf_counter()
        try:
            if recorder.host_code_watch_due(self.model):
                result = self._watched_call(args)
            else:
                result = self.original(*args)
        finally:
            compiled = watch.stop() if watch is not None else (0.0, 0)
        t_returned = _perf_counter()
        synced = recorder.sync_due()
        if synced:
            self._sync(result)
        t_end = _perf_counter()
        # the step's own work: the call and its sync, less a wait inside it (JAX pulls there)
        call_s = t_end - t_call - (recorder.pending_wait_s() - wait_before_call)
        recorder.end_step(t_end, synced, t_end - t_returned, call_s=call_s,
                          compiled=compiled)
        recorder.add_overhead((t_call - t_enter - not_overhead_s) + (_perf_counter() - t_end))
        try:
            window = recorder.after_step(self, args, result)
        except BaseException:
            self._keep_step_state(result)
            raise
        if window is not None:
            result = self._run_input_free(window, args, result)
        return result

    def _trace_for(self, iterator) -> None:
        """TensorFlow: Keras' step traced for ``iterator``'s element spec before it is fed a
        batch the doctor pulled (:func:`trace_for_spec`), once per spec."""
        from stoke.diagnosis.measure.tf_step_trace import trace_for_spec

        spec = getattr(iterator, "element_spec", None)
        if spec is None or any(spec == traced for traced in self._traced_specs):
            return
        self._traced_specs.append(spec)
        trace_for_spec(self.original, spec)

    def _keep_step_state(self, result) -> None:
        """The doctor's work after a step raised (Ctrl-C during a probe, the step limit): on
        JAX the step's new state lives only in ``result`` (Keras donated the one before it),
        so the model gets it, as Keras' own ``fit`` would have once the step returned; its
        ``finally`` syncs it into the variables. Without it, a user's ``except
        KeyboardInterrupt: model.save(...)`` met deleted arrays (the red-team's s01_sigint.py,
        Ctrl-C during the probes: "Array has been deleted")."""
        if self.backend == "jax":
            from stoke.diagnosis.measure.training_state import hand_jax_state_to_model

            hand_jax_state_to_model(self.model, result)

    def sync(self, result) -> None:
        self._sync(result)

    def _watched_call(self, args: tuple):
        """The train function with the host-code watch on (stoke.diagnosis.measure.host_code), for one
        warm-up step: its time is left out of the steady state like the rest of the warm-up."""
        from stoke.diagnosis.measure.host_code import watch_host_code

        with watch_host_code(self.model, self.backend) as seen:
            result = self.original(*args)
        self.recorder.note_host_code(seen.found, seen.stand_ins, seen.classes)
        return result

    def _run_input_free(self, window: InputFreeWindow, args: tuple, result):
        """The input-free window, right here, inside this step's call: the train function again
        on the step's own batch, back to back, out of sight of the callbacks, the progress bar
        and the history (they only ever see this step's own result). The training state is
        put back afterwards; the step returns its own logs."""
        recorder = self.recorder
        jax_iterator = args[1] if self.backend == "jax" and len(args) == 2 else None
        current = result
        try:
            while True:
                if jax_iterator is not None:
                    call_args = (current[1], jax_iterator)  # the state the last call returned
                elif self.backend == "tensorflow":
                    call_args = (iter((window.batch,)),)  # pulled outside the graph: no pull
                else:
                    call_args = args  # torch: the step's own batch again
                current, finished = window.call(self.original, self._sync, call_args)
                if finished:
                    break
        except BaseException:
            window.abandon(self.model)
            recorder.end_input_free(None, "a step of the window raised")
            raise
        restored = window.restored_result(result, current)
        recorder.end_input_free(window)
        try:
            recorder.probes_and_limit(self, args, restored)
        except BaseException:
            self._keep_step_state(restored)
            raise
        return restored


def tf_pull_outside_graph(model) -> bool:
    """TensorFlow: whether the doctor can pull each batch itself, eagerly and timed, and hand
    it to Keras' step function: with ``steps_per_execution == 1`` and no distribution
    strategy (else the pull stays inside the compiled loop, out of Python's sight)."""
    return int(getattr(model, "steps_per_execution", 1) or 1) == 1 and tf_default_strategy(model)


def tf_default_strategy(model) -> bool:
    """TensorFlow: whether ``model`` trains under the default strategy (no distribution: its
    batches are plain tensors, not per-replica values)."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy is None or "Default" in type(strategy).__name__


def wait_method(backend: str, pull_outside_graph: bool) -> tuple[str, str]:
    """How this run's wait is measured: (``input["wait_method"]``, ``input["wait_note"]``)."""
    if backend == "tensorflow":
        if pull_outside_graph:
            return (
                "timed-next-outside-graph",
                "TensorFlow pulls batches inside a tf.function; the doctor pulls each batch "
                "eagerly itself (timed) and hands it to Keras' step function (the path "
                "Keras takes for Python iterators). An eager pull costs its dispatch even "
                "when a batch is ready (tf_pull_floor_s, measured at the start): that is "
                "taken off each wait, so only time the prefetch buffer was empty counts.",
            )
        return (
            "estimated-from-model-alone",
            "TensorFlow pulls batches inside the compiled loop (steps_per_execution > 1 or "
            "a distribution strategy), invisible to Python: the wait is not timed but "
            "estimated as the step time minus the model-alone step time "
            "(wait_estimated_s), and is not known without that probe.",
        )
    if backend == "jax":
        return (
            "timed-next",
            "Each next() on the training iterator is timed on the trainer's thread "
            "(includes Keras' one-batch-ahead device_put). JAX dispatch is asynchronous: "
            "the device may still run the previous step while the trainer waits.",
        )
    return (
        "timed-next",
        "Each next() on the training iterator is timed on the trainer's thread "
        "(includes Keras' conversion of the batch to a tensor on the device).",
    )


def _device_sync_function(backend: str, model):
    """A function that blocks until the device finished the step that produced ``result``."""
    if backend == "jax":
        import jax

        def sync_jax(result):
            jax.block_until_ready(result)

        return sync_jax
    if backend == "torch":
        import torch

        if torch.cuda.is_available():

            def sync_torch(result):
                torch.cuda.synchronize()

            return sync_torch
        return lambda result: None
    if backend == "tensorflow":
        from keras import tree

        def sync_tensorflow(result):
            for value in tree.flatten(result):
                numpy = getattr(value, "numpy", None)
                if numpy is not None:
                    numpy()

        return sync_tensorflow
    return lambda result: None


def tf_ready_pull_seconds(batch, pulls: int = 25) -> float:
    """What an eager ``next()`` on a ``tf.data`` iterator costs when a batch of this structure
    is already waiting in its buffer: the median of ``pulls`` pulls from an in-memory dataset
    (the TensorFlow pull floor, taken off each measured wait; see
    :mod:`stoke.diagnosis.measure.tf_pulls`)."""
    import tensorflow as tf

    from stoke.diagnosis.measure.tf_pulls import ready_pull_seconds

    return ready_pull_seconds(tf.data.Dataset.from_tensors(batch).repeat().prefetch(4), pulls)


def untimed_cost_per_step_s(repeats: int = 2000) -> float:
    """Seconds per step the doctor adds outside its timed spans (added to its overhead at the
    end of a run). What a step's hooks spend outside their own timed spans: about six perf_counter()
    calls and two Python calls (the wrapper and the iterator's __next__)."""

    def noop():
        return None

    started = _perf_counter()
    for _ in range(repeats):
        _perf_counter()
        _perf_counter()
        _perf_counter()
        noop()
    per_three = (_perf_counter() - started) / repeats
    return 2 * per_three


class GeneratorTally:
    """What a user's generator cost while training was measured: seconds and batches, and
    which threads asked for them (the trainer's own, or a tf.data thread). Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seconds = 0.0
        self._batches = 0
        self._threads: set[int] = set()

    def note(self, seconds: float) -> None:
        """The calling thread waited ``seconds`` for one batch of the generator."""
        with self._lock:
            self._seconds += seconds
            self._batches += 1
            if len(self._threads) < 8:
                self._threads.add(threading.get_ident())

    def input_facts(self, trainer_thread: int | None, producer: str | None) -> dict:
        """The input facts the tally adds to ``record.input`` (none when no batch was made):
        ``generator_s_per_batch``, ``generator_batches``, and, when the trainer's thread is
        known, ``main_thread`` and ``producer`` (``producer``: what the facts said so far)."""
        with self._lock:
            if not self._batches:
                return {}
            facts: dict = {
                "generator_s_per_batch": self._seconds / self._batches,
                "generator_batches": self._batches,
            }
            if trainer_thread is not None and self._threads:
                on_trainer = trainer_thread in self._threads
                facts["main_thread"] = on_trainer
                if on_trainer:
                    facts["producer"] = "trainer-thread"
                elif producer == "trainer-thread":
                    facts["producer"] = "tf.data-thread"
            return facts


# The batches the input-alone probe may keep for training, at most (then it stops pulling).
KEPT_BATCHES_MAX_BYTES = 256 * 2**20


class UserGenerator:
    """The script's own Python generator, as the doctor hands it to Keras.

    :meth:`batches` is what ``fit`` iterates: each ``next()`` on the script's generator timed
    (:meth:`~stoke.diagnosis.measure.recorder.Recorder.note_generator_batch`). The input-alone
    probe pulls through :meth:`take_for_probe`, holding :attr:`lock`: a generator cannot be
    rewound, so the batches it takes are kept and :meth:`batches` hands them to training
    first, in order. The probe changes neither what the run trains on nor how many steps it
    gets (a finite generator would otherwise run out early and end ``fit`` before its time).
    The steps fed a kept batch did not wait for it: the recorder leaves them out of the
    numbers (:meth:`~stoke.diagnosis.measure.recorder.Recorder.note_kept_batch`).
    Thread-safe: on TensorFlow a tf.data thread pulls.
    """

    def __init__(self, generator, recorder: Recorder):
        self.generator = generator
        self.lock = threading.Lock()  # held by the probe for its whole run
        self._recorder = recorder
        self._kept: deque = deque()
        self._kept_bytes = 0

    def batches(self):
        """Yield the kept batches, then the generator's, each ``next()`` timed. A real
        generator, because Keras accepts only ``types.GeneratorType``."""
        recorder = self._recorder
        while True:
            started = _perf_counter()
            with self.lock:
                kept = bool(self._kept)
                if kept:
                    item = self._kept.popleft()
                    if not self._kept:
                        self._kept_bytes = 0
                else:
                    try:
                        item = next(self.generator)
                    except StopIteration:
                        return
            if kept:
                recorder.note_kept_batch()
            else:
                recorder.note_generator_batch(_perf_counter() - started)
            yield item

    def take_for_probe(self):
        """``next()`` on the script's generator for the input-alone probe (which holds
        :attr:`lock`); the batch is kept for training."""
        item = next(self.generator)
        self._kept.append(item)
        self._kept_bytes += _tree_nbytes(item)
        return item

    def kept_full(self) -> bool:
        """The kept batches reached ``KEPT_BATCHES_MAX_BYTES``: the probe stops pulling."""
        return self._kept_bytes >= KEPT_BATCHES_MAX_BYTES

    @property
    def kept_batches(self) -> int:
        return len(self._kept)


def _tree_nbytes(item) -> int:
    """Bytes of the arrays in a batch (tuples, lists, dicts of arrays; others count 0)."""
    if isinstance(item, tuple | list):
        return sum(_tree_nbytes(part) for part in item)
    if isinstance(item, dict):
        return sum(_tree_nbytes(part) for part in item.values())
    nbytes = getattr(item, "nbytes", 0)
    return nbytes if isinstance(nbytes, int) else 0
