"""Shard-based record sources: many files, each a sequence of records with no index of its
own (TFRecord, WebDataset tar). :class:`ShardedSource` indexes them once and then reads any
record by its global index.

Indexing is one sequential pass over each shard's headers (for a local TFRecord, a seek
over each length header; remote shards are streamed once), all shards concurrently on a
thread pool, in the trainer at the first ``len()`` or iteration. It yields each record's
byte span ``[offset, offset + length)``; the spans are two int64 arrays that reach process
workers through shared memory with the rest of the source. A worker then reads record
``i`` with one ``pread`` (local) or one range request (remote). For remote shards the
worker hands the source the chunks queued for it while it computes the current one, and the
current one itself (:meth:`ShardedSource.prefetch`, called from ``executors/worker.py``,
the thread and inline pools' ``submit`` and ``chunk.fill_slot``): spans close together in
one file are merged into one request (a block of ``block_records`` records is contiguous in
the plan) and all requests are in flight together on a per-process thread pool, so request
latency overlaps with decoding.

The epoch order of these sources is :class:`stoke.data.shard_plan.ShardOrder`: shards permuted,
interleaved, shuffled in a window, never a global shuffle that would make each read a
random seek. Formats implement :meth:`index_shard` and :meth:`decode`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stoke.data.formats.base import PrefetchingSource, RecordError, SkipCounter, check_on_error
from stoke.data.formats.remote import ByteReader, coalesce, is_remote
from stoke.data.shard_plan import ShardOrder

if TYPE_CHECKING:
    from concurrent.futures import Future

INDEX_THREADS = 16
PREFETCH_MAX_GAP = 64 << 10  # merge spans of one file closer than this into one request
PREFETCH_TIMEOUT_S = 120.0
PREFETCH_PENDING_MAX = 1 << 14  # prefetched samples never read (a probe's, an abandoned batch's) are dropped past this
REMOTE_BLOCK_RECORDS = 16  # default block_records for remote shards


class ShardIndex:
    """One shard's records: byte offsets and lengths, plus what the format needs to decode
    them (``extra``, e.g. tar member names)."""

    def __init__(self, offsets: Sequence[int], lengths: Sequence[int], extra: Any = None):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.extra = extra

    def __len__(self) -> int:
        return len(self.offsets)


class ShardedSource(PrefetchingSource):
    """Records of shard files addressed by global index; see the module docstring."""

    format_name = "records"

    def __init__(self, paths: Sequence[str], *, on_error: str = "raise",
                 cycle_length: int = 16, block_records: int | None = None,
                 buffer_size: int = 1024,
                 storage_options: dict | None = None) -> None:
        self.paths = paths
        self.on_error = check_on_error(on_error)
        if block_records is None:  # remote: a block of records is one request
            block_records = REMOTE_BLOCK_RECORDS if len(paths) and is_remote(paths[0]) else 1
        ShardOrder((), cycle_length, block_records, buffer_size)  # validates
        self.cycle_length = cycle_length
        self.block_records = block_records
        self.buffer_size = buffer_size
        self.reader = ByteReader(storage_options)
        self.skips = SkipCounter()
        self.offsets: np.ndarray | None = None  # global, per record
        self.lengths: np.ndarray | None = None
        self.shard_starts: np.ndarray | None = None  # global index of each shard's record 0
        self.extras: list[Any] | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Future, int]] = {}

    # -- what a format provides -----------------------------------------------------------
    def index_shard(self, shard: int, path: str) -> ShardIndex:
        raise NotImplementedError

    def decode(self, shard: int, record: int, data: bytes, extra: Any) -> Any:
        """The sample of one record from the bytes of its span (raise RecordError if bad)."""
        raise NotImplementedError

    # -- index --------------------------------------------------------------------------
    def ensure_index(self) -> None:
        if self.offsets is not None:
            return
        with self._lock:
            if self.offsets is not None:
                return
            count = len(self.paths)
            threads = max(1, min(INDEX_THREADS, count))
            if threads == 1:
                indexes = [self.index_shard(0, self.paths[0])]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(threads, thread_name_prefix="stoke-index") as pool:
                    indexes = list(pool.map(self.index_shard, range(count),
                                            (self.paths[i] for i in range(count))))
            sizes = np.array([len(ix) for ix in indexes], dtype=np.int64)
            self.shard_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            self.lengths = (np.concatenate([ix.lengths for ix in indexes])
                            if indexes else np.zeros(0, np.int64))
            self.extras = [ix.extra for ix in indexes]
            self.offsets = (np.concatenate([ix.offsets for ix in indexes])
                            if indexes else np.zeros(0, np.int64))

    def shard_order(self) -> ShardOrder:
        self.ensure_index()
        sizes = np.diff(np.append(self.shard_starts, len(self.offsets)))
        return ShardOrder(tuple(int(s) for s in sizes), self.cycle_length,
                          self.block_records, self.buffer_size)

    def __len__(self) -> int:
        self.ensure_index()
        return len(self.offsets)

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, record)`` of a global index."""
        self.ensure_index()
        shard = int(np.searchsorted(self.shard_starts, index, side="right")) - 1
        return shard, index - int(self.shard_starts[shard])

    # -- reading ------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        shard, record = self.locate(index)
        offset, length = int(self.offsets[index]), int(self.lengths[index])
        pending = self._pending.pop(index, None)
        try:
            if pending is not None:
                future, base = pending
                block = future.result(timeout=PREFETCH_TIMEOUT_S)
                data = block[offset - base: offset - base + length]
            else:
                data = self.reader.read(self.paths[shard], offset, offset + length)
            if len(data) < length:
                raise RecordError(
                    f"{self.paths[shard]}: record {record} at byte offset {offset} is "
                    f"truncated: {len(data)} of {length} bytes (the file changed since it "
                    "was indexed?)")
            return self.decode(shard, record, data, self.extras[shard])
        except RecordError as exc:
            if self.on_error == "skip":
                return self.skips.skip(exc)
            raise

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start reading the spans of ``indices`` (remote shards only: local reads are one
        ``pread`` each, already as cheap as it gets)."""
        self.ensure_index()
        if len(self._pending) > PREFETCH_PENDING_MAX:
            self._pending.clear()
        by_shard: dict[int, list[tuple[int, int, int]]] = {}
        for index in indices:
            index = int(index)
            if index in self._pending:
                continue
            shard, _ = self.locate(index)
            if not is_remote(self.paths[shard]):
                continue
            offset = int(self.offsets[index])
            by_shard.setdefault(shard, []).append((offset, offset + int(self.lengths[index]), index))
        for shard, spans in by_shard.items():
            for start, end, keys in coalesce(spans, PREFETCH_MAX_GAP):
                future = self.reader.submit(self.paths[shard], start, end)
                for key in keys:
                    self._pending[key] = (future, start)

    def __getstate__(self) -> dict:
        self.ensure_index()  # workers get the index, never build it
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_pending"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def describe(self) -> str:
        if self.offsets is None:
            return f"{self.format_name} of {len(self.paths)} shards (not indexed yet)"
        return f"{self.format_name} of {len(self.paths)} shards, {len(self)} records"
