"""Epoch plans: which source indices go into which batch, in which order, for one epoch.

The plan is a pure function of (source length, seed, epoch, batch size, shard): a seeded
permutation cut into chunks of indices. That one choice gives exactly-once epochs, global
shuffling, per-host sharding and an iterator state that is two integers. Executors only ever
see chunks; they never decide the order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from stoke.data.shard_plan import LazyShardOrder, ShardOrder

STATE_VERSION = 1


@dataclass(frozen=True)
class PlanSpec:
    """Everything that fixes an epoch's plan except the epoch number."""

    length: int  # samples in the source; -1: not known before an epoch ends (lazy shards)
    batch_size: int
    drop_remainder: bool = False
    shuffle: bool = False
    seed: int = 0
    shard_index: int = 0
    shard_count: int = 1
    fixed_order: tuple[int, ...] | None = None  # an order given from outside (Keras' shuffle)
    shards: ShardOrder | LazyShardOrder | None = None  # TFRecord, tar: see shard_plan.py

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1. Received: batch_size={self.batch_size}")
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(
                "shard index must be in [0, shard_count). Received: "
                f"shard_index={self.shard_index}, shard_count={self.shard_count}"
            )

    def order(self, epoch: int) -> np.ndarray:
        """The source indices of this shard for ``epoch``, in the order they are read."""
        if self.shards is not None:
            return self.shards.order(self.seed, epoch, self.shuffle, self.shard_index,
                                     self.shard_count)
        if self.fixed_order is not None:
            order = np.asarray(self.fixed_order, np.int64)
        elif self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, 0x5704E])
            order = rng.permutation(self.length)
        else:
            order = np.arange(self.length)
        if self.shard_count > 1:
            order = order[self.shard_index :: self.shard_count]
        return order.astype(np.int64)

    def chunks(self, epoch: int, drop_partial: bool | None = None) -> list[np.ndarray] | LazyChunks:
        """The epoch cut into chunks of ``batch_size`` indices (the last may be shorter, or
        dropped when ``drop_partial``; defaults to ``drop_remainder``). A lazily indexed
        shard source gives :class:`LazyChunks`, made as they are iterated."""
        drop = self.drop_remainder if drop_partial is None else drop_partial
        if isinstance(self.shards, LazyShardOrder):
            return LazyChunks(self, epoch, drop)
        order = self.order(epoch)
        count = len(order) // self.batch_size if drop else -(-len(order) // self.batch_size)
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]

    def chunk_count(self, epoch: int, drop_partial: bool | None = None) -> int:
        """How many chunks :meth:`chunks` gives for ``epoch`` (a lazily indexed shard
        source makes them all to count them: every shard of the host gets indexed)."""
        chunks = self.chunks(epoch, drop_partial)
        if isinstance(chunks, LazyChunks):
            return sum(1 for _ in chunks)
        return len(chunks)

    def batches_per_epoch(self) -> int:
        per_shard = len(range(self.shard_index, self.length, self.shard_count))
        if self.shards is not None:
            per_shard = self.shards.host_length(self.shard_index, self.shard_count)
        if self.drop_remainder:
            return per_shard // self.batch_size
        return -(-per_shard // self.batch_size)

    def describe_extra(self) -> str:
        """What a plan that extends this one adds to its :func:`fingerprint` (mix, buckets)."""
        return ""


class LazyChunks:
    """The chunks of an epoch whose length is not known before it ends (a lazily indexed
    shard source): iterable once per ``iter()``, made a group of shards at a time; no
    ``len()``."""

    def __init__(self, spec: PlanSpec, epoch: int, drop: bool) -> None:
        self.spec = spec
        self.epoch = epoch
        self.drop = drop

    def __iter__(self) -> Iterator[np.ndarray]:
        spec, size = self.spec, self.spec.batch_size
        held = np.zeros(0, np.int64)
        for part in spec.shards.stream(spec.seed, self.epoch, spec.shuffle, spec.shard_index,
                                       spec.shard_count):
            held = np.concatenate([held, part]) if len(held) else part
            whole = len(held) // size
            for i in range(whole):
                yield held[i * size:(i + 1) * size]
            held = held[whole * size:]
        if len(held) and not self.drop:
            yield held

    def __len__(self) -> int:
        return self.spec.shards.host_length(self.spec.shard_index, self.spec.shard_count)


@dataclass(frozen=True)
class IteratorState:
    """Where an iterator stands: the epoch, how many chunks of it were fully delivered, and
    how many rows of the next chunk were already delivered (non-zero only with ``filter``).
    ``stop_epoch``: the epoch before which the saved iteration would have stopped (``repeat(n)``
    started at epoch 0 stops before epoch n; None: it ran forever), so that resuming yields
    only the epochs that were left, never more.

    Save it with :meth:`to_dict` (JSON-friendly) and give it back as ``pipe.iter(state=...)``.
    """

    epoch: int
    chunk: int = 0
    rows_delivered: int = 0
    fingerprint: str = ""
    version: int = STATE_VERSION
    stop_epoch: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | IteratorState) -> IteratorState:
        if isinstance(data, IteratorState):
            return data
        if data.get("version", STATE_VERSION) > STATE_VERSION:
            raise ValueError(
                f"iterator state version {data['version']} is newer than this stoke "
                f"understands ({STATE_VERSION}); upgrade stoke."
            )
        return cls(**data)


def fingerprint(spec: PlanSpec) -> str:
    """A short string that changes when a saved state would no longer mean the same place."""
    return (f"n={spec.length},b={spec.batch_size},drop={int(spec.drop_remainder)},"
            f"shuffle={int(spec.shuffle)},seed={spec.seed},"
            f"shard={spec.shard_index}/{spec.shard_count}"
            + (f",{spec.shards.fingerprint()}" if spec.shards is not None else "")
            + spec.describe_extra())
