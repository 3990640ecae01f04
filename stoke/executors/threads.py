"""The thread executor: N worker threads run tasks into a ring in process memory.

Best when ``map`` releases the GIL (image decoders, OpenCV, large numpy) and for functions
that cannot be pickled. Threads are started once and live until ``close``.
"""

from __future__ import annotations

import queue
import threading

from stoke.executors.chunk import Result, Task, run_task
from stoke.executors.ring import BatchRing
from stoke.program import SampleProgram

_STOP = None


class ThreadPool:
    kind = "thread"
    shared_ring = False

    def __init__(self, program: SampleProgram, workers: int) -> None:
        self.program = program
        self.workers = workers
        self.ring: BatchRing | None = None
        self.tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"stoke-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self.threads:
            thread.start()

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
