"""What this host lets stoke use: the one place host limits are read.

- :func:`allowed_cpus` / :func:`available_cores`: the cores this process may run on (its CPU
  affinity, e.g. ``taskset`` or a container's cpuset), not every core of the machine;
- :func:`available_memory_bytes`: the memory available now; :func:`memory_budget_bytes` the
  budget of the ring and the batches kept from it (a quarter of that unless given).

Who decides what to do with these limits: :mod:`stoke.executors.choose` (workers, executor,
budgets), the tuner's meter (:mod:`stoke.autotune.meter`) and the cache (half of the memory
available). Nothing here imports more than ``os`` and, when memory is asked for, ``psutil``.
"""

from __future__ import annotations

import os

MEMORY_BUDGET_SHARE = 4  # the default memory budget: 1/4 of the memory available


def allowed_cpus() -> set[int] | None:
    """Indices of the CPUs this process may run on; None where the OS cannot say (macOS)."""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):  # pragma: no cover - macOS
        return None


def available_cores() -> int:
    """How many cores this process may run on (its affinity; else every core)."""
    allowed = allowed_cpus()
    return len(allowed) if allowed is not None else (os.cpu_count() or 1)


def available_memory_bytes() -> int:
    """Memory available to new allocations now (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def memory_budget_bytes(given: int | None = None) -> int:
    """``given``, or the default budget: a quarter of the memory available now."""
    if given is not None:
        return given
    return available_memory_bytes() // MEMORY_BUDGET_SHARE
