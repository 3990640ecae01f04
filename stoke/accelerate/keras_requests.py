"""How both accelerated kinds answer Keras' ``__getitem__`` requests: which batch each
index gets (:class:`Answers`, for indices asked again and epochs ended early), and the
batch as Keras takes it (:func:`copy_batch`: a copy, lists as tuples).

The batches themselves come from :mod:`.sequence` and :mod:`.generator`.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from stoke.data.structure import flatten, unflatten


class Answers:
    """Which batch each of Keras' requests got, for the Keras face of both kinds.

    Keras may ask for an index twice (TensorFlow's signature probe asks for the first two
    before the epoch asks again), and may end an epoch early, after one batch to build the
    model, then start over, with indices in a shuffled order. A batch already handed out is
    therefore handed out again: to the same index within the epoch, and to the first new
    indices of the next epoch, in the order it was first given. So every batch is trained on,
    once an epoch, in the stream's order, whatever indices Keras asks for. Batches are keys
    (a position in the pass, or an item number); the last few are kept to answer again.

    With ``fit(steps_per_epoch=k)`` Keras ends each epoch after k batches and *continues*
    its stream in the next one (indices it has not asked yet): then nothing is given again.
    Keras is taken to start over when it asks an index it already asked in this pass, or
    when the epoch that ended took at most :attr:`PROBE` batches (a build or a probe).
    """

    KEEP = 8
    PROBE = 2

    def __init__(self) -> None:
        self.by_index: dict[int, int] = {}
        self.carry: collections.deque[int] = collections.deque()
        self.asked: set[int] = set()  # indices asked in earlier epochs of this pass
        self.probe_ended = False  # the last epoch took at most PROBE batches
        self.batches: collections.OrderedDict[int, Any] = collections.OrderedDict()

    def lookup(self, index: int) -> int | None:
        """The key this index gets again, or None for a new batch."""
        if index in self.by_index:
            return self.by_index[index]
        if self.carry and not self.probe_ended and index not in self.asked:
            self.carry.clear()  # Keras continues its stream (steps_per_epoch): go on
        if self.carry:
            key = self.by_index[index] = self.carry.popleft()
            return key
        return None

    def batch(self, key: int) -> Any:
        """The batch of ``key`` if it is still kept, else None."""
        if key in self.batches:
            self.batches.move_to_end(key)
            return self.batches[key]
        return None

    def record(self, index: int, key: int, batch: Any) -> None:
        self.by_index[index] = key
        self.batches[key] = batch
        while len(self.batches) > self.KEEP:
            self.batches.popitem(last=False)

    def answered(self) -> int:
        return len(self.by_index)

    def next_epoch(self, carry_over: bool, length: int | None = None) -> None:
        """A new epoch of requests: the batches of this one are given again first (an
        epoch that ended early), or forgotten. ``length``: Keras' number of indices; once
        every one was asked, Keras' stream is over and the next one starts afresh."""
        if carry_over and length is not None and len(self.asked | self.by_index.keys()) >= length:
            carry_over = False
        if carry_over:
            self.carry = collections.deque(sorted({*self.by_index.values(), *self.carry}))
            self.probe_ended = len(self.by_index) <= self.PROBE
            self.asked.update(self.by_index)
        else:
            self.carry.clear()
            self.batches.clear()
            self.asked.clear()
        self.by_index = {}


def copy_batch(batch: Any) -> Any:
    treedef, leaves = flatten(batch)
    return as_keras_batch(unflatten(treedef, [np.array(leaf) for leaf in leaves]))


def as_keras_batch(batch: Any) -> Any:
    """Keras unpacks tuples as (x, y, sample_weight): lists become tuples."""
    return tuple(batch) if isinstance(batch, list) else batch
