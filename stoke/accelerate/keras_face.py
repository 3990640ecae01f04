"""Keras' view of an accelerated object: once Keras is imported, its class also derives
from ``keras.utils.PyDataset``, so that ``model.fit`` takes it.

Owns the face classes and when they apply; never imports Keras unless asked to
(:func:`keras_face`). The protocol's methods themselves are the adapters' own
(:mod:`.sequence`, :mod:`.generator`).
"""

from __future__ import annotations

import sys
from typing import Any

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
