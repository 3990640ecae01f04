"""Keras' legacy image iterators (``ImageDataGenerator.flow``, ``flow_from_directory``,
``flow_from_dataframe``) as Sequences stoke's workers can run: :class:`ImageIteratorSequence`.

Such an iterator is a ``PyDataset`` that cannot be sent to a worker process as it is (a
``threading.Lock`` and a generator among its attributes), keeps its sample order
(``index_array``) and its batch counter (``total_batches_seen``, the seed of each batch's
augmentation) in itself, and draws both from the global ``np.random``. Read by several
workers at once, each would draw its own order (samples twice or never) and count on its
own. The wrapper keeps that state in the trainer and gives each batch what Keras would:
the epoch's ``index_array`` (drawn in the trainer by ``on_epoch_end``, as Keras does) and,
with a ``seed``, ``np.random.seed(seed + count)`` where ``count`` is the batch's number in the
run, the global draws of the previous batches replayed in the trainer so that the next
``index_array`` is Keras' too. So the batches are those of Keras' own loop over the iterator
(``it[0..n-1]``, ``on_epoch_end``, ...): on JAX and torch exactly; TensorFlow's ``fit`` first
asks for two extra batches to learn their shapes, which shifts its counter by two.

Owns the wrapper and telling such an iterator apart (without importing Keras). Running the
wrapper is :mod:`.sequence`'s.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import numpy as np

KERAS_IMAGE_ITERATOR = "keras.src.legacy.preprocessing.image.Iterator"
_NOT_STATE = ("lock", "index_generator")  # the trainer's own; never sent, never needed


def is_keras_image_iterator(data: Any) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" == KERAS_IMAGE_ITERATOR
               for c in type(data).__mro__)


class ImageIteratorSequence:
    """A Keras legacy image iterator as a Sequence: item ``p`` of an epoch is the batch
    Keras' loop would make at that point (see the module docstring). Holds a copy of the
    iterator's state (the iterator given is left as it is); its attributes are the
    iterator's, so that what ``on_epoch_end`` changes (the order) reaches the workers
    alone. ``shuffle_batches``/``seed``: the batch order of each epoch is a permutation
    seeded by ``(seed, epoch)`` (Keras' ``fit(shuffle=True)`` does the same with Python's
    ``random``)."""

    def __init__(self, iterator: Any, shuffle_batches: bool = False, seed: int = 0) -> None:
        state = {k: v for k, v in vars(iterator).items() if k not in _NOT_STATE}
        vars(self).update(state)
        cls = type(iterator)
        # by name (a worker imports it, without a backend); a class of the script's own
        # (__main__) cannot be imported by name: it travels by value
        self._stoke_class = cls if cls.__module__ == "__main__" else \
            (cls.__module__, cls.__qualname__)
        self._stoke_epoch = 0
        self._stoke_count = int(state.get("total_batches_seen", 0))  # before this epoch
        self._stoke_lazy_index_at = -1  # the count whose call drew index_array (Keras: lazily)
        self._stoke_order_seed = (int(seed), bool(shuffle_batches))
        if state.get("index_array") is None:
            self._stoke_lazy_index_at = self._stoke_count
            if self.seed is not None:
                np.random.seed(self.seed + self._stoke_count)
            self._stoke_view()._set_index_array()
        self._stoke_order = self._batch_order()

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __getitem__(self, position: int) -> Any:
        if not 0 <= position < len(self):
            raise IndexError(f"batch {position} out of range for {len(self)} batches")
        view = self._stoke_view()
        index = int(self._stoke_order[position]) if self._stoke_order is not None else position
        count = self._stoke_count + position
        self._seed_as_keras(count)
        rows = self.index_array[self.batch_size * index:self.batch_size * (index + 1)]
        return view._get_batches_of_transformed_samples(rows)

    def on_epoch_end(self) -> None:
        """Keras' ``on_epoch_end`` (a new ``index_array``), with the global draws of the
        epoch's last batch replayed first when seeded, as Keras' run made them."""
        last = len(self) - 1
        if self.seed is not None and last >= 0:
            index = int(self._stoke_order[last]) if self._stoke_order is not None else last
            self._seed_as_keras(self._stoke_count + last)
            self._replay_draws(self.index_array[self.batch_size * index:
                                                self.batch_size * (index + 1)])
        self._stoke_count += len(self)
        self._stoke_epoch += 1
        self._stoke_view()._set_index_array()
        self._stoke_order = self._batch_order()

    def _stoke_view(self) -> Any:
        """An instance of the iterator's class that shares this wrapper's attributes, for
        its methods to run on (no lock, no index generator: the methods used need
        neither)."""
        cls = self._stoke_class
        if not isinstance(cls, type):
            cls = _iterator_class(*cls)
        view = cls.__new__(cls)
        view.__dict__ = self.__dict__
        return view

    def _seed_as_keras(self, count: int) -> None:
        if self.seed is not None:
            np.random.seed(self.seed + count)
            if count == self._stoke_lazy_index_at and self.shuffle:
                np.random.permutation(self.n)  # what Keras' first call drew for index_array

    def _replay_draws(self, rows: np.ndarray) -> None:
        generator = getattr(self, "image_data_generator", None)
        if generator is None:
            return
        shape = getattr(self, "image_shape", None)
        if shape is None:
            shape = self.x.shape[1:]
        for _ in rows:
            generator.get_random_transform(shape)

    def _batch_order(self) -> np.ndarray | None:
        seed, shuffle = self._stoke_order_seed
        if not shuffle:
            return None
        return np.random.default_rng([seed, self._stoke_epoch]).permutation(len(self))

    def __reduce__(self):
        # the state holds Keras objects (the ImageDataGenerator): pickled inside, so that a
        # worker can choose Keras' numpy backend before they import Keras
        import cloudpickle

        return (_rebuild, (cloudpickle.dumps(vars(self), protocol=5),))

    def __repr__(self) -> str:
        name = getattr(self._stoke_class, "__qualname__", self._stoke_class[-1])
        return f"ImageIteratorSequence({name}, {len(self)} batches)"


def _rebuild(state: bytes) -> ImageIteratorSequence:
    import pickle

    _numpy_backend_in_worker()
    wrapper = ImageIteratorSequence.__new__(ImageIteratorSequence)
    vars(wrapper).update(pickle.loads(state))
    return wrapper


def _numpy_backend_in_worker() -> None:
    """In a stoke worker process that has not imported Keras: Keras' numpy backend (the
    iterators' code is numpy, PIL and scipy; importing TensorFlow or torch there would
    cost seconds and memory per worker)."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if "keras" not in sys.modules and getattr(main_spec, "name", "") == "stoke.executors.worker":
        os.environ["KERAS_BACKEND"] = "numpy"


def _iterator_class(module_name: str, qualname: str) -> type:
    _numpy_backend_in_worker()
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
