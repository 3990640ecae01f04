"""The process executor: persistent worker processes writing into a shared-memory ring.

Workers are plain ``python -m stoke.executors.worker`` children (not ``multiprocessing``
processes): they never re-import the user's script, so an unguarded ``train.py`` is safe, and
they start with BLAS/OpenMP limited to one thread each. Each has a Unix socket to the
trainer: small messages (tasks, results) go as pickles, the ring's memory goes as a file
descriptor. A worker that dies closes its socket, which the trainer notices at once and
reports with the exit code and the batch it held.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque
from multiprocessing.connection import Connection, wait

import stoke
from stoke.errors import StokeError, WorkerDiedError
from stoke.executors.chunk import Result, Task
from stoke.executors.payload import PackedProgram, pack
from stoke.executors.ring import BatchRing
from stoke.program import SampleProgram

ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


class _Worker:
    def __init__(self, index: int, packed: PackedProgram) -> None:
        self.name = f"worker process {index}"
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        for key, value in ONE_THREAD_ENV.items():
            env.setdefault(key, value)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(stoke.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        child_fd = child_sock.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stoke.executors.worker", str(child_fd), str(os.getpid()),
             self.name],
            pass_fds=(child_fd,), env=env, stdin=subprocess.DEVNULL,
        )
        child_sock.close()
        self.sock = parent_sock
        self.conn = Connection(os.dup(parent_sock.fileno()))
        self.outstanding: dict[int, Task] = {}
        self.conn.send(("init", [p for p in sys.path if p], packed.data, packed.spans))
        if packed.buffer is not None:
            socket.send_fds(self.sock, [b"F"], [packed.buffer.fd])

    def send_fd(self, fd: int) -> None:
        socket.send_fds(self.sock, [b"F"], [fd])

    def died(self) -> WorkerDiedError:
        try:
            code = self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        held = ", ".join(
            f"batch of samples {list(t.indices[:4])}{'...' if len(t.indices) > 4 else ''} "
            f"(epoch {t.epoch})" for t in self.outstanding.values()
        ) or "no batch"
        return WorkerDiedError(self.name, code, held)

    def close_handles(self) -> None:
        for handle in (self.conn, self.sock):
            try:
                handle.close()
            except OSError:
                pass


class ProcessPool:
    kind = "process"
    shared_ring = True

    def __init__(self, program: SampleProgram, workers: int, start_timeout_s: float = 120.0):
        self.workers = workers
        self.packed = pack(program)
        self._workers: list[_Worker] = []
        self._ready: deque[Result] = deque()
        self._closed = False
        try:
            self._workers = [_Worker(i, self.packed) for i in range(workers)]
            self._wait_ready(start_timeout_s)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        waiting = {w.conn: w for w in self._workers}
        deadline = time.monotonic() + timeout_s
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StokeError(
                    f"{len(waiting)} worker process(es) did not start within {timeout_s:.0f} s. "
                    "Is the machine overloaded, or does unpickling the source do heavy work?"
                )
            for conn in wait(list(waiting), timeout=min(left, 1.0)):
                worker = waiting.pop(conn)
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    raise worker.died() from None
                if message[0] == "init-error":
                    raise StokeError(
                        f"{worker.name} could not load the pipeline:\n{message[1]}"
                        "If a function lives in a module, that module must be importable from "
                        "the worker (same sys.path); or use executor=\"thread\"."
                    )

    def set_ring(self, ring: BatchRing) -> None:
        assert ring.buffer is not None
        for worker in self._workers:
            worker.conn.send(("ring", ring.layout, ring.nbytes, ring.slots))
            worker.send_fd(ring.buffer.fd)

    def submit(self, task: Task) -> None:
        worker = min(self._workers, key=lambda w: len(w.outstanding))
        worker.outstanding[task.task_id] = task
        try:
            worker.conn.send(("task", task))
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise worker.died() from None

    def next_result(self, timeout_s: float) -> Result | None:
        if self._ready:
            return self._ready.popleft()
        by_conn = {w.conn: w for w in self._workers}
        ready = wait(list(by_conn), timeout=timeout_s)
        for conn in ready:
            worker = by_conn[conn]
            try:
                message = conn.recv()
            except (EOFError, OSError):
                raise worker.died() from None
            result: Result = message[1]
            worker.outstanding.pop(result.task_id, None)
            self._ready.append(result)
        if not ready:
            self.check_alive()
        return self._ready.popleft() if self._ready else None

    def check_alive(self) -> None:
        for worker in self._workers:
            if worker.process.poll() is not None:
                raise worker.died()

    def busy_workers(self) -> list[str]:
        return [
            f"{w.name} (pid {w.process.pid}) on samples {list(t.indices[:4])}"
            for w in self._workers for t in w.outstanding.values()
        ]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            try:
                worker.conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for worker in self._workers:
            try:
                worker.process.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
        for worker in self._workers:
            try:
                worker.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                pass
            worker.close_handles()
        self.packed.close()
