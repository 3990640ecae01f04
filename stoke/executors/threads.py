"""The thread executor: N worker threads run tasks into a ring in process memory.

Best when ``map`` releases the GIL (image decoders, OpenCV, large numpy) and for functions
that cannot be pickled. Threads are started once and live until ``close``; the autotuner
may add some or let some go (:meth:`ThreadPool.add_workers`, :meth:`ThreadPool.remove_workers`).
"""

from __future__ import annotations

import queue
import threading

from stoke.executors.chunk import Result, Task, run_task
from stoke.executors.ring import BatchRing
from stoke.program import SampleProgram, prefetch_chunk

_STOP = None


class ThreadPool:
    kind = "thread"
    shared_ring = False

    def __init__(self, program: SampleProgram, workers: int) -> None:
        self.program = program
        self.workers = 0
        self.ring: BatchRing | None = None
        self.tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self._started = 0
        self.add_workers(workers)

    def add_workers(self, count: int) -> None:
        """Start ``count`` more threads (they take tasks at once)."""
        for _ in range(count):
            index, self._started = self._started, self._started + 1
            thread = threading.Thread(target=self._loop, args=(index,),
                                      name=f"stoke-worker-{index}", daemon=True)
            self.threads.append(thread)
            thread.start()
        self.workers += count

    def remove_workers(self, count: int) -> None:
        """Let ``count`` threads go: each stop marker is queued behind the tasks already
        given, so every task is still run, by whichever thread is free."""
        count = min(count, self.workers - 1)
        for _ in range(max(0, count)):
            self.tasks.put(_STOP)
        self.workers -= max(0, count)
        self.threads = [t for t in self.threads if t.is_alive()]

    def ready(self) -> bool:
        return True

    def _loop(self, worker_index: int) -> None:
        name = f"worker thread {worker_index}"
        while True:
            task = self.tasks.get()
            if task is _STOP:
                return
            ring = self.ring
            views = ring.views(task.slot) if (ring is not None and task.slot >= 0) else None
            layout = ring.layout if ring is not None else None
            try:
                result = run_task(self.program, task, layout, views, name)
            except BaseException as exc:  # noqa: BLE001 - reported to the consumer, never lost
                result = Result(task.task_id, error=exc, worker=name)
            self.results.put(result)

    def set_ring(self, ring: BatchRing) -> None:
        self.ring = ring

    def submit(self, task: Task) -> None:
        if task.kind == "chunk":
            prefetch_chunk(self.program, task.indices)  # remote shards: reads start now
        self.tasks.put(task)

    def next_result(self, timeout_s: float) -> Result | None:
        try:
            return self.results.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        for _ in self.threads:
            self.tasks.put(_STOP)
        for thread in self.threads:
            thread.join(timeout=5.0)
