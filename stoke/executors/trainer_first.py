"""The trainer stands in for workers still starting: :class:`TrainerFirst`.

Process workers started in the background (``to_keras()`` starts them while the model is
built and compiled) take seconds to load a program that imports a heavy library: a map that
calls ``keras.utils.to_categorical`` imports Keras and its backend in every worker. The
trainer has all of that imported already. Until one worker is up, :class:`TrainerFirst`
runs each task that is asked for in the caller's thread, into the same ring, as the inline
executor does; once one is up, every task not run yet goes to the workers, and so does
every later one. So ``fit``'s first batches need not wait for the workers' imports.

Every task runs exactly once, in the trainer or in a worker, and makes the same batch either
way (a sample depends on its index, epoch and seed, not on who runs it); only code that
draws from the global ``random``/``numpy.random`` draws other numbers, as it does in each
worker. The trainer stands in with global random states of its own, seeded as a worker's
are (:class:`~stoke.executors.stand_in_random.StandInRandom`), and its own states are left
as they were.

The cost: user code runs in the trainer's process for those first batches, so a sample that
crashes the process (a segfault in a C extension) takes the trainer down then, not a worker.
So only ``executor="auto"`` under ``to_keras`` asks for it (:func:`~stoke.executors.choose.
start_pool`), as ``stoke.accelerate`` makes a Sequence's first batches in the trainer;
``executor="process"`` keeps every batch in a worker.
"""

from __future__ import annotations

from typing import Any

from stoke.errors import StokeError
from stoke.executors.base import WorkerPool
from stoke.executors.chunk import Result, Task
from stoke.executors.inline import InlinePool
from stoke.executors.messages import ProgramUpdate
from stoke.executors.ring import BatchRing
from stoke.executors.stand_in_random import StandInRandom


class TrainerFirst:
    """A :class:`~stoke.executors.base.WorkerPool`: ``workers`` (started without waiting),
    with the caller standing in for them until one of them is up (see the module
    docstring).

    ``kind``, ``workers`` and everything about processes are the workers'; ``wait_ready``
    with ``first`` returns at once (the trainer is the first "worker"). Program updates and
    tasks for one given worker are refused while the trainer stands in (its copy of the
    program is the trainer's own); ``to_keras`` sends none.

    >>> pool = TrainerFirst(ProcessPool(program, 2, wait=False), program)  # doctest: +SKIP
    """

    shared_ring = True

    def __init__(self, workers: WorkerPool, program: Any) -> None:
        self.workers_pool = workers
        self.stand_in = InlinePool(program, name="the trainer (while the workers start)")
        self.seed = program.seed
        self.handed_over = False  # a worker is up: every task goes to the workers
        self.tasks_run_here = 0  # tasks the trainer ran while the workers started
        self.start_error: StokeError | None = None  # why the workers could not start
        self._stand_in_random = StandInRandom(program.seed)  # its own global streams

    # -- the WorkerPool protocol --------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.workers_pool.kind

    @property
    def workers(self) -> int:
        return self.workers_pool.workers

    @property
    def addressable(self) -> bool:
        """The workers', once they took over; not while the trainer stands in."""
        return self.handed_over and self.workers_pool.addressable

    @property
    def shares_program(self) -> bool:
        """The workers' (the stand-in refuses program updates, so it never matters that it
        runs the trainer's own program)."""
        return self.workers_pool.shares_program

    def ready(self) -> bool:
        return self.workers_pool.ready()

    def first_ready(self) -> bool:
        """True at once: the trainer takes the tasks until a worker is up."""
        return True

    def wait_ready(self, timeout_s: float | None = None, first: bool = False) -> None:
        """Every worker (``first``: returns at once, the trainer makes the first batches
        until one is up)."""
        if not first:
            self.workers_pool.wait_ready(timeout_s)

    def resize(self, workers: int) -> None:
        self.workers_pool.resize(workers)

    def set_ring(self, ring: BatchRing) -> None:
        self.stand_in.set_ring(ring)
        self.workers_pool.set_ring(ring)

    def replace_slot(self, slot: int) -> None:
        self.workers_pool.replace_slot(slot)  # the stand-in reads the ring's views

    def submit(self, task: Task | ProgramUpdate, worker: int | None = None) -> None:
        if self.hand_over_if_up():
            self.workers_pool.submit(task, worker)
            return
        if worker is not None or isinstance(task, ProgramUpdate):
            raise _refused(f"a task for worker {worker}" if worker is not None else
                           f"a program update ({task.what})")
        self.stand_in.submit(task)

    def broadcast(self, update: ProgramUpdate) -> None:
        if not self.hand_over_if_up():
            raise _refused(f"a program update ({update.what})")
        self.workers_pool.broadcast(update)

    def next_result(self, timeout_s: float) -> Result | None:
        """A worker's result, or, while none is up, the next task run here and now."""
        if self.hand_over_if_up() or not self.stand_in.has_queued():
            return self.workers_pool.next_result(timeout_s)
        return self._run_here()

    def drop_queued(self) -> list[int]:
        """The tasks queued for the trainer and not run (and the workers', if any)."""
        return [*self.stand_in.drop_queued(), *self.workers_pool.drop_queued()]

    def worker_pids(self) -> list[int]:
        return self.workers_pool.worker_pids()

    def cpu_seconds(self) -> float | None:
        return self.workers_pool.cpu_seconds()

    def busy_workers(self) -> list[str]:
        return self.workers_pool.busy_workers()

    def check_alive(self) -> None:
        self.workers_pool.check_alive()

    def close(self) -> None:
        self.stand_in.close()
        self.workers_pool.close()

    # -- ours ---------------------------------------------------------------------------
    def hand_over_if_up(self) -> bool:
        """Is a worker up (never waits)? At the first yes, the tasks queued for the trainer
        and not run yet go to the workers, in order. Workers that cannot start raise their
        error, now and at every later call: the trainer stands in for them, not instead of
        them."""
        if self.handed_over:
            return True
        if self.start_error is not None:
            raise self.start_error
        try:
            if not self.workers_pool.first_ready():
                return False
        except StokeError as exc:  # the workers cannot start: said now and at every later use
            self.start_error = exc
            raise
        self.handed_over = True
        for task in self.stand_in.hand_over_queued():
            self.workers_pool.submit(task)
        return True

    def _run_here(self) -> Result | None:
        """Run the next queued task in the caller, with the stand-in's own global random
        states (the trainer's are put back after)."""
        with self._stand_in_random:
            result = self.stand_in.next_result(0.0)
        self.tasks_run_here += 1
        return result


def _refused(what: str) -> StokeError:
    return StokeError(
        f"the trainer makes this feed's first batches while its workers start, so the pool "
        f"cannot take {what} yet: the trainer's copy of the program would not get it. Use "
        f"executor=\"process\" to keep every batch in a worker.")
