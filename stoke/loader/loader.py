"""The loader: persistent workers + a batch ring, driven by epoch plans.

A :class:`Loader` owns one executor's workers and one ring for its whole life, across
epochs. :meth:`Loader.iter` hands out a :class:`BatchIterator` over one or more epochs: it
keeps every free slot busy with the next chunks of the plan, delivers batches strictly in
plan order, and remembers where it stands (:meth:`BatchIterator.state`). Every wait polls
with a timeout and checks that the workers are alive. Errors close the workers and the ring,
then raise in the consumer, and again at every later use of the loader.

Held batches are never overwritten. A delivered batch's slot is recycled lazily: once the
consumer has asked for the next batch, the slot *lingers* until it is needed again; then it
is reused if nothing references the batch any more (the training loop: zero-copy), or
retired to the consumer and replaced by other memory if something does (a kept batch, a
``torch.from_numpy`` tensor, a replay buffer; see :mod:`stoke.executors.ring`). A consumer
that keeps batches then gets copies (measured faster than retiring a slot per batch:
``benchmarks/pipeline_throughput.py``, row ``stoke-process-keep``) until it drops
:data:`DROPS_TO_ZERO_COPY` in a row, then views again. Kept retired batches beyond the
memory budget also make the loader deliver copies, with one warning.
"""

from __future__ import annotations

import logging
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from stoke.autotune.report import fixed_tuning
from stoke.data.plan import IteratorState, fingerprint
from stoke.data.structure import BatchLayout, unflatten
from stoke.errors import (
    StokeError,
    StokeWarning,
    WorkerDiedError,
)
from stoke.executors.choose import finish_start, start_pool
from stoke.executors.chunk import Result, Task
from stoke.executors.host import memory_budget_bytes
from stoke.executors.limits import StuckWatch
from stoke.executors.options import LoaderOptions
from stoke.executors.ring import BatchRing, Delivery

if TYPE_CHECKING:
    from stoke.data.pipeline import Pipeline

log = logging.getLogger("stoke")

POLL_S = 0.25
DROPS_TO_ZERO_COPY = 4  # copies the consumer dropped in a row before views come back


class _Shutdown:
    """Releases a loader's workers and ring; run by close(), GC, or at interpreter exit."""

    def __init__(self) -> None:
        self.pool = None
        self.ring: BatchRing | None = None

    def __call__(self) -> None:
        pool, self.pool = self.pool, None
        ring, self.ring = self.ring, None
        if pool is not None:
            pool.close()
        if ring is not None:
            ring.close()


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
        self.program = pipeline._program()
        self.plan = pipeline._plan_spec()
        self._shutdown = _Shutdown()
        self._finalizer = weakref.finalize(self, self._shutdown)
        self._layout: BatchLayout | None = None
        self._free_slots: deque[int] = deque()
        self._parked_slots: list[int] = []  # allocated, not in rotation (autotuned depth)
        self._tuner = None  # a stoke.autotune.tuner.Tuner when the chooser tunes this loader
        self._results: dict[int, Result] = {}
        self._orphans: dict[int, int] = {}  # task id -> slot, of abandoned iterators
        self._next_task_id = 0
        self._warned_float64 = False
        self._active: weakref.ref | None = None
        self._lingering: list[Delivery] = []  # delivered, consumer moved on, slot not reused
        self._deliveries = 0
        self._keep_budget_bytes = 0  # for batches the consumer keeps (set with the ring)
        self._keep_budget_fds = 0
        self._copying = False  # kept batches are past the budget: deliver copies
        self._keeping = False  # the consumer keeps batches: deliver copies, watch them
        self._dropped_in_row = 0  # copies the keeping consumer dropped since it last kept one
        self._warned_copying = False
        self.batches_kept = 0  # zero-copy batches the consumer kept: their slots were retired
        self._starting = False  # start() began the workers; the first use waits for them
        self.closed = False
        self.failure: BaseException | None = None  # what stopped the workers, if anything

    # -- life cycle ---------------------------------------------------------------------
    @property
    def pool(self):
        if self.failure is not None:
            raise self.failure  # the error that stopped this loader, again: never lose it
        if self.closed:
            raise StokeError("this loader is closed; make a new one with pipe.loader(...)")
        if self._shutdown.pool is None:
            self.start()
        if self._starting:
            self._finish_start()
        return self._shutdown.pool

    def start(self) -> None:
        """Start the workers now without waiting for them: they load the pipeline (and
        whatever it imports) in the background, in parallel, while the caller goes on
        (building and compiling a model); the first batch waits for what is left. They
        stop at ``close()``, when the loader is collected, or at exit."""
        if self._shutdown.pool is not None or self.closed or self.failure is not None:
            return
        self._shutdown.pool = start_pool(self.program, self.options)
        self._starting = True

    def _finish_start(self) -> None:
        """Wait for the workers :meth:`start` began (and start tuning them); a pool whose
        workers cannot start is closed and the error raised."""
        pool = self._shutdown.pool
        try:
            self._tuner = finish_start(pool, self.options)
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
        self.closed = True
        self._lingering.clear()
        self._finalizer()

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
            previous._supersede()
        iterator = BatchIterator(self, state, epochs)
        self._active = weakref.ref(iterator)
        return iterator

    # -- scheduling, used by BatchIterator ----------------------------------------------
    def _submit(self, kind: str, epoch: int, indices: np.ndarray, slot: int = -1) -> int:
        task_id = self._next_task_id
        self._next_task_id += 1
        try:
            self.pool.submit(Task(task_id, kind, epoch, indices, slot))
        except WorkerDiedError as exc:
            self._fail(exc)
        return task_id

    def _wait(self, task_id: int, describe: str) -> Result:
        """The result of ``task_id``; polls with a timeout, checks workers are alive."""
        self._wait_until(lambda: task_id in self._results, describe)
        return self._results.pop(task_id)

    def _wait_for_orphaned_slot(self) -> None:
        """Every free slot is still out with tasks of an abandoned iterator: wait until one
        comes back (never deliver an empty epoch because of it)."""
        if any(slot >= 0 for slot in self._orphans.values()):
            self._wait_until(lambda: bool(self._free_slots),
                             "the ring slots of an abandoned iterator")

    def _wait_until(self, done: Callable[[], bool], describe: str) -> None:
        """Take results until ``done()``; polls with a timeout, checks workers are alive."""
        watch = StuckWatch(self.pool, self.options.timeout_s, describe)
        while not done():
            try:
                result = self.pool.next_result(POLL_S)
            except WorkerDiedError as exc:
                self._fail(exc)
            if result is not None:
                watch.progressed()
                slot = self._orphans.pop(result.task_id, None)
                if slot is not None:
                    if slot >= 0 and not self.closed:
                        self._free_slots.append(slot)
                    continue
                self._results[result.task_id] = result
                continue
            stuck = watch.verdict()
            if stuck is not None:
                self._fail(stuck)

    def _ensure_layout(self, epoch: int, indices: np.ndarray) -> bool:
        """Probe the first sample of ``indices`` that passes the filters and lay out the ring.
        Returns False when every sample of ``indices`` was filtered out."""
        if self._layout is not None:
            return True
        task_id = self._submit("probe", epoch, indices)
        result = self._raise_if_failed(self._wait(task_id, "the first sample"))
        if result.probe is None:
            return False
        index, treedef, arrays = result.probe
        padding = self.pipeline.padding
        if padding is not None:
            from stoke.data.padding import padded_layout

            try:
                layout = padded_layout(arrays, treedef, self.plan.batch_size, index, padding)
            except StokeError as exc:
                self._fail(exc)
        else:
            layout = BatchLayout.from_sample(arrays, treedef, self.plan.batch_size, index)
        self._lay_out(layout)
        return True

    def _lay_out(self, layout: BatchLayout) -> None:
        """Make the ring for ``layout`` and hand it to the workers (again, when a padded
        layout grows: the old ring is closed once nothing writes to it)."""
        if self._tuner is not None:
            try:
                slots, depth = self._tuner.ring_size(layout)
            except StokeError:
                self.close()
                raise
        else:
            slots = depth = self.options.ring_slots or 2 * self.pool.workers + 2
            self._check_memory(layout, slots)
        ring = BatchRing(layout, slots, shared=self.pool.shared_ring)
        self._shutdown.ring = ring
        self._set_keep_budget(ring)
        self.pool.set_ring(ring)
        self._layout = layout
        self._free_slots = deque(range(depth))
        self._parked_slots = list(range(depth, slots))
        self._lingering = []  # batches of an older ring keep its memory alive by themselves
        log.debug("stoke: ring of %d slots x %d bytes for %s", slots, layout.slot_bytes,
                  layout.describe())

    @property
    def layout(self) -> BatchLayout | None:
        """The batch layout of the ring (None until the first batch is planned)."""
        return self._layout

    def _grow_padding(self, error: BaseException) -> None:
        """A sample was longer than the padded capacity: once no task writes to the ring,
        lay it out again with room for that sample (see stoke/data/padding.py)."""
        from stoke.data.padding import grown_layout

        self._wait_until(lambda: not self._orphans, "the abandoned batches")
        log.info("stoke: %s has length %d, over the padded capacity %d: growing the ring",
                 error.path, error.length, error.capacity)
        old = self._shutdown.ring
        self._lay_out(grown_layout(self._layout, error))
        if old is not None:
            old.close()

    def tuning(self):
        """What this loader runs with and why: a :class:`stoke.autotune.report.Tuning` (the
        decisions with their measurements when tuned, else the settings you gave)."""
        if self._tuner is not None:
            return self._tuner.report()

        pool = self._shutdown.pool
        ring = self._shutdown.ring
        slots = ring.slots if ring is not None else None
        return fixed_tuning(pool.kind if pool else self.options.executor,
                            pool.workers if pool else self.options.workers, slots, slots)

    def _observe(self, rows: int, wait_s: float) -> None:
        """A batch was delivered: tell the tuner, then put the ring depth it wants in use."""
        try:
            self._tuner.observe(rows, wait_s)
        except StokeError as exc:
            self._fail(exc)
        ring = self._shutdown.ring
        in_use = (ring.slots if ring is not None else 0) - len(self._parked_slots)
        grow = min(self._tuner.depth - in_use, len(self._parked_slots))
        if grow > 0:
            self._free_slots.extend(self._parked_slots[:grow])
            del self._parked_slots[:grow]

    def _ring_views(self, slot: int) -> list[np.ndarray]:
        return self._shutdown.ring.views(slot)

    # -- held batches: deliver, release, reclaim or retire ------------------------------
    def _deliver(self, slot: int, rows: int) -> tuple[Delivery | None, list[np.ndarray]]:
        """The first ``rows`` rows of ``slot`` for the consumer: zero-copy views and their
        :class:`Delivery` (give it to :meth:`_release` when the consumer moves on), or
        copies and None (the slot is free again at once)."""
        ring = self._shutdown.ring
        self._deliveries += 1
        if self._deliveries % 64 == 0:
            ring.trim_spares()
        if self._copying and self._deliveries % 16 == 0:
            self._update_copying(ring)  # back to views once kept batches are dropped
        if self.options.copy or self._copying or self._keeping:
            leaves = [np.array(view[:rows]) for view in ring.views(slot)]
            self._free_slots.append(slot)
            # while the consumer keeps batches, watch whether it keeps these copies too
            return (Delivery(-1, leaves) if self._keeping else None), leaves
        return ring.deliver(slot, rows)

    def _release(self, delivery: Delivery | None) -> None:
        """The consumer asked for the next batch: ``delivery``'s slot may be reused once
        nothing references its batch (see :meth:`_reclaim`)."""
        if delivery is None or self.closed:
            return
        delivery.released_at = self._deliveries
        self._lingering.append(delivery)

    def _reclaim(self, force: bool = False) -> None:
        """Give lingering slots back to the ring: a batch nobody references is simply
        reused; one still referenced after a newer batch was delivered (so not only by the
        loop variable of a ``for``) is retired, as is every one when ``force``."""
        if not self._lingering:
            return
        waiting = []
        for delivery in self._lingering:
            if not delivery.in_use():
                if delivery.slot >= 0:
                    self._free_slots.append(delivery.slot)
                else:  # a copy, dropped: enough of those in a row and views come back
                    self._dropped_in_row += 1
                    self._keeping = self._dropped_in_row < DROPS_TO_ZERO_COPY
            elif force or self._deliveries > delivery.released_at:
                if delivery.slot >= 0:
                    self._retire(delivery)
                else:  # a copy, kept
                    self._dropped_in_row = 0
            else:
                waiting.append(delivery)
        self._lingering = waiting

    def _retire(self, delivery: Delivery) -> None:
        """The consumer keeps this batch: its memory is theirs, the slot gets new memory."""
        ring = self._shutdown.ring
        ring.retire(delivery)
        self.batches_kept += 1
        self._keeping, self._dropped_in_row = True, 0
        try:
            self.pool.replace_slot(delivery.slot)
        except WorkerDiedError as exc:
            self._fail(exc)
        self._free_slots.append(delivery.slot)
        self._update_copying(ring)

    def _set_keep_budget(self, ring: BatchRing) -> None:
        budget = memory_budget_bytes(self.options.memory_budget_bytes)
        self._keep_budget_bytes = max(0, budget - ring.nbytes)
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # a retired shared block holds two file descriptors while the ring keeps it
        self._keep_budget_fds = max(16, soft // 8) if ring.shared else 1 << 62

    def _update_copying(self, ring: BatchRing) -> None:
        kept_bytes, kept_slots = ring.retired_bytes(), ring.retired_count()
        self._copying = (kept_bytes > self._keep_budget_bytes
                         or kept_slots >= self._keep_budget_fds)
        if self._copying and not self._warned_copying:
            self._warned_copying = True
            warnings.warn(
                f"stoke: the batches you keep from the loader hold {kept_bytes / 2**20:.0f} MiB "
                f"({kept_slots} batches); past the memory budget "
                f"({self._keep_budget_bytes / 2**20:.0f} MiB, {self._keep_budget_fds} batches) "
                "new batches are delivered as copies, not zero-copy views. Drop batches you "
                "no longer need, keep copies of the parts you need (np.array(y)), or raise "
                "memory_budget_bytes.", StokeWarning, stacklevel=4)

    def _orphan(self, task_id: int, slot: int) -> None:
        """An abandoned task: its slot comes back when its result does (or now, when the
        result is already here)."""
        if task_id in self._results:
            del self._results[task_id]
            if slot >= 0 and not self.closed:
                self._free_slots.append(slot)
        else:
            self._orphans[task_id] = slot

    def _check_memory(self, layout: BatchLayout, slots: int) -> None:
        budget = memory_budget_bytes(self.options.memory_budget_bytes)
        needed = layout.slot_bytes * slots
        if needed > budget:
            self.close()
            raise StokeError(
                f"the batch ring needs {needed / 2**30:.2f} GiB ({slots} slots of "
                f"{layout.slot_bytes / 2**20:.1f} MiB: {layout.describe()}) but the memory "
                f"budget is {budget / 2**30:.2f} GiB. Use a smaller batch, fewer ring_slots, "
                "ship uint8 instead of float32, or raise memory_budget_bytes."
            )

    def _fail(self, error: BaseException) -> None:
        """Stop the workers and remember why; every later use raises the same error."""
        self.failure = error
        self.close()
        raise error

    def _raise_if_failed(self, result: Result) -> Result:
        if result.error is not None:
            self._fail(result.error)
        if result.cast_paths and not self._warned_float64:
            self._warned_float64 = True
            warnings.warn(
                f"stoke: float64 field(s) {', '.join(result.cast_paths)} are delivered as "
                "float32 (accelerators train in float32). Pass .batch(..., keep_float64=True) "
                "to keep float64.", StokeWarning, stacklevel=4)
        return result


class _Flight:
    """An iterator's in-flight tasks and delivered batch, kept apart from the iterator so
    that its finalizer can hand them back to the loader after the iterator itself is gone.
    Holds the loader weakly: a finalizer (kept by ``weakref``'s registry) must not keep a
    loader alive, nor a failed one's error and the frames of its traceback."""

    def __init__(self, loader: Loader) -> None:
        self._loader = weakref.ref(loader)
        self.tasks: deque[tuple[int, int, int, int, Any]] = deque()
        self.held: Delivery | None = None

    def release_held(self) -> None:
        held, self.held = self.held, None
        loader = self._loader()
        if held is not None and loader is not None:
            loader._release(held)

    def abandon(self) -> None:
        self.release_held()
        loader = self._loader()
        if loader is not None:
            for task_id, slot, *_ in self.tasks:
                if task_id >= 0:
                    loader._orphan(task_id, slot)
        self.tasks.clear()


class BatchIterator:
    """Batches in plan order; ``state()`` says where it stands. Batches are zero-copy views
    that stay valid as long as you reference them (kept ones are never overwritten)."""

    def __init__(self, loader: Loader, state: IteratorState, epochs: int | None,
                 owns_loader: bool = False) -> None:
        self.loader = loader
        self.owns_loader = owns_loader
        self._state = state
        self._chunks = self._chunk_stream(state, epochs)
        self._stop_epoch = None if epochs is None else state.epoch + epochs  # saved in state()
        self._end_epoch = None if epochs is None else state.epoch + epochs
        self._flight = _Flight(loader)
        self._inflight = self._flight.tasks
        self._exhausted = False
        self._done = False
        self._superseded = False  # ended by a newer loader.iter()
        self._pending: deque[list[Any]] = deque()  # filter path: [epoch, chunk, row0, arrays]
        self._pending_rows = 0
        self._skip_rows = state.rows_delivered
        self._finalizer = weakref.finalize(self, self._flight.abandon)
        self.batches_delivered = 0
        self._last_rows = 0  # rows of the batch just delivered
        self.finished = False  # True once every batch of its epochs was delivered

    def _chunk_stream(self, state: IteratorState, epochs: int | None) -> Iterator:
        epoch = state.epoch
        start = state.chunk
        drop = None if not self.loader.program.has_filter else False
        while epochs is None or epoch < state.epoch + epochs:
            chunks = self.loader.plan.chunks(epoch, drop_partial=drop)
            for position in range(start, len(chunks)):
                yield epoch, position, chunks[position]
            yield epoch, len(chunks), None  # end-of-epoch marker
            epoch += 1
            start = 0

    # -- public ------------------------------------------------------------------------
    def state(self) -> IteratorState:
        """Where this iterator stands: give it to ``pipe.iter(state=...)`` to go on from here."""
        return replace(self._state, stop_epoch=self._stop_epoch)

    def __iter__(self) -> BatchIterator:
        return self

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        """Stop early. Closes the loader too when this iterator made it (``pipe.iter``)."""
        self._abandon()
        if self.owns_loader:
            self.loader.close()

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tuning(self):
        """What the loader runs with and why (see :meth:`Loader.tuning`)."""
        return self.loader.tuning()

    def __next__(self) -> Any:
        if self._done:
            if self._superseded:
                raise StokeError(
                    "this iterator was ended by a newer loader.iter() on the same loader; a "
                    "loader serves one iterator at a time. Finish or close this one first, or "
                    "make a second loader (pipe.loader(...)) to read two streams at once.")
            if self.loader.failure is not None:
                raise self.loader.failure
            raise StopIteration
        if self.loader.failure is not None:
            self._done = True
            raise self.loader.failure
        started = time.perf_counter()
        try:
            batch = self._next()
            if self.loader._tuner is not None:
                self.loader._observe(self._last_rows, time.perf_counter() - started)
            return batch
        except StopIteration:
            self._done = True
            self.finished = True
            self._release_held()
            if self.owns_loader:
                self.loader.close()
            raise
        except BaseException as error:
            self._done = True
            try:
                self._abandon()
                if self.owns_loader:
                    self.loader.close()
            except Exception as cleanup_error:  # Ctrl-C or the user's error stays the error
                error.add_note(f"stoke: cleaning up after it also failed: {cleanup_error!r}")
            raise

    # -- internals ---------------------------------------------------------------------
    def _release_held(self) -> None:
        self._flight.release_held()

    def _abandon(self) -> None:
        """Give in-flight work to the loader to drain; free the held slot."""
        self._done = True
        self._flight.abandon()

    def _supersede(self) -> None:
        """A newer ``loader.iter()`` takes the loader: this one raises if used again."""
        if not self._done:
            self._superseded = True
        self._abandon()

    def _fill(self) -> None:
        """Give every free slot the next chunk. Before the ring exists, probe chunks until
        one has a sample that passes the filters; that lays the ring out."""
        loader = self.loader
        loader._reclaim()
        if not loader._free_slots and not self._inflight and loader._layout is not None:
            loader._reclaim(force=True)  # nothing in flight: a lingering slot must serve
            if not loader._free_slots and not self._exhausted:
                loader._wait_for_orphaned_slot()
        while not self._exhausted and (loader._layout is None or loader._free_slots):
            epoch, position, indices = next(self._chunks, (None, None, None))
            if epoch is None:
                self._exhausted = True
                return
            if indices is None:
                self._inflight.append((-1, -1, epoch, position, None))
                continue
            if not loader._ensure_layout(epoch, indices):
                # every sample of this chunk was filtered out: nothing to run
                self._inflight.append((-2, -1, epoch, position, indices))
                continue
            slot = loader._free_slots.popleft()
            task_id = loader._submit("chunk", epoch, indices, slot)
            self._inflight.append((task_id, slot, epoch, position, indices))

    def _next(self) -> Any:
        self._release_held()
        loader = self.loader
        filtered = loader.program.has_filter
        while True:
            self._fill()
            if filtered and self._pending_rows >= loader.plan.batch_size:
                return self._emit_pending(loader.plan.batch_size)
            if not self._inflight:
                if filtered and self._pending_rows and not loader.plan.drop_remainder:
                    return self._emit_pending(self._pending_rows)
                raise StopIteration
            task_id, slot, epoch, position, indices = self._inflight[0]
            if task_id == -1:  # end of an epoch
                if filtered and self._pending_rows:
                    if not loader.plan.drop_remainder:
                        return self._emit_pending(self._pending_rows)
                    self._pending.clear()
                    self._pending_rows = 0
                self._inflight.popleft()
                self._state = IteratorState(epoch + 1, 0, 0, self._state.fingerprint)
                continue
            if task_id == -2:  # all filtered out, nothing to wait for
                self._inflight.popleft()
                if not self._pending:
                    self._state = IteratorState(epoch, position + 1, 0, self._state.fingerprint)
                continue
            result = loader._wait(task_id, f"batch {position} of epoch {epoch}")
            if loader._layout.padding is not None and result.error is not None:
                from stoke.data.padding import PaddedLengthError

                if isinstance(result.error, PaddedLengthError) and not result.error.fixed:
                    self._regrow(result.error)
                    continue
            result = loader._raise_if_failed(result)
            self._inflight.popleft()
            if not filtered:
                self._flight.held, leaves = loader._deliver(slot, result.rows)
                self._state = IteratorState(epoch, position + 1, 0, self._state.fingerprint)
                self.batches_delivered += 1
                self._last_rows = result.rows
                return self._unbatch(self._build(leaves))
            views = loader._ring_views(slot)
            # filter path: copy the kept rows out, free the slot, re-batch
            skip = self._skip_rows if (epoch, position) == (self._state.epoch, self._state.chunk) else 0
            self._skip_rows = 0
            rows = [np.array(v[skip : result.rows]) for v in views]
            loader._free_slots.append(slot)
            kept = result.rows - skip
            if kept > 0:
                self._pending.append([epoch, position, skip, rows])
                self._pending_rows += kept
            elif not self._pending:
                self._state = IteratorState(epoch, position + 1, 0, self._state.fingerprint)

    def _emit_pending(self, count: int) -> Any:
        """Take ``count`` rows from the pending chunks (filter path) as one batch."""
        parts: list[list[np.ndarray]] = []
        need = count
        while need:
            entry = self._pending[0]
            epoch, position, row0, arrays = entry
            have = len(arrays[0])
            take = min(have, need)
            parts.append([a[:take] for a in arrays])
            need -= take
            if take == have:
                self._pending.popleft()
                next_state = IteratorState(epoch, position + 1, 0, self._state.fingerprint)
            else:
                entry[2] = row0 + take
                entry[3] = [a[take:] for a in arrays]
                next_state = IteratorState(epoch, position, row0 + take, self._state.fingerprint)
        if self._pending:
            epoch, position, row0, _ = self._pending[0]
            next_state = IteratorState(epoch, position, row0, self._state.fingerprint)
        self._state = next_state
        self._pending_rows -= count
        self.batches_delivered += 1
        self._last_rows = count
        leaves = [np.concatenate(column) if len(column) > 1 else column[0]
                  for column in zip(*parts)]
        return self._unbatch(self._build(leaves))

    def _build(self, leaves: list[np.ndarray]) -> Any:
        """The batch of the layout's structure from its leaves (rows already cut)."""
        layout = self.loader._layout
        if layout.padding is not None:
            from stoke.data.padding import deliver

            return deliver(layout, leaves)
        return unflatten(layout.treedef, leaves)

    def _regrow(self, error: BaseException) -> None:
        """A padded sample did not fit: wait for this iterator's tasks, grow the ring, and
        plan again from the state (nothing of it was delivered, so nothing repeats)."""
        for task_id, *_ in self._inflight:
            if task_id >= 0 and task_id != self._inflight[0][0]:
                self.loader._wait(task_id, "a batch being drained")
        self._inflight.clear()
        self.loader._grow_padding(error)
        left = None if self._end_epoch is None else self._end_epoch - self._state.epoch
        self._chunks = self._chunk_stream(self._state, left)
        self._exhausted = False
        self._pending.clear()
        self._pending_rows = 0
        self._skip_rows = self._state.rows_delivered

    def _unbatch(self, batch: Any) -> Any:
        if self.loader.pipeline.batch_size is not None:
            return batch
        from stoke.data.structure import flatten

        treedef, leaves = flatten(batch)
        return unflatten(treedef, [leaf[0] for leaf in leaves])

