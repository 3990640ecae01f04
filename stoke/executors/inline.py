"""The inline executor: tasks run in the caller's thread when their result is asked for.

No parallelism; the reference the other executors are tested against, and the right choice
for cheap samples or debugging (a breakpoint in ``map`` just works). Follows
:class:`~stoke.executors.base.WorkerPool` with its one "worker", the caller: it is always
ready, cannot be resized and has no process to watch.
"""

from __future__ import annotations

from collections import deque

from stoke.data.program import SampleProgram, prefetch_chunk
from stoke.errors import StokeError
from stoke.executors.chunk import Result, Task, run_task
from stoke.executors.messages import ProgramUpdate, apply_update
from stoke.executors.ring import BatchRing


class InlinePool:
    kind = "inline"
    shared_ring = False
    addressable = False  # one worker, the caller: nothing to address
    shares_program = True  # the caller runs its own program

    def __init__(self, program: SampleProgram, name: str = "the inline executor") -> None:
        self.program = program
        self.name = name  # who ran a task, in its result (and in a sample's error)
        self.workers = 1
        self.ring: BatchRing | None = None
        self._pending: deque[Task] = deque()  # submitted, run at the next next_result
        self.answers: deque[Result] = deque()  # of updates, applied when broadcast

    def ready(self) -> bool:
        return True

    def first_ready(self) -> bool:
        return True  # nothing to start

    def wait_ready(self, timeout_s: float | None = None, first: bool = False) -> None:
        pass  # nothing to start

    def resize(self, workers: int) -> None:
        if workers != 1:
            raise StokeError(
                f"the inline executor runs tasks in the caller: it has one worker, not "
                f"{workers}. Use executor=\"thread\" or \"process\" for more.")

    def set_ring(self, ring: BatchRing) -> None:
        self.ring = ring

    def replace_slot(self, slot: int) -> None:
        pass  # tasks read ring.views(slot) when they run

    def submit(self, task: Task | ProgramUpdate, worker: int | None = None) -> None:
        if worker not in (None, 0):
            raise StokeError(f"the inline executor has one worker (0), not worker {worker}.")
        if isinstance(task, ProgramUpdate):
            self.broadcast(task)  # its one worker is the caller
            return
        if task.kind == "chunk":
            prefetch_chunk(self.program, task.indices)  # remote shards: reads start now
        self._pending.append(task)

    def broadcast(self, update: ProgramUpdate) -> None:
        """The caller holds the program: it applies ``update`` now."""
        self.answers.append(apply_update(self.program, update.task_id, update.update,
                                         update.what, self.name))

    def next_result(self, timeout_s: float) -> Result | None:
        if self.answers:
            return self.answers.popleft()
        if not self._pending:
            return None
        task = self._pending.popleft()
        views = self.ring.views(task.slot) if (self.ring and task.slot >= 0) else None
        layout = self.ring.layout if self.ring else None
        return run_task(self.program, task, layout, views, self.name)

    def has_queued(self) -> bool:
        """Are tasks submitted and not run yet (the next ``next_result`` runs one)?"""
        return bool(self._pending)

    def hand_over_queued(self) -> list[Task]:
        """The tasks submitted and not run yet, in order, for another pool to run (the
        trainer's stand-in hands them to the workers once one is up); none stays here."""
        queued = list(self._pending)
        self._pending.clear()
        return queued

    def drop_queued(self) -> list[int]:
        """The tasks submitted and not run yet: they would run in the caller at the next
        ``next_result``; dropped now."""
        return [task.task_id for task in self.hand_over_queued()]

    def worker_pids(self) -> list[int]:
        return []  # the caller does the work

    def check_alive(self) -> None:
        pass  # the caller is alive

    def cpu_seconds(self) -> float | None:
        return None  # the work runs in the caller: it never waits on a worker

    def busy_workers(self) -> list[str]:
        return []

    def close(self) -> None:
        self._pending.clear()
        self.answers.clear()
