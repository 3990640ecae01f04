"""The items of a generator's copies, taken in turn (0, 1, ..., N-1, 0, ...; a finished
copy drops out): from process workers through the ring (:func:`process_stream`), from
daemon threads (:func:`thread_stream`), or inline (:func:`round_robin_inline`).

What each copy runs is :mod:`.generator_program`'s; the adapter is :mod:`.generator`'s.
"""

from __future__ import annotations

import collections
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from stoke.accelerate.channel_loader import ChannelLoader
from stoke.accelerate.generator_program import PROBE_INDEX
from stoke.accelerate.items import ROWS_END, cut_rows
from stoke.data.structure import unflatten
from stoke.errors import StokeError
from stoke.executors.limits import StuckWatch
from stoke.executors.threads import where_thread_is
from stoke.loader.scheduler import POLL_S, InFlight


def process_stream(loader: ChannelLoader, copies: int, name: str) -> Iterator[Any]:
    """Items of ``copies`` generator copies (worker k runs copy k), taken in turn; each copy
    runs ahead by its share of the ring depth (the loader's tuner's, when it has one: each
    wait is reported to it)."""
    scheduler = loader.scheduler
    active = list(range(copies))
    if scheduler.layout is None:
        while active:
            if scheduler.ensure_layout(0, np.array([PROBE_INDEX], np.int64), worker=active[0]):
                break
            active.pop(0)  # this copy yielded nothing
        if not active:
            return
        loader.send({"template": loader.template()}, what="the item layout")
    template = loader.template()
    tuner = scheduler.tuner  # a generator's PrefetchTuner (stoke.autotune.prefetch), or None
    slots_each = max(1, scheduler.free_slot_count // copies)
    inflight: dict[int, collections.deque[InFlight]] = {
        k: collections.deque() for k in range(copies)}
    sequence = dict.fromkeys(range(copies), 0)
    held = None
    try:
        turn = 0
        while active:
            scheduler.reclaim(force=not any(inflight.values()) and not scheduler.has_free_slot)
            if tuner is not None:  # the depth it chose, shared by the copies
                slots_each = max(1, tuner.depth // copies)
            for k in active:  # keep every copy busy
                while scheduler.has_free_slot and len(inflight[k]) < slots_each:
                    inflight[k].append(scheduler.submit_chunk(
                        0, sequence[k], np.array([sequence[k]], np.int64), worker=k))
                    sequence[k] += 1
            k = active[turn % len(active)]
            entry = inflight[k].popleft()
            asked = time.perf_counter()
            result = scheduler.raise_if_failed(
                scheduler.wait(entry.task_id, f"item {entry.position} of copy {k} of {name}"))
            waited = time.perf_counter() - asked
            rows = int(scheduler.views(entry.slot)[-1][0]) if result.rows else ROWS_END
            if rows == ROWS_END:
                scheduler.put_back(entry.slot)
                scheduler.abandon(inflight.pop(k))
                active.remove(k)
                continue
            # a view of a kept item is never overwritten (see stoke.executors.ring)
            held, leaves = scheduler.deliver(entry.slot, 1)
            item, _ = unflatten(scheduler.layout.treedef, [leaf[0] for leaf in leaves])
            out = [cut_rows(template, item, rows)]
            del item, leaves
            if tuner is not None:
                scheduler.observe(rows, waited)  # the tuner's window; its depth put in rotation
            yield out.pop()
            scheduler.release(held)
            held = None
            turn = (active.index(k) + 1) if k in active else turn
    finally:
        scheduler.release(held)
        for entries in inflight.values():
            scheduler.abandon(entries)


def round_robin_inline(makers: list[Callable[[], Iterator[Any]]]) -> Iterator[Any]:
    generators = [make() for make in makers]
    while generators:
        for generator in list(generators):
            try:
                yield next(generator)
            except StopIteration:
                generators.remove(generator)


_END = object()


def thread_stream(makers: list[Callable[[], Iterator[Any]]], depth: int,
                   timeout_s: float | None, name: str) -> Iterator[Any]:
    """Each copy in its own daemon thread, ``depth`` items ahead; taken in turn."""
    stop = threading.Event()
    queues = [queue.Queue(depth) for _ in makers]
    producers = _ProducerThreads()

    def produce(make, out: queue.Queue) -> None:
        producers.native_ids[threading.get_ident()] = threading.get_native_id()
        try:
            for item in make():
                while not stop.is_set():
                    try:
                        out.put((item, None), timeout=POLL_S)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome = (_END, None)
        except BaseException as exc:  # noqa: BLE001 - raised in the trainer
            outcome = (_END, (exc, traceback.format_exc()))
        while not stop.is_set():
            try:
                out.put(outcome, timeout=POLL_S)
                return
            except queue.Full:
                continue

    threads = [threading.Thread(target=produce, args=(make, q), daemon=True,
                                name=f"stoke-generator-{k}")
               for k, (make, q) in enumerate(zip(makers, queues, strict=True))]
    for thread in threads:
        thread.start()
    active = list(range(len(makers)))
    try:
        turn = 0
        while active:
            k = active[turn % len(active)]
            watch = StuckWatch(producers, timeout_s, f"the next item of {name} (copy {k})")
            while True:
                try:
                    item, error = queues[k].get(timeout=POLL_S)
                    break
                except queue.Empty:
                    stuck = watch.verdict()
                    if stuck is not None:
                        raise stuck from None
            if item is _END:
                if error is not None:
                    exc, text = error
                    raise StokeError(
                        f"{name} (copy {k}, in a thread) raised {type(exc).__name__}: {exc}\n"
                        f"--- traceback in the thread ---\n{text.rstrip()}") from exc
                active.remove(k)
                continue
            yield item
            turn = active.index(k) + 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=1.0)


class _ProducerThreads:
    """The copies' threads as :class:`~stoke.executors.limits.StuckWatch` sees them: their
    CPU time (slow or stuck?) and where each one is."""

    def __init__(self) -> None:
        self.native_ids: dict[int, int] = {}  # thread ident -> OS thread id

    def cpu_seconds(self) -> float | None:
        import psutil

        ids = set(self.native_ids.values())
        try:
            return sum(t.user_time + t.system_time for t in psutil.Process().threads()
                       if t.id in ids)
        except psutil.Error:  # pragma: no cover
            return None

    def busy_workers(self) -> list[str]:
        frames = sys._current_frames()
        return [f"generator thread {where_thread_is(frames.get(ident))}"
                for ident in list(self.native_ids) if ident in frames]
