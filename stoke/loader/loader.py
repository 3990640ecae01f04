"""The loader: persistent workers + a batch ring, driven by epoch plans.

A :class:`Loader` owns one executor's workers and one ring for its whole life, across
epochs. :meth:`Loader.iter` hands out a :class:`~stoke.loader.iterator.BatchIterator` over
one or more epochs (one iterator at a time). Owns also the loader's options
(:class:`LoaderOptions`) and which pool runs them (:func:`make_pool`, the tuner's when
workers or executor is "auto"), started in the background and waited for at first use.

Slots, tasks, waits, failure and held batches are the scheduler's
(:mod:`stoke.loader.scheduler`); plan order and iterator state the iterator's
(:mod:`stoke.loader.iterator`). Errors close the workers and the ring, then raise in the
consumer, and again at every later use of the loader.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stoke.data.plan import IteratorState, fingerprint
from stoke.data.structure import BatchLayout
from stoke.errors import StokeError, UnpicklableError
from stoke.executors.inline import InlinePool
from stoke.executors.limits import cap_workers
from stoke.executors.threads import ThreadPool
from stoke.loader.iterator import BatchIterator
from stoke.loader.scheduler import SlotScheduler

if TYPE_CHECKING:
    from stoke.data.pipeline import Pipeline

log = logging.getLogger("stoke")

EXECUTORS = ("auto", "process", "thread", "inline", "ray")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def resolve_workers(workers: int | str) -> int:
    if workers == "auto":
        return max(1, available_cores())
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, (bool, np.bool_)) \
            or workers < 1:
        raise ValueError(f"workers must be a positive int or \"auto\". Received: workers={workers!r}")
    return int(workers)  # numpy integers too (np.int64(4) from a config or an array)


@dataclass(frozen=True)
class LoaderOptions:
    """How a loader runs. ``timeout_s``: how long workers may go without a result and
    without using CPU before they are reported stuck (busy ones are slow, not stuck: see
    :mod:`stoke.executors.limits`; None: wait as long as they are alive). ``oversubscribe``:
    start more process/thread workers than cores (else cut to the cores, with a warning).
    ``ring_slots``: batches in flight (default 2 per worker + 2). ``copy``: yield copies
    instead of zero-copy views (views are safe to keep too: a slot whose batch is still
    referenced is never overwritten). ``memory_budget_bytes``: most memory the ring may
    take, and the batches the consumer keeps from it before they are delivered as copies
    (default a quarter of available RAM). ``ray_address``: the Ray cluster of
    ``executor="ray"`` (default: the one ``ray.init()`` joined, else ``RAY_ADDRESS``, else a
    local Ray); with that executor ``workers="auto"`` means the cluster's CPUs.

    ``workers="auto"`` / ``executor="auto"`` (the defaults) choose both, and the ring depth,
    by measurement while batches flow (see :mod:`stoke.autotune.tuner`; ``it.tuning()`` says what
    was chosen and why), within ``cpu_budget_cores`` (default every available core, less
    what the trainer process and other processes are measured to use) and
    ``memory_budget_bytes``."""

    workers: int | str = "auto"
    executor: str = "auto"
    ring_slots: int | None = None
    timeout_s: float | None = 30.0
    copy: bool = False
    memory_budget_bytes: int | None = None
    ray_address: str | None = None
    cpu_budget_cores: int | None = None
    oversubscribe: bool = False

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"executor must be one of {', '.join(map(repr, EXECUTORS))}. "
                f"Received: executor={self.executor!r}"
            )
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError(
                "ray_address is only used with executor=\"ray\". Received: "
                f"executor={self.executor!r}, ray_address={self.ray_address!r}"
            )
        resolve_workers(self.workers)
        if self.ring_slots is not None and self.ring_slots < 2:
            raise ValueError(f"ring_slots must be >= 2. Received: ring_slots={self.ring_slots}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None. Received: timeout_s={self.timeout_s}")
        if self.cpu_budget_cores is not None and (
                not isinstance(self.cpu_budget_cores, int) or self.cpu_budget_cores < 1):
            raise ValueError("cpu_budget_cores must be a positive int or None. Received: "
                             f"cpu_budget_cores={self.cpu_budget_cores!r}")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes < 1:
            raise ValueError("memory_budget_bytes must be > 0 or None. Received: "
                             f"memory_budget_bytes={self.memory_budget_bytes!r}")


def make_pool(program, options: LoaderOptions,
              on_thread_fallback: Callable[[UnpicklableError], None] | None = None,
              wait: bool = True):
    """The pool ``options`` ask for. "auto" means process workers, even for one; when the
    program cannot be pickled it falls back to threads, logged (or told to
    ``on_thread_fallback``, given the error). ``wait=False``: process workers load the
    program in the background (``pool.wait_ready()`` waits for them)."""
    workers = resolve_workers(options.workers)
    kind = options.executor
    if kind == "auto":
        kind = "process"  # even one worker process overlaps with the consumer
    workers = cap_workers(workers, available_cores(), kind, options.oversubscribe)
    if kind == "ray":
        from stoke.executors.ray import RayPool

        auto = options.workers == "auto"  # on a cluster: its CPUs, not this machine's cores
        return RayPool(program, None if auto else workers, ray_address=options.ray_address)
    if kind == "inline":
        return InlinePool(program)
    if kind == "thread":
        return ThreadPool(program, workers)
    from stoke.executors.processes import ProcessPool

    try:
        return ProcessPool(program, workers, wait=wait)
    except UnpicklableError as exc:
        if options.executor != "auto":
            raise
        if on_thread_fallback is None:
            log.info("stoke: using thread workers: %s", exc)
        else:
            on_thread_fallback(exc)
        return ThreadPool(program, workers)


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
                                       _started_pool_of(self))
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

    def start(self) -> None:
        """Start the workers now without waiting for them: they load the pipeline (and
        whatever it imports) in the background, in parallel, while the caller goes on
        (building and compiling a model); the first batch waits for what is left. They
        stop at ``close()``, when the loader is collected, or at exit."""
        if self._shutdown.pool is not None or self.closed or self.failure is not None:
            return
        from stoke.autotune.tuner import start_pool, wants_tuning

        if wants_tuning(self.options):
            self._shutdown.pool = start_pool(self.program, self.options)
        else:
            self._shutdown.pool = make_pool(self.program, self.options, wait=False)
        self._starting = True

    def finish_start(self) -> None:
        """Wait for the workers :meth:`start` began (and start tuning them); a pool whose
        workers cannot start is closed and the error raised. Run at the first use of
        :attr:`pool`; a loader that starts its own pool may extend it."""
        from stoke.autotune.tuner import AutoPool, attach_tuner

        pool = self._shutdown.pool
        try:
            if isinstance(pool, AutoPool):
                self.scheduler.tuner = attach_tuner(pool, self.options)
            elif pool.kind == "process":
                pool.wait_ready(first=True)  # the others take tasks once they are up
        except BaseException:
            self._shutdown.pool = None
            pool.close()
            raise
        finally:
            self._starting = False

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
        iterator = BatchIterator(self, state, epochs)
        self._active = weakref.ref(iterator)
        return iterator

    @property
    def layout(self) -> BatchLayout | None:
        """The batch layout of the ring (None until the first batch is planned)."""
        return self.scheduler.layout

    def tuning(self):
        """What this loader runs with and why: a :class:`stoke.autotune.tuner.Tuning` (the
        decisions with their measurements when tuned, else the settings you gave)."""
        if self.tuner is not None:
            return self.tuner.report()
        from stoke.autotune.tuner import fixed_tuning

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
