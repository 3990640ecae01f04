"""The protocol every executor follows, so the loader does not care who does the work.

A pool is started with the sample program, told the ring once the layout is known (and each
slot the ring replaces), then given tasks (to any worker, or to one) and updates for its
workers' copy of the program (:class:`~stoke.executors.messages.ProgramUpdate`, to every
worker or to one), and asked for results. ``next_result`` never
blocks forever: it returns ``None`` after ``timeout_s`` and raises
:class:`~stoke.errors.WorkerDiedError` when a worker is gone.

Every member is implemented by every executor (``inline.py``, ``threads.py``,
``processes.py``, ``ray.py``, and ``auto.py``'s pool of pools that the tuner switches): one
that cannot do something says so in its own method (a neutral answer where one is true, e.g.
no worker processes, or a :class:`~stoke.StokeError` that names the executor). Callers
never probe a pool for a member.
"""

from __future__ import annotations

from typing import Protocol

from stoke.executors.chunk import Result, Task
from stoke.executors.messages import ProgramUpdate
from stoke.executors.ring import BatchRing


class WorkerPool(Protocol):
    kind: str  # "process", "thread", "inline", "ray"
    shared_ring: bool  # does the ring have to be shared memory?

    @property
    def workers(self) -> int:
        """Live workers (tasks kept in flight, for Ray)."""
        ...

    @property
    def addressable(self) -> bool:
        """Can a task or an update be given to one worker (``submit(..., worker=k)``)? Only
        where each worker has a queue of its own (processes); the others' ``submit`` says
        why not."""
        ...

    @property
    def shares_program(self) -> bool:
        """Do workers run the trainer's own program object (threads, inline)? Then a change
        the trainer makes to it reaches them at once, and must wait until they are idle.
        Else each worker holds its own copy (processes, Ray): changed by messages only."""
        ...

    # -- starting and resizing ------------------------------------------------------------
    def ready(self) -> bool:
        """Has every live worker loaded the program (can take tasks)?"""
        ...

    def first_ready(self) -> bool:
        """Without waiting: can one worker take tasks now? The non-blocking form of
        ``wait_ready(first=True)``: reads the start-up answers already come and raises what
        a failed start raises. True at once for executors that need no start-up."""
        ...

    def wait_ready(self, timeout_s: float | None = None, first: bool = False) -> None:
        """Block until every worker (``first``: one worker) has loaded the program; raises
        what a failed start raises. Returns at once for executors that need no start-up."""
        ...

    def resize(self, workers: int) -> None:
        """Run ``workers`` workers from now on; a worker taken out finishes the tasks it
        holds first, so no task is lost or run twice."""
        ...

    # -- the ring -------------------------------------------------------------------------
    def set_ring(self, ring: BatchRing) -> None: ...

    def replace_slot(self, slot: int) -> None:
        """The ring gave ``slot`` new memory (the consumer kept its batch): write there
        from now on. Process workers are sent the new block; others read the ring."""
        ...

    # -- work -----------------------------------------------------------------------------
    def submit(self, task: Task | ProgramUpdate, worker: int | None = None) -> None:
        """Queue ``task`` for whichever worker is free, or for live worker number ``worker``
        (after the tasks already sent to it). An update needs ``worker``."""
        ...

    def broadcast(self, update: ProgramUpdate) -> None:
        """Have every live worker apply ``update`` to its copy of the program, after the
        tasks already sent to it and before any sent later; one result for
        ``update.task_id`` comes from :meth:`next_result` (its error: the first failure).
        Workers that share the trainer's program (threads, inline) apply it once, now."""
        ...

    def next_result(self, timeout_s: float) -> Result | None: ...

    def drop_queued(self) -> list[int]:
        """Forget the tasks queued to run in the caller's own thread when a result is
        asked for (the inline executor's), before they ran; returns their task ids (the
        caller frees what they held). Tasks given to workers (threads, processes, Ray)
        are not dropped: they run, and their results come from :meth:`next_result`."""
        ...

    # -- watching -------------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        """The pids of this process's worker processes (none for threads, inline, Ray)."""
        ...

    def cpu_seconds(self) -> float | None:
        """CPU time the workers used so far (None: not known), to tell slow from stuck."""
        ...

    def busy_workers(self) -> list[str]:
        """What each busy worker holds, for the stuck-workers error."""
        ...

    def check_alive(self) -> None:
        """Raise :class:`~stoke.errors.WorkerDiedError` if a worker is gone."""
        ...

    def close(self) -> None: ...
