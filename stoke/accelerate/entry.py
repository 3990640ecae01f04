"""The entry point, :func:`accelerate`: tells a Sequence from a generator (function or
object) from what it cannot take, checks the options, and builds the adapter.

Leaves the running to :mod:`.sequence` and :mod:`.generator`, and Keras' view of the result
to :mod:`.keras_face`.
"""

from __future__ import annotations

import inspect
from typing import Any

from stoke.accelerate.generator import AcceleratedGenerator
from stoke.accelerate.image_iterator import ImageIteratorSequence, is_keras_image_iterator
from stoke.accelerate.keras_face import keras_face_if_imported
from stoke.accelerate.sequence import AcceleratedSequence
from stoke.data.pipeline import Pipeline


def accelerate(data: Any, *args: Any, workers: int | str = "auto", executor: str = "auto",
               shuffle: bool | None = None, seed: int = 0, replicas: int | None = None,
               steps_per_epoch: int | None = None, kwargs: dict | None = None,
               ring_slots: int | None = None, timeout_s: float | None = 30.0,
               memory_budget_bytes: int | None = None, keep_float64: bool = False,
               cpu_budget_cores: int | None = None):
    """Run ``data``'s own loading code in stoke's workers; returns what ``model.fit`` takes.

    ``data`` is one of:

    - a ``keras.utils.PyDataset``/``Sequence``, or any object with ``len()`` and
      ``__getitem__(batch_index)`` returning a whole batch. ``workers`` process workers
      run ``__getitem__`` (``"auto"``: tuned by measurement, as ``to_keras``' are; with
      ``executor="auto"`` too, started only once the trainer's timings of the first
      batches, made by the trainer, say they pay: :mod:`stoke.accelerate.worker_start`).
      ``shuffle=True`` permutes the batch
      order each epoch, seeded by ``(seed, epoch)``; ``shuffle=False`` keeps ``0..n-1``; the
      default (None) follows the consumer: ``model.fit`` with its ``shuffle=True`` (the
      default) gets Keras' own permutation (drawn from Python's ``random``, so
      ``keras.utils.set_random_seed`` repeats it), ``iter()`` and ``fit(shuffle=False)``
      the order ``0..n-1``.
    - a generator function, called as ``data(*args, **kwargs)`` in a worker process (on a
      copy of the arguments; large arrays among them are shared, not copied). With
      ``replicas=N``, N copies run in parallel; each gets the keyword arguments it accepts
      among ``worker_index``, ``worker_count`` and ``seed`` (see the module docstring for
      what each mode guarantees). ``steps_per_epoch`` gives Keras an epoch length. Its
      items come as it yields them; where it runs and its copies are fixed before the first
      item, how far ahead the copies run is tuned (``acc.tuning()`` says what was measured
      and chosen; see :mod:`stoke.autotune.prefetch`).
    - one of Keras' legacy image iterators (``ImageDataGenerator().flow(...)``,
      ``.flow_from_directory(...)``, ``.flow_from_dataframe(...)``): run as a Sequence
      that gives the batches Keras' own loop over it would (see
      :mod:`stoke.accelerate.image_iterator`); the iterator given is left as it is.
    - a generator object (``gen()``, already called): stoke finds the function and the
      arguments it was called with and runs it as above; if it cannot (it was started, or
      is a generator expression), it runs in a background thread of the trainer.

    ``executor``: ``"process"`` (shared-memory ring; every batch made in a worker),
    ``"thread"``, ``"inline"`` or ``"auto"`` (processes; threads when the dataset cannot be
    pickled; for a Sequence, while every worker is still starting, the trainer makes the
    batches asked, so that ``fit``'s first steps never wait for the workers' imports).
    ``timeout_s``: the longest wait for one batch.
    ``ring_slots``/``memory_budget_bytes``/``cpu_budget_cores`` (the most cores
    ``workers="auto"`` may give a Sequence's workers): see
    :class:`~stoke.executors.options.LoaderOptions`. float64 arrays are delivered as float32 (one
    warning), as stoke's pipelines do; ``keep_float64=True`` keeps them.

    Close the result (``acc.close()`` or ``with``) to stop its workers early; they also stop
    when it is garbage collected and at exit.
    """
    if isinstance(data, (AcceleratedSequence, AcceleratedGenerator)):
        return data
    if executor not in ("auto", "process", "thread", "inline"):
        raise ValueError(
            "executor must be one of 'auto', 'process', 'thread', 'inline'. "
            f"Received: executor={executor!r}"
        )
    options = dict(ring_slots=ring_slots, timeout_s=timeout_s,
                   memory_budget_bytes=memory_budget_bytes, cpu_budget_cores=cpu_budget_cores)
    if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int)
                                        or steps_per_epoch < 1):
        raise ValueError(
            f"steps_per_epoch must be a positive int or None. Received: {steps_per_epoch!r}"
        )
    if inspect.isgeneratorfunction(data) or inspect.isgenerator(data):
        if shuffle:
            raise ValueError(
                "shuffle=True needs random access; a generator can only be read in order. "
                "Shuffle inside the generator, or give a Sequence (len + __getitem__)."
            )
        if inspect.isgenerator(data) and (args or kwargs):
            raise TypeError(
                "arguments go with a generator *function*: accelerate(gen_fn, *args). "
                f"Received a generator object ({data.__name__}) and arguments {args or kwargs}."
            )
        return keras_face_if_imported(AcceleratedGenerator(
            data, args, dict(kwargs or {}), workers=workers, executor=executor, seed=seed,
            replicas=replicas, steps_per_epoch=steps_per_epoch, options=options,
            keep_float64=keep_float64))
    if args or kwargs or replicas is not None:
        raise TypeError(
            "args, kwargs and replicas are for generator functions; "
            f"{type(data).__name__} is not one. Received: args={args!r}, kwargs={kwargs!r}, "
            f"replicas={replicas!r}."
        )
    if callable(data) and not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            f"accelerate got the callable {getattr(data, '__qualname__', data)!r}, which is "
            "not a generator function (it has no `yield`). Give a generator function, a "
            "generator, or a Sequence/PyDataset (len + __getitem__(batch_index))."
        )
    if isinstance(data, Pipeline):
        raise TypeError(
            "this is a stoke pipeline already: give it to Keras with pipe.to_keras(), or read "
            "it with pipe.iter(). stoke.accelerate is for a Sequence or generator you have.")
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            "accelerate needs a keras.utils.PyDataset/Sequence (or any object with len() and "
            "__getitem__(batch_index)), a generator function or a generator. "
            f"Received: {type(data).__name__}.{_hint_for_other_loader(data)}"
        )
    if steps_per_epoch is not None:
        raise TypeError(
            "steps_per_epoch is for generators; a Sequence's epoch is len(dataset) batches. "
            "To train on fewer, pass steps_per_epoch to fit."
        )
    if is_keras_image_iterator(data):  # it shuffles itself, as Keras' loop over it would
        data, shuffle = ImageIteratorSequence(data, shuffle_batches=shuffle, seed=seed), False
    return keras_face_if_imported(AcceleratedSequence(
        data, workers=workers, executor=executor, shuffle=shuffle, seed=seed, options=options,
        keep_float64=keep_float64))


def _hint_for_other_loader(data: Any) -> str:
    """What to write instead when ``data`` is another library's loader (users try these)."""
    module = type(data).__module__
    if module.startswith("torch.") and hasattr(data, "dataset"):
        return (" A torch DataLoader batches in its own workers; give stoke its dataset: "
                "stoke.from_sequence(loader.dataset).batch(loader.batch_size).to_keras().")
    if module.startswith("tensorflow."):
        return (" A tf.data.Dataset runs its own parallel pipeline: give it to fit as it is "
                "(`stoke doctor` says whether it keeps up).")
    return ""
