"""A :class:`~stoke.loader.Loader` with a channel to its workers (:class:`ChannelLoader`):
it can message the workers' copy of the program, route a task to one worker, and drain
abandoned tasks before the trainer changes what thread workers read.

Owns also the pool choice of ``stoke.accelerate`` ("auto" falls back to threads with a
warning). The message format is :mod:`.updates`'s; plans, rings and the rest of the
loader's work stay in ``stoke.loader``.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from stoke.accelerate.items import ItemLayout, float64_message
from stoke.accelerate.updates import ControlMessage, control_task, send_to_worker
from stoke.errors import StokeError, StokeWarning, UnpicklableError
from stoke.executors.chunk import Task
from stoke.loader import POLL_S, Loader, LoaderOptions, make_pool
from stoke.pipeline import Pipeline


def _warn_thread_fallback(exc: UnpicklableError) -> None:
    """An unpicklable dataset runs in threads: said in a warning (the loader only logs it)."""
    # stacklevel: the caller of the caller of ChannelLoader.pool (as before the split)
    warnings.warn(f"stoke.accelerate runs in threads, not processes: {exc}", StokeWarning,
                  stacklevel=5)


class ChannelLoader(Loader):
    """A :class:`~stoke.loader.Loader` that can also message its workers' copy of the
    program (:meth:`send`) and route a task to one worker. Both use the executors' existing
    task protocol (see :class:`ControlMessage`); they are what a ``pool.broadcast`` /
    ``pool.submit(task, worker=k)`` in the core would replace."""

    def __init__(self, pipeline: Pipeline, options: LoaderOptions, program: Any) -> None:
        super().__init__(pipeline, options)
        self.program = program
        self._probe_worker: int | None = None
        self.on_pool_started: Callable[[Any], None] | None = None
        self.on_layout: Callable[[], None] | None = None

    @property
    def pool(self):
        if self._shutdown.pool is None and not self.closed:
            self._shutdown.pool = make_pool(self.program, self.options,
                                           on_thread_fallback=_warn_thread_fallback)
            if self.on_pool_started is not None:
                self.on_pool_started(self._shutdown.pool)
        return Loader.pool.fget(self)

    @property
    def process_workers(self) -> bool:
        return self.pool.kind == "process"

    def send(self, update: dict, worker: int | None = None, what: str = "a message") -> None:
        """Deliver ``update`` to the program in every worker (or in ``worker``), after the
        tasks already sent to it and before any sent later; waits until it was applied."""
        pool = self.pool
        if pool.kind != "process":
            self.program.apply(update)  # threads and inline share the trainer's program
            return
        import cloudpickle

        payload = cloudpickle.dumps(update, protocol=5)
        targets = range(pool.workers) if worker is None else [worker]
        task_ids = []
        for target in targets:
            task_id = self._new_task_id()
            send_to_worker(pool, target, control_task(task_id), ControlMessage(task_id, payload))
            task_ids.append(task_id)
        for task_id in task_ids:
            self._raise_if_failed(self._wait(task_id, what))

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
            if not self._warned_float64:
                self._warned_float64 = True
                paths = [p.removeprefix("[0]") or "batch" for p in result.cast_paths]
                warnings.warn(float64_message(paths), StokeWarning, stacklevel=5)
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
        if ready and self.on_layout is not None:
            self.on_layout()
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
        started = time.monotonic()
        while self._orphans:
            result = pool.next_result(POLL_S)
            if result is None:
                timeout = self.options.timeout_s
                if timeout is not None and time.monotonic() - started > timeout:
                    self.close()
                    raise StokeError(f"abandoned batches did not come back in {timeout:.0f} s")
                continue
            slot = self._orphans.pop(result.task_id, None)
            if slot is None:
                self._results[result.task_id] = result
            elif slot >= 0:
                self._free_slots.append(slot)
