"""What the trainer tells the program in its workers about a dataset: finding the attributes
that ``on_epoch_end``/``on_epoch_begin`` changed (:func:`fingerprints`) and pickling them for
the workers (:func:`pickled_state`).

The messages travel as :class:`~stoke.executors.messages.ProgramUpdate` through the pool's
``broadcast``/``submit(update, worker=k)`` (sent by :mod:`.channel_loader`); what a message
does is the programs' ``apply``.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from typing import Any

from stoke.errors import UnpicklableError


def fingerprints(obj: Any) -> dict[str, bytes]:
    """A digest of each attribute of ``obj`` (of the whole object if it has no
    ``__dict__``), to find what ``on_epoch_end`` changed, in place or not."""
    import cloudpickle

    items = vars(obj).items() if hasattr(obj, "__dict__") else [("", obj)]
    digests = {}
    for name, value in items:
        buffers: list[pickle.PickleBuffer] = []
        digest = hashlib.sha1(usedforsecurity=False)
        try:
            digest.update(cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append))
            for buffer in buffers:
                digest.update(buffer.raw())
        except Exception:  # noqa: BLE001 - unpicklable: never equal, so sending it says why
            digest.update(f"unpicklable {id(value)} {time.monotonic()}".encode())
        digests[name] = digest.digest()
    return digests


def pickled_state(dataset: Any, names: list[str]) -> dict[str, bytes]:
    """The attributes ``names`` of ``dataset``, pickled for the workers."""
    from stoke.executors.payload import dumps

    state = vars(dataset)
    pickled = {}
    for name in names:
        try:
            pickled[name] = dumps(state[name])
        except Exception as exc:  # noqa: BLE001 - turned into advice
            raise UnpicklableError(
                f"{type(dataset).__name__}.{name} ({type(state[name]).__name__}), set or "
                "changed in the trainer (by on_epoch_end/on_epoch_begin), cannot be sent to "
                f"the worker processes: {type(exc).__name__}: {exc}. Keep handles such as "
                "open files out of the dataset's attributes (open them lazily in "
                "__getitem__), or use executor=\"thread\".") from exc
    return pickled
