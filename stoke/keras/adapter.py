"""``pipe.to_keras()``: what ``model.fit``/``evaluate``/``predict`` take on every backend.

:class:`KerasFeed` is a Keras ``DataAdapter`` (Keras passes adapter instances through
unchanged, so no Keras enqueuer adds a second layer of workers or copies). It owns one
persistent :class:`~stoke.loader.loader.Loader` for all epochs; each time Keras starts an epoch it
asks for an iterator, and the feed starts the next epoch of the plan with a device
prefetcher for the active backend. ``DataAdapter`` lives in Keras' private ``keras.src``;
its use is guarded by version and tested on every backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stoke.data.plan import IteratorState
from stoke.data.structure import flatten, unflatten
from stoke.errors import StokeError
from stoke.executors.choose import for_training
from stoke.executors.options import LoaderOptions
from stoke.keras.resume import InputPositions, TrackedBatches, next_epoch_start
from stoke.loader.iterator import BatchIterator
from stoke.loader.loader import Loader

TESTED_KERAS = ((3, 8), (3, 99))


def _data_adapter_class():
    import keras

    version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    try:
        from keras.src.trainers.data_adapters.data_adapter import DataAdapter
    except ImportError as exc:  # pragma: no cover - a Keras that moved its internals
        raise StokeError(
            f"stoke cannot find Keras' DataAdapter in Keras {keras.__version__} (tested with "
            f"{TESTED_KERAS[0][0]}.{TESTED_KERAS[0][1]}+). Feed Keras a Python generator "
            "over the pipeline instead (no device prefetch): "
            "model.fit((batch for batch in pipe.iter(copy=True)), steps_per_epoch=len(pipe))"
            " - Keras takes generators, not stoke's iterator object itself."
        ) from exc
    if not TESTED_KERAS[0] <= version <= TESTED_KERAS[1]:  # pragma: no cover
        import warnings

        warnings.warn(f"stoke's Keras feed is untested with Keras {keras.__version__}.",
                      stacklevel=3)
    return DataAdapter


def to_keras(pipeline, workers: int | str = "auto", executor: str = "auto", prefetch: int = 2,
             device_transform: Callable[[Any], Any] | None = None, **options: Any):
    """Wrap ``pipeline`` for ``model.fit(feed, epochs=...)``; see ``Pipeline.to_keras``."""
    if pipeline.batch_size is None:
        raise ValueError(
            "to_keras needs a batched pipeline: add .batch(batch_size) before .to_keras()."
        )
    feed_class = _feed_class()
    # executor="auto": the trainer makes the first batches while the workers start
    trainer_first = executor == "auto"
    workers, executor = for_training(pipeline.program, workers, executor)
    return feed_class(pipeline, LoaderOptions(workers=workers, executor=executor, **options),
                      prefetch, device_transform, trainer_first)


_FEED_CLASS = None


def _feed_class():
    global _FEED_CLASS
    if _FEED_CLASS is None:
        _FEED_CLASS = type("KerasFeed", (KerasFeedMixin, _data_adapter_class()), {})
        _FEED_CLASS.__module__ = __name__
        _FEED_CLASS.__doc__ = KerasFeedMixin.__doc__
    return _FEED_CLASS


class KerasFeedMixin:
    """A stoke pipeline as Keras sees it: one loader for every epoch, a device prefetcher
    per backend, ``len()`` when the epoch length is known.

    >>> model.fit(pipe.to_keras(), epochs=10, validation_data=val.to_keras())  # doctest: +SKIP
    """

    def __init__(self, pipeline, options: LoaderOptions, prefetch: int,
                 device_transform: Callable[[Any], Any] | None,
                 trainer_first: bool = False) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1. Received: prefetch={prefetch}")
        self.pipeline = pipeline
        self.loader = Loader(pipeline, options)
        # the workers start now and load the pipeline while the model is built and compiled;
        # trainer_first: fit's first batches are made in the trainer until one is up
        self.loader.start(trainer_first=trainer_first)
        self.prefetch = prefetch
        self.device_transform = device_transform
        self.epoch = 0  # the epoch the next iterator starts; advances when one is finished
        self._active: Any = None
        self._batches: BatchIterator | None = None
        self._resume: IteratorState | None = None  # where the next epoch starts (resume.py)
        self._positions = InputPositions()

    # -- what Keras asks -----------------------------------------------------------------
    @property
    def num_batches(self):  # Keras reads it once per fit: a resumed epoch is not shorter here
        if self.pipeline.repeat_count is None:
            return None
        try:
            return len(self.pipeline) * self.pipeline.repeat_count
        except TypeError:  # filtered: unknown until it runs
            return None

    @property
    def batch_size(self):
        return self.pipeline.batch_size

    @property
    def has_partial_batch(self):
        return self.partial_batch_size is not None

    @property
    def partial_batch_size(self):
        plan = self.pipeline.plan_spec
        per_shard = len(range(plan.shard_index, plan.length, plan.shard_count))
        remainder = per_shard % plan.batch_size
        if plan.drop_remainder or remainder == 0 or self.pipeline.steps_have_filter():
            return None
        return remainder

    def __len__(self) -> int:
        batches = self.num_batches
        if batches is None:
            raise TypeError("the number of batches of this feed is not known before it runs")
        return batches

    def get_numpy_iterator(self):
        for batch in _keras_batches(self._next_epoch(), self.pipeline):
            treedef, leaves = flatten(batch)
            yield unflatten(treedef, [np.array(leaf) for leaf in leaves])

    def get_jax_iterator(self):
        from stoke.keras import jax_feed

        if jax_feed.multi_process():
            # Keras assembles the global array from each process's numpy batch.
            return self.get_numpy_iterator()
        return self._prefetched(jax_feed.make_transfer(self.device_transform))

    def get_torch_dataloader(self):
        from stoke.keras import torch_feed

        return self._prefetched(torch_feed.make_transfer(self.device_transform))

    def get_tf_dataset(self):
        from stoke.keras import tf_feed

        first = self._first_batch()
        layout = self.loader.layout
        variable = layout.padding.variable_output_paths() if layout.padding else frozenset()
        return tf_feed.make_dataset(self._next_epoch, first, self.prefetch, self.device_transform,
                                    variable)

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass

    # -- ours ----------------------------------------------------------------------------
    def iter(self):
        """Numpy batches of the next epoch (copies), as ``fit`` would get them."""
        return self.get_numpy_iterator()

    def tuning(self):
        """The executor, workers and ring depth the feed runs with, and why (see
        :meth:`stoke.Loader.tuning`)."""
        return self.loader.tuning()

    def resume_from(self, state: IteratorState | dict) -> None:
        """Start the next epoch at ``state`` (an ``it.state()``, or what
        :meth:`position_after` gave): used by ``stoke.BackupAndRestore`` on restart."""
        state = next_epoch_start(IteratorState.from_dict(state), self.loader)
        self._stop_active()
        self._batches = None
        self.epoch = state.epoch
        self._resume = state if (state.chunk or state.rows_delivered) else None

    def resumes_mid_epoch(self) -> bool:
        return self._resume is not None

    def position_after(self, batches: int) -> IteratorState | None:
        """The input's state once Keras has consumed ``batches`` batches of this epoch."""
        return self._positions.after(batches)

    def close(self) -> None:
        """Stop the prefetcher and the workers. Also happens when the feed is collected."""
        self._stop_active()
        self.loader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stop_active(self) -> None:
        active, self._active = self._active, None
        if active is not None:
            active.close()

    def _next_epoch(self) -> BatchIterator:
        """An iterator over the next epoch. Keras sometimes asks for an iterator it then
        drops unread; an epoch counts as done only when its iterator was finished, so such
        a request does not skip an epoch of the plan."""
        self._stop_active()
        if self._batches is not None and self._batches.finished:
            self.epoch += self.pipeline.repeat_count or 1
            self._resume = None
        iterator = self.loader.iter(epoch=self.epoch, state=self._resume,
                                    epochs=self.pipeline.repeat_count)
        self._batches = iterator
        self._active = iterator
        return TrackedBatches(iterator, self._positions)

    def _prefetched(self, transfer):
        from stoke.keras.prefetch import Prefetcher

        batches = self._next_epoch()
        prefetcher = Prefetcher(_keras_batches(batches, self.pipeline), transfer, self.prefetch)
        self._active = _Both(prefetcher, batches)
        return prefetcher

    def _first_batch(self) -> Any:
        """One batch, to learn shapes and dtypes (the loader keeps its workers)."""
        self._stop_active()
        probe = self.loader.iter(epoch=self.epoch, epochs=1)
        try:
            batch = next(probe)
            treedef, leaves = flatten(batch)
            return _as_keras(unflatten(treedef, [np.array(leaf) for leaf in leaves]))
        except StopIteration:
            raise ValueError(empty_feed_message(self.pipeline)) from None
        finally:
            probe.close()


class _Both:
    """Close a prefetcher, then the batch iterator under it."""

    def __init__(self, prefetcher, batches) -> None:
        self.prefetcher = prefetcher
        self.batches = batches

    def close(self) -> None:
        self.prefetcher.close()
        self.batches.close()


def _keras_batches(batches: BatchIterator, pipeline):
    """The epoch's batches as Keras takes them; an epoch with none is an error (Keras would
    raise a bare StopIteration, or train on nothing)."""
    empty = True
    for batch in batches:
        empty = False
        yield _as_keras(batch)
    if empty:
        raise ValueError(empty_feed_message(pipeline))


def empty_feed_message(pipeline) -> str:
    plan = pipeline.plan_spec
    if plan.length >= 0:
        why = [f"the source has {plan.length} sample(s)"]
    else:  # shards indexed lazily: counted now (the empty epoch has indexed them all)
        why = [f"the source's {len(plan.shards.host_shards(plan.shard_index, plan.shard_count))} "
               f"shard(s) read here, indexed lazily, hold "
               f"{plan.shards.counted_length(plan.shard_index, plan.shard_count)} sample(s)"]
    if plan.shard_count > 1:
        why.append(f"shard {plan.shard_index} of {plan.shard_count}")
    if pipeline.steps_have_filter():
        why.append("filters may have removed every sample")
    if plan.drop_remainder:
        why.append(f"drop_remainder=True drops a last batch smaller than {plan.batch_size}")
    return (f"the pipeline is empty: an epoch has no batch to train on ({'; '.join(why)}). "
            "Check the source, the filters and the batch size.")


def _as_keras(batch: Any) -> Any:
    """Keras unpacks tuples as (x, y, sample_weight): lists become tuples."""
    return tuple(batch) if isinstance(batch, list) else batch

