"""Keras' view of an accelerated object: once Keras is imported, its class also derives
from ``keras.utils.PyDataset``, so that ``model.fit`` takes it.

Owns the face classes and when they apply, and how Keras' adapter holds the object
(:func:`held_weakly_by_keras`); never imports Keras unless asked to (:func:`keras_face`).
The protocol's methods themselves are the adapters' own (:mod:`.sequence`, :mod:`.generator`).

A generator without an epoch length (``accelerate(gen)`` without ``steps_per_epoch``) is read
as Keras reads a plain generator: a ``PyDataset`` of unknown length can never end an epoch
(Keras' adapter asks ``dataset[i]`` for ever; nothing it raises ends the epoch), so that
face is also Keras' own data adapter (:class:`GeneratorAdapterFace`), whose iterators are
Keras' ``GeneratorDataAdapter`` over a pass of the generator: ``fit`` ends the epoch where
the generator ends, with Keras' warnings, as ``fit(gen())`` does.
"""

from __future__ import annotations

import sys
import warnings
import weakref
from types import FrameType
from typing import Any

KERAS_PYDATASET_ADAPTER = "keras.src.trainers.data_adapters.py_dataset_adapter.PyDatasetAdapter"

_KERAS_FACES: dict[type, type] = {}


def keras_face_if_imported(acc: Any) -> Any:
    """Make ``acc`` something ``model.fit`` takes, when Keras is already imported: its class
    also derives from ``keras.utils.PyDataset`` (with ``workers=1``, so Keras adds no
    enqueuer), and, for a generator of unknown length, from Keras' data adapter
    (:class:`GeneratorAdapterFace`). The one place to switch to the device feed of
    ``stoke.keras`` later."""
    if "keras" not in sys.modules:
        return acc
    import keras

    base = type(acc)
    as_generator = getattr(acc, "steps_per_epoch", 0) is None  # a generator, no length
    face = _KERAS_FACES.get((base, as_generator))
    if face is None:
        bases = (base, keras.utils.PyDataset)
        if as_generator:
            from keras.src.trainers.data_adapters.data_adapter import DataAdapter

            bases = (GeneratorAdapterFace, *bases, DataAdapter)
        face = type(base.__name__, bases, {
            "__module__": base.__module__, "__doc__": base.__doc__,
        })
        _KERAS_FACES[(base, as_generator)] = face
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


GENERATOR_SHUFFLE_IGNORED = (
    "`shuffle=True` was passed, but will be ignored since the data `x` was provided as a "
    "generator. The generator is expected to yield already-shuffled data.")


class GeneratorAdapterFace:
    """Keras' view of a generator without an epoch length: a Keras data adapter (Keras'
    ``get_data_adapter`` takes one as it is) whose iterators are those of Keras' own
    ``GeneratorDataAdapter`` over a new pass of the generator (``keras_batches()``), one
    per Keras epoch iterator (one per ``fit``/``evaluate``/``predict`` call, and one for
    ``fit``'s validation): every step count, warning and History entry is what
    ``fit(gen())`` gives. Keras' own checks on a generator are made here too: its
    ``shuffle=True`` warning, and ``class_weight`` refused (Keras 3 takes none for a
    generator; pass ``steps_per_epoch`` to ``stoke.accelerate`` for a ``PyDataset``, which
    takes it)."""

    @property
    def num_batches(self) -> None:
        # read first by each new epoch iterator of Keras', with fit's arguments in its frame
        _check_keras_arguments(sys._getframe(1))
        return None

    batch_size = None
    has_partial_batch = None
    partial_batch_size = None

    def get_numpy_iterator(self):
        return self._generator_adapter(sys._getframe(1)).get_numpy_iterator()

    def get_jax_iterator(self):
        return self._generator_adapter(sys._getframe(1)).get_jax_iterator()

    def get_tf_dataset(self):
        return self._generator_adapter(sys._getframe(1)).get_tf_dataset()

    def get_torch_dataloader(self):
        return self._generator_adapter(sys._getframe(1)).get_torch_dataloader()

    def _generator_adapter(self, caller: FrameType):
        """The Keras ``GeneratorDataAdapter`` of the epoch iterator that asks (the ``self``
        of ``caller``): made, over a new pass, at its first request."""
        from keras.src.trainers.data_adapters.generator_data_adapter import (
            GeneratorDataAdapter,
        )

        adapters = self.__dict__.setdefault("_keras_generator_adapters",
                                            weakref.WeakKeyDictionary())
        owner = caller.f_locals.get("self")
        try:
            adapter = adapters.get(owner)
        except TypeError:  # not weakly referable: a new pass each time
            owner, adapter = None, None
        if adapter is None:
            adapter = GeneratorDataAdapter(self.keras_batches())
            if owner is not None:
                adapters[owner] = adapter
        return adapter


def _check_keras_arguments(caller: FrameType) -> None:
    """What Keras' ``get_data_adapter`` says of a generator, for the epoch iterator being
    made in ``caller`` (its ``__init__``: ``class_weight``, ``shuffle`` among its locals)."""
    if caller.f_code.co_name != "__init__":
        return
    names = caller.f_locals
    if names.get("class_weight") is not None:
        raise ValueError(
            "Argument `class_weight` is not supported for a generator of unknown length "
            "(Keras 3 takes none for Python generators). Pass steps_per_epoch to "
            "stoke.accelerate (it is then a PyDataset, which takes class_weight). "
            f"Received: class_weight={names['class_weight']}")
    if names.get("shuffle"):
        warnings.warn(GENERATOR_SHUFFLE_IGNORED, stacklevel=4)
