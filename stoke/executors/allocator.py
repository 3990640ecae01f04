"""The worker processes' memory allocator: freed memory is kept for the next sample.

A map function allocates the same few large arrays for every sample (a decoded image, its
float32 copy, a flipped copy...). glibc's malloc gives blocks over its mmap threshold (128 KiB
at first, raised to the largest block freed so far) their own fresh pages, and hands the top
of the heap back to the kernel once more than twice that much is free. With a working set of
several such arrays per sample, every sample then pays page faults and the kernel's zeroing
of fresh pages again: measured on a 2-core machine, a map making three 600 KB float32 arrays
ran 1.6-1.8x faster per worker once freed memory was kept (``benchmarks/README.md``).

Worker processes belong to stoke and do one job, so they keep their freed memory: blocks up
to 32 MiB come from the heap, and up to 128 MiB of free heap is kept rather than trimmed.
What a worker keeps is its peak working set, and it is counted: autotuning measures each
worker's memory (USS) against its memory budget. The trainer process is left as it is.

Only glibc has ``mallopt``; elsewhere (macOS, musl, a preloaded jemalloc) nothing changes.
``STOKE_WORKER_MALLOC=default`` in the environment turns this off, and so does any of
glibc's own ``MALLOC_*_`` tuning variables: the user's settings win.
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
    """Tell glibc's malloc, in this process, to keep freed memory for reuse. Returns whether
    it did (False: not glibc, turned off, or the user tunes malloc already)."""
    if environ.get("STOKE_WORKER_MALLOC", "") == "default":
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
