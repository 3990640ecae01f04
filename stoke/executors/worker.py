"""The worker process's main loop: ``python -P -m stoke.executors.worker FD PARENT_PID NAME
INDEX``.

Started by ``processes.py`` with one end of a Unix socket. It receives the sample program
once, then the ring's memory (a file descriptor per slot; a new one for a slot whose batch
the trainer kept), then tasks and updates for the program (``program.apply``), each a
message of a named kind (:mod:`stoke.executors.messages`); it writes samples into ring
rows and answers with small result messages. It exits when asked, when the socket closes, or
when its parent disappears (a watchdog thread checks), so no worker outlives its trainer.
"""

from __future__ import annotations

import mmap
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(0.5)


def _take_load_slot() -> int | None:
    """Wait for one of the pool's start-up slots (a file lock, ``STOKE_LOAD_SLOT``) before
    loading the program: when cores are few, workers load one after another, so that the
    first is up (and serves the first batch) in the time of one load, not of all of them
    sharing a core. The lock goes with the process if it dies."""
    path = os.environ.get("STOKE_LOAD_SLOT")
    if not path:
        return None
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        return None  # no slot: load at once
    return fd


# Workers run below the trainer's priority: they only fill cores the trainer leaves. Their
# start-up (importing what the dataset's code imports: Keras, with the trainer's backend, is
# seconds of CPU per worker) otherwise took the cores from a CPU-trained model for the
# whole of a short fit (issue 14: a tutorial Sequence on torch, 2 cores, 2.7x slower under
# stoke.accelerate). A trainer that waits on its input leaves them the cores anyway.
WORKER_NICE = 10


def lower_priority(environ=os.environ) -> int:
    """Lower this process's priority by ``STOKE_WORKER_NICE`` (default :data:`WORKER_NICE`;
    0 keeps the trainer's); the niceness it runs at."""
    try:
        step = int(environ.get("STOKE_WORKER_NICE", WORKER_NICE))
    except ValueError:
        step = WORKER_NICE
    return os.nice(max(0, step))


def main() -> int:
    fd, parent_pid, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    lower_priority()
    index = int(sys.argv[4])  # seeds the worker's global random generators
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    from stoke.executors.allocator import keep_freed_memory

    keep_freed_memory()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(fd))
    try:
        return _serve(sock, conn, name, index)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 0  # the trainer went away


def _serve(sock: socket.socket, conn: Connection, name: str, index: int) -> int:
    from stoke.data.program import prefetch_chunk, seed_worker_globals
    from stoke.executors.chunk import run_task
    from stoke.executors.messages import (
        INIT,
        INIT_ERROR,
        READY,
        RESULT,
        RING,
        SLOT,
        STOP,
        TASK,
        UPDATE,
        apply_update,
    )
    from stoke.executors.payload import unpack
    from stoke.executors.ring import SharedBuffer

    kind, trainer_path, data, spans = conn.recv()
    assert kind == INIT, kind
    # the trainer's import path, in its order (the user's modules resolve as they did there),
    # then anything of the worker's own that it lacks
    sys.path[:] = [*trainer_path, *(p for p in sys.path if p not in trainer_path)]
    shared = None
    if spans:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        shared = SharedBuffer.attach(fds[0], max(sum(n for _, n in spans), mmap.PAGESIZE),
                                     readonly=True)
    slot = _take_load_slot()
    try:
        program = unpack(data, spans, shared)
    except BaseException:  # noqa: BLE001 - reported, then exit
        conn.send((INIT_ERROR, traceback.format_exc()))
        return 3
    # after the user's modules were imported (one may call np.random.seed(0) at the top)
    seed_worker_globals(program.seed, index)
    conn.send((READY, os.getpid()))
    if slot is not None:
        os.close(slot)  # the next worker of this slot loads now
    layout = None
    views: list = []
    queued: deque = deque()  # messages already received, not yet handled
    while True:
        message = queued.popleft() if queued else conn.recv()
        kind = message[0]
        if kind == TASK:
            task = message[1]
            # tasks already sent to this worker: their reads (remote shards) start now
            while conn.poll(0):
                ahead = conn.recv()
                if ahead[0] == RING:  # its memory follows on the socket: take it now
                    layout, views = _attach_ring(sock, ahead)
                    continue
                if ahead[0] == SLOT:  # the same: a kept slot's new memory follows
                    _replace_slot(sock, ahead, layout, views)
                    continue
                queued.append(ahead)
                if ahead[0] == TASK and ahead[1].kind == "chunk":
                    prefetch_chunk(program, ahead[1].indices)
            slot = views[task.slot] if (task.slot >= 0 and views) else None
            try:
                result = run_task(program, task, layout, slot, name)
            except BaseException as exc:  # noqa: BLE001 - a bug or MemoryError: report it
                from stoke.data.program import sample_error
                from stoke.executors.chunk import Result

                result = Result(task.task_id, error=sample_error(-1, "the worker", exc), worker=name)
            conn.send((RESULT, result))
        elif kind == RING:  # one fd per slot follows
            slot = None
            layout, views = _attach_ring(sock, message)
        elif kind == SLOT:  # the trainer kept that slot's batch: here is its new memory
            slot = None  # the old memory is unmapped once no view of it is left
            _replace_slot(sock, message, layout, views)
        elif kind == UPDATE:  # a message for the program, between two tasks, in order
            _, task_id, payload, what = message
            conn.send((RESULT, apply_update(program, task_id, payload, what, name, pickled=True)))
        elif kind == STOP:
            return 0
        else:  # a trainer of another stoke version: say so, never guess
            raise RuntimeError(f"{name}: unknown message kind {kind!r}")


def _attach_ring(sock: socket.socket, message: tuple):
    """Map the ring whose layout ``message`` gives; one descriptor per slot follows it."""
    from stoke.executors.ring import map_received, slot_views

    _, layout, slot_bytes, slots = message
    fds: list[int] = []
    while len(fds) < slots:
        fds += socket.recv_fds(sock, 1, 200)[1]
    return layout, [slot_views(map_received(fd, slot_bytes), layout, 0) for fd in fds]


def _replace_slot(sock: socket.socket, message: tuple, layout, views: list) -> None:
    """The trainer kept slot ``number``'s batch: map the slot's new memory (its descriptor
    follows ``message``) in place of the old one."""
    from stoke.executors.ring import map_received, slot_views

    _, number, slot_bytes = message
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    views[number] = slot_views(map_received(fds[0], slot_bytes), layout, 0)


if __name__ == "__main__":
    sys.exit(main())
