"""The slot scheduler: which ring slot each task writes, what is in flight, and when a slot
comes back. Every loop that feeds from the ring drives it through its public methods: the
loader's :class:`~stoke.loader.iterator.BatchIterator` (plan order) and ``stoke.accelerate``
(Sequences through that iterator, generator copies in :mod:`stoke.accelerate.streams`).

A loop takes a free slot and submits a task that writes it (:meth:`SlotScheduler.submit_chunk`,
optionally to one given worker), keeps the returned :class:`InFlight` record in its own
order, waits for its result (:meth:`SlotScheduler.wait`: polls with a timeout and watches
that workers are alive), then hands the slot's batch to the consumer
(:meth:`SlotScheduler.deliver`) and, when the consumer moves on, back to the scheduler
(:meth:`SlotScheduler.release`). A loop that stops early abandons its records
(:meth:`SlotScheduler.abandon`): their slots come back when their results do.

Held batches are never overwritten. A delivered batch's slot is recycled lazily: once the
consumer has asked for the next batch, the slot *lingers* until it is needed again
(:meth:`SlotScheduler.reclaim`); then it is reused if nothing references the batch any more
(the training loop: zero-copy), or retired to the consumer and replaced by other memory if
something does (a kept batch, a ``torch.from_numpy`` tensor, a replay buffer; see
:mod:`stoke.executors.ring`). A consumer that keeps batches then gets copies (measured faster
than retiring a slot per batch: ``benchmarks/pipeline_throughput.py``, row
``stoke-process-keep``) until it drops :data:`DROPS_TO_ZERO_COPY` in a row, then views again.
Kept retired batches beyond the memory budget also make the scheduler deliver copies, with
one warning.

Owns also the ring's layout (from the first sample that passes the filters; grown when a
padded sample does not fit), the workers and ring once started (:class:`Resources`, closed at
:meth:`SlotScheduler.close`, on failure, on garbage collection and at exit), and failure: an
error stops the workers and raises, and again at every later use. Which pool runs is the
loader's (:mod:`stoke.loader.loader`); plan order and iterator state are the iterator's; the
ring's memory is :mod:`stoke.executors.ring`'s; the ring depth a tuned loader wants is the
tuner's (:mod:`stoke.autotune.tuner`).
"""

from __future__ import annotations

import enum
import logging
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stoke.data.structure import BatchLayout
from stoke.errors import StokeError, StokeWarning, WorkerDiedError, user_stacklevel
from stoke.executors.chunk import Result, Task
from stoke.executors.host import memory_budget_bytes
from stoke.executors.limits import StuckWatch
from stoke.executors.ring import BatchRing, Delivery

if TYPE_CHECKING:
    from stoke.data.padding import PaddingSpec
    from stoke.executors.options import LoaderOptions

log = logging.getLogger("stoke")

POLL_S = 0.25  # every wait polls the workers this often (and checks they are alive)
DROPS_TO_ZERO_COPY = 4  # copies the consumer dropped in a row before views come back
NO_SLOT = -1  # a task that writes no slot: a layout probe, a message to workers
NO_TASK = -1  # an in-flight entry with no task behind it


class Entry(enum.Enum):
    """What an :class:`InFlight` record stands for in a loop's queue."""

    TASK = "task"  # a task writes a slot: wait for it, deliver its batch
    EPOCH_END = "epoch end"  # the plan's epoch ends here: no task
    ALL_FILTERED = "all filtered"  # the layout probe found no sample left: no task


@dataclass(slots=True, eq=False)
class InFlight:
    """One entry of a loop's queue, in the loop's order: a submitted task and the slot it
    writes (``kind`` TASK), or a marker without a task (``task_id`` :data:`NO_TASK`).
    ``position`` is the chunk's place in its epoch (the item number of a generator copy)."""

    kind: Entry
    epoch: int
    position: int
    indices: np.ndarray | None = None
    task_id: int = NO_TASK
    slot: int = NO_SLOT


class Resources:
    """A scheduler's workers and ring; calling it closes both (close(), failure, garbage
    collection or interpreter exit). The loader puts the pool it starts here."""

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


class SlotScheduler:
    """Slots, tasks and results of one loader's ring (see the module docstring).

    ``pool`` returns the started pool (starting it on first use) or raises when the loader
    is closed or failed; it must not hold the loader strongly. ``batch_size`` and
    ``padding`` lay out the ring from the first sample.

    Public hooks, for loaders that talk to their workers (``stoke.accelerate``): ``on_layout``
    (called once, when :meth:`ensure_layout` first lays the ring out), ``on_float64`` (called
    once, with the paths of the float64 fields cast to float32, in place of the loader's own
    warning), ``route_to_worker`` (``(pool, worker, task)``: sends a task to one given
    worker, for ``submit(..., worker=k)``)."""

    def __init__(self, options: LoaderOptions, batch_size: int, padding: PaddingSpec | None,
                 pool: Callable[[], Any], tasks_per_worker: int = 2) -> None:
        self.options = options
        # the default ring depth per worker (stoke.data.program.tasks_per_worker): more for
        # a source whose reads wait on the network, within the memory budget
        self.tasks_per_worker = tasks_per_worker
        self.batch_size = batch_size
        self.padding = padding
        self._pool = pool
        self._started_pool = None  # what pool() returned, until close()
        self.resources = Resources()
        self._finalizer = weakref.finalize(self, self.resources)
        self.tuner = None  # a stoke.autotune.tuner.Tuner when workers or executor is "auto"
        self.on_layout: Callable[[], None] | None = None
        self.on_float64: Callable[[list[str]], None] | None = None
        self.route_to_worker: Callable[[Any, int, Task], None] | None = None
        self._layout: BatchLayout | None = None
        self._free_slots: deque[int] = deque()
        self._parked_slots: list[int] = []  # allocated, not in rotation (autotuned depth)
        self._results: dict[int, Result] = {}
        self._orphans: dict[int, int] = {}  # task id -> slot, of abandoned loops
        self._unanswered: dict[int, str] = {}  # tasks checked when they come: id -> what
        self._next_task_id = 0
        self._warned_float64 = False
        self._lingering: list[Delivery] = []  # delivered, consumer moved on, slot not reused
        self._deliveries = 0
        self._keep_budget_bytes = 0  # for batches the consumer keeps (set with the ring)
        self._keep_budget_fds = 0
        self._copying = False  # kept batches are past the budget: deliver copies
        self._keeping = False  # the consumer keeps batches: deliver copies, watch them
        self._dropped_in_row = 0  # copies the keeping consumer dropped since it last kept one
        self._warned_copying = False
        self.batches_kept = 0  # zero-copy batches the consumer kept: their slots were retired
        self.closed = False
        self.failure: BaseException | None = None  # what stopped the workers, if anything

    # -- life cycle ---------------------------------------------------------------------
    @property
    def pool(self):
        """The started workers (started on first use), or the error that stopped them."""
        pool = self._started_pool
        if pool is None:  # not started yet, or stopped: the loader starts it or raises
            pool = self._started_pool = self._pool()
        return pool

    def raise_if_stopped(self) -> None:
        """Raise the error that stopped the workers (never lose it), or say the scheduler
        was closed."""
        if self.failure is not None:
            raise self.failure
        if self.closed:
            raise StokeError("this loader is closed; make a new one with pipe.loader(...)")

    def close(self) -> None:
        """Stop the workers and free the ring (batches the consumer holds stay valid)."""
        self.closed = True
        self._started_pool = None
        self._lingering.clear()
        self._finalizer()

    def fail(self, error: BaseException) -> None:
        """Stop the workers and remember why; every later use raises the same error."""
        self.failure = error
        self.close()
        raise error

    # -- tasks --------------------------------------------------------------------------
    def new_task_id(self) -> int:
        """A task id never used before (for tasks sent to workers by other means)."""
        task_id = self._next_task_id
        self._next_task_id += 1
        return task_id

    def submit(self, kind: str, epoch: int, indices: np.ndarray, slot: int = NO_SLOT,
               worker: int | None = None) -> int:
        """Send a task (``kind`` "chunk" writes ``slot``; "probe" returns the first sample
        that passes the filters) to the workers, or to worker ``worker`` through
        :attr:`route_to_worker`; returns its task id."""
        task_id = self._next_task_id
        self._next_task_id += 1
        task = Task(task_id, kind, epoch, indices, slot)
        if worker is not None:
            if self.route_to_worker is None:
                raise StokeError(
                    f"submit(..., worker={worker}) needs a route_to_worker hook (how a task "
                    "reaches one given worker; stoke.accelerate's ChannelLoader sets one) and "
                    "this scheduler has none. Submit without worker=, or set the hook.")
            self.route_to_worker(self.pool, worker, task)
            return task_id
        try:
            self.pool.submit(task)
        except WorkerDiedError as exc:
            self.fail(exc)
        return task_id

    def submit_chunk(self, epoch: int, position: int, indices: np.ndarray,
                     worker: int | None = None) -> InFlight:
        """Take a free slot (there must be one: :attr:`has_free_slot`) and submit the task
        that writes ``indices`` into it; the record to wait for."""
        slot = self._free_slots.popleft()
        task_id = self.submit("chunk", epoch, indices, slot, worker)
        return InFlight(Entry.TASK, epoch, position, indices, task_id, slot)

    def expect_answer(self, task_id: int, what: str) -> None:
        """Check the result of ``task_id`` (sent by other means) whenever it comes back,
        after a later :meth:`wait`: an error then raises, naming ``what``."""
        self._unanswered[task_id] = what

    def wait(self, task_id: int, describe: str) -> Result:
        """The result of ``task_id``; polls with a timeout, checks workers are alive."""
        self._wait_until(lambda: task_id in self._results, describe)
        result = self._results.pop(task_id)
        if self._unanswered:
            for answered in [t for t in self._unanswered if t in self._results]:
                del self._unanswered[answered]
                self.raise_if_failed(self._results.pop(answered))
        return result

    def raise_if_failed(self, result: Result) -> Result:
        """``result``, or its error raised (the workers stopped first). Says once that
        float64 fields became float32 (see :attr:`on_float64`)."""
        if result.error is not None:
            self.fail(result.error)
        if result.cast_paths:
            self.say_float64(list(result.cast_paths))
        return result

    def say_float64(self, paths: list[str]) -> None:
        """Say once per loader that the float64 fields ``paths`` are delivered as float32
        (through :attr:`on_float64` when set): for batches the workers made, and for any
        the caller made itself."""
        if self._warned_float64:
            return
        self._warned_float64 = True
        if self.on_float64 is not None:
            self.on_float64(paths)
        else:
            warnings.warn(
                f"stoke: float64 field(s) {', '.join(paths)} are delivered "
                "as float32 (accelerators train in float32). Pass "
                ".batch(..., keep_float64=True) to keep float64.", StokeWarning,
                stacklevel=user_stacklevel())

    def abandon_task(self, task_id: int, slot: int) -> None:
        """An abandoned task: its slot comes back when its result does (or now, when the
        result is already here)."""
        if task_id in self._results:
            del self._results[task_id]
            if slot >= 0 and not self.closed:
                self._free_slots.append(slot)
        else:
            self._orphans[task_id] = slot

    def abandon(self, entries: Iterable[InFlight]) -> None:
        """A loop stops early: the tasks of its ``entries`` are abandoned."""
        for entry in entries:
            if entry.kind is Entry.TASK:
                self.abandon_task(entry.task_id, entry.slot)

    def wait_for_abandoned_slot(self) -> None:
        """Every free slot is still out with tasks of an abandoned loop: wait until one
        comes back (never deliver an empty epoch because of it)."""
        if any(slot >= 0 for slot in self._orphans.values()):
            self._wait_until(lambda: bool(self._free_slots),
                             "the ring slots of an abandoned iterator")

    def drop_abandoned_queued(self) -> None:
        """Drop the tasks queued to run in the caller's own thread (the inline executor's,
        or the trainer's while the workers start: the pool's ``drop_queued``), and free
        their slots now. Only when no loop runs: every task in flight is abandoned."""
        for task_id in self.pool.drop_queued():  # inline: they would run here, later
            slot = self._orphans.pop(task_id, None)
            if slot is not None and slot >= 0:
                self._free_slots.append(slot)

    def drain_abandoned(self) -> None:
        """Wait until every abandoned task is back (thread workers must be idle before the
        trainer changes the dataset they read)."""
        self.drop_abandoned_queued()
        pool = self.pool
        for task_id in [t for t in self._orphans if t in self._results]:  # already back
            self.abandon_task(task_id, self._orphans.pop(task_id))
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

    def _wait_until(self, done: Callable[[], bool], describe: str) -> None:
        """Take results until ``done()``; polls with a timeout, checks workers are alive."""
        watch = StuckWatch(self.pool, self.options.timeout_s, describe)
        while not done():
            try:
                result = self.pool.next_result(POLL_S)
            except WorkerDiedError as exc:
                self.fail(exc)
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
                self.fail(stuck)

    # -- slots --------------------------------------------------------------------------
    @property
    def has_free_slot(self) -> bool:
        """Is a slot free for the next task?"""
        return bool(self._free_slots)

    @property
    def free_slot_count(self) -> int:
        """Slots free for the next tasks now (not counting lingering ones)."""
        return len(self._free_slots)

    @property
    def lingering_count(self) -> int:
        """Delivered batches whose slots wait for :meth:`reclaim`."""
        return len(self._lingering)

    def put_back(self, slot: int) -> None:
        """``slot``'s contents were used up (copied out, or nothing to deliver): free it."""
        self._free_slots.append(slot)

    def views(self, slot: int) -> list[np.ndarray]:
        """The ring's arrays of ``slot`` (the layout's leaves, all rows)."""
        return self.resources.ring.views(slot)

    # -- layout -------------------------------------------------------------------------
    @property
    def layout(self) -> BatchLayout | None:
        """The batch layout of the ring (None until the first batch is planned)."""
        return self._layout

    def ensure_layout(self, epoch: int, indices: np.ndarray, worker: int | None = None) -> bool:
        """Probe the first sample of ``indices`` that passes the filters (on worker
        ``worker``, if given) and lay out the ring. Returns False when every sample of
        ``indices`` was filtered out."""
        if self._layout is not None:
            return True
        task_id = self.submit("probe", epoch, indices, worker=worker)
        result = self.raise_if_failed(self.wait(task_id, "the first sample"))
        if result.probe is None:
            return False
        index, treedef, arrays = result.probe
        if self.padding is not None:
            from stoke.data.padding import padded_layout

            try:
                layout = padded_layout(arrays, treedef, self.batch_size, index, self.padding)
            except StokeError as exc:
                self.fail(exc)
        else:
            layout = BatchLayout.from_sample(arrays, treedef, self.batch_size, index)
        self._lay_out(layout)
        if self.on_layout is not None:
            self.on_layout()
        return True

    def grow_padding(self, error: BaseException) -> None:
        """A sample was longer than the padded capacity: once no task writes to the ring,
        lay it out again with room for that sample (see stoke/data/padding.py)."""
        from stoke.data.padding import grown_layout

        self._wait_until(lambda: not self._orphans, "the abandoned batches")
        log.info("stoke: %s has length %d, over the padded capacity %d: growing the ring",
                 error.path, error.length, error.capacity)
        old = self.resources.ring
        self._lay_out(grown_layout(self._layout, error))
        if old is not None:
            old.close()

    def _lay_out(self, layout: BatchLayout) -> None:
        """Make the ring for ``layout`` and hand it to the workers (again, when a padded
        layout grows: the old ring is closed once nothing writes to it)."""
        if self.tuner is not None:
            try:
                slots, depth = self.tuner.ring_size(layout, self.tasks_per_worker)
            except StokeError:
                self.close()
                raise
        else:
            slots = depth = self.options.ring_slots or 2 * self.pool.workers + 2
            self._check_memory(layout, slots)
            if self.options.ring_slots is None and self.tasks_per_worker > 2:
                # deeper for remote reads, as far as the memory budget allows
                fits = memory_budget_bytes(self.options.memory_budget_bytes) // layout.slot_bytes
                slots = depth = max(slots, min(fits, self.tasks_per_worker * self.pool.workers + 2))
        ring = BatchRing(layout, slots, shared=self.pool.shared_ring)
        self.resources.ring = ring
        self._set_keep_budget(ring)
        self.pool.set_ring(ring)
        self._layout = layout
        self._free_slots = deque(range(depth))
        self._parked_slots = list(range(depth, slots))
        self._lingering = []  # batches of an older ring keep its memory alive by themselves
        log.debug("stoke: ring of %d slots x %d bytes for %s", slots, layout.slot_bytes,
                  layout.describe())

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

    def observe(self, rows: int, wait_s: float) -> None:
        """A batch was delivered after ``wait_s``: tell the :attr:`tuner` (there must be
        one), then put the ring depth it wants in use."""
        try:
            self.tuner.observe(rows, wait_s)
        except StokeError as exc:
            self.fail(exc)
        ring = self.resources.ring
        in_use = (ring.slots if ring is not None else 0) - len(self._parked_slots)
        grow = min(self.tuner.depth - in_use, len(self._parked_slots))
        if grow > 0:
            self._free_slots.extend(self._parked_slots[:grow])
            del self._parked_slots[:grow]

    # -- held batches: deliver, release, reclaim or retire ------------------------------
    def deliver(self, slot: int, rows: int) -> tuple[Delivery | None, list[np.ndarray]]:
        """The first ``rows`` rows of ``slot`` for the consumer: zero-copy views and their
        :class:`Delivery` (give it to :meth:`release` when the consumer moves on), or
        copies and None (the slot is free again at once)."""
        ring = self.resources.ring
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

    def release(self, delivery: Delivery | None) -> None:
        """The consumer asked for the next batch: ``delivery``'s slot may be reused once
        nothing references its batch (see :meth:`reclaim`)."""
        if delivery is None or self.closed:
            return
        delivery.released_at = self._deliveries
        self._lingering.append(delivery)

    def reclaim(self, force: bool = False) -> None:
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
        ring = self.resources.ring
        ring.retire(delivery)
        self.batches_kept += 1
        self._keeping, self._dropped_in_row = True, 0
        try:
            self.pool.replace_slot(delivery.slot)
        except WorkerDiedError as exc:
            self.fail(exc)
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
