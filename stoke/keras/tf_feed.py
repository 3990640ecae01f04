"""TensorFlow feed: a ``tf.data`` dataset over the loader, which Keras hands to the active
``tf.distribute`` strategy (that splits each global batch across replicas and prefetches
to the devices). Batches are copied out of the ring as they enter TensorFlow.

The dataset holds the feed weakly: in eager mode ``tf.data.Dataset.from_generator``
registers its generator function with TensorFlow's global graph, which never lets go of it
(tensorflow/tensorflow#57690, #123530), so a feed the generator held strongly would keep
its workers and ring for the life of the process once the user dropped it (a k-fold loop
of ``fit(pipe.to_keras())`` calls piled them up)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from stoke.data.structure import flatten, leaf_paths, unflatten
from stoke.errors import StokeError


def make_dataset(next_epoch: Callable[[], Any], first_batch: Any, prefetch: int,
                 device_transform: Callable[[Any], Any] | None,
                 variable_paths: frozenset[str] = frozenset()):
    """``next_epoch``: a bound method of the feed (held weakly, see the module docstring).
    ``variable_paths``: leaves (named as ``leaf_paths`` names them) whose second axis
    changes from batch to batch (padded batches)."""
    import tensorflow as tf

    next_epoch = weakref.WeakMethod(next_epoch)

    treedef, leaves = flatten(first_batch)
    signature = unflatten(treedef, [
        tf.TensorSpec(shape=(None, None, *leaf.shape[2:]) if path in variable_paths
                      else (None, *leaf.shape[1:]), dtype=tf.as_dtype(leaf.dtype))
        for path, leaf in zip(leaf_paths(treedef), leaves)
    ])
    if isinstance(signature, list):
        signature = tuple(signature)

    def generate():
        # Only copies live across a ``yield``: tf.data may keep a generator suspended after
        # Keras has moved on to the next epoch's iterator, and a view of the ring held by
        # that frame would make the loader retire its slot as a batch the user kept.
        feed_next_epoch = next_epoch()
        if feed_next_epoch is None:
            raise StokeError("this tf.data dataset reads a stoke feed that was garbage "
                             "collected: keep the feed (pipe.to_keras()) while you use it")
        iterator = feed_next_epoch()
        del feed_next_epoch  # the frame holds the epoch's iterator, not the feed
        try:
            while (out := copied_next(iterator)) is not END:
                yield out
        finally:
            iterator.close()

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if device_transform is not None:
        # tf.data unpacks tuple elements into arguments: give the transform one batch
        dataset = dataset.map(lambda *parts: device_transform(parts if len(parts) > 1 else parts[0]))
    return dataset.prefetch(prefetch)


END = object()


def copied_next(iterator) -> Any:
    """The iterator's next batch copied out of the ring (``END`` when it is done); the ring's
    views are dropped when this returns."""
    batch = next(iterator, END)
    if batch is END:
        return END
    structure, parts = flatten(batch)
    out = unflatten(structure, [np.array(part) for part in parts])
    return tuple(out) if isinstance(out, list) else out
