"""``stoke.accelerate``: the loader code users already have, run by stoke's workers.

Owns two adapters and what they need beyond the feeder core:

- a ``keras.utils.PyDataset``/``Sequence`` (anything with ``len()`` and
  ``__getitem__(batch_index)``): each item is a whole batch. Items are read by stoke's
  persistent workers into the shared-memory ring, one item per slot, in the plan's order;
  ``on_epoch_begin``/``on_epoch_end`` run in the trainer and the state they change reaches
  the workers before the next pass (a message with the changed attributes, not a restart);
  a smaller last batch is padded in the worker and cut back in the trainer; an item of any
  other shape is made again in the trainer (and said so, once).
- a generator function: it runs in a worker process (off the trainer's main thread, items
  handed over through the ring) or, when the user says it can be replicated, as several
  copies in parallel, each told its ``worker_index``/``worker_count`` (or given its own
  ``seed``).

The returned object iterates numpy batches (``acc.iter()``) and is what ``model.fit`` takes:
it also speaks Keras' ``PyDataset`` protocol (see :mod:`stoke.accelerate.keras_face`).
Plans, slots and the ring belong to ``stoke.loader``/``stoke.executors``; the device
feed to ``stoke.keras``.

This package module only re-exports; each concept has a module of its own:

- :mod:`.entry`: :func:`accelerate`, which tells the kinds of data apart;
- :mod:`.sequence`: :class:`AcceleratedSequence` and the per-index program its workers run;
- :mod:`.generator`: :class:`AcceleratedGenerator`; :mod:`.generator_program` is what its
  workers run, :mod:`.streams` how the items of its copies are taken in turn;
- :mod:`.image_iterator`: Keras' legacy image iterators (``ImageDataGenerator.flow*``) as
  Sequences that give Keras' batches;
- :mod:`.items`: the layout of one item in the ring (padding, cutting back; float64 cast
  outside the ring);
- :mod:`.channel_loader`: a loader that can message its workers;
- :mod:`.updates`: the channel that carries messages (``on_epoch_end`` state) to workers;
- :mod:`.keras_base`: the stand-in for a dataset's Keras base, so workers need no Keras;
- :mod:`.keras_requests`: how Keras' ``__getitem__`` requests are answered (which of
  Keras' iterators asks: a new one starts over, a continued one goes on);
- :mod:`.accelerated`: the surface both kinds share; :mod:`.keras_face`: Keras' view of it.

What each kind guarantees
-------------------------
Sequence: every pass (epoch) delivers each batch index exactly once, in order ``0..n-1``
(``shuffle=True``: a permutation seeded by ``(seed, epoch)``; under ``model.fit`` with its
default ``shuffle=True``, Keras' own permutation of the epoch), the same arrays as
``dataset[i]`` would return after the same ``on_epoch_begin``/``on_epoch_end`` calls,
whatever the number of workers. Under ``fit(steps_per_epoch=k)`` the batches Keras' own
adapter gives: its one iterator goes on across epochs. With ``executor="auto"`` the trainer
makes the batches asked while every worker is still starting; the workers go on from there.

Generator, one copy (``replicas=None``): every item the generator yields, once, in its order.

Generator, ``replicas=N``: copy ``k`` runs ``fn(*args, worker_index=k, worker_count=N)`` (the
parameters it accepts; or ``seed=`` a seed of its own); items are taken from the copies in
turn (0, 1, ..., N-1, 0, ...; a finished copy drops out), so the order is deterministic when
the copies are. Each item of each copy is delivered once; that the copies together cover the
data exactly once is the generator's promise (shard by ``worker_index``).

>>> acc = stoke.accelerate(MySequence(paths, batch_size=64))     # doctest: +SKIP
>>> model.fit(acc, epochs=10)                                       # doctest: +SKIP
>>> for x, y in acc.iter(): ...                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stoke.lazy_exports import lazy_attributes

if TYPE_CHECKING:
    from stoke.accelerate.entry import accelerate
    from stoke.accelerate.generator import AcceleratedGenerator
    from stoke.accelerate.sequence import AcceleratedSequence

# Imported on first use (PEP 562), so that a worker loading one module of this package (its
# program: ``generator_program``, ``items``) does not import the trainer's side with it.
_EXPORTS = {"AcceleratedGenerator": "stoke.accelerate.generator",
            "AcceleratedSequence": "stoke.accelerate.sequence",
            "accelerate": "stoke.accelerate.entry"}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)

__all__ = ["AcceleratedGenerator", "AcceleratedSequence", "accelerate"]
