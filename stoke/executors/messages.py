"""What travels between the trainer and its workers besides tasks and results: the named
message kinds of a process worker's socket, and :class:`ProgramUpdate`, a message for the
workers' copy of the program.

A process worker reads tuples whose first item names their kind (as SPDL's pipeline names
``_ITEM``/``_EOF``/``_ERROR``): :data:`INIT`, :data:`RING`, :data:`SLOT`, :data:`TASK`,
:data:`UPDATE`, :data:`STOP`, and answers :data:`READY`, :data:`INIT_ERROR` or :data:`RESULT`.
Every message is plain data: unpickling one never acts (an update's payload is unpickled
by the worker loop itself, in order, when it handles the message). What a message does is
the worker loop's (``worker.py``); sending it, the process pool's (``processes.py``). An
update's content and when to send it are left to its sender (``stoke.accelerate``) and to
the program's ``apply``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from stoke.executors.chunk import Result

# trainer -> worker
INIT = "init"  # (INIT, import path, packed program, spans); the program buffer's fd follows
RING = "ring"  # (RING, layout, slot bytes, slots); one fd per slot follows
SLOT = "slot"  # (SLOT, slot, slot bytes): the consumer kept that slot's batch; its new fd follows
TASK = "task"  # (TASK, Task)
UPDATE = "update"  # (UPDATE, task id, pickled update, what): call program.apply, answer RESULT
STOP = "stop"  # (STOP,)
# worker -> trainer
READY = "ready"  # (READY, pid): the program is loaded
INIT_ERROR = "init-error"  # (INIT_ERROR, traceback text): the program could not be loaded
RESULT = "result"  # (RESULT, Result): of a TASK or an UPDATE


@dataclass(frozen=True)
class ProgramUpdate:
    """A message for the workers' copy of the program, not a sample task: each worker calls
    ``program.apply(update)`` between two tasks, after the tasks sent to it before and
    before those sent later, and answers with a :class:`~stoke.executors.chunk.Result` for
    ``task_id`` (its ``error`` when ``apply`` raised). ``what`` names the message in that
    error ("the batch layout").

    Sent with ``pool.broadcast(update)`` (every live worker: one answer once all applied
    it, or at the first failure) or ``pool.submit(update, worker=k)`` (worker ``k`` only).
    """

    task_id: int
    update: Any
    what: str = "a message"


def apply_update(program: Any, task_id: int, update: Any, what: str, worker: str, *,
                 pickled: bool = False) -> Result:
    """Apply ``update`` (``pickled``: its pickle, loaded here) to ``program`` (its
    ``apply``) in ``worker``; the answer for ``task_id``, with the error (as a
    :class:`~stoke.errors.SampleError` naming ``what``) if it failed. Run by every executor,
    in whatever process holds the program."""
    from stoke.data.program import sample_error

    try:
        program.apply(pickle.loads(update) if pickled else update)
    except Exception as exc:  # noqa: BLE001 - reported to the trainer, never lost
        return Result(task_id, error=sample_error(-1, f"{what}, applied in {worker}", exc),
                      worker=worker)
    return Result(task_id, worker=worker)
