"""The batch ring: K slots of one batch each, laid out from the first sample, and the
batches it hands out.

Each slot is its own block of memory. For process workers it is an anonymous shared-memory
file (``memfd`` on Linux; elsewhere a POSIX segment unlinked right after it is made) whose
file descriptor travels to the workers over their sockets, so the memory has no name:
nothing can be left behind in ``/dev/shm``, not even after ``kill -9``, and no other user
can open it. Workers write samples straight into their rows. For thread, inline and Ray
executors a slot is private anonymous memory of the trainer.

Safe zero-copy: :meth:`BatchRing.deliver` hands out a batch as numpy views of per-delivery
owner arrays (one per leaf; numpy's ``.base`` of every view made from a leaf, and of every
torch/JAX/TF object that aliases it, reaches that owner). Before a slot is written again the
loader asks the :class:`Delivery` whether any owner is still referenced; if so the slot is
*retired* (:meth:`BatchRing.retire`): its memory becomes the user's (the leaves nobody holds
are given back to the OS at once) and the ring takes another block in its place: a retired
block whose batch the consumer has dropped since (a replay buffer that evicts), else a fresh
one. Retired blocks the consumer dropped are kept for that, up to as many as the ring has
slots; the rest are freed. A consumer that drops each batch before the next costs nothing.
"""

from __future__ import annotations

import mmap
import os
import secrets
import sys
import weakref

import numpy as np

from stoke.data.structure import BatchLayout


class SharedBuffer:
    """A block of memory that can be mapped by other processes through its fd."""

    def __init__(self, size: int) -> None:
        self.size = max(int(size), mmap.PAGESIZE)
        self.fd = _anonymous_shared_fd(self.size)
        self.map = mmap.mmap(self.fd, self.size)

    @classmethod
    def attach(cls, fd: int, size: int, readonly: bool = False) -> SharedBuffer:
        self = cls.__new__(cls)
        self.size = size
        self.fd = fd
        self.map = mmap.mmap(fd, size, prot=mmap.PROT_READ if readonly else
                             mmap.PROT_READ | mmap.PROT_WRITE)
        return self

    def close(self) -> None:
        """Unmap and close the fd. If numpy views are still alive the mapping stays until
        they are garbage collected (the memory has no name, so nothing leaks)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            self.map.close()
        except BufferError:
            pass


def map_received(fd: int, size: int) -> mmap.mmap:
    """Map a slot whose fd came over a socket, then close the fd (the mapping keeps the
    memory; one fd per slot fewer in every worker)."""
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _anonymous_shared_fd(size: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("stoke-ring", os.MFD_CLOEXEC)
    else:  # pragma: no cover - macOS / BSD
        import _posixshmem

        name = f"/stoke-{os.getpid()}-{secrets.token_hex(6)}"
        fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        _posixshmem.shm_unlink(name)
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


def _refcounts(owners: list[np.ndarray]) -> list[int]:
    return [sys.getrefcount(owner) for owner in owners]


# what _refcounts says of an owner that only its Delivery's list references
_UNREFERENCED = _refcounts([np.empty(1)])[0]


class Delivery:
    """One batch handed to the consumer: which slot, and the owner array of each leaf
    (every view the consumer gets of that leaf has it as its numpy ``.base``)."""

    __slots__ = ("slot", "owners", "released_at")

    def __init__(self, slot: int, owners: list[np.ndarray]) -> None:
        self.slot = slot
        self.owners = owners
        self.released_at = -1  # the loader's delivery count when the consumer moved on

    def held_leaves(self) -> list[bool]:
        """For each leaf: does something outside stoke still reference it?"""
        return [count > _UNREFERENCED for count in _refcounts(self.owners)]

    def in_use(self) -> bool:
        return any(count > _UNREFERENCED for count in _refcounts(self.owners))


class BatchRing:
    """``slots`` batch slots of ``layout``: :meth:`views` gives the arrays workers write
    into, :meth:`deliver` what the consumer gets, :meth:`retire` replaces a slot whose
    batch the consumer kept."""

    def __init__(self, layout: BatchLayout, slots: int, shared: bool) -> None:
        self.layout = layout
        self.slots = slots
        self.shared = shared
        self.slot_bytes = max(layout.slot_bytes, mmap.PAGESIZE)
        self._memory: list[SharedBuffer | mmap.mmap] = []
        self._views: list[list[np.ndarray]] = []
        # retired blocks, each with the owners the consumer kept of it: reused once all are gone
        self._spares: list[tuple[SharedBuffer | mmap.mmap, list[weakref.ref]]] = []
        try:
            for _ in range(slots):
                self._add_slot()
        except BaseException:
            self.close()
            raise

    def _new_memory(self) -> SharedBuffer | mmap.mmap:
        return SharedBuffer(self.slot_bytes) if self.shared else mmap.mmap(-1, self.slot_bytes)

    def _map(self, slot: int) -> mmap.mmap:
        memory = self._memory[slot]
        return memory.map if isinstance(memory, SharedBuffer) else memory

    def _add_slot(self) -> None:
        self._memory.append(self._new_memory())
        self._views.append(slot_views(self._map(len(self._memory) - 1), self.layout, 0))

    @property
    def nbytes(self) -> int:
        return self.slot_bytes * self.slots

    def views(self, slot: int) -> list[np.ndarray]:
        """The arrays of ``slot`` that workers write into."""
        return self._views[slot]

    def fd(self, slot: int) -> int:
        """The file descriptor of a shared slot (to send to process workers)."""
        return self._memory[slot].fd

    def deliver(self, slot: int, rows: int) -> tuple[Delivery, list[np.ndarray]]:
        """The first ``rows`` rows of ``slot`` as views of fresh per-leaf owners."""
        memory = self._map(slot)
        layout = self.layout
        owners, leaves = [], []
        for spec in layout.leaves:
            owner = np.frombuffer(memory, dtype=np.dtype(spec.dtype),
                                  count=layout.rows * int(np.prod(spec.shape, dtype=np.int64)),
                                  offset=spec.offset)
            owners.append(owner)
            leaves.append(owner.reshape((layout.rows, *spec.shape))[:rows])
        return Delivery(slot, owners), leaves

    def retire(self, delivery: Delivery) -> None:
        """The consumer still holds (part of) ``delivery``: its memory is theirs now. The
        leaves nobody holds are given back to the OS; the slot gets a fresh block."""
        slot = delivery.slot
        old = self._memory[slot]
        memory = old.map if isinstance(old, SharedBuffer) else old
        advice = mmap.MADV_REMOVE if self.shared else mmap.MADV_DONTNEED
        kept = []
        for spec, owner, held in zip(self.layout.leaves, delivery.owners,
                                     delivery.held_leaves(), strict=True):
            if held:
                kept.append(weakref.ref(owner))
                continue
            start = -(-spec.offset // mmap.PAGESIZE) * mmap.PAGESIZE
            end = (spec.offset + owner.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
            if end > start:
                memory.madvise(advice, start, end - start)
        self._memory[slot] = self._take_spare() or self._new_memory()
        self._views[slot] = slot_views(self._map(slot), self.layout, 0)
        self._spares.append((old, kept))

    def _take_spare(self) -> SharedBuffer | mmap.mmap | None:
        """A retired block the consumer has dropped, if any (the oldest first)."""
        for position, (block, kept) in enumerate(self._spares):
            if all(ref() is None for ref in kept):
                del self._spares[position]
                return block
        return None

    def trim_spares(self) -> None:
        """Free retired blocks the consumer dropped, beyond as many as the ring has slots."""
        idle = [entry for entry in self._spares if all(ref() is None for ref in entry[1])]
        for entry in idle[: max(0, len(idle) - self.slots)]:
            self._spares.remove(entry)
            _close_block(entry[0])

    def retired_bytes(self) -> int:
        """Bytes of retired batches the consumer still holds."""
        return sum(owner.nbytes for _, kept in self._spares for ref in kept
                   if (owner := ref()) is not None)

    def retired_count(self) -> int:
        """Retired blocks the ring keeps: held by the consumer, or ready for reuse."""
        return len(self._spares)

    def close(self) -> None:
        self._views = []
        memory, self._memory = self._memory, []
        spares, self._spares = self._spares, []
        for block in [*memory, *(block for block, _ in spares)]:
            _close_block(block)


def _close_block(block: SharedBuffer | mmap.mmap) -> None:
    """Free a block now, or (when the consumer still holds a view of it) with that view."""
    if isinstance(block, SharedBuffer):
        block.close()
    else:
        try:
            block.close()
        except BufferError:
            pass


def slot_views(memory, layout: BatchLayout, slot: int) -> list[np.ndarray]:
    """numpy arrays over one slot of ``memory``: one (rows, *shape) array per leaf."""
    base = slot * layout.slot_bytes
    views = []
    for spec in layout.leaves:
        count = layout.rows * int(np.prod(spec.shape, dtype=np.int64))
        array = np.frombuffer(memory, dtype=np.dtype(spec.dtype), count=count,
                              offset=base + spec.offset)
        views.append(array.reshape((layout.rows, *spec.shape)))
    return views
