"""The loader: persistent workers + a batch ring, driven by epoch plans.

A :class:`Loader` owns one executor's workers and one ring for its whole life, across
epochs. :meth:`Loader.iter` hands out a :class:`~stoke.loader.iterator.BatchIterator` over
one or more epochs (one iterator at a time). Which pool runs its
:class:`~stoke.executors.options.LoaderOptions` is the chooser's
(:mod:`stoke.executors.choose`); the loader starts it in the background and waits for it
at first use.

Slots, tasks, waits, failure and held batches are the scheduler's
(:mod:`stoke.loader.scheduler`); plan order and iterator state the iterator's
(:mod:`stoke.loader.iterator`). Errors close the workers and the ring, then raise in the
consumer, and again at every later use of the loader.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stoke.autotune.report import fixed_tuning
from stoke.data.plan import IteratorState, fingerprint
from stoke.data.program import tasks_per_worker
from stoke.data.structure import BatchLayout
from stoke.errors import StokeError
from stoke.executors.choose import finish_start, start_pool
from stoke.executors.options import LoaderOptions
from stoke.loader.iterator import BatchIterator
from stoke.loader.scheduler import SlotScheduler

if TYPE_CHECKING:
    from stoke.autotune.target import TunerTarget
    from stoke.data.pipeline import Pipeline

log = logging.getLogger("stoke")

class Loader:
    """Persistent workers and ring for one pipeline; iterate as many epochs as you like.

    >>> with pipe.loader(workers=2) as loader:          # doctest: +SKIP
    ...     for epoch in range(3):
    ...         for x, y in loader.iter(epoch=epoch):
    ...             ...
    """

    def __init__(self, pipeline: Pipeline, options: LoaderOptions | None = None) -> None:
        self.pipeline = pipeline
        self.options = options or LoaderOptions()
        self.program = pipeline.program
        self.plan = pipeline.plan_spec
        self.scheduler = SlotScheduler(self.options, self.plan.batch_size, pipeline.padding,
                                       _started_pool_of(self), tasks_per_worker(self.program))
        # the scheduler's Resources: the workers this loader starts, and the ring (closed by
        # close(), a failure or garbage collection)
        self._shutdown = self.scheduler.resources
        self._active: weakref.ref | None = None
        self._starting = False  # start() began the workers; the first use waits for them

    # -- life cycle ---------------------------------------------------------------------
    @property
    def pool(self):
        """The workers, started (and waited for) at first use; a failed or closed loader
        raises instead."""
        self.scheduler.raise_if_stopped()  # a failed loader raises its error, again
        if self._shutdown.pool is None:
            self.start()
        if self._starting:
            self.finish_start()
        return self._shutdown.pool

    @property
    def started(self) -> bool:
        """Were the workers started (and not stopped since)?"""
        return self._shutdown.pool is not None

    @property
    def failure(self) -> BaseException | None:
        """What stopped the workers, if anything."""
        return self.scheduler.failure

    @property
    def closed(self) -> bool:
        return self.scheduler.closed

    @property
    def batches_kept(self) -> int:
        """Zero-copy batches the consumer kept: their slots were retired."""
        return self.scheduler.batches_kept

    @property
    def tuner(self):
        """The :class:`stoke.autotune.tuner.Tuner` choosing workers, executor and ring depth
        when they are "auto" (None otherwise, or before the workers are up)."""
        return self.scheduler.tuner

    def start(self, trainer_first: bool = False) -> None:
        """Start the workers now without waiting for them: they load the pipeline (and
        whatever it imports) in the background, in parallel, while the caller goes on
        (building and compiling a model); the first batch waits for what is left. They
        stop at ``close()``, when the loader is collected, or at exit.

        ``trainer_first``: until one process worker is up, the batches asked for are made
        in the caller's thread (``to_keras`` with ``executor="auto"``; see
        :mod:`stoke.executors.trainer_first`), so the first batch waits for no worker."""
        if self._shutdown.pool is not None or self.closed or self.failure is not None:
            return
        self._shutdown.pool = start_pool(self.program, self.options, trainer_first=trainer_first)
        self._starting = True

    def finish_start(self) -> None:
        """Wait for the workers :meth:`start` began (and start tuning them); a pool whose
        workers cannot start is closed and the error raised. Run at the first use of
        :attr:`pool`; a loader that starts its own pool may extend it."""
        pool = self._shutdown.pool
        try:
            self.scheduler.tuner = finish_start(pool, self.options, resizer=self.resizer())
        except BaseException:
            self._shutdown.pool = None
            pool.close()
            raise
        finally:
            self._starting = False

    def resizer(self) -> TunerTarget | None:
        """What resizes this loader's workers for a tuner when the loader pins them (starts
        them with ``start_pool(..., pinned=True)``: see :mod:`stoke.executors.choose`);
        None: the chooser's pool tunes itself."""
        return None

    @property
    def executor(self) -> str:
        return self.pool.kind

    @property
    def workers(self) -> int:
        return self.pool.workers

    def close(self) -> None:
        """Stop the workers and free the ring (batches the consumer still holds stay
        valid). Safe to call twice."""
        self.scheduler.close()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.pipeline)

    # -- iteration ----------------------------------------------------------------------
    def iter(self, epoch: int = 0, state: IteratorState | dict | None = None,
             epochs: int | None = 1) -> BatchIterator:
        """Batches of ``epochs`` epochs (None: forever) from ``epoch``, or from ``state``.

        A loader serves one iterator at a time: a new ``iter()`` ends the previous one,
        which then raises :class:`~stoke.StokeError` if it is used again (use a second
        ``pipe.loader()`` to read two streams at once). A failed loader raises its error."""
        if self.failure is not None:
            raise self.failure  # the error that stopped this loader: never an empty epoch
        if self.closed:
            raise StokeError("this loader is closed; make a new one with pipe.loader(...)")
        if state is not None:
            state = IteratorState.from_dict(state)
            expected = fingerprint(self.plan)
            if state.fingerprint and state.fingerprint != expected:
                raise ValueError(
                    "this iterator state was saved from a different pipeline "
                    f"({state.fingerprint}); this one is ({expected}). Restore it into the "
                    "pipeline it came from."
                )
        else:
            state = IteratorState(epoch=epoch, fingerprint=fingerprint(self.plan))
        previous = self._active() if self._active else None
        if previous is not None:
            previous.supersede()
        if self._shutdown.pool is not None and not self._starting:
            # no iterator runs now: what the earlier ones left queued to run in the caller's
            # thread would run there for nothing (a probe iterator's read-ahead)
            self.scheduler.drop_abandoned_queued()
        iterator = BatchIterator(self, state, epochs)
        self._active = weakref.ref(iterator)
        return iterator

    @property
    def layout(self) -> BatchLayout | None:
        """The batch layout of the ring (None until the first batch is planned)."""
        return self.scheduler.layout

    def tuning(self):
        """What this loader runs with and why: a :class:`stoke.autotune.report.Tuning` (the
        decisions with their measurements when tuned, else the settings you gave). Workers
        still starting are waited for: what runs is known once they are up."""
        if self._starting and not self.closed and self.failure is None:
            self.finish_start()
        if self.tuner is not None:
            return self.tuner.report()
        pool = self._shutdown.pool
        ring = self._shutdown.ring
        slots = ring.slots if ring is not None else None
        return fixed_tuning(pool.kind if pool else self.options.executor,
                            pool.workers if pool else self.options.workers, slots, slots)


def _started_pool_of(loader: Loader) -> Callable[[], Any]:
    """``loader.pool`` for its scheduler, without holding the loader (its workers stop
    when it is collected)."""
    ref = weakref.ref(loader)

    def started_pool():
        return ref().pool

    return started_pool
