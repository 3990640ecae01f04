"""How both accelerated kinds answer Keras' ``__getitem__`` requests: which of Keras'
iterators asks (:class:`KerasRequests`, :class:`KerasStream`), the batches kept to answer
again (:class:`KeptBatches`), and the batch as Keras takes it (:func:`copy_batch`: a copy,
lists as tuples).

Keras reads a ``PyDataset`` through iterators it makes: a generator of its PyDataset
adapter asks ``dataset[i]`` for each index of its order (in the trainer's thread, or in
``tf.data``'s threads on TensorFlow). A new iterator means Keras starts over: the model's
build (one batch), each epoch, each evaluation. With ``fit(steps_per_epoch=k)``, Keras keeps
*one* iterator across epochs (``keras/src/trainers/epoch_iterator.py``) and continues it
after each epoch's end, until it has asked every index. TensorFlow's signature probe asks
the first batches directly, outside any iterator.

So each request is put to the iterator that made it: the caller's frame (a generator's
frame lives as long as the generator, and is the same in every thread that runs it). Its
requests are a stream: the n-th new index it asks gets the n-th batch of the stream's
order, whatever the index; an index asked again gets the same batch again, unless an epoch
ended since (a caller that is not Keras' iterator, asking a new pass from the start). No
guess from indices or timing: a continued stream goes on, a new one starts from the first
batch. The batches themselves come from :mod:`.sequence` and :mod:`.generator`.
"""

from __future__ import annotations

import collections
from types import FrameType
from typing import Any

import numpy as np

from stoke.data.structure import flatten, unflatten


class KerasStream:
    """The requests of one of Keras' iterators: ``position(index)`` is the place in the
    stream's order of the batch that index gets. ``reads``: what the owner serves it from
    (a pass of a Sequence); ``base``: the first item number it gets (a generator)."""

    def __init__(self, previous: KerasStream | None) -> None:
        self.previous = previous  # the stream asked before this one, when this one began
        self.positions: dict[int, tuple[int, int]] = {}  # index -> (position, epoch ends)
        self.next_position = 0
        self.reads: Any = None
        self.base = 0

    def asked_before(self, index: int) -> int | None:
        """The position this index got already, or None."""
        got = self.positions.get(index)
        return None if got is None else got[0]

    def restart(self) -> None:
        """Start the stream over (it asked more new indices than its order has)."""
        self.positions.clear()
        self.next_position = 0

    def take(self, index: int, epoch_ends: int) -> int:
        """The position of a new index: the stream's next."""
        position = self.next_position
        self.positions[index] = (position, epoch_ends)
        self.next_position += 1
        return position


class KerasRequests:
    """Which stream each request belongs to: one :class:`KerasStream` per asking frame (the
    last :attr:`STREAMS` are kept; their frames are held so that a new one never takes an
    old one's identity)."""

    STREAMS = 4

    def __init__(self) -> None:
        self.streams: collections.OrderedDict[FrameType, KerasStream] = collections.OrderedDict()
        self.epoch_ends = 0
        self.let_go: list[FrameType] = []  # frames no longer followed, not yet released

    def stream(self, caller: FrameType, index: int) -> tuple[KerasStream, bool]:
        """The stream of a request made from ``caller``, and whether it is a new one."""
        stream = self.streams.get(caller)
        if stream is not None:
            got = stream.positions.get(index)
            if got is None or got[1] == self.epoch_ends:
                self.streams.move_to_end(caller)
                return stream, False
            self.let_go.append(caller)  # asked again after an epoch's end: a new pass
            del self.streams[caller]
        previous = next(reversed(self.streams.values()), None)
        if previous is not None:
            previous.previous = None  # one stream back is all a new one needs
        stream = self.streams[caller] = KerasStream(previous)
        while len(self.streams) > self.STREAMS:
            self.let_go.append(self.streams.popitem(last=False)[0])
        return stream, True

    def epoch_ended(self) -> None:
        self.epoch_ends += 1

    def take_let_go(self) -> list[FrameType]:
        """The frames no longer followed. The caller drops them only after releasing its
        lock: the last reference to a Keras iterator's frame can run finalizers (a TensorFlow
        iterator's waits for its ``py_function`` threads), and such a thread may be waiting on
        that lock to ask for its next batch."""
        let_go, self.let_go = self.let_go, []
        return let_go

    def clear(self) -> list[FrameType]:
        """Follow no frame any more; the frames, to drop after the lock (see
        :meth:`take_let_go`)."""
        self.let_go.extend(self.streams)
        self.streams.clear()
        return self.take_let_go()


class KeptBatches:
    """The last :attr:`KEEP` batches handed to Keras, by key, to answer again."""

    KEEP = 8

    def __init__(self) -> None:
        self.batches: collections.OrderedDict[int, Any] = collections.OrderedDict()

    def get(self, key: int) -> Any:
        """The batch of ``key`` if it is still kept, else None."""
        if key in self.batches:
            self.batches.move_to_end(key)
            return self.batches[key]
        return None

    def put(self, key: int, batch: Any) -> None:
        self.batches[key] = batch
        while len(self.batches) > self.KEEP:
            self.batches.popitem(last=False)


def copy_batch(batch: Any) -> Any:
    treedef, leaves = flatten(batch)
    return as_keras_batch(unflatten(treedef, [np.array(leaf) for leaf in leaves]))


def as_keras_batch(batch: Any) -> Any:
    """Keras unpacks tuples as (x, y, sample_weight): lists become tuples, and so do lists
    within them (Keras 2's multi-input ``([x1, x2], y)``: Keras 3 on TensorFlow refuses a
    list in a PyDataset's batches, tf.data's ``output_signature`` takes none)."""
    if isinstance(batch, list) or type(batch) is tuple:
        return tuple(as_keras_batch(part) for part in batch)
    return batch
