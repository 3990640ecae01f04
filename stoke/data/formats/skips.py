"""``on_error="skip"``: the count of bad records a source skipped, summed over every process
that reads it, and the warning that reports each skip with that sum.

The count lives in 8 bytes of an anonymous ``memfd`` made in the trainer (no name in
``/dev/shm``, freed with the source); worker processes on the same machine open it as
``/proc/<trainer pid>/fd/<fd>`` (as ``cache()``'s store does) and add to it under an
``fcntl`` lock. A process that cannot open it (a Ray worker on another machine) counts on
its own and says so. The user reads the sum with ``pipe.skipped_records()``.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import warnings
import weakref
from typing import Any

from stoke.errors import StokeWarning

_COUNT = struct.Struct("<q")


def _close(fd: int, mapping: mmap.mmap | None) -> None:
    if mapping is not None:
        mapping.close()
    try:
        os.close(fd)
    except OSError:
        pass


class SkipCounter:
    """Counts skipped records across the trainer and its workers; :meth:`skip` warns with
    the running sum and returns what the source gives for the record."""

    def __init__(self, shared: bool = True) -> None:
        """``shared=False``: a count in this process only (a source that never skips)."""
        self._local = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self.path: str | None = None
        if shared and hasattr(os, "memfd_create"):
            fd = os.memfd_create("stoke-skips", os.MFD_CLOEXEC)
            os.ftruncate(fd, mmap.PAGESIZE)
            self.path = f"/proc/{os.getpid()}/fd/{fd}"
            self._attach(fd)

    def _attach(self, fd: int) -> None:
        self._fd = fd
        self._map = mmap.mmap(fd, mmap.PAGESIZE)
        weakref.finalize(self, _close, fd, self._map)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self._local = 0
        self._lock = threading.Lock()
        self._fd, self._map, self.path = None, None, state["path"]
        if self.path is not None:
            try:
                self._attach(os.open(self.path, os.O_RDWR | os.O_CLOEXEC))
            except OSError:  # another machine: count here only
                self.path = None

    @property
    def shared(self) -> bool:
        """True when the count is summed over every process on the trainer's machine."""
        return self._map is not None

    def total(self) -> int:
        """Records skipped so far (every process of the trainer's machine, or this one)."""
        if self._map is None:
            return self._local
        return _COUNT.unpack_from(self._map, 0)[0]

    def add(self, count: int = 1) -> int:
        """Add ``count`` skips; the new total."""
        with self._lock:
            if self._map is None:
                self._local += count
                return self._local
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                total = _COUNT.unpack_from(self._map, 0)[0] + count
                _COUNT.pack_into(self._map, 0, total)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)
            return total

    def skip(self, error: Exception) -> Any:
        """Count ``error``'s record as skipped, warn, and return :data:`SKIPPED`."""
        from stoke.data.formats.base import SKIPPED

        total = self.add()
        where = "by this pipeline" if self.shared else "in this process"
        warnings.warn(f"stoke: skipped a bad record (on_error=\"skip\"; {total} skipped so far "
                      f"{where}; pipe.skipped_records() gives the count): {error}",
                      StokeWarning, stacklevel=3)
        return SKIPPED
