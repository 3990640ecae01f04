"""The batch ring: K slots of one batch each, laid out from the first sample.

For process workers the ring lives in one anonymous shared-memory file (``memfd`` on Linux;
elsewhere a POSIX segment unlinked right after it is made). Its file descriptor travels to the
workers over their sockets, so the memory has no name: nothing can be left behind in
``/dev/shm``, not even after ``kill -9``, and no other user can open it. Workers write
samples straight into their rows; the trainer reads numpy views, no pickling, no copy.

For thread and inline executors the same ring is plain process memory.
"""

from __future__ import annotations

import mmap
import os
import secrets

import numpy as np

from stoke.structure import BatchLayout


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


class BatchRing:
    """``slots`` batch slots of ``layout``; :meth:`views` gives the arrays of one slot."""

    def __init__(self, layout: BatchLayout, slots: int, shared: bool) -> None:
        self.layout = layout
        self.slots = slots
        total = layout.slot_bytes * slots
        if shared:
            self.buffer: SharedBuffer | None = SharedBuffer(total)
            memory = self.buffer.map
        else:
            self.buffer = None
            memory = bytearray(max(total, 1))
        self._views = [slot_views(memory, layout, s) for s in range(slots)]

    @property
    def nbytes(self) -> int:
        return self.layout.slot_bytes * self.slots

    def views(self, slot: int) -> list[np.ndarray]:
        return self._views[slot]

    def close(self) -> None:
        self._views = []
        if self.buffer is not None:
            self.buffer.close()


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


