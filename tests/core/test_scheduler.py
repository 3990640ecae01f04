"""The slot scheduler's public API (stoke/loader/scheduler.py) driven directly, as a loop
other than the BatchIterator would (``stoke.accelerate`` does): real thread workers, a real
ring; and the filter re-batching (stoke/loader/rebatch.py) on its own."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import stoke
from stoke.data.plan import IteratorState
from stoke.errors import StokeError
from stoke.loader.rebatch import Rebatcher
from stoke.loader.scheduler import Entry, InFlight


def numbered(n: int):
    return stoke.from_arrays(np.arange(n, dtype=np.float32).reshape(n, 1), np.arange(n))


def test_a_loop_submits_waits_delivers_and_gets_every_slot_back():
    pipe = numbered(16).batch(4)
    with pipe.loader(workers=2, executor="thread", ring_slots=2) as loader:
        scheduler = loader.scheduler
        chunks = loader.plan.chunks(0)
        assert scheduler.layout is None
        assert scheduler.ensure_layout(0, chunks[0])
        assert scheduler.free_slot_count == 2
        first = scheduler.submit_chunk(0, 0, chunks[0])
        second = scheduler.submit_chunk(0, 1, chunks[1])
        assert (first.kind, second.kind) == (Entry.TASK, Entry.TASK)
        assert first.slot != second.slot and not scheduler.has_free_slot

        # the loop stops caring about the first: its slot comes back with its result
        scheduler.abandon([first, InFlight(Entry.EPOCH_END, 0, len(chunks))])
        result = scheduler.raise_if_failed(scheduler.wait(second.task_id, "batch 1"))
        scheduler.wait_for_abandoned_slot()
        assert scheduler.free_slot_count == 1

        held, (x, y) = scheduler.deliver(second.slot, result.rows)
        assert y.tolist() == chunks[1].tolist()  # the rows of the chunk, in plan order
        scheduler.release(held)
        scheduler.reclaim()
        assert scheduler.lingering_count == 1  # the consumer still references x and y
        del x, y
        gc.collect()
        scheduler.reclaim()
        assert scheduler.free_slot_count == 2 and scheduler.lingering_count == 0
        assert loader.batches_kept == 0


def test_submitting_to_one_worker_needs_a_route():
    pipe = numbered(8).batch(4)
    with pipe.loader(workers=1, executor="thread") as loader:
        with pytest.raises(StokeError, match="route_to_worker"):
            loader.scheduler.submit("probe", 0, loader.plan.chunks(0)[0], worker=0)


def test_a_failed_result_stops_the_workers_and_raises_again_later():
    def explode(x, y):
        raise ValueError("bad sample")

    pipe = numbered(8).map(explode).batch(4)
    loader = pipe.loader(workers=1, executor="thread")
    with pytest.raises(Exception, match="bad sample"):
        loader.scheduler.ensure_layout(0, loader.plan.chunks(0)[0])
    assert loader.failure is not None and loader.closed
    with pytest.raises(type(loader.failure)):
        loader.scheduler.raise_if_stopped()


def _chunk(values):
    return [np.array(values, np.int64)]


def test_rebatcher_cuts_kept_rows_into_full_batches_and_says_where_the_next_starts():
    state = IteratorState(0, 0, 0, "f")
    rebatcher = Rebatcher()
    assert not rebatcher.add_chunk(0, 0, _chunk([1, 2, 3]), 3, state)
    assert not rebatcher.add_chunk(0, 1, _chunk([]), 0, state)  # rows of chunk 0 pending
    assert not rebatcher.add_chunk(0, 2, _chunk([7, 8]), 2, state)
    assert rebatcher.rows == 5

    (batch,), state = rebatcher.take(2, state)
    assert batch.tolist() == [1, 2] and state == IteratorState(0, 0, 2, "f")
    (batch,), state = rebatcher.take(2, state)
    assert batch.tolist() == [3, 7] and state == IteratorState(0, 2, 1, "f")
    (batch,), state = rebatcher.take(1, state)
    assert batch.tolist() == [8] and state == IteratorState(0, 3, 0, "f")
    assert rebatcher.rows == 0 and not rebatcher.has_pending


def test_rebatcher_skips_the_rows_a_restored_state_already_delivered():
    state = IteratorState(1, 4, 2, "f")
    rebatcher = Rebatcher(skip_rows=state.rows_delivered)
    rebatcher.add_chunk(1, 4, _chunk([10, 11, 12, 13]), 4, state)
    (batch,), state = rebatcher.take(2, state)
    assert batch.tolist() == [12, 13] and state == IteratorState(1, 5, 0, "f")
    # only the chunk the state points at skips rows
    rebatcher.add_chunk(1, 5, _chunk([20, 21]), 2, state)
    assert rebatcher.rows == 2


def test_a_dropped_loader_stops_its_workers_at_once_without_the_cycle_collector():
    """Nothing of the scheduler holds its loader: reference counting alone frees both (a
    BatchIterator is freed by the cycle collector: its chunk stream is its own generator)."""
    pipe = numbered(64).batch(4)
    loader = pipe.loader(workers=1, executor="thread")
    assert loader.scheduler.ensure_layout(0, loader.plan.chunks(0)[0])
    resources = loader.scheduler.resources
    assert resources.pool is not None and resources.ring is not None
    gc.disable()
    try:
        del loader
        assert resources.pool is None and resources.ring is None
    finally:
        gc.enable()


RAN: list[int] = []  # samples run in this process (inline and thread workers)


def counted(sample):
    RAN.append(int(sample[1]))
    return sample


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_draining_abandoned_tasks_gives_every_slot_back(executor):
    """``drain_abandoned`` (before the trainer changes what thread workers read): workers'
    tasks are waited for; the inline executor's, which would run in the caller, are
    dropped unrun (the pool's ``drop_queued``). Either way every slot comes back."""
    RAN.clear()
    pipe = numbered(16).map(counted).batch(4)
    with pipe.loader(workers=2, executor=executor, ring_slots=2) as loader:
        scheduler = loader.scheduler
        chunks = loader.plan.chunks(0)
        assert scheduler.ensure_layout(0, chunks[0])  # runs one sample: the layout
        RAN.clear()
        entries = [scheduler.submit_chunk(0, i, chunks[i]) for i in range(2)]
        assert not scheduler.has_free_slot
        scheduler.abandon(entries)
        scheduler.drain_abandoned()
        assert scheduler.free_slot_count == 2
        if executor == "inline":
            assert RAN == []  # dropped, not run in the caller
        assert loader.pool.next_result(0.2) is None  # nothing left to come back
        again = scheduler.submit_chunk(0, 2, chunks[2])  # and the loop can go on
        result = scheduler.raise_if_failed(scheduler.wait(again.task_id, "batch 2"))
        held, (x, y) = scheduler.deliver(again.slot, result.rows)
        assert y.tolist() == chunks[2].tolist()
        del x, y
        scheduler.release(held)
