"""The worker processes' memory allocator: an opt-in to keep freed memory for the next sample.

A map function allocates the same few large arrays for every sample. glibc's malloc gives
blocks over its mmap threshold (128 KiB at first, raised to the largest block freed so far)
their own fresh pages, and hands the top of the heap back to the kernel once more than twice
that much is free. A map that makes several large temporaries per sample (a cast, a division
into a new array, a contiguous flip: three 600 KB arrays) then pays page faults and the
kernel's zeroing of fresh pages on every sample.

``STOKE_WORKER_MALLOC=keep`` in the trainer's environment makes stoke's worker processes keep
their freed memory: blocks up to 32 MiB come from the heap, and up to 128 MiB of free heap is
kept rather than trimmed. Measured on 2 cores with 2 workers
(``benchmarks/worker_allocator.py``, ``results/worker_allocator-2core.json``; three runs):
the three-temporaries map ran 1.65-1.66x faster, the ``large-arrays`` map 1.06-1.09x, but the
JPEG map 0.87-0.96x (more CPU per image with no more page faults: glibc's own adaptive
thresholds suit it better). So it is not the default. The trainer process is never changed.

Only glibc has ``mallopt``; elsewhere (macOS, musl, a preloaded jemalloc) nothing changes. Any
of glibc's own ``MALLOC_*_`` tuning variables wins over it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD_BYTES = 128 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_")


def keep_freed_memory(environ=os.environ) -> bool:
    """When ``STOKE_WORKER_MALLOC=keep``, tell glibc's malloc, in this process, to keep freed
    memory for reuse. Returns whether it did (False: not asked, not glibc, or the user tunes
    malloc already)."""
    if environ.get("STOKE_WORKER_MALLOC", "") != "keep":
        return False
    if any(name in environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # the mmap threshold first: setting either value turns glibc's own adjustment off
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
