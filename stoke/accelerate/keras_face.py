"""Keras' view of an accelerated object: once Keras is imported, its class also derives
from ``keras.utils.PyDataset``, so that ``model.fit`` takes it.

Owns the face classes and when they apply, and how Keras' adapter holds the object
(:func:`held_weakly_by_keras`); never imports Keras unless asked to (:func:`keras_face`).
The protocol's methods themselves are the adapters' own (:mod:`.sequence`, :mod:`.generator`).
"""

from __future__ import annotations

import sys
import weakref
from types import FrameType
from typing import Any

KERAS_PYDATASET_ADAPTER = "keras.src.trainers.data_adapters.py_dataset_adapter.PyDatasetAdapter"

_KERAS_FACES: dict[type, type] = {}


def keras_face_if_imported(acc: Any) -> Any:
    """Make ``acc`` something ``model.fit`` takes, when Keras is already imported: its class
    also derives from ``keras.utils.PyDataset`` (with ``workers=1``, so Keras adds no
    enqueuer). The one place to switch to the device feed of ``stoke.keras`` later."""
    if "keras" not in sys.modules:
        return acc
    import keras

    base = type(acc)
    face = _KERAS_FACES.get(base)
    if face is None:
        face = type(base.__name__, (base, keras.utils.PyDataset), {
            "__module__": base.__module__, "__doc__": base.__doc__,
        })
        _KERAS_FACES[base] = face
    acc.__class__ = face
    keras.utils.PyDataset.__init__(acc, workers=1, use_multiprocessing=False, max_queue_size=10)
    return acc


def keras_face(acc: Any) -> Any:
    """``acc`` as Keras takes it (imports Keras if needed)."""
    import keras  # noqa: F401 - makes keras_face_if_imported apply

    return keras_face_if_imported(acc)


def held_weakly_by_keras(acc: Any, caller: FrameType) -> None:
    """Make the Keras adapter whose code asks ``acc`` for a batch (the ``self`` of the
    ``caller`` frame: its generator, or TensorFlow's signature probe) hold ``acc`` weakly.

    On TensorFlow, Keras' PyDataset adapter hands its generator to ``tf.data``'s
    ``from_generator``, which registers it with TensorFlow's global graph for good
    (tensorflow/tensorflow#57690, #123530): the adapter, and the PyDataset it holds, would
    live as long as the process, and a fit loop (k-fold, a hyperparameter search) would pile
    up accelerated objects with their workers and rings. Held weakly, ``acc`` lives as long
    as the user's reference and ``fit``'s own argument (``fit(x=acc)`` holds it for the whole
    fit); once both are gone it is collected and its workers stop. Any other adapter, or one
    that already holds something else, is left as it is."""
    adapter = caller.f_locals.get("self")
    if adapter is None or getattr(adapter, "py_dataset", None) is not acc:
        return
    if f"{type(adapter).__module__}.{type(adapter).__qualname__}" == KERAS_PYDATASET_ADAPTER:
        adapter.py_dataset = weakref.proxy(acc)
