"""What :class:`~.sequence.AcceleratedSequence` and :class:`~.generator.AcceleratedGenerator`
share: iteration through ``iter()``, closing at the end of a ``with`` block, and
``to_keras()``.

Each kind's ``iter()`` and ``close()`` are its own; Keras' view is :mod:`.keras_face`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stoke.accelerate.keras_face import keras_face


class Accelerated:
    """The base of both accelerated kinds (subclasses define ``iter()`` and ``close()``)."""

    def iter(self) -> Iterator[Any]:  # pragma: no cover - defined by each kind
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - defined by each kind
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        return self.iter()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def to_keras(self):
        """This object as ``model.fit`` takes it. It already is, when Keras was imported
        before ``stoke.accelerate`` was called; else this imports Keras."""
        return keras_face(self)
