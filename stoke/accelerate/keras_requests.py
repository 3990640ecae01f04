"""How both accelerated kinds answer Keras' ``__getitem__`` requests: which batch each
index gets (:class:`Answers`, for indices asked again and epochs ended early), and the
batch as Keras takes it (:func:`copy_batch`: a copy, lists as tuples).

The batches themselves come from :mod:`.sequence` and :mod:`.generator`.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from stoke.structure import flatten, unflatten


class Answers:
    """Which batch each of Keras' requests got, for the Keras face of both kinds.

    Keras may ask for an index twice (TensorFlow's signature probe asks for the first two
    before the epoch asks again), and may end an epoch early, after one batch to build the
    model, then start over, with indices in a shuffled order. A batch already handed out is
    therefore handed out again: to the same index within the epoch, and to the first new
    indices of the next epoch, in the order it was first given. So every batch is trained on,
    once an epoch, in the stream's order, whatever indices Keras asks for. Batches are keys
    (a position in the pass, or an item number); the last few are kept to answer again.
    """

    KEEP = 8

    def __init__(self) -> None:
        self.by_index: dict[int, int] = {}
        self.carry: collections.deque[int] = collections.deque()
        self.batches: collections.OrderedDict[int, Any] = collections.OrderedDict()

    def lookup(self, index: int) -> int | None:
        """The key this index gets again, or None for a new batch."""
        if index in self.by_index:
            return self.by_index[index]
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

    def next_epoch(self, carry_over: bool) -> None:
        """A new epoch of requests: the batches of this one are given again first (an
        epoch that ended early), or forgotten."""
        if carry_over:
            self.carry = collections.deque(sorted({*self.by_index.values(), *self.carry}))
        else:
            self.carry.clear()
            self.batches.clear()
        self.by_index = {}


def copy_batch(batch: Any) -> Any:
    treedef, leaves = flatten(batch)
    return as_keras_batch(unflatten(treedef, [np.array(leaf) for leaf in leaves]))


def as_keras_batch(batch: Any) -> Any:
    """Keras unpacks tuples as (x, y, sample_weight): lists become tuples."""
    return tuple(batch) if isinstance(batch, list) else batch
