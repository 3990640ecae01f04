"""The protocol every executor follows, so the loader does not care who does the work.

A pool is started with the sample program, told the ring once the layout is known (and each
slot the ring replaces), then given tasks and asked for results. ``next_result`` never blocks forever: it returns ``None``
after ``timeout_s`` and raises :class:`~stoke.errors.WorkerDiedError` when a worker is gone.
"""

from __future__ import annotations

from typing import Protocol

from stoke.executors.chunk import Result, Task
from stoke.executors.ring import BatchRing


class WorkerPool(Protocol):
    kind: str
    workers: int
    shared_ring: bool  # does the ring have to be shared memory?

    def set_ring(self, ring: BatchRing) -> None: ...

    def replace_slot(self, slot: int) -> None:
        """The ring gave ``slot`` new memory (the consumer kept its batch): write there
        from now on. Process workers are sent the new block; others read the ring."""
        ...

    def submit(self, task: Task) -> None: ...

    def next_result(self, timeout_s: float) -> Result | None: ...

    def cpu_seconds(self) -> float | None:
        """CPU time the workers used so far (None: not known), to tell slow from stuck."""

    def busy_workers(self) -> list[str]:
        """What each busy worker holds, for the stuck-workers error."""

    def close(self) -> None: ...
