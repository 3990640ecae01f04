"""Shard-based record sources: many files, each a sequence of records with no index of its
own (TFRecord, WebDataset tar). :class:`ShardedSource` indexes them and then reads any
record by its address.

Indexing a shard is one sequential pass over its headers (for a local TFRecord, a seek
over each length header; remote shards are streamed once). It yields each record's byte
span ``[offset, offset + length)``. Two ways, by ``index``:

- ``"eager"`` (the default up to :data:`EAGER_MAX_SHARDS` files): every shard at once,
  concurrently on a thread pool, in the trainer at the first ``len()`` or iteration;
  records are numbered globally, and the spans (two int64 arrays) reach process workers
  through shared memory with the rest of the source;
- ``"lazy"`` (the default past that): a shard is indexed when it is first read, in each
  process that reads it (kept for the last :data:`RECENT_SHARDS`); the trainer indexes the
  shards its plan reaches (:class:`~stoke.data.shard_plan.LazyShardOrder`: the current
  group of ``cycle_length`` and a few groups ahead, in the background) to know their sizes.
  Records are addressed as ``(shard << 32) | record``; nothing of size O(shards) is
  pickled for the workers (a brace pattern stays a pattern; a long list becomes one
  shared-memory buffer, :class:`~stoke.data.formats.remote.PathTable`). The cost: each
  worker indexes the shards it reads again (for remote shards, one more streamed pass).

A worker then reads a record with one ``pread`` (local) or one range request (remote).
For remote shards the worker hands the source the chunks queued for it while it computes
the current one, and the current one itself (:meth:`ShardedSource.prefetch`, called from ``executors/worker.py``,
the thread and inline pools' ``submit`` and ``chunk.fill_slot``): spans close together in
one file are merged into one request (a block of ``block_records`` records is contiguous in
the plan) and all requests are in flight together on a per-process thread pool, so request
latency overlaps with decoding.

The epoch order of these sources is :class:`stoke.data.shard_plan.ShardOrder` (or its lazy
twin): shards permuted,
interleaved, shuffled in a window, never a global shuffle that would make each read a
random seek. Formats implement :meth:`index_shard` and :meth:`decode`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stoke.data.formats.base import (
    DescribedSamples,
    PrefetchingSource,
    RecordError,
    SkippingSource,
    check_on_error,
)
from stoke.data.formats.remote import (
    ByteReader,
    coalesce,
    describe_paths,
    is_remote,
    remote_paths,
    shippable_paths,
)
from stoke.data.formats.skips import SkipCounter
from stoke.data.shard_plan import RECORD_BITS, RECORD_MASK, LazyShardOrder, ShardOrder

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

INDEX_MODES = ("auto", "eager", "lazy")
EAGER_MAX_SHARDS = 1024  # index="auto": more shards than this are indexed lazily
RECENT_SHARDS = 64  # lazy: shard indexes kept per process
INDEX_THREADS = 16
PREFETCH_MAX_GAP = 64 << 10  # merge spans of one file closer than this into one request
PREFETCH_TIMEOUT_S = 120.0
PREFETCH_PENDING_MAX = 1 << 14  # prefetched samples never read (a probe's, an abandoned batch's) are dropped past this
REMOTE_BLOCK_RECORDS = 16  # default block_records for remote shards


class ShardIndex:
    """One shard's records: byte offsets and lengths, plus what the format needs to decode
    them (``extra``, e.g. tar member names) and the bad records its pass met
    (``on_error="skip"``: the rest of the file is skipped; counted by whoever asked)."""

    def __init__(self, offsets: Sequence[int], lengths: Sequence[int], extra: Any = None,
                 errors: Sequence[RecordError] = ()):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.extra = extra
        self.errors = tuple(errors)

    def __len__(self) -> int:
        return len(self.offsets)


class ShardedSource(PrefetchingSource, SkippingSource, DescribedSamples):
    """Records of shard files addressed by global index (``index="eager"``) or by
    ``(shard << 32) | record`` keys (``index="lazy"``); see the module docstring."""

    format_name = "records"
    factory = "stoke.from_<format>"  # the function users call to make it, for messages

    def __init__(self, paths: Sequence[str], *, on_error: str = "raise",
                 cycle_length: int = 16, block_records: int | None = None,
                 buffer_size: int = 1024, storage_options: dict | None = None,
                 index: str = "auto") -> None:
        if index not in INDEX_MODES:
            raise ValueError(f'index must be "auto", "eager" or "lazy". Received: index={index!r}')
        self.paths = paths
        self.lazy = index == "lazy" or (index == "auto" and len(paths) > EAGER_MAX_SHARDS)
        self.on_error = check_on_error(on_error)
        if block_records is None:  # remote: a block of records is one request
            block_records = REMOTE_BLOCK_RECORDS if self.reads_remote() else 1
        ShardOrder((), cycle_length, block_records, buffer_size)  # validates
        self.cycle_length = cycle_length
        self.block_records = block_records
        self.buffer_size = buffer_size
        self.reader = ByteReader(storage_options)
        self.skips = SkipCounter(shared=self.on_error == "skip")
        # eager: every shard indexed at once, records numbered globally
        self.offsets: np.ndarray | None = None  # global, per record
        self.lengths: np.ndarray | None = None
        self.shard_starts: np.ndarray | None = None  # global index of each shard's record 0
        self.extras: list[Any] | None = None
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Future, int]] = {}
        # lazy: shards indexed when first read, in whichever process reads them
        self._recent: OrderedDict[int, ShardIndex] = OrderedDict()
        self._indexing: dict[int, Future] = {}
        self._sizes: np.ndarray | None = None  # the trainer's sizes, -1: not indexed yet
        self._index_pool: ThreadPoolExecutor | None = None

    # -- what a format provides -----------------------------------------------------------
    def index_shard(self, shard: int, path: str) -> ShardIndex:
        raise NotImplementedError

    def decode(self, shard: int, record: int, offset: int, data: bytes, extra: Any) -> Any:
        """The sample of one record from the bytes of its span (raise RecordError if bad)."""
        raise NotImplementedError

    def index_error(self, error: RecordError, errors: list[RecordError]) -> None:
        """In :meth:`index_shard`: raise ``error``, or (``on_error="skip"``) note it in
        ``errors``; the rest of the shard is then skipped."""
        if self.on_error != "skip":
            raise error
        errors.append(RecordError(f"{error}; the rest of this file is skipped"))

    # -- eager index ----------------------------------------------------------------------
    def ensure_index(self) -> None:
        if self.lazy:
            raise self.length_unknown()
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
            for ix in indexes:
                self.count_skips(ix)
            sizes = np.array([len(ix) for ix in indexes], dtype=np.int64)
            self.shard_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            self.lengths = (np.concatenate([ix.lengths for ix in indexes])
                            if indexes else np.zeros(0, np.int64))
            self.extras = [ix.extra for ix in indexes]
            self.offsets = (np.concatenate([ix.offsets for ix in indexes])
                            if indexes else np.zeros(0, np.int64))

    def length_unknown(self) -> TypeError:
        """What a lazily indexed source says when asked for its number of records (``len()``,
        ``cache()``, ``stoke.mix``, ``bucket_by_length``): why not, and the call to write."""
        why = ("index='lazy'" if len(self.paths) <= EAGER_MAX_SHARDS
               else f"index='lazy', the default past {EAGER_MAX_SHARDS} shards")
        return TypeError(
            f"{self.format_name} of {len(self.paths)} shards is indexed lazily, shard by shard "
            f"as it is read ({why}), so its number of records is not known before an epoch "
            "has read them all; len(), cache(), stoke.mix and bucket_by_length need it. Index "
            f"every shard first: {self.factory}(..., index='eager') (one pass over each "
            "file's headers before the first batch), or iterate without them.")

    def count_skips(self, index: ShardIndex) -> None:
        for error in index.errors:
            self.skips.skip(error)

    def shard_order(self) -> ShardOrder | LazyShardOrder:
        if self.lazy:
            return LazyShardOrder(len(self.paths), self, describe_paths(self.paths),
                                  self.cycle_length, self.block_records, self.buffer_size)
        self.ensure_index()
        sizes = np.diff(np.append(self.shard_starts, len(self.offsets)))
        return ShardOrder(tuple(int(s) for s in sizes), self.cycle_length,
                          self.block_records, self.buffer_size)

    def __len__(self) -> int:
        self.ensure_index()
        return len(self.offsets)

    def reads_remote(self) -> bool:
        return remote_paths(self.paths)

    # -- lazy index -----------------------------------------------------------------------
    def shard_index(self, shard: int) -> ShardIndex:
        """Shard ``shard``'s index, made on first use in this process (lazy mode); the
        last :data:`RECENT_SHARDS` (at least 4 x ``cycle_length``) are kept."""
        with self._lock:
            found = self._recent.get(shard)
            if found is not None:
                self._recent.move_to_end(shard)
                return found
            future = self._indexing.get(shard)
        index = future.result() if future is not None else self.index_shard(shard, self.paths[shard])
        with self._lock:
            self._indexing.pop(shard, None)
            self._recent[shard] = index
            while len(self._recent) > max(RECENT_SHARDS, 4 * self.cycle_length):
                self._recent.popitem(last=False)
        return index

    def index_ahead(self, shards: np.ndarray) -> None:
        """Start indexing ``shards`` on a background thread pool (lazy mode: the trainer's
        plan, a worker's prefetch)."""
        with self._lock:
            if self._index_pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._index_pool = ThreadPoolExecutor(INDEX_THREADS, thread_name_prefix="stoke-index")
            for shard in (int(s) for s in shards):
                if shard not in self._recent and shard not in self._indexing and (
                        self._sizes is None or self._sizes[shard] < 0):
                    self._indexing[shard] = self._index_pool.submit(
                        self.index_shard, shard, self.paths[shard])

    def shard_sizes(self, shards: np.ndarray) -> np.ndarray:
        """Records in each of ``shards``, indexing the ones not indexed yet (the trainer,
        lazy mode: its plan needs them; bad records of a shard are counted here, once)."""
        if self._sizes is None:
            self._sizes = np.full(len(self.paths), -1, np.int64)
        self.index_ahead(np.asarray([s for s in shards if self._sizes[s] < 0], np.int64))
        for shard in (int(s) for s in shards):
            if self._sizes[shard] < 0:
                index = self.shard_index(shard)
                self.count_skips(index)
                self._sizes[shard] = len(index)
        return self._sizes[np.asarray(shards, np.int64)]

    def indexed_shards(self) -> int:
        """How many shards this process has indexed so far (lazy: the plan's; eager: all
        once indexed)."""
        if self.lazy:
            return 0 if self._sizes is None else int((self._sizes >= 0).sum())
        return 0 if self.offsets is None else len(self.paths)

    # -- reading ------------------------------------------------------------------------
    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, record)`` of a global index (eager) or a record key (lazy)."""
        if self.lazy:
            return index >> RECORD_BITS, index & RECORD_MASK
        self.ensure_index()
        shard = int(np.searchsorted(self.shard_starts, index, side="right")) - 1
        return shard, index - int(self.shard_starts[shard])

    def describe_sample(self, index: int) -> str:
        """``"at record 3 of PATH"`` (lazy: the key alone is ``(shard << 32) | record``),
        ``"41 (record 3 of PATH)"`` (eager)."""
        try:
            shard, record = self.locate(int(index))
            where = f"record {record} of {self.paths[shard]}"
        except Exception:  # noqa: BLE001 - an index out of range: its number says enough
            return str(index)
        return f"at {where}" if self.lazy else f"{index} ({where})"

    def span(self, index: int) -> tuple[int, int, int, int, Any]:
        """``(shard, record, offset, length, extra)`` of sample ``index``."""
        if self.lazy:
            shard, record = self.locate(index)
            if not 0 <= shard < len(self.paths):
                raise IndexError(f"record key {index}: shard {shard} of {len(self.paths)}")
            shard_index = self.shard_index(shard)
            if record >= len(shard_index):
                raise IndexError(f"record key {index}: record {record} of {len(shard_index)} "
                                 f"in {self.paths[shard]}")
            return (shard, record, int(shard_index.offsets[record]),
                    int(shard_index.lengths[record]), shard_index.extra)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        shard, record = self.locate(index)
        return (shard, record, int(self.offsets[index]), int(self.lengths[index]),
                self.extras[shard])

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        shard, record, offset, length, extra = self.span(index)
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
            return self.decode(shard, record, offset, data, extra)
        except RecordError as exc:
            if self.on_error == "skip":
                return self.skips.skip(exc)
            raise

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start reading the spans of ``indices`` (remote shards only: local reads are one
        ``pread`` each, already as cheap as it gets); lazily indexed, start indexing their
        shards first, concurrently."""
        if self.lazy:  # the shards of these records not indexed here yet: all at once
            self.index_ahead(np.unique(np.asarray(indices, np.int64) >> RECORD_BITS))
        if len(self._pending) > PREFETCH_PENDING_MAX:
            self._pending.clear()
        by_shard: dict[int, list[tuple[int, int, int]]] = {}
        for shard, start, end, index in self.remote_spans(indices):
            by_shard.setdefault(shard, []).append((start, end, index))
        for shard, spans in by_shard.items():
            for start, end, keys in coalesce(spans, PREFETCH_MAX_GAP):
                future = self.reader.submit(self.paths[shard], start, end)
                for key in keys:
                    self._pending[key] = (future, start)

    def remote_spans(self, indices: Sequence[int]) -> list[tuple[int, int, int, int]]:
        """``(shard, start, end, index)`` of each of ``indices`` in a remote shard, not
        pending yet. Eager: one vectorised lookup for the chunk, not one per sample (an index
        out of range is left to ``source[index]`` to name)."""
        if self.lazy:
            spans = []
            for index in (int(i) for i in indices):
                shard, _ = self.locate(index)
                if index not in self._pending and is_remote(self.paths[shard]):
                    _, _, offset, length, _ = self.span(index)
                    spans.append((shard, offset, offset + length, index))
            return spans
        self.ensure_index()
        wanted = np.asarray(indices, np.int64).reshape(-1)
        wanted = wanted[(wanted >= 0) & (wanted < len(self.offsets))]
        shards = np.searchsorted(self.shard_starts, wanted, side="right") - 1
        starts = self.offsets[wanted]
        ends = starts + self.lengths[wanted]
        remote = {int(s): is_remote(self.paths[int(s)]) for s in np.unique(shards)}
        return [(shard, start, end, index) for shard, start, end, index in zip(
            shards.tolist(), starts.tolist(), ends.tolist(), wanted.tolist())
            if remote[shard] and index not in self._pending]

    def __getstate__(self) -> dict:
        if not self.lazy:
            self.ensure_index()  # workers get the index, never build it
        state = {k: v for k, v in self.__dict__.items() if k not in _PER_PROCESS}
        state["paths"] = shippable_paths(self.paths)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup()

    def describe(self) -> str:
        if self.lazy:
            return f"{self.format_name} of {len(self.paths)} shards (indexed lazily)"
        if self.offsets is None:
            return f"{self.format_name} of {len(self.paths)} shards (not indexed yet)"
        return f"{self.format_name} of {len(self.paths)} shards, {len(self)} records"


_PER_PROCESS = ("_lock", "_pending", "_recent", "_indexing", "_sizes", "_index_pool")
