"""Keras 2's preprocessing import paths on Keras 3.

Keras 3 still ships ``ImageDataGenerator`` (and ``TimeseriesGenerator``, ``Tokenizer``) but
exports them under ``tf.keras`` only (``keras._tf_keras.keras.preprocessing``), so
``from keras.preprocessing.image import ImageDataGenerator`` raises ``ImportError``.
:func:`restore_keras2_paths` adds what ``keras.preprocessing.image``/``.sequence`` lack and
makes ``keras.preprocessing.text`` importable, from that same Keras. Owns nothing else.
"""

from __future__ import annotations

import importlib
import sys

SUBMODULES = ("image", "sequence", "text")


def restore_keras2_paths(keras) -> list[tuple[object, str]]:
    """Fill ``keras.preprocessing.<image|sequence|text>`` from Keras' ``tf.keras`` tree.
    Returns the ``(module, name)`` pairs added (for undoing)."""
    added: list[tuple[object, str]] = []
    try:
        legacy_root = importlib.import_module("keras._tf_keras.keras.preprocessing")
        preprocessing = importlib.import_module("keras.preprocessing")
    except ImportError:  # another Keras layout: nothing to restore
        return added
    for name in SUBMODULES:
        try:
            source = importlib.import_module(f"{legacy_root.__name__}.{name}")
        except ImportError:
            continue
        target_name = f"{preprocessing.__name__}.{name}"
        target = sys.modules.get(target_name)
        if target is None:
            try:
                target = importlib.import_module(target_name)
            except ImportError:  # Keras 3 has no such module (text): the tf.keras one
                sys.modules[target_name] = source
                setattr(preprocessing, name, source)
                added.append((preprocessing, name))
                continue
        for attribute in dir(source):
            if attribute.startswith("_") or hasattr(target, attribute):
                continue
            setattr(target, attribute, getattr(source, attribute))
            added.append((target, attribute))
    return added
