"""The epoch order of shard-based sources (TFRecord, tar): shards, not single records, are
what gets shuffled, so that each read stays close to the last one in its file.

Every record is addressable as ``(shard, record)``, i.e. as the global index
``shard_start[shard] + record``, once the shards are indexed (``stoke/data/formats/shards.py``).
The order is a pure function of the seed, the epoch and the shard sizes, so it is the same
for any worker count and executor, an iterator state ``(epoch, chunk)`` resumes it
mid-shard, and every record comes exactly once per epoch:

1. ``.shard(i, n)`` gives host ``i`` the shards ``i, i+n, i+2n, ...`` (the same shards
   every epoch, so each host's epoch length is fixed);
2. shuffled, the host's shards are permuted by ``(seed, epoch)``;
3. they are read ``cycle_length`` at a time, round-robin, ``block_records`` consecutive
   records from each in turn (tf.data's ``interleave``);
4. shuffled, a seeded shuffle window of ``buffer_size`` records: each block's position is
   jittered by a uniform draw in ``[0, buffer_size)`` and the sequence re-sorted, so a
   record moves at most ``buffer_size`` places (what a shuffle buffer of that size does to
   a stream, but vectorised: 1M records in ~0.1 s). A block's records stay together, so a
   chunk of a remote shard is read with one request per block, not one per record.

Not shuffled, the order is every shard in turn, records in file order.

A source with more shards than it indexes up front (``index="lazy"``, the default past
1,024 shards) gets :class:`LazyShardOrder`: the same steps made a group of shards at a time,
so that the first batch needs the sizes of ``cycle_length`` shards, not of all of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


def host_files(host_index: int, host_count: int, files: int) -> np.ndarray:
    """The files of host ``host_index`` of ``host_count``: ``host_index, host_index +
    host_count, ...`` of ``files``."""
    if host_count > files:
        raise ValueError(
            f".shard({host_index}, {host_count}) splits whole files, but this source has "
            f"{files} file(s): some hosts would read nothing. Use at most {files} shards, "
            "or write more, smaller files.")
    return np.arange(host_index, files, host_count, dtype=np.int64)


@dataclass(frozen=True)
class ShardOrder:
    """Records per shard and how to interleave them. ``sizes``: records in each shard."""

    sizes: tuple[int, ...]
    cycle_length: int = 16
    block_records: int = 1
    buffer_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("cycle_length", "block_records"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if self.buffer_size < 0:
            raise ValueError(f"buffer_size must be >= 0. Received: buffer_size={self.buffer_size}")

    @property
    def length(self) -> int:
        return int(sum(self.sizes))

    def host_shards(self, host_index: int, host_count: int) -> np.ndarray:
        """The files of host ``host_index``: ``host_index, host_index + host_count, ...``.
        Hosts get whole files, so their epochs differ in length when files do."""
        return host_files(host_index, host_count, len(self.sizes))

    def host_length(self, host_index: int, host_count: int) -> int:
        sizes = np.asarray(self.sizes, dtype=np.int64)
        return int(sizes[self.host_shards(host_index, host_count)].sum())

    def order(self, seed: int, epoch: int, shuffle: bool, host_index: int = 0,
              host_count: int = 1) -> np.ndarray:
        """Global record indices of host ``host_index`` for ``epoch``, in reading order."""
        sizes = np.asarray(self.sizes, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
        shards = self.host_shards(host_index, host_count)
        if not shuffle:
            parts = [np.arange(starts[s], starts[s] + sizes[s]) for s in shards]
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        rng = np.random.default_rng([seed, epoch, 0x5A4D])
        shards = shards[rng.permutation(len(shards))]
        counts = sizes[shards]
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, np.int64)
        # one row per record: which shard (its place in the read order) and its number in it
        place = np.repeat(np.arange(len(shards)), counts)
        record = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        group = place // self.cycle_length  # shards read together
        lane = place % self.cycle_length  # their turn within the round
        block = record // self.block_records
        # sort by (group, block, lane, record): round-robin by block within each group,
        # as one int64 key (one argsort: 1M records in ~0.1 s)
        blocks = int(block.max()) + 1
        within = record - block * self.block_records
        composite = ((group * blocks + block) * self.cycle_length + lane) * self.block_records
        key = np.argsort(composite + within, kind="stable")
        order = (starts[shards][place] + record)[key]
        if self.buffer_size > 1:
            # jitter whole blocks (a block's records stay together: one read for remote shards)
            first = np.ones(total, dtype=bool)
            first[1:] = (place[key][1:] != place[key][:-1]) | (block[key][1:] != block[key][:-1])
            block_no = np.cumsum(first) - 1
            block_start = np.flatnonzero(first)
            jitter = rng.uniform(0, self.buffer_size, size=len(block_start))
            moved = (block_start + jitter)[block_no]
            order = order[np.argsort(moved, kind="stable")]
        return order.astype(np.int64)

    def fingerprint(self) -> str:
        digest = hashlib.sha1(np.asarray(self.sizes, dtype=np.int64).tobytes()).hexdigest()[:12]
        return (f"shards={len(self.sizes)}:{digest},cycle={self.cycle_length},"
                f"block={self.block_records},buffer={self.buffer_size}")


RECORD_BITS = 32  # a lazily indexed source's sample key: (shard << RECORD_BITS) | record
RECORD_MASK = (1 << RECORD_BITS) - 1
LOOKAHEAD_GROUPS = 2  # groups of shards whose sizes are asked for ahead of the one read


def record_key(shards: np.ndarray, records: np.ndarray) -> np.ndarray:
    """The sample keys of a lazily indexed source: ``(shard << 32) | record``."""
    return (np.asarray(shards, np.int64) << RECORD_BITS) | np.asarray(records, np.int64)


class ShardSizes(Protocol):
    """What :class:`LazyShardOrder` asks the source (in the trainer)."""

    def shard_sizes(self, shards: np.ndarray) -> np.ndarray:
        """Records in each of ``shards`` (indexing those not indexed yet)."""

    def index_ahead(self, shards: np.ndarray) -> None:
        """Start indexing ``shards`` in the background (they are read next)."""

    def length_unknown(self) -> TypeError:
        """The error of asking for the number of records before they are all indexed: it
        says what to write instead."""


@dataclass(frozen=True)
class LazyShardOrder:
    """The order of a source with too many shards to index before the first batch.

    The same steps as :class:`ShardOrder` (host split, seeded shard permutation, round-robin
    of ``cycle_length`` shards by blocks, shuffle window of ``buffer_size`` records), made
    group by group: the sizes of only the ``cycle_length`` shards read now (and of the next
    :data:`LOOKAHEAD_GROUPS` groups, indexed in the background) are needed, so the first
    batch costs the same for 100 shards or 1,000,000. The records are addressed by
    :func:`record_key` (no global numbering: that would need every shard's size), and the
    epoch's length is not known before it ends (``len()`` raises ``TypeError``).

    The shuffle window is streamed exactly: a block of records at position ``p`` moves to
    ``p + U[0, buffer_size)``, so once the records up to position ``q`` are made, every
    record whose moved position is below ``q`` is final.
    """

    shard_count: int
    sizes: ShardSizes = field(compare=False, repr=False)
    identity: str = ""  # the paths' description, for the fingerprint
    cycle_length: int = 16
    block_records: int = 1
    buffer_size: int = 1024

    def __post_init__(self) -> None:
        ShardOrder((), self.cycle_length, self.block_records, self.buffer_size)  # validates

    def host_shards(self, host_index: int, host_count: int) -> np.ndarray:
        return host_files(host_index, host_count, self.shard_count)

    def host_length(self, host_index: int, host_count: int) -> int:
        raise self.sizes.length_unknown()

    def counted_length(self, host_index: int, host_count: int) -> int:
        """Records of the host's shards, indexing the ones not indexed yet: cheap once an
        epoch has been read through (an error message after an empty epoch), else every
        shard of the host is read (prefer :meth:`host_length`'s error to this)."""
        shards = self.host_shards(host_index, host_count)
        return int(np.asarray(self.sizes.shard_sizes(shards), np.int64).sum()) if len(shards) else 0

    def order(self, seed: int, epoch: int, shuffle: bool, host_index: int = 0,
              host_count: int = 1) -> np.ndarray:
        """The whole epoch's keys (indexes every shard of the host: prefer :meth:`stream`)."""
        parts = list(self.stream(seed, epoch, shuffle, host_index, host_count))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def stream(self, seed: int, epoch: int, shuffle: bool, host_index: int = 0,
               host_count: int = 1) -> Iterator[np.ndarray]:
        """The epoch's record keys in reading order, a group of shards at a time."""
        shards = self.host_shards(host_index, host_count)
        rng = np.random.default_rng([seed, epoch, 0x5A4D])
        if shuffle:
            shards = shards[rng.permutation(len(shards))]
        cycle = self.cycle_length if shuffle else 1
        window = shuffle and self.buffer_size > 1
        carry_keys = np.zeros(0, np.int64)
        carry_moved = np.zeros(0, np.float64)
        position = 0
        for start in range(0, len(shards), cycle):
            group = shards[start:start + cycle]
            ahead = shards[start + cycle:start + cycle * (1 + LOOKAHEAD_GROUPS)]
            if len(ahead):
                self.sizes.index_ahead(ahead)
            keys, first = self._interleave(group, np.asarray(self.sizes.shard_sizes(group)))
            if not window:
                if len(keys):
                    yield keys
                continue
            block_no = np.cumsum(first) - 1
            jitter = rng.uniform(0, self.buffer_size, size=int(first.sum()))
            moved = (position + np.flatnonzero(first) + jitter)[block_no]
            position += len(keys)
            keys = np.concatenate([carry_keys, keys])
            moved = np.concatenate([carry_moved, moved])
            by_move = np.argsort(moved, kind="stable")
            keys, moved = keys[by_move], moved[by_move]
            final = int(np.searchsorted(moved, position, side="left"))
            carry_keys, carry_moved = keys[final:], moved[final:]
            if final:
                yield keys[:final]
        if len(carry_keys):
            yield carry_keys

    def _interleave(self, group: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keys of ``group`` read round-robin by blocks, and where each block starts."""
        counts = sizes.astype(np.int64)
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        lane = np.repeat(np.arange(len(group)), counts)
        record = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        block = record // self.block_records
        within = record - block * self.block_records
        by_turn = np.argsort((block * len(group) + lane) * self.block_records + within,
                             kind="stable")
        lane, record, block = lane[by_turn], record[by_turn], block[by_turn]
        first = np.ones(total, dtype=bool)
        first[1:] = (lane[1:] != lane[:-1]) | (block[1:] != block[:-1])
        return record_key(group[lane], record), first

    def fingerprint(self) -> str:
        return (f"lazy-shards={self.shard_count}:{self.identity},cycle={self.cycle_length},"
                f"block={self.block_records},buffer={self.buffer_size}")
