"""The pool that can change: :class:`AutoPool`, the executor of a tuned loader.

It follows the pool protocol of :mod:`stoke.executors.base` and holds a thread pool and/or a
process pool: each task goes to the active one; results come from all; it grows, shrinks and
switches pools while tasks are in flight without losing or repeating one (a pool that is let
go first finishes what it holds). What to run is the tuner's decision
(:mod:`stoke.autotune.tuner`, through :meth:`AutoPool.apply`); when it runs is chosen in
:mod:`stoke.executors.choose`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from stoke.autotune.meter import CpuMeter
from stoke.errors import StokeError, UnpicklableError
from stoke.executors.chunk import Result, Task
from stoke.executors.host import allowed_cpus
from stoke.executors.messages import ProgramUpdate
from stoke.executors.ring import BatchRing

log = logging.getLogger("stoke")

Config = tuple[str, int]  # (executor kind, workers)


class AutoPool:
    """A pool of pools: sends each task to the active pool (thread or process), collects
    results from every pool that holds tasks, and carries out the tuner's changes.

    A change of executor starts the other pool (process workers in the background) and
    makes it active once its workers are up; the old pool keeps and finishes the tasks it
    holds. Resizing uses the executors' ``resize``. The ring is
    always shared memory (an anonymous ``memfd``): both kinds can write into it, and pages of
    slots not in rotation are never touched, so they cost no memory.

    As a :class:`~stoke.executors.base.WorkerPool`: ``kind`` and ``workers`` are the active
    pool's; :meth:`ready` is stricter than the protocol's (the tuner's target setting runs
    alone); tasks cannot be given to one worker and program updates cannot be sent (both
    raise a :class:`~stoke.StokeError`: the tuner changes the workers under them). As a
    :class:`~stoke.autotune.target.TunerTarget`: :meth:`apply`, :meth:`prestart`,
    :meth:`release_idle` and the measurements.
    """

    shared_ring = True
    addressable = False  # the tuner changes the workers under the tasks

    def __init__(self, program: Any, kinds: Iterable[str], workers: int,
                 wait: bool = True) -> None:
        import os

        self.program = program
        self.kinds = tuple(kinds)
        self.trainer_pid = os.getpid()  # this process: the consumer, and thread workers
        self.unavailable: dict[str, str] = {}  # kind -> why it cannot run
        self._packed = None
        if "process" in self.kinds:
            from stoke.executors.payload import pack

            try:
                self._packed = pack(program)
            except UnpicklableError as exc:
                if self.kinds == ("process",):
                    raise
                self.unavailable["process"] = str(exc)
        self._pools: dict[str, Any] = {}
        self._outstanding: dict[str, int] = {}
        self._owner: dict[int, str] = {}
        self._ring: BatchRing | None = None
        self._worker_bytes: int | None = None
        self._meter = CpuMeter(self.trainer_pid, allowed_cpus())
        self.active = ""
        self._first_workers = workers
        self._waiting_for_first = False  # started with wait=False, not yet known to be up
        try:
            self._start_first(workers, wait)
        except BaseException:
            self.close()
            raise
        self.target: Config = (self.active, workers)

    def wait_ready(self, timeout_s: float | None = None, first: bool = False) -> None:
        """The WorkerPool protocol's: block until the active pool's workers (``first``: one
        of them) have loaded the program. For the first pool, started with ``wait=False``
        (its workers loaded the pipeline in the background meanwhile): if process workers
        cannot load it, go on with the next kind (threads), as a waited start would have.
        Pools started in the background to be tried (:meth:`prestart`, :meth:`apply`) are
        not waited for: :meth:`ready` tells when the target setting runs alone."""
        if not self._waiting_for_first:
            self._pools[self.active].wait_ready(timeout_s, first)
            return
        self._waiting_for_first = False
        kind = self.active
        try:
            # the first batches need one worker (first=True); the others come up meanwhile
            # (the tuner measures nothing until they are all up)
            self._pools[kind].wait_ready(timeout_s, first)
        except StokeError as exc:
            self._first_failed(kind, exc)

    def first_ready(self) -> bool:
        """Without waiting: can the active pool take tasks (one of its workers is up)? For
        the first pool started in the background, as :meth:`wait_ready` (``first``) but
        never blocking: process workers that cannot load the program leave it to the next
        kind (threads; then True), or their error raises."""
        if not self._waiting_for_first:
            return True
        kind = self.active
        try:
            up = self._pools[kind].first_ready()
        except StokeError as exc:
            self._waiting_for_first = False
            self._first_failed(kind, exc)
            return True
        if up:
            self._waiting_for_first = False
        return up

    def _first_failed(self, kind: str, exc: StokeError) -> None:
        """The first pool's workers (``kind``) could not start: go on with the next kind,
        started now and waited for, or raise ``exc`` when there is none."""
        if kind == self.kinds[-1]:
            raise exc
        log.debug("stoke: %s workers could not start: %s", kind, exc)
        self.unavailable[kind] = f"{kind} workers could not start: {exc}"
        self._pools.pop(kind).close()
        self._outstanding.pop(kind, None)
        self._start_first(self._first_workers, wait=True)
        self.target = (self.active, self._first_workers)

    def _start_first(self, workers: int, wait: bool = True) -> None:
        """Start the first kind that can run (waiting until its workers are up, so that
        errors surface here, unless ``wait`` is False: then :meth:`wait_ready` does);
        process workers that cannot load the pipeline leave it to threads when those are
        allowed."""
        for kind in self.kinds:
            if kind in self.unavailable:
                continue
            if not wait and kind == "process":
                self._pools[kind] = self._start(kind, workers, wait=False)
                self.active = kind
                self._waiting_for_first = True
                return
            try:
                self._pools[kind] = self._start(kind, workers, wait=True)
            except StokeError as exc:
                if kind == self.kinds[-1] or isinstance(exc, UnpicklableError):
                    raise
                log.debug("stoke: %s workers could not start: %s", kind, exc)
                self.unavailable[kind] = f"{kind} workers could not start: {exc}"
                continue
            self.active = kind
            return

    # -- the WorkerPool protocol --------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.active

    @property
    def workers(self) -> int:
        return self._pools[self.active].workers

    @property
    def shares_program(self) -> bool:
        """True while any of its pools runs the trainer's program (threads)."""
        return any(pool.shares_program for pool in self._pools.values())

    def set_ring(self, ring: BatchRing) -> None:
        self._ring = ring
        for pool in self._pools.values():
            pool.set_ring(ring)

    def replace_slot(self, slot: int) -> None:
        for pool in self._pools.values():
            pool.replace_slot(slot)

    def ready(self) -> bool:
        """The WorkerPool protocol's, stricter: not only are the active pool's workers up,
        the tuner's target setting runs alone: its pool active with the target's worker
        count, every pool's workers up, and no other pool holding tasks or still starting
        (a booting pool takes CPU from the one being measured). So a tuner measures one
        setting at a time; :meth:`wait_ready` waits only for the active pool."""
        self._switch_if_ready()
        kind, workers = self.target
        pool = self._pools.get(kind)
        return (pool is not None and self.active == kind and pool.workers == workers
                and all(p.ready() for p in self._pools.values())
                and all(n == 0 for k, n in self._outstanding.items() if k != kind))

    def resize(self, workers: int) -> None:
        """Run ``workers`` workers of the active kind from now on (the tuner's
        :meth:`apply`: a switch of executor it had asked for and that is not done yet is
        given up). A worker taken out finishes the tasks it holds first."""
        if workers < 1:
            raise ValueError(f"an auto-tuned pool needs at least one worker. Received: {workers}")
        self.apply(self.active, workers)

    def submit(self, task: Task | ProgramUpdate, worker: int | None = None) -> None:
        """Queue ``task`` on the active pool. Not to one given worker: the tuner resizes
        and switches pools while tasks are in flight, so worker ``k`` would not stay the
        same worker (a loader that addresses its workers runs a fixed pool, see
        :func:`stoke.executors.choose.start_pool` ``pinned``)."""
        if worker is not None or isinstance(task, ProgramUpdate):
            to = f"worker {worker}" if worker is not None else "a worker"
            raise StokeError(
                f"an auto-tuned pool (executor or workers \"auto\") cannot give a task or "
                f"an update to {to}: the tuner resizes and switches its pools, so worker "
                f"numbers do not stay the same workers. Use a fixed pool (workers=N, "
                f"executor=\"process\") to address one worker.")
        self._switch_if_ready()
        kind = self.active
        self._owner[task.task_id] = kind
        self._outstanding[kind] += 1
        self._pools[kind].submit(task)

    def broadcast(self, update: ProgramUpdate) -> None:
        """Not possible right across pools: a pool the tuner starts later (or workers it
        adds) would load the program as packed at start-up, without ``update``, and each
        pool would answer for itself. Raises a :class:`~stoke.StokeError` saying so."""
        raise StokeError(
            f"an auto-tuned pool (executor or workers \"auto\") cannot send "
            f"{update.what} to its workers: the workers and pools the tuner starts later "
            f"would not get it. Use a fixed pool (workers=N) or a pinned pool "
            f"(stoke.executors.choose.start_pool(..., pinned=True)) for program updates.")

    def next_result(self, timeout_s: float) -> Result | None:
        self._switch_if_ready()
        busy = [k for k, n in self._outstanding.items() if n > 0]
        main = busy[0] if len(busy) == 1 else self.active
        for kind in list(self._pools):  # others: results, start-up messages, liveness
            if kind != main:
                result = self._poll(kind, 0.0)
                if result is not None:
                    return result
        if len(busy) <= 1:
            return self._poll(main, timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:  # several pools hold tasks (during a switch): short turns on each
            for kind in busy:
                result = self._poll(kind, 0.002)
                if result is not None:
                    return result
            if time.monotonic() >= deadline:
                return None

    def drop_queued(self) -> list[int]:
        """What its pools drop (thread and process workers run what they were given:
        none)."""
        dropped = [task_id for pool in self._pools.values() for task_id in pool.drop_queued()]
        for task_id in dropped:
            owner = self._owner.pop(task_id, None)
            if owner is not None:
                self._outstanding[owner] -= 1
        return dropped

    def worker_pids(self) -> list[int]:
        """The pids of the process workers of every pool (the active one and those
        starting or finishing their tasks); none for thread workers."""
        return [pid for pool in self._pools.values() for pid in pool.worker_pids()]

    def busy_workers(self) -> list[str]:
        return [line for pool in self._pools.values() for line in pool.busy_workers()]

    def check_alive(self) -> None:
        for pool in self._pools.values():
            pool.check_alive()

    def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        if self._packed is not None:
            self._packed.close()
            self._packed = None

    # -- what the tuner asks ------------------------------------------------------------
    def apply(self, kind: str, workers: int) -> None:
        """Run ``workers`` workers of ``kind``; a new kind becomes active once it is up."""
        if kind in self.unavailable:
            return
        self.target = (kind, workers)
        pool = self._pools.get(kind)
        if pool is None:
            try:
                self._pools[kind] = self._start(kind, workers, wait=False)
            except (StokeError, OSError) as exc:
                self.unavailable[kind] = f"{kind} workers could not start: {exc}"
                return
        else:
            pool.resize(workers)
        self._switch_if_ready()

    def prestart(self, kind: str, workers: int) -> None:
        """Start ``workers`` workers of ``kind`` in the background, to be tried later."""
        if kind in self.unavailable or kind in self._pools:
            return
        try:
            self._pools[kind] = self._start(kind, workers, wait=False)
        except (StokeError, OSError) as exc:
            self.unavailable[kind] = f"{kind} workers could not start: {exc}"

    def release_idle(self) -> None:
        """Close the pools that are neither active nor the target, and hold no task."""
        keep = (self.active, self.target[0])
        for kind in [k for k in self._pools if k not in keep and not self._outstanding[k]]:
            log.debug("stoke: closing the idle %s workers", kind)
            self._pools.pop(kind).close()

    def cpu_seconds(self) -> float | None:
        """The WorkerPool protocol's: CPU time the workers of every pool used so far (None:
        not known), for the loader's stuck-workers check."""
        seconds = [pool.cpu_seconds() for pool in self._pools.values()]
        return None if None in seconds else sum(seconds)

    def cpu_seconds_by_pid(self) -> dict[int, float]:
        """CPU seconds so far of this process (``trainer_pid``) and of each process worker,
        by pid (for the tuner)."""
        return self._meter.cpu_seconds(self.worker_pids())

    def idle_seconds(self) -> float:
        return self._meter.idle_seconds()

    def worker_bytes(self) -> int | None:
        """Memory of its own (USS) of one process worker, measured once."""
        pool = self._pools.get("process")
        if self._worker_bytes is None and pool is not None and pool.ready():
            self._worker_bytes = self._meter.own_memory(pool.worker_pids())
        return self._worker_bytes

    # -- internals ----------------------------------------------------------------------
    def _start(self, kind: str, workers: int, wait: bool):
        if kind == "thread":
            from stoke.executors.threads import ThreadPool

            pool = ThreadPool(self.program, workers)
        else:
            from stoke.executors.processes import ProcessPool

            pool = ProcessPool(self.program, workers, packed=self._packed, wait=wait)
        if self._ring is not None:
            pool.set_ring(self._ring)
        self._outstanding[kind] = 0
        return pool

    def _switch_if_ready(self) -> None:
        kind = self.target[0]
        if kind != self.active and kind in self._pools and self._pools[kind].ready():
            log.debug("stoke: %s workers are up; they take the next tasks", kind)
            self.active = kind

    def _poll(self, kind: str, timeout_s: float) -> Result | None:
        pool = self._pools.get(kind)
        if pool is None:
            return None
        try:
            result = pool.next_result(timeout_s)
        except StokeError as exc:
            if kind == self.active or self._outstanding[kind]:
                raise
            # a pool started in the background failed before it held any task: go on
            # without it (the tuner is told through `unavailable`)
            log.debug("stoke: %s workers failed to start: %s", kind, exc)
            self.unavailable[kind] = f"{kind} workers could not start: {exc}"
            self._pools.pop(kind).close()
            self._outstanding.pop(kind, None)
            return None
        if result is not None:
            owner = self._owner.pop(result.task_id, None)
            if owner is not None:
                self._outstanding[owner] -= 1
        return result
