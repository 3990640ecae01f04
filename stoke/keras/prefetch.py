"""A background thread that moves batches to the device ahead of the trainer.

The thread pulls a batch from the loader (which recycles the previous ring slot), transfers
it with a backend's ``transfer`` function, and returns only once that copy is complete, so a
ring slot is never reused while the device still reads it. The trainer takes finished
device batches from a bounded queue. Every wait has a timeout and checks the thread is
alive; errors in the thread (a failing sample, a dead worker) are raised in the trainer.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from stoke.errors import StokeError

_POLL_S = 0.25


class Prefetcher:
    """Iterate ``transfer(batch)`` for each batch of ``batches``, ``depth`` batches ahead."""

    def __init__(self, batches: Iterator[Any], transfer: Callable[[Any], Any], depth: int = 2,
                 name: str = "stoke-prefetch") -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1. Received: {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        # the thread holds the queue and the batches, not this object: a consumer that drops
        # the prefetcher unread (Keras' last iterator of a fit, a feed collected) stops it,
        # else it would wait on a full queue forever, keeping the loader and its workers
        self._thread = threading.Thread(target=_produce, name=name, daemon=True,
                                        args=(batches, transfer, self._queue, self._stop))
        self._thread.start()
        weakref.finalize(self, self._stop.set)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._finished = True
                    raise StokeError("the prefetch thread ended without a word") from None
        if item[0] == "batch":
            return item[1]
        self._finished = True
        if item[0] == "error":
            raise item[1]
        raise StopIteration

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the thread (it finishes the batch in hand) and drop queued batches."""
        self._stop.set()
        self._finished = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=timeout_s)


def _put(out: queue.Queue, stop: threading.Event, item: tuple) -> bool:
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(batches: Iterator[Any], transfer: Callable[[Any], Any], out: queue.Queue,
             stop: threading.Event) -> None:
    """The thread: ``transfer`` each batch into ``out`` until the end, an error or ``stop``."""
    try:
        for batch in batches:
            if stop.is_set():
                return
            if not _put(out, stop, ("batch", transfer(batch))):
                return
        _put(out, stop, ("end",))
    except BaseException as exc:  # noqa: BLE001 - handed to the trainer
        _put(out, stop, ("error", exc))
    finally:
        close = getattr(batches, "close", None)
        if close is not None and stop.is_set():
            close()
