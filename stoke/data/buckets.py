"""``bucket_by_length``: batches of samples of similar length, each with its bucket's size.

Owns the bucketed epoch plan (:class:`BucketPlan`) and the table of sample lengths it is
made from (:class:`LengthTable`). Padding the batches is :mod:`stoke.data.padding`'s job.

Why a plan and not a stream re-batcher: stoke forms batches before samples are computed (a
batch is a list of indices, a ring slot is filled by workers in parallel). So each sample's
length must be known first: ``length_fn(raw sample)`` runs over the *source's* samples (the
item ``source[i]``, before any ``map``) once per pipeline, at the first epoch (or the first
``len()``), and is kept: in the trainer for small sources, in worker processes (an ordinary
stoke pipeline, ``executor="auto"``) from :data:`PARALLEL_FROM` samples on. Keep it cheap
(``len(text)``, a header field). A stream re-batcher (bucketing samples as they come, as
tf.data does) would need no pass, but its state would be the contents of every partial
bucket, and its batches would depend on timing unless delivery were serialised.
Then, each epoch:

1. the epoch's order is the usual seeded permutation (or the source order), then sharded;
2. each sample goes to bucket ``i`` when ``boundaries[i-1] <= length < boundaries[i]``
   (``len(batch_sizes) == len(boundaries) + 1``: the last bucket takes the rest), keeping
   that order inside each bucket;
3. each bucket is cut into batches of its ``batch_sizes[i]``; its last, partial batch is kept
   (or dropped with ``drop_remainder``);
4. batches come in the order a streaming bucketer would emit them: when their last sample
   arrives in the epoch's order (partial batches last, by bucket).

So the plan stays a pure function of ``(seed, epoch)``: every sample exactly once per epoch,
the same batches for any executor and worker count, and ``it.state()`` is the usual
``(epoch, batch)`` pair. The number of batches per epoch is fixed (``len()``), except with
``.shard()``, where each shard's share of a bucket can change from epoch to epoch. A batch is padded to its longest sample after ``map``; the bucket
only decides which samples share a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stoke.data.plan import PlanSpec

PARALLEL_FROM = 20_000  # sources at least this long get their lengths from worker processes


class LengthOf:
    """``length_fn`` as a picklable per-sample map: the sample's length as an int64."""

    def __init__(self, length_fn: Callable[[Any], int]) -> None:
        self.length_fn = length_fn

    def __call__(self, sample: Any) -> np.ndarray:
        return np.int64(self.length_fn(sample))


MapInWorkers = Callable[[Any, Callable[[Any], Any]], np.ndarray]


class LengthTable:
    """``length_fn(source[i])`` for every ``i``, computed once on first use and kept.
    ``map_in_workers(source, fn)``: ``fn`` of every sample of ``source`` as one array,
    computed in worker processes (the pipeline gives it: an ordinary stoke pipeline)."""

    def __init__(self, length_fn: Callable[[Any], int], map_in_workers: MapInWorkers) -> None:
        self.length_fn = length_fn
        self.map_in_workers = map_in_workers
        self._lengths: np.ndarray | None = None
        self._lock = threading.Lock()

    def lengths(self, source: Any) -> np.ndarray:
        with self._lock:
            if self._lengths is None or len(self._lengths) != len(source):
                self._lengths = self._compute(source)
            return self._lengths

    def _compute(self, source: Any) -> np.ndarray:
        if len(source) >= PARALLEL_FROM:
            return self._compute_in_workers(source)
        out = np.empty(len(source), np.int64)
        for i in range(len(source)):
            try:
                value = self.length_fn(source[i])
            except Exception as exc:
                raise ValueError(
                    f"bucket_by_length: length_fn failed on sample {i} of the source: "
                    f"{type(exc).__name__}: {exc}. length_fn gets the source's sample, "
                    "before any map."
                ) from exc
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(
                    f"bucket_by_length: length_fn must return a non-negative int. Received "
                    f"for sample {i}: {value!r}"
                )
            out[i] = value
        return out

    def _compute_in_workers(self, source: Any) -> np.ndarray:
        out = self.map_in_workers(source, LengthOf(self.length_fn))
        if (out < 0).any():
            first = int(np.flatnonzero(out < 0)[0])
            raise ValueError("bucket_by_length: length_fn must return a non-negative int. "
                             f"Received for sample {first}: {int(out[first])}")
        return out

    def __getstate__(self) -> dict:  # travels with the pipeline; the table stays here
        return {"length_fn": self.length_fn, "map_in_workers": self.map_in_workers,
                "_lengths": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


@dataclass(frozen=True)
class BucketSpec:
    """What ``bucket_by_length`` asked for."""

    table: LengthTable = field(compare=False)
    boundaries: tuple[int, ...]
    batch_sizes: tuple[int, ...]

    @classmethod
    def make(cls, length_fn: Callable[[Any], int], boundaries: Sequence[int],
             batch_sizes: Sequence[int], map_in_workers: MapInWorkers) -> BucketSpec:
        if not callable(length_fn):
            raise TypeError(f"bucket_by_length needs a callable length_fn. Received: "
                            f"{type(length_fn).__name__}")
        boundaries = tuple(int(b) for b in boundaries)
        batch_sizes = tuple(int(b) for b in batch_sizes)
        if not boundaries or any(b <= a for a, b in zip(boundaries, boundaries[1:])) or \
                boundaries[0] < 1:
            raise ValueError("bucket_by_length needs increasing positive boundaries. "
                             f"Received: boundaries={list(boundaries)}")
        if len(batch_sizes) != len(boundaries) + 1 or min(batch_sizes) < 1:
            raise ValueError(
                "bucket_by_length needs one positive batch size per bucket, "
                "len(boundaries) + 1 of them (the last bucket takes lengths >= the last "
                f"boundary). Received: boundaries={list(boundaries)}, "
                f"batch_sizes={list(batch_sizes)}"
            )
        return cls(LengthTable(length_fn, map_in_workers), boundaries, batch_sizes)

    def plan(self, base: PlanSpec, source: Any) -> BucketPlan:
        return BucketPlan(base.length, max(self.batch_sizes), base.drop_remainder,
                          base.shuffle, base.seed, base.shard_index, base.shard_count,
                          bucket=self, source=source)


@dataclass(frozen=True)
class BucketPlan(PlanSpec):
    """A :class:`~stoke.data.plan.PlanSpec` whose chunks are bucketed batches (of up to
    ``batch_size`` = the largest bucket batch size)."""

    bucket: BucketSpec | None = field(default=None, compare=False)
    source: Any = field(default=None, compare=False)

    def chunks(self, epoch: int, drop_partial: bool | None = None) -> list[np.ndarray]:
        order = self.order(epoch)
        drop = self.drop_remainder if drop_partial is None else drop_partial
        lengths = self.bucket.table.lengths(self.source)[order]
        which = np.searchsorted(np.asarray(self.bucket.boundaries), lengths, side="right")
        full: list[tuple[int, np.ndarray]] = []
        partial: list[np.ndarray] = []
        for b, size in enumerate(self.bucket.batch_sizes):
            where = np.flatnonzero(which == b)  # positions in the epoch's order
            whole = len(where) // size
            for k in range(whole):
                members = where[k * size:(k + 1) * size]
                full.append((int(members[-1]), order[members]))
            if len(where) % size and not drop:
                partial.append(order[where[whole * size:]])
        full.sort(key=lambda item: item[0])
        return [members for _, members in full] + partial

    def batches_per_epoch(self) -> int:
        return len(self.chunks(0))

    def describe_extra(self) -> str:
        return (f",buckets=({','.join(map(str, self.bucket.boundaries))};"
                f"{','.join(map(str, self.bucket.batch_sizes))})")
