"""Sending a Keras dataset to workers without Keras: a dataset whose class derives from
``keras.utils.PyDataset`` travels as a copy whose Keras base is replaced by
:class:`_PyDatasetStandIn`, so that worker processes need not import Keras and a backend.

Owns the stand-in base, the detached class copies and :func:`detached_copy`. When a dataset
is sent is left to :mod:`.sequence`; making an accelerated object a ``PyDataset`` in the
trainer, to :mod:`.keras_face`.
"""

from __future__ import annotations

import logging
import types
from typing import Any

log = logging.getLogger("stoke")

KERAS_PYDATASET = "keras.src.trainers.data_adapters.py_dataset_adapter.PyDataset"


class _PyDatasetStandIn:
    """What a dataset's ``keras.utils.PyDataset`` base becomes in a worker process: the same
    small surface (Keras' own class only stores three settings and defines no-op hooks)."""

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    workers = property(lambda self: getattr(self, "_workers", 1))
    use_multiprocessing = property(lambda self: getattr(self, "_use_multiprocessing", False))
    max_queue_size = property(lambda self: getattr(self, "_max_queue_size", 10))

    @property
    def num_batches(self):
        return len(self) if hasattr(self, "__len__") else None

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]


_DETACHED: dict[type, type] = {}


def _is_keras_pydataset(cls: type) -> bool:
    return f"{cls.__module__}.{cls.__qualname__}" == KERAS_PYDATASET


def _has_keras_base(cls: type) -> bool:
    return any(_is_keras_pydataset(c) for c in cls.__mro__)


def _detach_keras(cls: type) -> type:
    """A copy of ``cls`` (and of its bases up to Keras') whose ``keras.utils.PyDataset`` base
    is :class:`_PyDatasetStandIn`. Methods are the same code; ``super()`` inside them refers
    to the copy. cloudpickle sends such a class by value, so a worker imports only what the
    methods use, not the module that defined the class (nor Keras)."""
    if cls in _DETACHED:
        return _DETACHED[cls]
    bases = tuple(
        _PyDatasetStandIn if _is_keras_pydataset(base)
        else _detach_keras(base) if _has_keras_base(base)
        else base
        for base in cls.__bases__
    )
    class_cell = types.CellType()
    namespace = {}
    for name, value in cls.__dict__.items():
        if name in ("__dict__", "__weakref__"):
            continue
        namespace[name] = _rebind_class_cell(value, class_cell)
    copy = type(cls)(cls.__name__, bases, namespace)
    copy.__qualname__ = cls.__qualname__
    copy.__module__ = cls.__module__
    class_cell.cell_contents = copy
    _DETACHED[cls] = copy
    return copy


def _rebind_class_cell(value: Any, cell: types.CellType) -> Any:
    """``value`` with its ``__class__`` closure cell (what ``super()`` uses) set to ``cell``."""
    if isinstance(value, (staticmethod, classmethod)):
        return type(value)(_rebind_class_cell(value.__func__, cell))
    if isinstance(value, property):
        return property(*(_rebind_class_cell(f, cell) if f else None
                          for f in (value.fget, value.fset, value.fdel)), value.__doc__)
    if not isinstance(value, types.FunctionType) or "__class__" not in value.__code__.co_freevars:
        return value
    closure = tuple(
        cell if name == "__class__" else original
        for name, original in zip(value.__code__.co_freevars, value.__closure__, strict=True)
    )
    function = types.FunctionType(value.__code__, value.__globals__, value.__name__,
                                  value.__defaults__, closure)
    function.__kwdefaults__ = value.__kwdefaults__
    function.__qualname__ = value.__qualname__
    function.__module__ = value.__module__
    function.__doc__ = value.__doc__
    function.__dict__.update(value.__dict__)
    return function


def detached_copy(dataset: Any) -> Any:
    """``dataset`` as it is sent to workers: with its Keras base replaced, when it has one
    and plain instance attributes (else unchanged)."""
    cls = type(dataset)
    if not _has_keras_base(cls) or not hasattr(dataset, "__dict__"):
        return dataset
    own = [c for c in cls.__mro__ if c is not object and not _is_keras_pydataset(c)]
    if any("__slots__" in c.__dict__ for c in own):
        return dataset
    try:
        copy = object.__new__(_detach_keras(cls))
    except Exception:  # noqa: BLE001 - an unusual class: send it as it is
        log.debug("stoke: could not detach %s from Keras", cls, exc_info=True)
        return dataset
    copy.__dict__.update(dataset.__dict__)
    return copy
