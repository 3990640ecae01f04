"""Standalone Keras' reading of a Sequence under ``fit_generator(seq, steps_per_epoch=k)``
(the multi-backend ``keras`` package, 2.3 and before), with nothing fed by stoke:
:func:`keras2_stream` (``stoke run --no-accelerate``, ``stoke doctor``).

Standalone Keras' ``fit_generator`` read a Sequence through its ``OrderedEnqueuer``: one stream
of passes (each pass in order, or a ``random.shuffle`` of it with ``shuffle=True``), the
Sequence's ``on_epoch_end`` between passes, each of Keras' epochs taking the next ``k``
batches, wrapping around. Keras 3 ends an epoch where a pass ends instead: ``k = len - 1``
gives epochs of 4, 1, 4 steps for 5 batches, with "Your input ran out of data". The stream
here is a ``PyDataset`` without an epoch length whose batch ``i`` is the ``i``-th of that
stream, read in the trainer as Keras 3 reads the Sequence itself: the step counts and
batches are those standalone Keras trained on, the work per batch the script's own. The
stoke-fed equivalent is ``AcceleratedSequence.endless`` (:mod:`stoke.accelerate.sequence`).
"""

from __future__ import annotations

import random
import threading
from typing import Any

_STREAM_CLASS: list[type] = []


def keras2_stream(sequence: Any, shuffle: bool) -> Any:
    """``sequence`` (a ``keras.utils.PyDataset`` of known length) as standalone Keras'
    enqueuer read it: a ``PyDataset`` of unknown length (see the module docstring).
    ``shuffle``: each pass a ``random.shuffle`` of the batch order, drawn from Python's
    ``random`` when the pass begins, as that enqueuer drew it."""
    if not _STREAM_CLASS:
        _STREAM_CLASS.append(_define_stream_class())
    return _STREAM_CLASS[0](sequence, shuffle)


def _define_stream_class() -> type:
    import keras

    class Keras2Stream(keras.utils.PyDataset):
        """One stream of passes over ``keras2_sequence`` (see :mod:`stoke.legacy.keras2_stream`).
        Batch ``i`` is the ``i``-th batch of the stream, whoever asks (TensorFlow's
        signature probe asks the first two again); the Sequence's ``on_epoch_end`` runs
        where a pass ends (and its ``on_epoch_begin`` where one begins), when the first
        batch past the pass is asked, not at Keras' epoch ends."""

        KEEP_PASSES = 2  # the passes whose order is kept, to answer an index again

        def __init__(self, sequence: Any, shuffle: bool) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.keras2_sequence = sequence  # (the doctor's input probe reads this one)
            self.shuffle = bool(shuffle)
            self.passes: list[tuple[int, list[int]]] = []  # (first index, batch order)
            self.passes_begun = 0
            self.lock = threading.Lock()

        @property
        def num_batches(self) -> None:
            return None

        def __getitem__(self, index: int) -> Any:
            index = int(index)
            with self.lock:
                while not self.passes or index >= self.passes[-1][0] + len(self.passes[-1][1]):
                    self._next_pass()
                start, order = next(((s, o) for s, o in reversed(self.passes) if s <= index),
                                    self.passes[0])
                return self.keras2_sequence[order[(index - start) % len(order)]]

        def _next_pass(self) -> None:
            if self.passes_begun:
                self._hook("on_epoch_end")
            self._hook("on_epoch_begin")
            length = len(self.keras2_sequence)  # Keras reads len() again every pass; so does this
            if length < 1:
                raise ValueError(f"{type(self.keras2_sequence).__name__} has no batch (len() is "
                                 f"{length})")
            order = list(range(length))
            if self.shuffle:
                random.shuffle(order)
            start = self.passes[-1][0] + len(self.passes[-1][1]) if self.passes else 0
            self.passes = [*self.passes[-(self.KEEP_PASSES - 1):], (start, order)]
            self.passes_begun += 1

        def _hook(self, name: str) -> None:
            hook = getattr(self.keras2_sequence, name, None)
            if hook is not None:
                hook()

        def on_epoch_begin(self) -> None:
            pass  # Keras' epochs are not the Sequence's passes (see _next_pass)

        def on_epoch_end(self) -> None:
            pass

    return Keras2Stream
