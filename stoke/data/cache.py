"""``pipe.cache()``: the steps before it run once per sample; later epochs read the result.

Owns the cache store (:class:`CacheStore`) and the source that reads through it
(:class:`CachedSource`). The pipeline after ``cache()`` is an ordinary pipeline whose source
is the cached one, so shuffling, ``map`` with its per-sample ``rng``, batching, every
executor and the iterator state work unchanged; this module knows nothing of plans or rings.

The store is one file of fixed capacity, mapped by every worker:

- in memory by default: an anonymous ``memfd`` (no name in ``/dev/shm``, freed with the
  pipeline), which worker processes open as ``/proc/<trainer pid>/fd/<fd>``;
- or at ``path=`` (a file on a local disk, sparse until written; it is kept, and a later run
  of the same pipeline reads it instead of computing again).

Layout: a 64-byte header, an index of ``(offset, nbytes)`` per sample (0 bytes: not yet
computed, -1: dropped by a ``filter`` before ``cache()``), then records. A record is the
sample pickled with protocol 5, its arrays out of band, so a read is ``pickle.loads`` over
read-only views of the mapping: no copy. Space is handed out under a lock (a ``fcntl`` lock
between processes, a thread lock inside one), once per sample, in the first epoch only.

Guarantees: the steps before ``cache()`` run with the per-sample ``rng`` of epoch 0 (a
cached augmentation is fixed, like any cached value); steps after it get the usual ``rng``
of ``(seed, epoch, index, step)``, the very one they would get without ``cache()`` (the
pipeline keeps the cached steps' positions: ``SampleProgram.step_offset``), so adding
``cache()`` changes no value delivered (unless a step before it draws from ``rng``). Cached arrays are read-only: a ``map`` after ``cache()`` that
changes its input in place fails loudly instead of changing the cache. The capacity is the
memory budget: once 32 samples are stored, a cache whose projected size does not fit says so
before it fills memory (:class:`CacheFullError`), naming the size, the budget and the fixes.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import pickle
import threading
import weakref
from typing import Any

import numpy as np

from stoke.data.program import FILTERED, SampleProgram
from stoke.errors import StokeError

MAGIC = 0x53544F4B45434331  # "STOKECC1"
HEADER_BYTES = 64
PROJECT_AFTER = 32  # samples stored before the projected size is checked
_MISSING = object()
_ALIGN = 64


class CacheFullError(StokeError):
    """The samples before ``cache()`` do not fit the cache's memory budget."""


def _align(n: int, to: int = _ALIGN) -> int:
    return (n + to - 1) // to * to


class CacheStore:
    """The cache file: header, index, records. Made in the trainer; opened again (lazily)
    in each worker process from its path."""

    def __init__(self, length: int, capacity_bytes: int, path: str | None,
                 signature: str) -> None:
        self.length = int(length)
        self.data_start = _align(HEADER_BYTES + 16 * self.length, mmap.PAGESIZE)
        self.capacity_bytes = int(capacity_bytes)
        self.size = self.data_start + self.capacity_bytes
        self.signature = hashlib.sha256(signature.encode()).digest()[:16]
        self.persistent = path is not None
        if path is None:
            fd = os.memfd_create("stoke-cache", os.MFD_CLOEXEC)
            os.ftruncate(fd, self.size)
            self.path = f"/proc/{os.getpid()}/fd/{fd}"
            self.fd = fd
            self._map()
            self._init_header()
        else:
            self.path = os.path.abspath(os.fspath(path))
            existed = os.path.exists(self.path) and os.path.getsize(self.path) > 0
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if existed:
                self._map(os.path.getsize(self.path))
                self._check_existing()
            else:
                os.ftruncate(self.fd, self.size)
                self._map()
                self._init_header()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_fd, self.fd)

    # -- opening ------------------------------------------------------------------------
    def _map(self, size: int | None = None) -> None:
        if size is not None:
            self.size = size
            self.capacity_bytes = size - self.data_start
        self.map = mmap.mmap(self.fd, self.size)
        self.readonly = memoryview(self.map).toreadonly()
        self.header = np.frombuffer(self.map, np.int64, HEADER_BYTES // 8, 0)
        self.index = np.frombuffer(self.map, np.int64, 2 * self.length,
                                   HEADER_BYTES).reshape(self.length, 2)

    def _init_header(self) -> None:
        self.header[0] = MAGIC
        self.header[1] = self.length
        self.header[2] = self.data_start  # next free byte
        self.map[HEADER_BYTES - 16:HEADER_BYTES] = self.signature

    def _check_existing(self) -> None:
        if int(self.header[0]) != MAGIC or int(self.header[1]) != self.length or \
                bytes(self.map[HEADER_BYTES - 16:HEADER_BYTES]) != self.signature:
            raise StokeError(
                f"the cache file {self.path} was written by a different pipeline (or is not a "
                f"stoke cache): it holds {int(self.header[1])} samples, this pipeline has "
                f"{self.length}. Delete the file, or give cache(path=...) another path."
            )

    def __getstate__(self) -> dict:
        return {"length": self.length, "data_start": self.data_start, "size": self.size,
                "capacity_bytes": self.capacity_bytes, "path": self.path,
                "signature": self.signature, "persistent": self.persistent}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            where = ("a file this machine cannot open" if self.persistent else
                     "the trainer's memory, which only its own machine can map")
            raise StokeError(
                f"cache() cannot open its store {self.path} ({where}): {exc}. On a cluster, "
                "give cache(path=...) a file on a file system every node shares."
            ) from exc
        self._map()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_fd, self.fd)

    def close(self) -> None:
        self._finalizer()

    # -- records ------------------------------------------------------------------------
    def stored(self) -> int:
        """Samples stored so far (dropped ones included)."""
        return int(np.count_nonzero(self.index[:, 1]))

    def read(self, index: int) -> Any:
        """The stored sample, :data:`FILTERED`, or ``_MISSING``."""
        offset, nbytes = self.index[index]
        if nbytes == 0:
            return _MISSING
        if nbytes < 0:
            return FILTERED
        offset = int(offset)
        head = np.frombuffer(self.map, np.int64, 2, offset)
        main_bytes, buffers = int(head[0]), int(head[1])
        lengths = np.frombuffer(self.map, np.int64, buffers, offset + 16).tolist()
        position = offset + 16 + 8 * buffers
        main = self.readonly[position:position + main_bytes]
        position = _align(position + main_bytes)
        views = []
        for n in lengths:
            views.append(self.readonly[position:position + n])
            position = _align(position + n)
        return pickle.loads(main, buffers=views)

    def write(self, index: int, sample: Any) -> None:
        if sample is FILTERED:
            self.index[index, 1] = -1
            return
        buffers: list[pickle.PickleBuffer] = []
        main = pickle.dumps(sample, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        head = 16 + 8 * len(raws)
        total = _align(head + len(main)) + sum(_align(r.nbytes) for r in raws)
        offset = self._allocate(total)
        parts = [np.array([len(main), len(raws), *(r.nbytes for r in raws)], np.int64), main]
        position = head + len(main)
        for raw in raws:
            parts += [bytes(_align(position) - position), raw]
            position = _align(position) + raw.nbytes
        # one pwritev: the kernel fills fresh pages without a page fault each (~40% faster
        # than copying into the mapping, measured on tmpfs)
        written = os.pwritev(self.fd, parts, offset)
        if written != position:  # pragma: no cover - tmpfs and local disks write it all
            raise OSError(f"cache(): wrote {written} of {position} bytes to {self.path}")
        self.index[index, 0] = offset
        self.index[index, 1] = total  # written last: the record is complete

    def _allocate(self, nbytes: int) -> int:
        with self._lock:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                offset = int(self.header[2])
                end = offset + nbytes
                count = int(self.header[3]) + 1
                used = end - self.data_start
                if end > self.size:
                    raise self._full(used, count, exact=True)
                if count >= PROJECT_AFTER and used / count * self.length > self.capacity_bytes:
                    raise self._full(used, count, exact=False)
                self.header[2] = end
                self.header[3] = count
                return offset
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _full(self, used: int, count: int, exact: bool) -> CacheFullError:
        per_sample = used / count
        needed = per_sample * self.length
        how = "is full" if exact else "will not fit"
        return CacheFullError(
            f"cache() {how}: {count} samples took {used / 2**20:.1f} MiB "
            f"({per_sample / 2**10:.1f} KiB a sample), so {self.length} samples need about "
            f"{needed / 2**30:.2f} GiB, but the cache's budget is "
            f"{self.capacity_bytes / 2**30:.2f} GiB. Raise cache(memory_budget_bytes=...), "
            "cache at a disk path with cache(path=...), or cache something smaller (e.g. "
            "uint8 images, or place cache() earlier, before a step that makes samples larger)."
        )


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class CachedSource:
    """A source whose samples are the output of ``program`` (the steps before ``cache()``),
    computed once and then read from a :class:`CacheStore`."""

    def __init__(self, program: SampleProgram, store: CacheStore, description: str) -> None:
        self.program = program
        self.store = store
        self.description = description

    def __len__(self) -> int:
        return self.store.length

    def __getitem__(self, index: int) -> Any:
        store = self.store
        sample = store.read(index)
        if sample is _MISSING:
            store.write(index, self.program.run(index, 0))
            sample = store.read(index)  # read back: the same read-only arrays every epoch
        return sample

    def describe(self) -> str:
        return f"cache({self.description})"


def default_budget_bytes() -> int:
    """Half of the memory available now."""
    from stoke.executors.host import available_memory_bytes

    return available_memory_bytes() // 2


def make_cached_source(source: Any, steps: tuple, seed: int, description: str,
                       memory_budget_bytes: int | None, path: str | os.PathLike | None,
                       step_offset: int = 0) -> CachedSource:
    """The cached source of ``source`` followed by ``steps``; see the module docstring."""
    if memory_budget_bytes is not None and (
            not isinstance(memory_budget_bytes, int) or memory_budget_bytes < 1):
        raise ValueError("cache(memory_budget_bytes=...) must be a positive int or None. "
                         f"Received: {memory_budget_bytes!r}")
    if path is None and not hasattr(os, "memfd_create"):  # pragma: no cover - not Linux
        raise StokeError("cache() in memory needs Linux (memfd); give cache(path=...) "
                         "a file on a local disk instead.")
    budget = memory_budget_bytes or default_budget_bytes()
    store = CacheStore(len(source), budget, None if path is None else os.fspath(path),
                       description)
    return CachedSource(SampleProgram(source, steps, seed, step_offset=step_offset), store,
                        description)
