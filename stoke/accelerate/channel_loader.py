"""A :class:`~stoke.loader.loader.Loader` with a channel to its workers (:class:`ChannelLoader`):
it can message the workers' copy of the program, route a task to one worker, and drain
abandoned tasks before the trainer changes what thread workers read.

Owns also the pool choice of ``stoke.accelerate`` ("auto" falls back to threads with a
warning). Messages travel as :class:`~stoke.executors.messages.ProgramUpdate` through the
pool's ``broadcast`` and ``submit(..., worker=k)``; plans, rings and the rest of the loader's
work stay in ``stoke.loader``: this module uses the slot scheduler's public methods and
hooks (:class:`~stoke.loader.scheduler.SlotScheduler`), never its state.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from stoke.accelerate.items import ItemLayout, float64_message
from stoke.accelerate.tuned_workers import TunedWorkers
from stoke.data.pipeline import Pipeline
from stoke.errors import StokeWarning, UnpicklableError, user_stacklevel
from stoke.executors.choose import start_pool
from stoke.executors.chunk import Task
from stoke.executors.messages import ProgramUpdate
from stoke.executors.options import LoaderOptions
from stoke.loader.loader import Loader


def _warn_float64_items(paths: list[str]) -> None:
    """The float64 warning of ``stoke.accelerate``: the ring holds ``(item, rows)``, so the
    paths are the item's, and the opt-out is accelerate's."""
    paths = [p.removeprefix("[0]") for p in paths]  # "": the item is one array
    warnings.warn(float64_message(paths), StokeWarning, stacklevel=user_stacklevel())


def _route_to_worker(pool: Any, worker: int, task: Task) -> None:
    """Send ``task`` to worker ``worker`` of a pool that can address one (processes; threads
    and inline share one queue: any worker)."""
    if pool.addressable:
        pool.submit(task, worker=worker)
    else:
        pool.submit(task)


def _call_weakly(method: weakref.WeakMethod) -> Callable[[], None]:
    """Call ``method`` if its object is still alive (a hook that does not keep it)."""

    def call() -> None:
        bound = method()
        if bound is not None:
            bound()

    return call


def _warn_thread_fallback(exc: UnpicklableError) -> None:
    """An unpicklable dataset runs in threads: said in a warning (the loader only logs it)."""
    # stacklevel: the user's accelerate(...) call
    # (-> AcceleratedSequence -> start -> start_pool -> make_pool)
    warnings.warn(f"stoke.accelerate runs in threads, not processes: {exc}", StokeWarning,
                  stacklevel=7)


class ChannelLoader(Loader):
    """A :class:`~stoke.loader.loader.Loader` that can also message its workers' copy of the
    program (:meth:`send`: ``pool.broadcast`` or ``pool.submit(update, worker=k)``) and
    route a task to one worker (``scheduler.submit(..., worker=k)``, through the scheduler's
    ``route_to_worker`` hook: ``pool.submit(task, worker=k)``)."""

    def __init__(self, pipeline: Pipeline, options: LoaderOptions, program: Any,
                 stream_tuner: Any = None) -> None:
        super().__init__(pipeline, options)
        self.program = program
        # a generator's (stoke.autotune.prefetch.PrefetchTuner): the ring depth of pinned
        # streams; else the chooser's tuner of the worker count (tune_pinned), or none
        self.stream_tuner = stream_tuner
        self._broadcasts: list[tuple[Any, str]] = []  # every (update, what) sent to all, in order
        self._on_pool_started: weakref.WeakMethod | None = None
        self.scheduler.on_float64 = _warn_float64_items
        self.scheduler.route_to_worker = _route_to_worker

    def notify(self, on_pool_started: Callable[[Any], None],
               on_layout: Callable[[], None]) -> None:
        """Call these bound methods when the workers start (with the pool) and when the
        ring's layout is known. Held weakly: the loader does not keep its owner (an
        accelerated dataset) alive, so that dropping the owner stops the workers at once."""
        self._on_pool_started = weakref.WeakMethod(on_pool_started)
        self.scheduler.on_layout = _call_weakly(weakref.WeakMethod(on_layout))

    def start(self) -> None:
        """Start the workers without waiting for them (see :meth:`Loader.start`): a pinned
        pool (messages and generator copies go to a given worker), whose process workers
        the tuner resizes with ``workers="auto"`` (see :mod:`stoke.executors.choose`)."""
        if self._shutdown.pool is not None or self.closed or self.failure is not None:
            return
        pool = start_pool(self.program, self.options, pinned=True,
                          on_thread_fallback=_warn_thread_fallback)
        self._shutdown.pool = pool
        self._starting = True
        callback = self._on_pool_started() if self._on_pool_started is not None else None
        if callback is not None:
            # now: the workers hold the program as it was packed, at this moment
            callback(pool)

    def resizer(self) -> TunedWorkers:
        """The pinned pool's resizer: a worker added by the tuner is sent every message
        broadcast so far (see :mod:`.tuned_workers`)."""
        return TunedWorkers(self, os.getpid())

    def finish_start(self) -> None:
        """The base's, then a generator's stream tuner (its prefetch depth) on process
        workers."""
        super().finish_start()
        if self.stream_tuner is not None and self.pool.kind == "process":
            self.stream_tuner.attach(self.resizer())
            self.scheduler.tuner = self.stream_tuner

    def process_pool(self):
        """The process pool as it runs (started; for :mod:`.tuned_workers`)."""
        return self._shutdown.pool

    def replay_to(self, worker: int) -> None:
        """Send worker ``worker`` (just added) every message sent to all workers so far, in
        order, so that it holds the program as the others do before its first task."""
        pool = self._shutdown.pool
        for update, what in self._broadcasts:
            message = ProgramUpdate(self.scheduler.new_task_id(), update, what)
            pool.submit(message, worker=worker)
            self.scheduler.expect_answer(
                message.task_id, "a message replayed to a worker added by the tuner")

    @property
    def shares_program(self) -> bool:
        """Do the workers run the trainer's program object (threads, inline: see
        :attr:`~stoke.executors.base.WorkerPool.shares_program`)? Known once the pool is
        started, without waiting for its workers."""
        pool = self._shutdown.pool
        return (pool if pool is not None else self.pool).shares_program

    def workers_up(self) -> bool:
        """Without waiting: can the workers take tasks? False while every worker is still
        loading the program (process workers: their imports): the trainer may make batches
        meanwhile."""
        pool = self._shutdown.pool
        if pool is None or not self._starting:
            return True
        return pool.first_ready()

    def warn_float64(self, paths) -> None:
        """Accelerate's float64 warning, once per loader (batches made in the trainer too:
        see :meth:`SlotScheduler.say_float64`)."""
        self.scheduler.say_float64(list(paths))

    def send(self, update: dict, worker: int | None = None, what: str = "a message") -> None:
        """Deliver ``update`` to the program in every worker (or in ``worker``), after the
        tasks already sent to it and before any sent later; waits until the workers that
        are up applied it. While workers are still loading the program (start-up), each
        applies it before its first task and the answer is checked when it comes (an error
        raises then). Thread and inline workers share the trainer's program: it applies the
        update at once."""
        pool = self.pool
        scheduler = self.scheduler
        message = ProgramUpdate(scheduler.new_task_id(), update, what)
        if worker is None:
            self._broadcasts.append((update, what))
            pool.broadcast(message)
        else:
            pool.submit(message, worker=worker)
        if pool.ready():
            scheduler.raise_if_failed(scheduler.wait(message.task_id, what))
        else:
            scheduler.expect_answer(message.task_id, what)

    def template(self) -> ItemLayout:
        """The item layout, from the ring's: the slot holds ``(item, rows)``."""
        layout = self.layout
        item_def = layout.treedef[1][0]
        specs = layout.leaves[:-1]
        return ItemLayout(item_def, tuple(s.shape for s in specs), tuple(s.dtype for s in specs))

    def drain(self) -> None:
        """Wait until every abandoned task is back (thread workers must be idle before the
        trainer changes the dataset they read)."""
        if self._shutdown.pool is None:
            return
        self.scheduler.drain_abandoned()
