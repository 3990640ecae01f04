"""The two bounding probes: the input pipeline alone, and the model alone.

Run once, in the middle of a measured run (after N steps), while the trainer is paused, by
:class:`~stoke.diagnosis.measure.probe_schedule.ProbeSchedule`, which gives each its seconds
from the run's probe budget (:func:`fit_probes`, :func:`train_on_batch_probes` say which probes
a path runs):

- **input alone** iterates the user's own data object for a few seconds with no model, the way
  the backend's trainer would (``get_jax_iterator``, ``get_torch_dataloader``,
  ``get_tf_dataset``; ``next()`` on a generator) and reports samples/s: how fast the input could
  feed if the model cost nothing; and beside that wall time, the CPU seconds the pulls cost this
  process and the worker processes they ran in (``cpu_s``, ``cpu_s_per_sample``): what the input
  takes from the cores, which a worker sleeping on I/O does not.
- **model alone** repeats Keras' compiled train step on one batch already on the device (no
  input pipeline, no host-to-device copy) and reports samples/s: how fast the model could train
  if the input cost nothing (the headspace).

With the measured step time they bound the answer: step ≈ max(model, input) + overhead, and
the speedup from fixing the input is measured, not guessed. Judging is left to the analysis.

What the probes do to the user's run, on purpose and documented in each result's ``detail``:
the model-alone probe trains on one batch repeatedly, so it works on a *copy* of the training
state (JAX) or snapshots every model, optimizer and metric variable and restores it afterwards
(TensorFlow, torch): the weights the run continues with are the ones it had. The input-alone
probe on a Python generator takes its batches from the user's generator (a generator cannot be
rewound): they are kept and handed to training next, in order
(:class:`~stoke.diagnosis.measure.timing.UserGenerator`), so training gets every batch the
script makes, as many steps as without the doctor. Index-based inputs (arrays, PyDataset, tf.data,
DataLoader) get a fresh iterator and lose nothing. A ``next()`` that blocks forever in user code
blocks the probe as it would block Keras.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stoke.diagnosis.measure.probe_schedule import Probe, ProbeNotRun
from stoke.diagnosis.measure.training_state import (
    copy_jax_state,
    snapshot_global_random,
    snapshot_variables,
)
from stoke.diagnosis.record import ProbeResult

_perf_counter = time.perf_counter

MAX_INPUT_BATCHES = 5_000
MAX_MODEL_STEPS = 2_000
MIN_MODEL_STEPS = 3


def fit_probes(
    backend: str,
    timed_function,
    result: Any,
    batch: Any,
    fit,
    input_kind: str | None,
    run_ends_after_probes: bool,
    step_s: float,
    pull_s: float,
    batches_left: int | None = None,
    training_pulls=None,
) -> list[Probe]:
    """The two probes of a measured ``fit``, in the order they run: the model alone on
    ``batch`` (the probe step's, kept by the schedule; on TensorFlow pulling inside the graph,
    one taken beside training: :func:`tf_batch_beside_training`), then the input alone. ``step_s`` and
    ``pull_s``: what one step and one pull are expected to cost (the run's own steps).
    ``batches_left``: the batches the epoch in progress has still to train on (None: not
    known), which a script's generator may give the input-alone probe at most.
    ``training_pulls``: the run's :class:`~stoke.diagnosis.measure.timing.TrainingPulls`
    when its input must not be iterated a second time (a ``tf.data`` pipeline reshuffling
    from a fixed seed): the probes take their batches from training's own iterator and keep
    them for it, or take none."""
    from stoke.diagnosis.measure.facts import leading_dim

    def model_alone(seconds: float, deadline: float) -> ProbeResult:
        probe_batch = batch
        if probe_batch is None and backend == "tensorflow":
            # the pull is in the graph
            probe_batch = tf_batch_beside_training(fit, second_iterator=training_pulls is None)
        if probe_batch is None:
            raise ProbeNotRun("no batch was cached for the probe")
        return _model_alone_in_fit(
            backend, timed_function, result, probe_batch, seconds, leading_dim(probe_batch), deadline
        )

    input_skipped = None
    if fit is None:
        input_skipped = "no fit in progress"
    elif input_kind == "stoke" and not run_ends_after_probes:
        input_skipped = (
            "a stoke feed runs one epoch iterator at a time: probing it mid-run would stop "
            "training's; run `stoke doctor --steps N` (the probe then closes the run) or "
            "`stoke bench`"
        )
    return [
        Probe("model_alone", "model-alone", model_alone, fixed_s=3 * step_s, unit_s=step_s,
              max_units=MAX_MODEL_STEPS),
        Probe(
            "input_alone",
            "input-alone",
            lambda seconds, deadline: measure_input_alone(
                fit, backend, seconds, batches_left, training_pulls),
            fixed_s=2 * pull_s,
            unit_s=pull_s,
            max_units=MAX_INPUT_BATCHES,
            skipped=input_skipped,
            empty="the input produced no batch within the probe",
        ),
    ]


def train_on_batch_probes(backend: str, original, model, args: tuple, kwargs: dict,
                          step_s: float) -> list[Probe]:
    """The probes of a ``train_on_batch`` loop: the model alone only, ``train_on_batch`` itself
    on the last batch moved to the device first (the loop's per-call cost is the model's
    cost); there is no data object to run alone."""
    from stoke.diagnosis.measure.facts import leading_dim

    def model_alone(seconds: float, deadline: float) -> ProbeResult:
        device_args = tuple(to_device(backend, model, a) for a in args)
        device_kwargs = {k: to_device(backend, model, v) for k, v in kwargs.items()}
        batch_size = leading_dim(args[0] if args else kwargs.get("x"))
        restore = snapshot_variables(model)
        try:
            steps, elapsed = time_repeated_steps(
                lambda: original(model, *device_args, **device_kwargs),
                sync=lambda out: None,  # train_on_batch returns Python floats: already synced
                seconds=seconds,
                deadline=deadline,
            )
        finally:
            restore()
        return _model_result(steps, elapsed, batch_size, flavor="train_on_batch", state="snapshot-restored")

    return [
        Probe(
            "input_alone",
            "input-alone",
            lambda seconds, deadline: None,
            skipped=(
                "a train_on_batch loop makes its batches in the script's own code; there is no "
                "data object the doctor could run alone"
            ),
        ),
        Probe("model_alone", "model-alone", model_alone, fixed_s=3 * step_s, unit_s=step_s,
              max_units=MAX_MODEL_STEPS),
    ]


# ---------------------------------------------------------------------------------------------
# Model alone.


def _model_alone_in_fit(backend, timed_function, result, batch, seconds, batch_size, deadline=None):
    model = timed_function.model
    per_call = tf_batches_per_call(model) if backend == "tensorflow" else 1
    steps, elapsed, state = time_train_function(
        backend, timed_function.original, timed_function.sync, model, result,
        batch, seconds, deadline, batches_per_call=per_call)
    probe = _model_result(steps, elapsed, batch_size * per_call, flavor="train_function",
                          state=state)
    probe.detail["batches_per_call"] = per_call
    return probe


def tf_batches_per_call(model) -> int:
    """TensorFlow: the batches one call of Keras' train function trains on when it pulls them
    itself, inside its compiled loop (``steps_per_execution``)."""
    return max(1, int(getattr(model, "steps_per_execution", 1) or 1))


def tf_batch_beside_training(fit, second_iterator: bool = True) -> Any:
    """TensorFlow pulling inside the compiled loop (``steps_per_execution > 1``, a distribution
    strategy): no batch passes through Python for the probe to keep. One batch of the run's
    data, taken without touching the iterator training reads (a batch taken from it is one
    training never sees, and at an epoch's end there is none: mixed_precision_spe.py's probe,
    after the run's last step, found none and the doctor read x1.00 against a twin's x2.16):

    - a script's generator: one ``next()`` through the probe's side of it, kept and handed to
      training next (:meth:`~stoke.diagnosis.measure.timing.UserGenerator.take_for_probe`);
    - a ``PyDataset``: its first batch, by index (no second worker pool);
    - a ``tf.data`` dataset (in-memory arrays too, through Keras' adapter pipeline): the first
      batch of a fresh iterator over the dataset training iterates; unless a second iterator
      would change what training reads (``second_iterator`` False: a pipeline reshuffling
      from a fixed seed), then zeros of its element spec at its batch size.

    Raises :class:`ProbeNotRun` with the reason when none can be taken."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    if fit is None:
        raise ProbeNotRun("no fit in progress, no batch to probe the model on")
    generator = fit.user_generator
    if generator is not None:
        if not generator.lock.acquire(timeout=60.0):
            raise ProbeNotRun("the script's generator stayed busy: no batch for the probe")
        try:
            return generator.take_for_probe()
        except StopIteration:
            raise ProbeNotRun("the script's generator had no batch left for the probe") from None
        finally:
            generator.lock.release()
    epoch_iterator = fit.epoch_iterator
    adapter = getattr(epoch_iterator, "data_adapter", None)
    if isinstance(adapter, PyDatasetAdapter):
        dataset = getattr(adapter.py_dataset, "keras2_sequence", adapter.py_dataset)
        return dataset[0]
    dataset = getattr(epoch_iterator, "_distributed_dataset", None)
    if dataset is None:
        raise ProbeNotRun("no dataset to take a batch from for the probe")
    if not second_iterator:
        return _zeros_like_batches_of(fit.arguments.get("x"))
    try:
        return next(iter(dataset))
    except StopIteration:
        raise ProbeNotRun("the training dataset yielded no batch for the probe") from None


def time_train_function(backend, train_function, sync, model, result, batch, seconds,
                        deadline=None, batches_per_call: int = 1) -> tuple[int, float, str]:
    """``train_function`` (a Keras train function of ``model``, as ``fit`` calls it) repeated
    on ``batch`` already on the device (:func:`time_repeated_steps`): (steps, elapsed, how the
    run's state was kept: ``"copy"``, JAX, a copy of the state in ``result``, the last step's;
    ``"snapshot-restored"``, every variable put back). ``batches_per_call`` (TensorFlow, the
    model's ``steps_per_execution``): each call trains on that many copies of ``batch``, inside
    Keras' compiled loop as the run's calls do, pulled from ``from_tensors(batch).repeat()``
    (with a distribution strategy, one compiled step per batch, called from Python)."""
    if backend == "jax":
        import jax

        _logs, state = result
        # Keras donates the state to each step: run the probe on a copy, the run keeps its own.
        state_box = [copy_jax_state(state)]
        device_batch = _jax_device_batch(batch)
        jax.block_until_ready(device_batch)

        def run_step():
            logs, state_box[0] = train_function(state_box[0], iter((device_batch,)))
            return logs

        steps, elapsed = time_repeated_steps(run_step, sync, seconds, deadline=deadline)
        state_box.clear()
        return steps, elapsed, "copy"

    device_batch = to_device(backend, model, batch)
    if backend == "torch":

        def run_step():
            return train_function([device_batch])

    elif batches_per_call > 1:
        run_step = _tf_multi_step_call(train_function, model, device_batch, batches_per_call)
    else:

        def run_step():
            return train_function(iter((device_batch,)))

    restore = snapshot_variables(model)
    try:
        steps, elapsed = time_repeated_steps(run_step, sync, seconds, deadline=deadline)
    finally:
        restore()
    return steps, elapsed, "snapshot-restored"


def _tf_multi_step_call(train_function, model, device_batch, batches_per_call: int):
    """One call of a TensorFlow train function that runs ``batches_per_call`` steps on
    ``device_batch``: through Keras' compiled loop (its ``tf.data`` iterator path, as the run
    pulls) over a dataset that repeats the batch, or, under a distribution strategy (whose
    batches are per-replica values), Keras' Python path over that many copies."""
    import tensorflow as tf

    from stoke.diagnosis.measure.timing import tf_default_strategy

    if tf_default_strategy(model):
        try:
            iterator = iter(tf.data.Dataset.from_tensors(device_batch).repeat())
        except (TypeError, ValueError):
            iterator = None  # a structure tf.data cannot hold (a None in it): the Python path
        if iterator is not None:
            return lambda: train_function(iterator)
    copies = (device_batch,) * batches_per_call
    return lambda: train_function(iter(copies))


def _model_result(steps: int, elapsed: float, batch_size: int, flavor: str, state: str):
    per_step = elapsed / steps
    return ProbeResult(
        samples_per_s=batch_size * steps / elapsed if elapsed > 0 else 0.0,
        seconds=elapsed,
        batches=steps,
        detail={
            "method": (
                "Keras' compiled train step repeated on one batch already on the device, "
                "synchronised once at the end"
                if flavor == "train_function"
                else "train_on_batch repeated on one batch already on the device"
            ),
            "flavor": flavor,
            "s_per_step": per_step,
            "batch_size": batch_size,
            "weights": (
                "trained a copy of the state; the run's own state was untouched"
                if state == "copy"
                else "all model, optimizer and metric variables snapshotted and restored"
            ),
        },
    )


def time_repeated_steps(
    run_step: Callable[[], Any],
    sync: Callable[[Any], None],
    seconds: float,
    min_steps: int = MIN_MODEL_STEPS,
    max_steps: int = MAX_MODEL_STEPS,
    deadline: float | None = None,
) -> tuple[int, float]:
    """Run ``run_step`` repeatedly for about ``seconds`` and return (steps, elapsed).

    Two synchronised warm-up steps, one synchronised step to size the loop, then the timed
    loop synchronised once at its end: asynchronous dispatch pipelines as in training.
    ``deadline`` (a ``perf_counter()`` time, the probe budget's): the timed loop runs no more
    steps than fit before it; when none does, the sizing step is the measurement.
    """
    for _ in range(2):
        sync(run_step())
    started = _perf_counter()
    sync(run_step())
    sized = _perf_counter()
    one_step = max(sized - started, 1e-6)
    steps = int(min(max_steps, max(min_steps, seconds / one_step)))
    if one_step * min_steps > 3 * seconds:
        steps = 1  # steps so slow that one is a measurement: keep the probe within its budget
    if deadline is not None:
        fitting = int((deadline - sized) / one_step)
        if fitting < 1:
            return 1, one_step  # no time left for the loop: the sizing step is the measurement
        steps = min(steps, fitting)
    started = _perf_counter()
    out = None
    for _ in range(steps):
        out = run_step()
    sync(out)
    return steps, _perf_counter() - started


def to_device(backend: str, model, batch):
    """The batch as tensors on the device the model's variables live on."""
    from keras import tree

    if batch is None:
        return None
    if backend == "jax":
        return _jax_device_batch(batch)
    if backend == "torch":
        from keras.src.backend.torch.core import convert_to_tensor

        return tree.map_structure(
            lambda leaf: convert_to_tensor(leaf) if leaf is not None else None,
            batch,
            none_is_leaf=True,
        )
    if backend == "tensorflow":
        import tensorflow as tf

        device = _tf_model_device(model)
        with tf.device(device):
            return tree.map_structure(
                lambda leaf: tf.identity(leaf) if leaf is not None else None,
                batch,
                none_is_leaf=True,
            )
    return batch


def _jax_device_batch(batch):
    try:
        from keras.src.backend.jax.trainer import _distribute_data

        return _distribute_data(batch)
    except Exception:
        import jax

        return jax.device_put(batch)


def _tf_model_device(model) -> str:
    try:
        device = str(model.trainable_variables[0].value.device)
        return device or "/CPU:0"
    except Exception:
        return "/CPU:0"


# ---------------------------------------------------------------------------------------------
# Input alone.


def _zeros_like_batches_of(dataset) -> Any:
    """A batch of zeros shaped as ``dataset``'s batches (a ``tf.data`` dataset whose batch
    size its graph gives): for the model-alone probe, whose step takes as long on zeros."""
    import tensorflow as tf

    from stoke.diagnosis.measure.facts import tf_data_facts

    batch_size = tf_data_facts(dataset).get("tf_data_batch_size") if dataset is not None else None
    spec = getattr(dataset, "element_spec", None)
    if not batch_size or spec is None:
        raise ProbeNotRun(
            "the training dataset reshuffles each epoch from a fixed seed (a second iterator "
            "would change the orders the next epochs train on) and its batch size is not known")

    def zeros(leaf):
        shape = [batch_size if size is None else size for size in leaf.shape.as_list()]
        return tf.zeros(shape, leaf.dtype)

    return tf.nest.map_structure(zeros, spec)


def measure_input_alone(
    fit, backend: str, seconds: float, batches_left: int | None = None, training_pulls=None,
) -> ProbeResult | None:
    """Iterate the run's data object with no model for about ``seconds``. None if it yielded
    nothing.

    A script's generator cannot be rewound: the batches the probe takes are kept and trained
    on next. It takes no more than the epoch in progress has still to train on
    (``batches_left``, counting those kept already): a later epoch's batches may depend on
    what training does in between (a callback that raises a curriculum's difficulty each
    epoch: the red-team's s20_curriculum_generator.py trained all 4 epochs on the first
    level's batches, the probe having pulled 1,614 batches where 350 were left).

    An input a second iterator would change (``training_pulls``: a ``tf.data`` pipeline that
    reshuffles from a fixed seed) is read the same way, from training's own iterator, the
    batches kept for training (:func:`_input_alone_from_training`)."""
    from stoke.diagnosis.measure.system import child_pids

    # processes the run had before the probe (the training input's own workers, still
    # filling their queue): not the probe's input, left out of its CPU
    running = child_pids()
    if training_pulls is not None:
        return _input_alone_from_training(training_pulls, seconds, batches_left, running)
    generator = fit.user_generator
    if generator is not None:
        # Hold the generator for the whole probe: on TensorFlow a tf.data thread also pulls
        # from it (prefetch); it waits on the lock, outside the GIL, until the probe is done.
        if not generator.lock.acquire(timeout=60.0):
            return None
        try:
            room = None if batches_left is None else batches_left - generator.kept_batches
            if room is not None and room <= 0:
                raise ProbeNotRun(
                    "the epoch in progress had no batch left to take from the script's "
                    "generator (the probe keeps what it takes for training, and a later "
                    "epoch's batches may depend on what training changes)")
            limit = None if room is None else generator.kept_batches + room
            return _time_pulls(
                generator.take_for_probe,
                seconds,
                warmup=0,
                detail={
                    "method": "next() on the script's generator, on this thread",
                    "note": "the batches the probe takes are kept and trained on next, in "
                            "order; no more than the epoch in progress has left",
                    "batches_left_in_epoch": batches_left,
                },
                enough=lambda: generator.kept_full() or (
                    limit is not None and generator.kept_batches >= limit),
                not_the_probes=running,
            )
        finally:
            generator.lock.release()
    adapter = getattr(fit.epoch_iterator, "data_adapter", None)
    if adapter is None:
        return None
    fresh_pool = False
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    if isinstance(adapter, PyDatasetAdapter):
        # The training adapter's worker pool is busy with the epoch: build a second one
        # (over the script's Sequence itself when the Keras-2 shim reads it as Keras 2's
        # stream of passes: stoke.legacy.keras2_stream; reading that stream would run the
        # Sequence's on_epoch_end at the probe's pass ends).
        dataset = getattr(adapter.py_dataset, "keras2_sequence", adapter.py_dataset)
        adapter = PyDatasetAdapter(dataset, shuffle=False)
        fresh_pool = adapter.enqueuer is not None
    # the batches are dropped: so are the random draws the fresh iterator made (a DataLoader's
    # own generator too: the probe's iterator shares it with training's)
    restore_random = snapshot_global_random(getattr(adapter, "_dataloader", None))
    iterator = None
    try:
        iterator, how = fresh_trainer_iterator(fit.epoch_iterator, adapter, backend)
        workers = fresh_pool or int(getattr(fit.arguments.get("x"), "num_workers", 0) or 0) > 0
        result = _time_pulls(
            lambda: next(iterator),
            seconds,
            warmup=2 if workers else 1,
            detail={
                "method": how,
                "note": "a fresh iterator over the same data; training's own input keeps its "
                "state (background producers of the training input may still run)",
            },
            finish=_device_wait_function(backend),
            not_the_probes=running,
        )
        if result is not None and backend == "tensorflow":
            result.detail.update(_tf_ready_pull(fit.epoch_iterator, adapter, result))
            result.detail.update(_tf_iterator_start(fit.epoch_iterator, adapter))
        return result
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass
        if fresh_pool:
            try:
                adapter.enqueuer.stop()
            except Exception:
                pass
        restore_random()


def _input_alone_from_training(training_pulls, seconds: float, batches_left: int | None,
                               running) -> ProbeResult | None:
    """The input alone, read from the iterator training reads (see :func:`measure_input_alone`):
    no more than the epoch in progress has left, each batch kept and trained on next."""
    why = ("the training dataset reshuffles each epoch from a fixed seed: a second iterator "
           "over it would change the orders the next epochs train on")
    if training_pulls.iterator is None:
        raise ProbeNotRun(f"{why}, and its batches are pulled inside the compiled loop, out of "
                          "the probe's reach")
    already = len(training_pulls.kept)
    if batches_left is not None and batches_left - already <= 0:
        raise ProbeNotRun(f"{why}, and the epoch in progress had no batch left to read from "
                          "training's own iterator")
    return _time_pulls(
        training_pulls.take_for_probe,
        seconds,
        warmup=0,
        detail={
            "method": "next() on the iterator training reads",
            "note": f"{why}; the batches the probe reads are kept and trained on next, in "
                    "order; no more than the epoch in progress has left",
            "batches_left_in_epoch": batches_left,
        },
        enough=lambda: batches_left is not None and len(training_pulls.kept) >= batches_left,
        not_the_probes=running,
    )


def fresh_trainer_iterator(epoch_iterator, adapter, backend: str):
    """A new iterator down the trainer's own input path: the backend EpochIterator's
    ``_get_iterator`` (JAX: with its device transfer, one batch ahead on accelerators; torch:
    the DataLoader that converts to device tensors; TensorFlow: the dataset it iterates).
    The iterator the trainer holds keeps its place: over a torch ``DataLoader`` with
    persistent workers, it reads a copy that starts workers of its own
    (:func:`_without_persistent_workers`)."""
    import copy

    from stoke.diagnosis.measure.timing import EPOCH_ITERATOR_WRAPPERS

    if _shares_one_iterator(adapter):
        adapter = _without_persistent_workers(adapter)
    if backend == "tensorflow":
        if adapter is epoch_iterator.data_adapter and hasattr(epoch_iterator, "_distributed_dataset"):
            return iter(epoch_iterator._distributed_dataset), "the training dataset, iterated eagerly"
        return iter(adapter.get_tf_dataset()), "the data adapter's get_tf_dataset(), iterated eagerly"
    clone = copy.copy(epoch_iterator)
    for name in EPOCH_ITERATOR_WRAPPERS:
        clone.__dict__.pop(name, None)  # the doctor's instance wrappers: not on this path
    clone.data_adapter = adapter
    how = f"{type(epoch_iterator).__name__}._get_iterator(): the trainer's own input path"
    return iter(type(epoch_iterator)._get_iterator(clone)), how


def _shares_one_iterator(adapter) -> bool:
    """Whether a second ``iter()`` over ``adapter``'s data would reset the trainer's iterator:
    a torch ``DataLoader`` with ``persistent_workers=True`` hands every ``iter()`` the same
    iterator, reset (a probe's "fresh" iterator restarted the epoch the trainer was reading:
    the user's callbacks saw 20 of 24 batches)."""
    loader = getattr(adapter, "_dataloader", None)  # Keras' TorchDataLoaderAdapter
    return loader is not None and bool(getattr(loader, "persistent_workers", False))


def _without_persistent_workers(adapter):
    """A copy of a torch ``DataLoader`` adapter whose loader starts workers of its own for
    each iterator, ended with it."""
    import copy

    from keras.src.trainers.data_adapters.torch_data_loader_adapter import TorchDataLoaderAdapter

    loader = copy.copy(adapter._dataloader)
    object.__setattr__(loader, "persistent_workers", False)  # DataLoader forbids a plain set
    object.__setattr__(loader, "_iterator", None)
    return TorchDataLoaderAdapter(loader)


def _tf_ready_pull(epoch_iterator, adapter, alone: ProbeResult) -> dict:
    """TensorFlow: what taking a ready batch from this run's own pipeline costs
    (``ready_pull_s``, :mod:`stoke.diagnosis.measure.tf_pulls`), a fresh iterator over the
    dataset the trainer iterates; the doctor's timed waits count only the floor's share of it.
    Only for the training dataset itself (no second copy of in-memory arrays) when it is a
    plain ``tf.data.Dataset``. Each pull waits twice what the pipeline took per batch alone
    (``alone``) first, so that a ready batch is what it times; at most ~0.3 s in all, and not
    at all for a pipeline slower than 30 ms a batch, nor over a loader whose second iterator
    would reset the trainer's (:func:`_shares_one_iterator`)."""
    import tensorflow as tf

    from stoke.diagnosis.measure.tf_pulls import READY_PAUSE_S, ready_pull_seconds

    dataset = getattr(epoch_iterator, "_distributed_dataset", None)
    if (adapter is not epoch_iterator.data_adapter or type(adapter).__name__ != "TFDatasetAdapter"
            or not isinstance(dataset, tf.data.Dataset)):
        return {}
    pause_s = max(READY_PAUSE_S, 2.0 * alone.detail.get("s_per_batch", 0.0))
    if pause_s > 0.06:
        return {}  # a pipeline this slow: a tenth of a millisecond more or less does not matter
    try:
        pulls = int(max(5, min(25, 0.3 / pause_s)))
        return {"ready_pull_s": ready_pull_seconds(dataset, pulls, pause_s)}
    except Exception as error:  # the probe's rate stands without it
        return {"ready_pull_error": repr(error)[:300]}


def _tf_iterator_start(epoch_iterator, adapter) -> dict:
    """TensorFlow: what making a new iterator over the dataset the trainer iterates costs
    (``iterator_start_s``, :func:`stoke.diagnosis.measure.tf_pulls.iterator_start_seconds`),
    which Keras pays at each epoch's boundary. Only for the user's own ``tf.data`` dataset
    (Keras' ``TFDatasetAdapter``), not under a distribution strategy."""
    import tensorflow as tf

    from stoke.diagnosis.measure.tf_pulls import iterator_start_seconds

    dataset = getattr(epoch_iterator, "_distributed_dataset", None)
    if (adapter is not epoch_iterator.data_adapter or type(adapter).__name__ != "TFDatasetAdapter"
            or not isinstance(dataset, tf.data.Dataset)):
        return {}
    try:
        return {"iterator_start_s": iterator_start_seconds(dataset)}
    except Exception as error:  # the probe's rate stands without it
        return {"iterator_start_error": repr(error)[:300]}


def _device_wait_function(backend: str):
    """Wait until a batch is on the device (transfers are asynchronous on JAX and CUDA)."""
    if backend == "jax":
        import jax

        return jax.block_until_ready
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return lambda batch: torch.cuda.synchronize()
    return lambda batch: None


def _time_pulls(
    pull,
    seconds: float,
    warmup: int,
    detail: dict,
    finish=None,
    enough: Callable[[], bool] | None = None,
    not_the_probes: set[int] | frozenset[int] = frozenset(),
) -> ProbeResult | None:
    """Pull batches for about ``seconds`` (or until ``enough()``): samples/s, and the CPU
    seconds per sample they cost this process (every thread) and the worker processes the
    pulls run in (:class:`~stoke.diagnosis.measure.system.ProcessTreeCpu`, less the
    processes in ``not_the_probes``). CPU, not wall time, is what the input takes from the
    cores: a worker waiting on I/O takes none, several busy ones more than the wall time."""
    from stoke.diagnosis.measure.facts import leading_dim
    from stoke.diagnosis.measure.system import ProcessTreeCpu

    exhausted = False
    last = None
    try:
        for _ in range(warmup):
            pull()
    except StopIteration:
        return None
    batches = samples = 0
    cpu = ProcessTreeCpu(exclude=not_the_probes)
    cpu.start()
    started = _perf_counter()
    while batches < MAX_INPUT_BATCHES:
        try:
            batch = pull()
        except StopIteration:
            exhausted = True
            break
        batches += 1
        samples += leading_dim(batch)
        last = batch
        if _perf_counter() - started >= seconds or (enough is not None and enough()):
            break
    if finish is not None and last is not None:
        finish(last)  # the last transfer done: all earlier ones are too
    elapsed = _perf_counter() - started
    cpu_s = cpu.seconds()
    if batches == 0 or elapsed <= 0:
        return None
    if samples:
        # what the input costs the cores, for the shared-cores model; its wall time
        # (``seconds``) is what it costs the trainer's wait
        detail = {**detail, "cpu_s_per_sample": cpu_s / samples, "cpu_s": cpu_s,
                  "cpu_cores_busy": cpu_s / elapsed}
    return ProbeResult(
        samples_per_s=samples / elapsed,
        seconds=elapsed,
        batches=batches,
        detail={
            **detail,
            "s_per_batch": elapsed / batches,
            "samples": samples,
            "warmup_batches": warmup,
            "exhausted": exhausted,
        },
    )
