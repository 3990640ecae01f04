"""Resume inside ``fit``: a restarted job goes on with its input where the checkpoint was.

Owns ``stoke.BackupAndRestore`` (Keras' ``keras.callbacks.BackupAndRestore`` plus the input
position) and :class:`InputPositions` (the iterator state after each batch the feed gave
Keras). The feed itself (``stoke/keras/adapter.py``) only records positions and starts an
epoch from a given state.

Keras' own ``BackupAndRestore`` restores the weights and the epoch, then replays that epoch
from its first batch, so samples trained on before the crash are trained on again. With
``stoke.BackupAndRestore(backup_dir, feed, save_freq=...)``:

- every time Keras saves (each ``save_freq`` batches, or each epoch), the feed's position
  after the last batch Keras *trained on* (not the batches prefetched ahead) is written next
  to the checkpoint, as JSON (``stoke_input.json``, with the Keras epoch and batch it
  belongs to);
- on restart (``on_train_begin``), Keras loads the weights and the epoch; the feed starts
  that epoch's plan at the saved position, so the epoch goes on with the batches that were
  not trained yet: **every sample exactly once across the restart**. That one epoch is
  shorter; Keras' "Your input ran out of data" warning for it is expected and silenced.
- a position that does not match Keras' checkpoint (a crash between the two writes) is not
  used: the epoch restarts from its beginning, with a warning.

The pipeline must be the same on restart (the position carries the plan's fingerprint).
With your own checkpointing instead: ``feed.position_after(batches_trained_this_epoch)``
is a JSON-able :class:`~stoke.data.plan.IteratorState` (``.to_dict()``) to save with the
weights, and ``feed.resume_from(saved)`` before ``fit(..., initial_epoch=...)`` starts the
input there.
Also fixes, in the subclass, Keras 3's epoch number for mid-epoch saves after a restart.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from typing import Any

from stoke.data.plan import IteratorState
from stoke.errors import StokeWarning

INPUT_FILE = "stoke_input.json"
_RAN_OUT = "Your input ran out of data"


class InputPositions:
    """The iterator state before the first batch and after each batch of one feed
    iterator, in delivery order; ``after(n)`` is where the input stands once ``n`` batches
    of it were consumed."""

    def __init__(self) -> None:
        self._states: list[IteratorState] = []
        self._lock = threading.Lock()

    def start(self, state: IteratorState) -> None:
        with self._lock:
            self._states = [state]

    def delivered(self, state: IteratorState) -> None:
        with self._lock:
            self._states.append(state)

    def after(self, batches: int) -> IteratorState | None:
        with self._lock:
            if not self._states:
                return None
            return self._states[min(batches, len(self._states) - 1)]


class TrackedBatches:
    """A feed's batch iterator that records its state after each batch it gives out."""

    def __init__(self, batches, positions: InputPositions) -> None:
        self.batches = batches
        self.positions = positions
        positions.start(batches.state())

    def __iter__(self) -> TrackedBatches:
        return self

    def __next__(self) -> Any:
        batch = next(self.batches)
        self.positions.delivered(self.batches.state())
        return batch

    def close(self) -> None:
        self.batches.close()


def next_epoch_start(state: IteratorState, loader) -> IteratorState:
    """``state``, or the start of the next epoch when ``state`` is at the end of one."""
    plan = loader.plan
    chunks = plan.chunk_count(state.epoch, drop_partial=False if loader.program.has_filter
                              else None)
    if state.chunk >= chunks:
        return IteratorState(state.epoch + 1, 0, 0, state.fingerprint)
    return state


_CLASS = None


def backup_and_restore_class():
    """``stoke.BackupAndRestore``, built on first use (it subclasses a Keras class)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import keras

    class BackupAndRestore(keras.callbacks.BackupAndRestore):
        """Keras' ``BackupAndRestore`` that also saves the position of a stoke feed, so a
        restarted ``fit`` continues its input mid-epoch instead of replaying the epoch::

            feed = pipe.to_keras()
            model.fit(feed, epochs=10, callbacks=[
                stoke.BackupAndRestore("/ckpt/run1", feed, save_freq=500)])

        ``feed``: the ``pipe.to_keras()`` given to this ``fit``. Other arguments as Keras'.
        """

        def __init__(self, backup_dir: str, feed: Any, save_freq: str | int = "epoch",
                     double_checkpoint: bool = False, delete_checkpoint: bool = True) -> None:
            super().__init__(backup_dir, save_freq=save_freq,
                             double_checkpoint=double_checkpoint,
                             delete_checkpoint=delete_checkpoint)
            if not hasattr(feed, "resume_from"):
                raise TypeError("stoke.BackupAndRestore needs the feed given to fit, "
                                f"pipe.to_keras(). Received: {type(feed).__name__}")
            self.feed = feed
            self.input_path = os.path.join(backup_dir, INPUT_FILE)
            self._position: IteratorState | None = None
            self._batches_done = 0
            self._silenced = False

        def on_train_begin(self, logs=None) -> None:
            super().on_train_begin(logs)
            self._restore_input()

        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self._current_epoch = epoch  # Keras leaves it at 0 after a restart
            self._batches_done = 0

        def on_train_batch_end(self, batch: int, logs=None) -> None:
            self._batches_done = batch + 1
            self._position = self.feed.position_after(self._batches_done)
            super().on_train_batch_end(batch, logs)

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            super().on_epoch_end(epoch, logs)
            self._stop_silencing()

        def on_train_end(self, logs=None) -> None:
            self._stop_silencing()
            super().on_train_end(logs)

        def _save_model(self) -> None:  # Keras' one place that writes the checkpoint
            super()._save_model()
            if self._position is None:
                return
            record = {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                      "batches_done": self._batches_done,
                      "state": self._position.to_dict()}
            temporary = self.input_path + ".tmp"
            with open(temporary, "w") as f:
                json.dump(record, f)
            os.replace(temporary, self.input_path)

        def _restore_input(self) -> None:
            if not os.path.exists(self.input_path):
                return
            with open(self.input_path) as f:
                record = json.load(f)
            metadata_path = os.path.join(self.backup_dir, "training_metadata.json")
            metadata = {}
            if os.path.exists(metadata_path):
                with open(metadata_path) as f:
                    metadata = json.load(f)
            if (metadata.get("epoch"), metadata.get("batch")) != (record["epoch"],
                                                                  record["batch"]):
                warnings.warn(
                    f"stoke: the input position in {self.input_path} (epoch "
                    f"{record['epoch']}, batch {record['batch']}) does not match Keras' "
                    f"checkpoint ({metadata}); epoch {metadata.get('epoch')} restarts from "
                    "its first batch.", StokeWarning, stacklevel=2)
                return
            self.feed.resume_from(IteratorState.from_dict(record["state"]))
            if record["batches_done"] and self.feed.resumes_mid_epoch():
                warnings.filterwarnings("ignore", message=_RAN_OUT)
                self._silenced = True

        def _stop_silencing(self) -> None:
            if self._silenced:
                self._silenced = False
                warnings.filters[:] = [f for f in warnings.filters
                                       if not (f[0] == "ignore" and f[1] is not None
                                               and f[1].pattern == _RAN_OUT)]

    BackupAndRestore.__module__ = "stoke"
    _CLASS = BackupAndRestore
    return _CLASS
