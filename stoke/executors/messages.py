"""What travels between the trainer and its workers besides tasks and results: the named
message kinds of a process worker's socket.

A process worker reads tuples whose first item names their kind (as SPDL's pipeline names
``_ITEM``/``_EOF``/``_ERROR``): :data:`INIT`, :data:`RING`, :data:`SLOT`, :data:`TASK`,
:data:`STOP`, and answers :data:`READY`, :data:`INIT_ERROR` or :data:`RESULT`.
What a message does is the worker
loop's (``worker.py``); sending it, the process pool's (``processes.py``).
"""

from __future__ import annotations

# trainer -> worker
INIT = "init"  # (INIT, import path, packed program, spans); the program buffer's fd follows
RING = "ring"  # (RING, layout, slot bytes, slots); one fd per slot follows
SLOT = "slot"  # (SLOT, slot, slot bytes): the consumer kept that slot's batch; its new fd follows
TASK = "task"  # (TASK, Task)
STOP = "stop"  # (STOP,)
# worker -> trainer
READY = "ready"  # (READY, pid): the program is loaded
INIT_ERROR = "init-error"  # (INIT_ERROR, traceback text): the program could not be loaded
RESULT = "result"  # (RESULT, Result): of a TASK
