"""The thread executor: N worker threads run tasks into a ring in process memory.

Best when ``map`` releases the GIL (image decoders, OpenCV, large numpy) and for functions
that cannot be pickled. Threads are started once and live until ``close``; the autotuner
may add some or let some go (:meth:`ThreadPool.resize`). Follows
:class:`~stoke.executors.base.WorkerPool`; the threads share one task queue, so a task
cannot be given to one of them.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback
import warnings

from stoke.data.program import SampleProgram, prefetch_chunk
from stoke.errors import StokeError, StokeWarning
from stoke.executors.chunk import Result, Task, run_task
from stoke.executors.messages import ProgramUpdate, apply_update
from stoke.executors.ring import BatchRing

_STOP = None


class ThreadPool:
    kind = "thread"
    shared_ring = False
    addressable = False  # one task queue for all threads
    shares_program = True  # the threads run the trainer's program object

    def __init__(self, program: SampleProgram, workers: int) -> None:
        self.program = program
        self.workers = 0
        self.ring: BatchRing | None = None
        self.tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self._started = 0
        self._native_ids: dict[int, int] = {}  # worker index -> OS thread id (CPU time)
        self._running: dict[int, tuple[Task, int]] = {}  # worker index -> (task, ident)
        self._add_workers(workers)

    def resize(self, workers: int) -> None:
        """Run ``workers`` threads: new ones take tasks at once; those let go finish the
        tasks queued before them."""
        if workers < 1:
            raise ValueError(f"a thread pool needs at least one worker. Received: {workers}")
        if workers > self.workers:
            self._add_workers(workers - self.workers)
        elif workers < self.workers:
            self._remove_workers(self.workers - workers)

    def _add_workers(self, count: int) -> None:
        """Start ``count`` more threads (they take tasks at once)."""
        for _ in range(count):
            index, self._started = self._started, self._started + 1
            thread = threading.Thread(target=self._loop, args=(index,),
                                      name=f"stoke-worker-{index}", daemon=True)
            self.threads.append(thread)
            thread.start()
        self.workers += count

    def _remove_workers(self, count: int) -> None:
        """Let ``count`` threads go: each stop marker is queued behind the tasks already
        given, so every task is still run, by whichever thread is free."""
        count = min(count, self.workers - 1)
        for _ in range(max(0, count)):
            self.tasks.put(_STOP)
        self.workers -= max(0, count)
        self.threads = [t for t in self.threads if t.is_alive()]

    def ready(self) -> bool:
        return True  # threads need no start-up

    def first_ready(self) -> bool:
        return True  # threads need no start-up

    def wait_ready(self, timeout_s: float | None = None, first: bool = False) -> None:
        pass  # threads need no start-up

    def _loop(self, worker_index: int) -> None:
        name = f"worker thread {worker_index}"
        self._native_ids[worker_index] = threading.get_native_id()
        while True:
            task = self.tasks.get()
            if task is _STOP:
                self._native_ids.pop(worker_index, None)
                return
            self._running[worker_index] = (task, threading.get_ident())
            ring = self.ring
            views = ring.views(task.slot) if (ring is not None and task.slot >= 0) else None
            layout = ring.layout if ring is not None else None
            try:
                result = run_task(self.program, task, layout, views, name)
            except BaseException as exc:  # noqa: BLE001 - reported to the consumer, never lost
                result = Result(task.task_id, error=exc, worker=name)
            self._running.pop(worker_index, None)
            self.results.put(result)

    def set_ring(self, ring: BatchRing) -> None:
        self.ring = ring

    def replace_slot(self, slot: int) -> None:
        pass  # tasks read ring.views(slot) when they run

    def submit(self, task: Task | ProgramUpdate, worker: int | None = None) -> None:
        if worker is not None:
            raise StokeError(
                f"thread workers share one task queue: a task cannot be given to worker "
                f"{worker} alone. Use executor=\"process\" to address one worker.")
        if isinstance(task, ProgramUpdate):
            raise ValueError("thread workers share the trainer's program: send an update "
                             "with pool.broadcast(update)")
        if task.kind == "chunk":
            prefetch_chunk(self.program, task.indices)  # remote shards: reads start now
        self.tasks.put(task)

    def broadcast(self, update: ProgramUpdate) -> None:
        """The threads share the trainer's program: it applies ``update`` now, once (call
        it while no task runs, as the sender of a state change does)."""
        self.results.put(apply_update(self.program, update.task_id, update.update,
                                      update.what, "the trainer"))

    def next_result(self, timeout_s: float) -> Result | None:
        try:
            return self.results.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def drop_queued(self) -> list[int]:
        return []  # the threads take every queued task on their own

    def worker_pids(self) -> list[int]:
        return []  # the threads run in this process

    def check_alive(self) -> None:
        pass  # a thread cannot die: its errors come back as results

    def cpu_seconds(self) -> float | None:
        import psutil

        ids = set(self._native_ids.values())
        try:
            threads = psutil.Process().threads()
        except psutil.Error:  # pragma: no cover - no per-thread times here
            return None
        return sum(t.user_time + t.system_time for t in threads if t.id in ids)

    def busy_workers(self) -> list[str]:
        """Each busy thread, its samples and where in the code it is now."""
        frames = sys._current_frames()
        return [f"worker thread {index} on samples {task.indices[:4].tolist()} (epoch "
                f"{task.epoch}), {where_thread_is(frames.get(ident))}"
                for index, (task, ident) in list(self._running.items())]

    def close(self) -> None:
        for _ in self.threads:
            self.tasks.put(_STOP)
        for thread in self.threads:
            thread.join(timeout=5.0)
        stuck = self.busy_workers() if any(t.is_alive() for t in self.threads) else []
        if stuck:  # a thread cannot be stopped from outside: say so, never hide it
            warnings.warn(
                "stoke: a worker thread is still stuck after the loader closed and keeps "
                "running until it returns or the process ends: " + "; ".join(stuck),
                StokeWarning, stacklevel=2)


def where_thread_is(frame) -> str:
    """``at file:line in function`` of the innermost frame that is neither stoke's nor the
    threading module's: the user's code the thread is in."""
    if frame is None:
        return "finished"
    stack = traceback.extract_stack(frame)
    stoke_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for entry in reversed(stack):
        if not entry.filename.startswith(stoke_dir) and \
                os.path.basename(entry.filename) != "threading.py":
            return f"at {entry.filename}:{entry.lineno} in {entry.name}"
    last = stack[-1]
    return f"at {last.filename}:{last.lineno} in {last.name}"
