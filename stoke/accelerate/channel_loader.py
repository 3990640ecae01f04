"""A :class:`~stoke.loader.loader.Loader` with a channel to its workers (:class:`ChannelLoader`):
it can message the workers' copy of the program, route a task to one worker, and drain
abandoned tasks before the trainer changes what thread workers read.

Owns also the pool choice of ``stoke.accelerate`` ("auto" falls back to threads with a
warning). The message format is :mod:`.updates`'s; plans, rings and the rest of the
loader's work stay in ``stoke.loader.loader``.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from stoke.accelerate.items import ItemLayout, float64_message
from stoke.accelerate.updates import ControlMessage, control_task, send_to_worker
from stoke.data.pipeline import Pipeline
from stoke.errors import StokeWarning, UnpicklableError
from stoke.executors.chunk import Task
from stoke.executors.limits import StuckWatch
from stoke.loader.loader import POLL_S, Loader, LoaderOptions, make_pool


def _warn_thread_fallback(exc: UnpicklableError) -> None:
    """An unpicklable dataset runs in threads: said in a warning (the loader only logs it)."""
    # stacklevel: the user's accelerate(...) call (-> AcceleratedSequence -> start -> make_pool)
    warnings.warn(f"stoke.accelerate runs in threads, not processes: {exc}", StokeWarning,
                  stacklevel=6)


class ChannelLoader(Loader):
    """A :class:`~stoke.loader.loader.Loader` that can also message its workers' copy of the
    program (:meth:`send`) and route a task to one worker. Both use the executors' existing
    task protocol (see :class:`ControlMessage`); they are what a ``pool.broadcast`` /
    ``pool.submit(task, worker=k)`` in the core would replace."""

    def __init__(self, pipeline: Pipeline, options: LoaderOptions, program: Any,
                 tuned: bool = False) -> None:
        super().__init__(pipeline, options)
        self.program = program
        self.tuned = tuned  # process workers resized by stoke.autotune.tuner (Sequences)
        self._probe_worker: int | None = None
        self._broadcasts: list[bytes] = []  # every message sent to all workers, in order
        self._on_pool_started: weakref.WeakMethod | None = None
        self._on_layout: weakref.WeakMethod | None = None
        self._unanswered: dict[int, str] = {}  # messages to workers still starting: task id -> what

    def notify(self, on_pool_started: Callable[[Any], None],
               on_layout: Callable[[], None]) -> None:
        """Call these bound methods when the workers start (with the pool) and when the
        ring's layout is known. Held weakly: the loader does not keep its owner (an
        accelerated dataset) alive, so that dropping the owner stops the workers at once."""
        self._on_pool_started = weakref.WeakMethod(on_pool_started)
        self._on_layout = weakref.WeakMethod(on_layout)

    def start(self) -> None:
        """Start the workers without waiting for them (see :meth:`Loader.start`): a fixed
        pool ("auto": one process worker per core), not a tuned one, since messages and
        generator copies go to a given worker."""
        if self._shutdown.pool is not None or self.closed or self.failure is not None:
            return
        options = self.options
        if self.tuned:
            from stoke.autotune.tuner import first_workers

            options = dataclasses.replace(options, workers=first_workers(options))
        pool = make_pool(self.program, options, on_thread_fallback=_warn_thread_fallback,
                         wait=False)
        self._shutdown.pool = pool
        self._starting = True
        callback = self._on_pool_started() if self._on_pool_started is not None else None
        if callback is not None:
            # now: the workers hold the program as it was packed, at this moment
            callback(pool)

    def _finish_start(self) -> None:
        super()._finish_start()
        pool = self._shutdown.pool
        if self.tuned and pool.kind == "process":
            import os

            from stoke.accelerate.tuned_workers import TunedWorkers
            from stoke.autotune.tuner import make_tuner

            self._tuner = make_tuner("process", self.options)
            self._tuner.attach(TunedWorkers(self, os.getpid()))

    def process_pool(self):
        """The process pool as it runs (started; for :mod:`.tuned_workers`)."""
        return self._shutdown.pool

    def replay_to(self, worker: int) -> None:
        """Send worker ``worker`` (just added) every message sent to all workers so far, in
        order, so that it holds the program as the others do before its first task."""
        pool = self._shutdown.pool
        for payload in self._broadcasts:
            task_id = self._new_task_id()
            send_to_worker(pool, worker, control_task(task_id), ControlMessage(task_id, payload))
            self._unanswered[task_id] = "a message replayed to a worker added by the tuner"

    @property
    def process_workers(self) -> bool:
        pool = self._shutdown.pool  # its kind is known once started: no wait for the workers
        return (pool if pool is not None else self.pool).kind == "process"

    def workers_up(self) -> bool:
        """Without waiting: can the workers take tasks? False while every process worker is
        still loading the program (its imports): the trainer may make batches meanwhile."""
        pool = self._shutdown.pool
        if pool is None or not self._starting or pool.kind != "process":
            return True
        return pool.first_ready()

    def warn_float64(self, paths) -> None:
        """Accelerate's float64 warning, once per loader (batches made in the trainer too):
        the ring holds ``(item, rows)``, so the paths are the item's."""
        if not self._warned_float64:
            self._warned_float64 = True
            paths = [p.removeprefix("[0]") or "batch" for p in paths]
            warnings.warn(float64_message(paths), StokeWarning, stacklevel=6)

    def send(self, update: dict, worker: int | None = None, what: str = "a message") -> None:
        """Deliver ``update`` to the program in every worker (or in ``worker``), after the
        tasks already sent to it and before any sent later; waits until the workers that
        are up applied it. A worker still loading the program (start-up) applies it before
        its first task; its answer is checked when it comes (an error raises then)."""
        pool = self.pool
        if pool.kind != "process":
            self.program.apply(update)  # threads and inline share the trainer's program
            return
        import cloudpickle

        payload = cloudpickle.dumps(update, protocol=5)
        targets = range(pool.workers) if worker is None else [worker]
        if worker is None:
            self._broadcasts.append(payload)
        task_ids = []
        for target in targets:
            task_id = self._new_task_id()
            up = pool.worker_ready(target)
            send_to_worker(pool, target, control_task(task_id), ControlMessage(task_id, payload))
            if up:
                task_ids.append(task_id)
            else:
                self._unanswered[task_id] = what
        for task_id in task_ids:
            self._raise_if_failed(self._wait(task_id, what))

    def _wait(self, task_id: int, describe: str):
        result = super()._wait(task_id, describe)
        for answered in [t for t in self._unanswered if t in self._results]:
            del self._unanswered[answered]
            self._raise_if_failed(self._results.pop(answered))
        return result

    def _new_task_id(self) -> int:
        task_id = self._next_task_id
        self._next_task_id += 1
        return task_id

    def submit_to(self, worker: int, kind: str, epoch: int, indices: np.ndarray, slot: int) -> int:
        task_id = self._new_task_id()
        task = Task(task_id, kind, epoch, indices, slot)
        if self.pool.kind == "process":
            send_to_worker(self.pool, worker, task, task)
        else:
            self.pool.submit(task)
        return task_id

    def _raise_if_failed(self, result):
        """As the loader's, with accelerate's own float64 warning: the ring holds
        ``(item, rows)``, so the paths are the item's, and the opt-out is accelerate's."""
        if result.cast_paths:
            self.warn_float64(result.cast_paths)
            result = dataclasses.replace(result, cast_paths=())
        return super()._raise_if_failed(result)

    def _submit(self, kind: str, epoch: int, indices: np.ndarray, slot: int = -1) -> int:
        if kind == "probe" and self._probe_worker is not None:
            return self.submit_to(self._probe_worker, kind, epoch, indices, slot)
        return super()._submit(kind, epoch, indices, slot)

    def _ensure_layout(self, epoch: int, indices: np.ndarray) -> bool:
        if self._layout is not None:
            return True
        ready = super()._ensure_layout(epoch, indices)
        callback = self._on_layout() if self._on_layout is not None else None
        if ready and callback is not None:
            callback()
        return ready

    def template(self) -> ItemLayout:
        """The item layout, from the ring's: the slot holds ``(item, rows)``."""
        layout = self._layout
        item_def = layout.treedef[1][0]
        specs = layout.leaves[:-1]
        return ItemLayout(item_def, tuple(s.shape for s in specs), tuple(s.dtype for s in specs))

    def drain(self) -> None:
        """Wait until every abandoned task is back (thread workers must be idle before the
        trainer changes the dataset they read)."""
        if self._shutdown.pool is None:
            return
        pool = self.pool
        if pool.kind == "inline":
            pool.pending.clear()
            self._free_slots.extend(s for s in self._orphans.values() if s >= 0)
            self._orphans.clear()
            return
        for task_id in [t for t in self._orphans if t in self._results]:  # already back
            self._orphan(task_id, self._orphans.pop(task_id))
        watch = StuckWatch(pool, self.options.timeout_s, "the abandoned batches")
        while self._orphans:
            result = pool.next_result(POLL_S)
            if result is None:
                stuck = watch.verdict()  # busy workers are waited for; idle ones reported
                if stuck is not None:
                    self.close()
                    raise stuck
                continue
            watch.progressed()
            slot = self._orphans.pop(result.task_id, None)
            if slot is None:
                self._results[result.task_id] = result
            elif slot >= 0:
                self._free_slots.append(slot)
