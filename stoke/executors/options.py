""":class:`LoaderOptions`: how a loader runs (workers, executor, ring, budgets, timeouts),
checked when made. What they mean for the pool and the tuner is decided in
:mod:`stoke.executors.choose`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EXECUTORS = ("auto", "process", "thread", "inline", "ray")


def check_workers(workers: Any) -> None:
    """``workers`` must be a positive int (numpy integers too) or "auto"."""
    if workers == "auto":
        return
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, (bool, np.bool_)) \
            or workers < 1:
        raise ValueError(f"workers must be a positive int or \"auto\". Received: workers={workers!r}")


@dataclass(frozen=True)
class LoaderOptions:
    """How a loader runs. ``timeout_s``: how long workers may go without a result and
    without using CPU before they are reported stuck (busy ones are slow, not stuck: see
    :mod:`stoke.executors.limits`; None: wait as long as they are alive). ``oversubscribe``:
    start more process/thread workers than cores (else cut to the cores, with a warning).
    ``ring_slots``: batches in flight (default 2 per worker + 2; 5 per worker + 2 for a
    remote source, within the memory budget: its reads hide their latency). ``copy``: yield copies
    instead of zero-copy views (views are safe to keep too: a slot whose batch is still
    referenced is never overwritten). ``memory_budget_bytes``: most memory the ring may
    take, and the batches the consumer keeps from it before they are delivered as copies
    (default a quarter of available RAM). ``ray_address``: the Ray cluster of
    ``executor="ray"`` (default: the one ``ray.init()`` joined, else ``RAY_ADDRESS``, else a
    local Ray); with that executor ``workers="auto"`` means the cluster's CPUs.

    ``workers="auto"`` / ``executor="auto"`` (the defaults) choose both, and the ring depth,
    by measurement while batches flow (see :mod:`stoke.executors.choose` and
    :mod:`stoke.autotune.tuner`; ``it.tuning()`` says what was chosen and why), within
    ``cpu_budget_cores`` (default every available core, less what the trainer process and
    other processes are measured to use) and ``memory_budget_bytes``."""

    workers: int | str = "auto"
    executor: str = "auto"
    ring_slots: int | None = None
    timeout_s: float | None = 30.0
    copy: bool = False
    memory_budget_bytes: int | None = None
    ray_address: str | None = None
    cpu_budget_cores: int | None = None
    oversubscribe: bool = False

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"executor must be one of {', '.join(map(repr, EXECUTORS))}. "
                f"Received: executor={self.executor!r}"
            )
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError(
                "ray_address is only used with executor=\"ray\". Received: "
                f"executor={self.executor!r}, ray_address={self.ray_address!r}"
            )
        check_workers(self.workers)
        if self.ring_slots is not None and self.ring_slots < 2:
            raise ValueError(f"ring_slots must be >= 2. Received: ring_slots={self.ring_slots}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None. Received: timeout_s={self.timeout_s}")
        if self.cpu_budget_cores is not None and (
                not isinstance(self.cpu_budget_cores, int) or self.cpu_budget_cores < 1):
            raise ValueError("cpu_budget_cores must be a positive int or None. Received: "
                             f"cpu_budget_cores={self.cpu_budget_cores!r}")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes < 1:
            raise ValueError("memory_budget_bytes must be > 0 or None. Received: "
                             f"memory_budget_bytes={self.memory_budget_bytes!r}")
