"""The worker process's main loop: ``python -m stoke.executors.worker FD PARENT_PID NAME``.

Started by ``processes.py`` with one end of a Unix socket. It receives the sample program
once, then the ring's memory (as a file descriptor), then tasks; it writes samples into ring
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


def main() -> int:
    fd, parent_pid, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    from stoke.executors.allocator import keep_freed_memory

    keep_freed_memory()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(fd))
    try:
        return _serve(sock, conn, name)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 0  # the trainer went away


def _serve(sock: socket.socket, conn: Connection, name: str) -> int:
    from stoke.executors.chunk import run_task
    from stoke.executors.payload import unpack
    from stoke.executors.ring import SharedBuffer
    from stoke.program import prefetch_chunk

    kind, sys_path, data, spans = conn.recv()
    assert kind == "init"
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    shared = None
    if spans:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        shared = SharedBuffer.attach(fds[0], max(sum(n for _, n in spans), mmap.PAGESIZE),
                                     readonly=True)
    try:
        program = unpack(data, spans, shared)
    except BaseException:  # noqa: BLE001 - reported, then exit
        conn.send(("init-error", traceback.format_exc()))
        return 3
    conn.send(("ready", os.getpid()))
    layout = None
    views: list = []
    queued: deque = deque()  # messages already received, not yet handled
    while True:
        message = queued.popleft() if queued else conn.recv()
        kind = message[0]
        if kind == "task":
            task = message[1]
            # tasks already sent to this worker: their reads (remote shards) start now
            while conn.poll(0):
                ahead = conn.recv()
                if ahead[0] == "ring":  # its memory follows on the socket: take it now
                    layout, views = _attach_ring(sock, ahead)
                    continue
                queued.append(ahead)
                if ahead[0] == "task" and ahead[1].kind == "chunk":
                    prefetch_chunk(program, ahead[1].indices)
            slot = views[task.slot] if (task.slot >= 0 and views) else None
            try:
                result = run_task(program, task, layout, slot, name)
            except BaseException as exc:  # noqa: BLE001 - a bug or MemoryError: report it
                from stoke.executors.chunk import Result
                from stoke.program import sample_error

                result = Result(task.task_id, error=sample_error(-1, "the worker", exc), worker=name)
            conn.send(("result", result))
        elif kind == "ring":
            layout, views = _attach_ring(sock, message)
        elif kind == "stop":
            return 0


def _attach_ring(sock: socket.socket, message: tuple):
    """Map the ring whose layout ``message`` gives; its memory comes as a descriptor."""
    from stoke.executors.ring import SharedBuffer, slot_views

    _, layout, nbytes, slots = message
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    ring_memory = SharedBuffer.attach(fds[0], nbytes)
    return layout, [slot_views(ring_memory.map, layout, s) for s in range(slots)]


if __name__ == "__main__":
    sys.exit(main())
