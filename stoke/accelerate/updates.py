"""The channel that carries messages from the trainer to the program in its workers: the
state ``on_epoch_end``/``on_epoch_begin`` changed, the item layout, a generator copy's index.

Owns the message itself (:class:`ControlMessage`, which travels through the executors' own
task protocol), the inbox a worker files it in, sending it to one process worker, and
finding and pickling the attributes of a dataset that changed. Which messages are sent, and
when, is left to :mod:`.channel_loader` and the adapters; what a message does, to the
programs' ``apply``.
"""

from __future__ import annotations

import collections
import hashlib
import pickle
import time
from typing import Any

import numpy as np

from stoke.data.program import FILTERED, sample_error
from stoke.errors import UnpicklableError
from stoke.executors.chunk import Task

CONTROL_INDEX = -1  # a task for this index carries a message to the worker's program


_INBOX: collections.deque = collections.deque()  # messages delivered to this process


class ControlMessage:
    """Sent to a worker in place of a task. Unpickling it there files the payload in this
    module's inbox and yields an ordinary one-index task for :data:`CONTROL_INDEX`; the
    program takes the payload from the inbox when it runs that index. So a message reaches
    the worker's copy of the program between two tasks, in the order it was sent, through
    the executor's own protocol."""

    def __init__(self, task_id: int, payload: bytes) -> None:
        self.task_id = task_id
        self.payload = payload

    def __reduce__(self):
        return (deliver_control, (self.task_id, self.payload))


def deliver_control(task_id: int, payload: bytes) -> Task:
    _INBOX.append(payload)
    return control_task(task_id)


def control_task(task_id: int) -> Task:
    return Task(task_id, "probe", 0, np.array([CONTROL_INDEX], np.int64), -1)


def send_to_worker(pool, index: int, task: Task, message: Any) -> None:
    """Send ``message`` (a task, or what unpickles into ``task``) to process worker
    ``index``, accounted as ``task`` so that a dead worker names it."""
    worker = pool._workers[index]
    worker.starter.join(timeout=pool.start_timeout_s)  # the program first, then messages
    worker.outstanding[task.task_id] = task
    try:
        worker.conn.send(("task", message))
    except (BrokenPipeError, ConnectionResetError, OSError):
        raise worker.died() from None


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
    import cloudpickle

    state = vars(dataset)
    pickled = {}
    for name in names:
        try:
            pickled[name] = cloudpickle.dumps(state[name], protocol=5)
        except Exception as exc:  # noqa: BLE001 - turned into advice
            raise UnpicklableError(
                f"{type(dataset).__name__}.{name} ({type(state[name]).__name__}), set or "
                "changed in the trainer (by on_epoch_end/on_epoch_begin), cannot be sent to "
                f"the worker processes: {type(exc).__name__}: {exc}. Keep handles such as "
                "open files out of the dataset's attributes (open them lazily in "
                "__getitem__), or use executor=\"thread\".") from exc
    return pickled


def apply_next_update(program: Any, where: str) -> Any:
    """In a worker: apply the oldest message in the inbox to ``program`` (its ``apply``),
    for the task of :data:`CONTROL_INDEX`; ``where`` names it if that fails."""
    payload = _INBOX.popleft()
    try:
        program.apply(pickle.loads(payload))
    except Exception as exc:  # noqa: BLE001 - re-raised with where it happened
        raise sample_error(-1, where, exc) from exc
    return FILTERED
