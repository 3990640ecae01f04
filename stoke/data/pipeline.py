"""Pipeline: an immutable description of source -> shuffle -> map/filter -> batch -> repeat.

Each fluent method returns a new pipeline; nothing runs until ``iter()``, ``loader()`` or
``to_keras()``. Shuffling permutes indices (global, per epoch, seeded), so it may be written
anywhere in the chain; ``map`` and ``filter`` run per sample, before batching.

>>> import numpy as np, stoke
>>> pipe = (stoke.from_arrays(np.arange(10.0), np.arange(10))
...         .shuffle(seed=0)
...         .map(lambda s: (s[0] * 2, s[1]))
...         .batch(4))
>>> [x.shape for x, y in pipe.iter(executor="inline")]
[(4,), (4,), (2,)]

The one module of ``stoke/data/`` that imports what consumes it, on purpose: ``Pipeline`` is
the public facade, and ``iter``/``loader`` hand it to a :class:`~stoke.loader.loader.Loader`
(imported at the top, where a reader sees it), ``to_keras`` to the Keras adapter (imported
when called: ``import stoke`` never loads the Keras side). The consumers see a pipeline only
through its public members (``program``, ``plan_spec``, ``batch_size``...; the loader
imports :class:`Pipeline` for type hints only), so there is no cycle. Imports moved into
the methods would hide this dependency, not remove it: ``import stoke`` loads the loader for
``stoke.Loader`` anyway, and ``tools/import_graph.py`` counts imports inside functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stoke.data.buckets import BucketSpec
from stoke.data.formats.base import SkippingSource
from stoke.data.formats.shards import ShardedSource
from stoke.data.mix_source import MixSource
from stoke.data.padding import PaddingSpec
from stoke.data.plan import IteratorState, PlanSpec
from stoke.data.program import (
    FilterStep,
    MapStep,
    SampleProgram,
    has_filter,
    keep_unfiltered,
    wants_rng,
)
from stoke.data.shard_plan import ShardOrder
from stoke.data.sources import ArraySource, FileSource, SequenceSource, resolve_paths
from stoke.data.structure import DtypePolicy
from stoke.executors.options import LoaderOptions
from stoke.loader.iterator import BatchIterator
from stoke.loader.loader import Loader


@dataclass(frozen=True)
class Pipeline:
    """Build one with :func:`from_sequence`, :func:`from_arrays` or :func:`from_files`."""

    source: Any
    steps: tuple[MapStep | FilterStep, ...] = ()
    shuffled: bool = False
    seed: int = 0
    batch_size: int | None = None
    drop_remainder: bool = False
    dtype_policy: DtypePolicy = field(default_factory=DtypePolicy)
    repeat_count: int | None = 1  # epochs per iter(); None repeats forever
    shard_index: int = 0
    shard_count: int = 1
    padding: PaddingSpec | None = None  # padded_batch / bucket_by_length (stoke/data/padding.py)
    buckets: BucketSpec | None = None  # bucket_by_length (stoke/data/buckets.py)
    step_offset: int = 0  # rng step positions taken by steps before cache()

    # -- building ------------------------------------------------------------------------
    def shuffle(self, seed: int = 0) -> Pipeline:
        """A new global permutation of the indices each epoch, from ``(seed, epoch)``."""
        return dataclasses.replace(self, shuffled=True, seed=int(seed))

    def seed_with(self, seed: int) -> Pipeline:
        """Set the seed of per-sample ``rng`` without shuffling."""
        return dataclasses.replace(self, seed=int(seed))

    def map(self, fn: Callable[..., Any], with_rng: bool | None = None) -> Pipeline:
        """Apply ``fn(sample)`` or ``fn(sample, rng)`` to each sample.

        ``rng`` is a ``numpy.random.Generator`` that depends only on the seed, the epoch and
        the sample's index, so augmentation is the same whatever the executor or workers.
        It is passed when ``fn`` takes a second argument (or one named ``rng``), or when
        ``with_rng=True``. It is reset for every sample (about 3 µs): draw from it inside
        ``fn``, do not keep it for later.
        """
        self._before_batch("map")
        if not callable(fn):
            raise TypeError(f"map needs a callable. Received: {type(fn).__name__}")
        rng = wants_rng(fn) if with_rng is None else bool(with_rng)
        return dataclasses.replace(self, steps=(*self.steps, MapStep(fn, rng)))

    def filter(self, predicate: Callable[[Any], bool]) -> Pipeline:
        """Keep samples for which ``predicate(sample)`` is true. Batches stay full: kept
        samples are re-batched in order (one copy per batch)."""
        self._before_batch("filter")
        if not callable(predicate):
            raise TypeError(f"filter needs a callable. Received: {type(predicate).__name__}")
        return dataclasses.replace(self, steps=(*self.steps, FilterStep(predicate)))

    def batch(self, batch_size: int, drop_remainder: bool = False,
              keep_float64: bool = False) -> Pipeline:
        """Collate ``batch_size`` samples into one batch with the samples' structure (tuples
        and dicts of numpy arrays). float64 becomes float32 unless ``keep_float64``."""
        if self.batch_size is not None:
            raise ValueError(f"this pipeline is already batched (batch size {self.batch_size}).")
        batch_size = as_count(batch_size, "batch size")
        return dataclasses.replace(self, batch_size=batch_size, drop_remainder=drop_remainder,
                                   dtype_policy=DtypePolicy(keep_float64=keep_float64))

    def padded_batch(self, batch_size: int, pad_value: float = 0, max_length: int | None = None,
                     lengths: str | None = None, drop_remainder: bool = False,
                     keep_float64: bool = False,
                     pad_to_multiple_of: int | None = None) -> Pipeline:
        """Batch samples whose arrays differ in length along their first axis: each batch is
        padded with ``pad_value`` to its own longest sample (views of the ring, no copy).

        Every array leaf with at least one axis is padded (other axes must match).
        ``lengths="lengths"`` (or ``"mask"``) adds, next to each padded array that sits in a
        dict under key ``k``, the key ``k + "_lengths"`` (int32 per sample) or
        ``k + "_mask"`` (bool, True on real entries). ``max_length`` caps the length (a
        longer sample is an error); without it the ring's capacity grows as needed.
        ``pad_to_multiple_of=m`` rounds each batch's width up to a multiple of ``m`` (JAX and
        TensorFlow compile once per shape: fewer shapes, fewer compilations). See
        :mod:`stoke.data.padding`::

            pipe.map(tokenize).padded_batch(64, lengths="mask")   # {"tokens": ..., "tokens_mask": ...}
        """
        batched = self.batch(batch_size, drop_remainder, keep_float64)
        return dataclasses.replace(batched, padding=PaddingSpec(pad_value, max_length, lengths,
                                                                pad_to_multiple_of))

    def bucket_by_length(self, length_fn: Callable[[Any], int], boundaries: list[int],
                         batch_sizes: list[int], pad_value: float = 0,
                         max_length: int | None = None, lengths: str | None = None,
                         drop_remainder: bool = False, keep_float64: bool = False,
                         pad_to_multiple_of: int | None = None) -> Pipeline:
        """Batch samples of similar length together, padded like :meth:`padded_batch`.

        ``length_fn(sample)`` gets each *source* sample (before ``map``) once (in worker
        processes for large sources); bucket ``i`` holds lengths in ``[boundaries[i-1], boundaries[i])`` and
        makes batches of ``batch_sizes[i]`` (one more batch size than boundaries). Exactly
        once per epoch, deterministic, resumable: see :mod:`stoke.data.buckets`::

            pipe.bucket_by_length(lambda s: len(s[0]), boundaries=[64, 128, 256],
                                  batch_sizes=[128, 64, 32, 16])
        """
        spec = BucketSpec.make(length_fn, boundaries, batch_sizes, map_in_workers)
        if isinstance(self.source, MixSource):
            raise ValueError("bucket_by_length cannot follow stoke.mix yet (the lengths are "
                             "taken from source samples); pad the mix with padded_batch.")
        if self.steps_have_filter():
            raise ValueError("bucket_by_length cannot follow filter yet (filtered batches are "
                             "re-batched across buckets); drop samples in length_fn's source "
                             "instead, or use padded_batch.")
        padded = self.padded_batch(max(spec.batch_sizes), pad_value, max_length, lengths,
                                   drop_remainder, keep_float64, pad_to_multiple_of)
        return dataclasses.replace(padded, buckets=spec)

    def cache(self, memory_budget_bytes: int | None = None,
              path: str | None = None) -> Pipeline:
        """Run the steps so far once per sample (in the first epoch) and keep the results;
        later epochs, and later ``iter()`` calls, read them from the cache.

        Kept in memory (shared by every worker; at most ``memory_budget_bytes``, default
        half the memory available now: a cache that will not fit says so after 32 samples,
        before it fills memory), or in the file ``path`` (kept for later runs: delete it
        when the steps before ``cache()`` change). Steps after ``cache()`` still get their
        per-sample ``rng``; cached arrays are read-only. See :mod:`stoke.data.cache`::

            pipe = stoke.from_files(paths).map(decode).cache().map(augment).batch(64)
        """
        self._before_batch("cache")
        from stoke.data.cache import make_cached_source

        if isinstance(self.source, MixSource):
            raise ValueError("cache() cannot follow stoke.mix (a mix's samples change from "
                             "epoch to epoch); cache the pipelines before mixing them.")

        source = make_cached_source(self.source, self.steps, self.seed, repr(self),
                                    memory_budget_bytes, path, self.step_offset)
        steps = (FilterStep(keep_unfiltered),) if self.steps_have_filter() else ()
        # maps after cache() draw from the rng they would get without it
        offset = self.step_offset + len(self.steps) - len(steps)
        return dataclasses.replace(self, source=source, steps=steps, step_offset=offset)

    def repeat(self, count: int | None = None) -> Pipeline:
        """``iter()`` goes on for ``count`` epochs (None: forever), reshuffled each epoch, on
        the same workers. A batch never spans two epochs."""
        if count is not None:
            count = as_count(count, "repeat count", none_ok=True)
        return dataclasses.replace(self, repeat_count=count)

    def shard(self, index: int, count: int) -> Pipeline:
        """Keep every ``count``-th sample of each epoch's permutation, from ``index``: one
        shard per host or process; together the shards see every sample exactly once.
        Shard-based sources (TFRecord, tar) split whole files: files ``index``,
        ``index + count``, ... (see :mod:`stoke.data.shard_plan`)."""
        index, count = as_count(index, "shard index", minimum=0), as_count(count, "shard count")
        PlanSpec(1, 1, shard_index=index, shard_count=count)  # validates
        return dataclasses.replace(self, shard_index=index, shard_count=count)

    def _before_batch(self, what: str) -> None:
        if self.batch_size is not None:
            raise ValueError(
                f"{what} runs per sample, so it must come before .batch(). Move it up, or for "
                "work on whole batches on the device use to_keras(device_transform=...)."
            )

    # -- running -------------------------------------------------------------------------
    def iter(self, workers: int | str = "auto", executor: str = "auto", epoch: int = 0,
             state: IteratorState | dict | None = None, **options: Any) -> BatchIterator:
        """Iterate one epoch (or ``repeat`` epochs) with fresh workers, closed at the end.

        ``executor``: "process" (shared-memory ring), "thread", "inline", "ray" (a Ray
        cluster: see docs/ray.md) or "auto".
        ``state``: an ``it.state()`` saved earlier, to go on from there: the rest of that
        iteration (of ``repeat(n)``: the epochs that were left, not ``n`` more); a state saved
        once its iteration was finished starts the next one (``n`` epochs from there).
        Other options: see :class:`~stoke.executors.options.LoaderOptions`.
        """
        epochs = self.repeat_count
        if state is not None:
            state = IteratorState.from_dict(state)
            if epochs is not None and (state.stop_epoch or 0) > state.epoch:
                epochs = state.stop_epoch - state.epoch
        loader = Loader(self, LoaderOptions(workers=workers, executor=executor, **options))
        try:
            _ = loader.pool  # start the workers now: errors (unpicklable fn...) surface here
            iterator = loader.iter(epoch=epoch, state=state, epochs=epochs)
        except BaseException:
            loader.close()
            raise
        iterator.owns_loader = True
        return iterator

    def __iter__(self):
        """``for batch in pipe`` / ``list(pipe)``: copies (``list`` keeps them all). Use
        ``pipe.iter()`` for zero-copy views (also safe to keep: never overwritten)."""
        return self.iter(copy=True)

    def loader(self, workers: int | str = "auto", executor: str = "auto",
               **options: Any) -> Loader:
        """Workers and ring that stay up across epochs: ``loader.iter(epoch=e)``."""
        return Loader(self, LoaderOptions(workers=workers, executor=executor, **options))

    def to_keras(self, workers: int | str = "auto", executor: str = "auto", prefetch: int = 2,
                 device_transform: Callable[[Any], Any] | None = None, **options: Any):
        """What ``model.fit`` / ``evaluate`` / ``predict`` take, on every Keras backend.

        Workers start here (they load the pipeline while the model is built) and serve
        every epoch; with ``executor="auto"`` the trainer makes ``fit``'s first batches
        until one worker is up (``executor="process"``: every batch in a worker); each
        epoch is reshuffled; batches move to
        the device ``prefetch`` batches ahead on a background thread (JAX ``device_put``
        honouring ``keras.distribution``; torch pinned staging and a side CUDA stream;
        TensorFlow ``tf.data`` under the active ``tf.distribute`` strategy).
        ``device_transform(batch)`` runs on the device after the copy: ship uint8, finish
        normalisation there (four times fewer bytes to move)::

            def to_float(batch):
                x, y = batch
                return keras.ops.cast(x, "float32") / 255.0, y

            model.fit(pipe.to_keras(device_transform=to_float), epochs=10)
        """
        from stoke.keras.adapter import to_keras

        return to_keras(self, workers, executor, prefetch, device_transform, **options)

    def skipped_records(self) -> int:
        """Bad records skipped so far by a record-format source built with
        ``on_error="skip"``, summed over the trainer and its worker processes on this
        machine (each skip also warns, with this running count); 0 for sources that never
        skip. Counts every epoch since the pipeline was made."""
        return skipped_in(self.source)

    def steps_have_filter(self) -> bool:
        return has_filter(self.steps)

    def __len__(self) -> int:
        """Batches (or samples, when unbatched) per epoch of this shard."""
        if self.steps_have_filter():
            raise TypeError("the length of a filtered pipeline is not known before it runs.")
        return self.plan_spec.batches_per_epoch()

    @property
    def plan_spec(self) -> PlanSpec:
        """What the epoch plans of this pipeline are made from (length, batch size,
        shuffling, seed, shard, mix and bucket order): a new :class:`~stoke.data.plan.PlanSpec`
        at each read, which loaders turn into each epoch's chunks."""
        shards = self.source.shard_order() if isinstance(self.source, ShardedSource) else None
        length = len(self.source) if shards is None or isinstance(shards, ShardOrder) else -1
        spec = PlanSpec(length, self.batch_size or 1, self.drop_remainder,
                        self.shuffled, self.seed, self.shard_index, self.shard_count,
                        shards=shards)
        if isinstance(self.source, MixSource):
            spec = self.source.plan(spec)
        if self.buckets is not None:
            spec = self.buckets.plan(spec, self.source)
        return spec

    @property
    def program(self) -> SampleProgram:
        """What a worker runs per sample (source, steps, seed, dtype policy): a new
        :class:`~stoke.data.program.SampleProgram` at each read, to be packed for workers."""
        return SampleProgram(self.source, self.steps, self.seed, self.dtype_policy,
                             self.step_offset)

    def __repr__(self) -> str:
        parts = [getattr(self.source, "describe", lambda: type(self.source).__name__)()]
        if self.shuffled:
            parts.append(f"shuffle(seed={self.seed})")
        parts += [s.name for s in self.steps]
        if self.buckets:
            parts.append(f"bucket_by_length({list(self.buckets.boundaries)}, "
                         f"{list(self.buckets.batch_sizes)})")
        elif self.padding:
            parts.append(f"padded_batch({self.batch_size})")
        elif self.batch_size:
            parts.append(f"batch({self.batch_size})")
        if self.repeat_count != 1:
            parts.append(f"repeat({self.repeat_count})")
        return "Pipeline(" + " -> ".join(parts) + ")"


def skipped_in(source: Any) -> int:
    """The skipped-record count of ``source`` and of the sources it reads (cache, mix)."""
    from stoke.data.cache import CachedSource

    if isinstance(source, SkippingSource):
        return source.skipped_records()
    if isinstance(source, CachedSource):
        return skipped_in(source.program.source)
    if isinstance(source, MixSource):
        return sum(skipped_in(program.source) for program in source.programs)
    return 0


def as_count(value: Any, what: str, minimum: int = 1, none_ok: bool = False) -> int:
    """``value`` as a Python int >= ``minimum``: numpy integers (``np.int64(32)``, a value
    read from an array or a config) are accepted; bools, floats and strings are not."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        none = " or None" if none_ok else ""
        raise ValueError(f"{what} must be an int >= {minimum}{none}. Received: {value!r}")
    return int(value)


def map_in_workers(source: Any, fn: Callable[[Any], Any]) -> np.ndarray:
    """``fn(source[i])`` for every ``i``, as one array, computed by stoke's workers (an
    ordinary pipeline, ``workers="auto"``): the lengths of ``bucket_by_length``."""
    mapped = Pipeline(source).map(fn).batch(4096)
    return np.concatenate([np.array(b) for b in mapped.iter(workers="auto", executor="auto")])


def from_sequence(sequence: Any) -> Pipeline:
    """A pipeline over anything with ``len()`` and ``[i]``: a list, an array, a torch
    ``Dataset``... Each item is one sample."""
    return Pipeline(SequenceSource(sequence))


def from_arrays(*arrays: Any, **named_arrays: Any) -> Pipeline:
    """Samples ``(x[i], y[i], ...)`` of aligned arrays, or ``{name: a[i]}`` with keywords.
    Large arrays reach process workers through shared memory, once."""
    return Pipeline(ArraySource(*arrays, **named_arrays))


def from_files(paths_or_glob: Any, labels: Any = None) -> Pipeline:
    """The bytes of each file (a glob, a directory or a list of paths), with its label if
    given. Decode in ``map`` (e.g. :func:`stoke.decode_image`), so it runs in the workers."""
    return Pipeline(FileSource(resolve_paths(paths_or_glob), labels))
