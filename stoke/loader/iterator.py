"""The batch iterator of a loader (:class:`BatchIterator`): one or more epochs of a plan,
in plan order, from the loader's ring.

It keeps every free slot busy with the next chunks of the plan, delivers batches strictly in
plan order, and remembers where it stands (:meth:`BatchIterator.state`). Slots, tasks, waits
and the lifetime of delivered batches are the scheduler's (:mod:`stoke.loader.scheduler`);
re-batching the chunks of a filtered pipeline is :mod:`stoke.loader.rebatch`'s; workers, ring
and the one-iterator-at-a-time rule are the loader's (:mod:`stoke.loader.loader`).
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from stoke.data.plan import IteratorState
from stoke.data.structure import unflatten
from stoke.errors import StokeError
from stoke.executors.ring import Delivery
from stoke.loader.rebatch import Rebatcher
from stoke.loader.scheduler import Entry, InFlight, SlotScheduler

if TYPE_CHECKING:
    from stoke.loader.loader import Loader


class _Flight:
    """An iterator's in-flight records and delivered batch, kept apart from the iterator so
    that its finalizer can hand them back to the scheduler after the iterator itself is
    gone. Holds the scheduler weakly: a finalizer (kept by ``weakref``'s registry) must not
    keep a loader's workers alive, nor a failed one's error and the frames of its
    traceback."""

    def __init__(self, scheduler: SlotScheduler) -> None:
        self._scheduler = weakref.ref(scheduler)
        self.tasks: deque[InFlight] = deque()
        self.held: Delivery | None = None

    def release_held(self) -> None:
        held, self.held = self.held, None
        scheduler = self._scheduler()
        if held is not None and scheduler is not None:
            scheduler.release(held)

    def abandon(self) -> None:
        self.release_held()
        scheduler = self._scheduler()
        if scheduler is not None:
            scheduler.abandon(self.tasks)
        self.tasks.clear()


class BatchIterator:
    """Batches in plan order; ``state()`` says where it stands. Batches are zero-copy views
    that stay valid as long as you reference them (kept ones are never overwritten)."""

    def __init__(self, loader: Loader, state: IteratorState, epochs: int | None,
                 owns_loader: bool = False) -> None:
        self.loader = loader
        self.scheduler = loader.scheduler
        self.owns_loader = owns_loader
        self._state = state
        self._chunks = self._chunk_stream(state, epochs)
        self._stop_epoch = None if epochs is None else state.epoch + epochs  # saved in state()
        self._end_epoch = None if epochs is None else state.epoch + epochs
        self._flight = _Flight(self.scheduler)
        self._inflight = self._flight.tasks
        self._exhausted = False
        self._done = False
        self._superseded = False  # ended by a newer loader.iter()
        self._rebatcher = Rebatcher(state.rows_delivered)  # filter path only
        self._finalizer = weakref.finalize(self, self._flight.abandon)
        self.batches_delivered = 0
        self._last_rows = 0  # rows of the batch just delivered
        self.finished = False  # True once every batch of its epochs was delivered

    def _chunk_stream(self, state: IteratorState, epochs: int | None) -> Iterator:
        epoch = state.epoch
        start = state.chunk
        drop = None if not self.loader.program.has_filter else False
        while epochs is None or epoch < state.epoch + epochs:
            position = start  # chunks may be made as they go (lazy shards): no len()
            for chunk in itertools.islice(self.loader.plan.chunks(epoch, drop_partial=drop),
                                          start, None):
                yield epoch, position, chunk
                position += 1
            yield epoch, position, None  # end-of-epoch marker
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

    def supersede(self) -> None:
        """A newer ``loader.iter()`` takes the loader: this iterator gives its work back and
        raises if used again."""
        if not self._done:
            self._superseded = True
        self._abandon()

    def __next__(self) -> Any:
        if self._done:
            if self._superseded:
                raise StokeError(
                    "this iterator was ended by a newer loader.iter() on the same loader; a "
                    "loader serves one iterator at a time. Finish or close this one first, or "
                    "make a second loader (pipe.loader(...)) to read two streams at once.")
            if self.scheduler.failure is not None:
                raise self.scheduler.failure
            raise StopIteration
        if self.scheduler.failure is not None:  # the loader's failure
            self._done = True
            raise self.scheduler.failure
        started = time.perf_counter()
        try:
            batch = self._next()
            if self.scheduler.tuner is not None:
                self.scheduler.observe(self._last_rows, time.perf_counter() - started)
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
        """Give in-flight work to the scheduler to drain; free the held slot."""
        self._done = True
        self._flight.abandon()

    def _fill(self) -> None:
        """Give every free slot the next chunk. Before the ring exists, probe chunks until
        one has a sample that passes the filters; that lays the ring out."""
        scheduler = self.scheduler
        scheduler.reclaim()
        if not scheduler.has_free_slot and not self._inflight and scheduler.layout is not None:
            scheduler.reclaim(force=True)  # nothing in flight: a lingering slot must serve
            if not scheduler.has_free_slot and not self._exhausted:
                scheduler.wait_for_abandoned_slot()
        while not self._exhausted and (scheduler.layout is None or scheduler.has_free_slot):
            epoch, position, indices = next(self._chunks, (None, None, None))
            if epoch is None:
                self._exhausted = True
                return
            if indices is None:
                self._inflight.append(InFlight(Entry.EPOCH_END, epoch, position))
                continue
            if not scheduler.ensure_layout(epoch, indices):
                # every sample of this chunk was filtered out: nothing to run
                self._inflight.append(InFlight(Entry.ALL_FILTERED, epoch, position, indices))
                continue
            self._inflight.append(scheduler.submit_chunk(epoch, position, indices))

    def _next(self) -> Any:
        self._release_held()
        loader = self.loader
        scheduler = self.scheduler
        rebatcher = self._rebatcher
        filtered = loader.program.has_filter
        while True:
            self._fill()
            if filtered and rebatcher.rows >= loader.plan.batch_size:
                return self._emit_pending(loader.plan.batch_size)
            if not self._inflight:
                if filtered and rebatcher.rows and not loader.plan.drop_remainder:
                    return self._emit_pending(rebatcher.rows)
                raise StopIteration
            entry = self._inflight[0]
            epoch, position = entry.epoch, entry.position
            if entry.kind is not Entry.TASK:  # a marker: nothing to wait for
                if entry.kind is Entry.EPOCH_END:
                    if filtered and rebatcher.rows:
                        if not loader.plan.drop_remainder:
                            return self._emit_pending(rebatcher.rows)
                        rebatcher.clear()
                    self._inflight.popleft()
                    self._state = IteratorState(epoch + 1, 0, 0, self._state.fingerprint)
                    continue
                self._inflight.popleft()  # Entry.ALL_FILTERED
                if not rebatcher.has_pending:
                    self._state = IteratorState(epoch, position + 1, 0, self._state.fingerprint)
                continue
            result = scheduler.wait(entry.task_id, f"batch {position} of epoch {epoch}")
            if scheduler.layout.padding is not None and result.error is not None:
                from stoke.data.padding import PaddedLengthError

                if isinstance(result.error, PaddedLengthError) and not result.error.fixed:
                    self._regrow(result.error)
                    continue
            result = scheduler.raise_if_failed(result)
            self._inflight.popleft()
            if not filtered:
                self._flight.held, leaves = scheduler.deliver(entry.slot, result.rows)
                self._state = IteratorState(epoch, position + 1, 0, self._state.fingerprint)
                self.batches_delivered += 1
                self._last_rows = result.rows
                return self._unbatch(self._build(leaves))
            # filter path: copy the kept rows out, free the slot, re-batch
            nothing_pending = rebatcher.add_chunk(epoch, position, scheduler.views(entry.slot),
                                                  result.rows, self._state)
            scheduler.put_back(entry.slot)
            if nothing_pending:
                self._state = IteratorState(epoch, position + 1, 0, self._state.fingerprint)

    def _emit_pending(self, count: int) -> Any:
        """Take ``count`` rows from the pending chunks (filter path) as one batch."""
        leaves, self._state = self._rebatcher.take(count, self._state)
        self.batches_delivered += 1
        self._last_rows = count
        return self._unbatch(self._build(leaves))

    def _build(self, leaves: list[np.ndarray]) -> Any:
        """The batch of the layout's structure from its leaves (rows already cut)."""
        layout = self.scheduler.layout
        if layout.padding is not None:
            from stoke.data.padding import deliver

            return deliver(layout, leaves)
        return unflatten(layout.treedef, leaves)

    def _regrow(self, error: BaseException) -> None:
        """A padded sample did not fit: wait for this iterator's tasks, grow the ring, and
        plan again from the state (nothing of it was delivered, so nothing repeats)."""
        first = self._inflight[0]
        for entry in self._inflight:
            if entry.kind is Entry.TASK and entry is not first:
                self.scheduler.wait(entry.task_id, "a batch being drained")
        self._inflight.clear()
        self.scheduler.grow_padding(error)
        left = None if self._end_epoch is None else self._end_epoch - self._state.epoch
        self._chunks = self._chunk_stream(self._state, left)
        self._exhausted = False
        self._rebatcher.restart(self._state.rows_delivered)

    def _unbatch(self, batch: Any) -> Any:
        if self.loader.pipeline.batch_size is not None:
            return batch
        from stoke.data.structure import flatten

        treedef, leaves = flatten(batch)
        return unflatten(treedef, [leaf[0] for leaf in leaves])
