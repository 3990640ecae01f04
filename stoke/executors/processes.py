"""The process executor: persistent worker processes writing into a shared-memory ring.

Workers are plain ``python -P -m stoke.executors.worker`` children (not ``multiprocessing``
processes): they never re-import the user's script, so an unguarded ``train.py`` is safe;
they import from the trainer's ``sys.path``, never from its current directory first; and
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
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from stoke.data.program import SampleProgram
from stoke.errors import StokeError, WorkerDiedError
from stoke.executors.chunk import Result, Task
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
    ProgramUpdate,
)
from stoke.executors.payload import PackedProgram, dumps, pack
from stoke.executors.ring import BatchRing

# the folder that holds the ``stoke`` package (stoke/executors/processes.py -> ../../..)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


# ``-P`` (Python >= 3.11): the worker's cwd is not put first on sys.path, so a module or a
# stale stoke checkout in the trainer's current directory cannot shadow stoke, numpy or the
# user's modules. On 3.10 the same is done by hand before the worker module is run.
WORKER_COMMAND = (
    [sys.executable, "-P", "-m", "stoke.executors.worker"] if sys.version_info >= (3, 11)
    else [sys.executable, "-c", "import runpy, sys; del sys.path[0]; "
          "runpy.run_module('stoke.executors.worker', run_name='__main__')"]
)


NEW_PROCESS_GROUP = ({"process_group": 0} if sys.version_info >= (3, 11)
                     else {"start_new_session": True})


def _pickled_update(task: Task | ProgramUpdate) -> bytes | None:
    """An update's content, pickled for the workers (cloudpickle: it may hold functions of
    the user's script, which keep their file name); None for a task."""
    if not isinstance(task, ProgramUpdate):
        return None
    return dumps(task.update)


def trainer_import_path() -> list[str]:
    """The trainer's ``sys.path`` for the workers: they import the user's modules from where
    the trainer does. An empty entry (a notebook, ``python -c``) means the current directory
    for the trainer, so the workers get that directory by name."""
    return [os.getcwd() if entry == "" else entry for entry in sys.path]


class _Worker:
    """One worker process and its socket. Its start-up message (the pickled program, maybe
    megabytes) is sent by a helper thread that runs ``send_init(worker)``, so that starting
    many workers, or adding one to a running pool, never blocks the trainer while a child
    boots. ``load_slot``: the lock file it holds while it loads the program."""

    def __init__(self, index: int, load_slot: str,
                 send_init: Callable[[_Worker], None]) -> None:
        self.name = f"worker process {index}"
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        for key, value in ONE_THREAD_ENV.items():
            env.setdefault(key, value)
        env["STOKE_LOAD_SLOT"] = load_slot
        package_root = PACKAGE_ROOT
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        child_fd = child_sock.fileno()
        self.process = subprocess.Popen(
            [*WORKER_COMMAND, str(child_fd), str(os.getpid()), self.name, str(index)],
            pass_fds=(child_fd,), env=env, stdin=subprocess.DEVNULL,
            # a process group of its own: a Ctrl-C at the terminal reaches the trainer only,
            # not a worker still importing (which would print a traceback of its own)
            **NEW_PROCESS_GROUP,
        )
        child_sock.close()
        self.sock = parent_sock
        self.conn = Connection(os.dup(parent_sock.fileno()))
        self.outstanding: dict[int, Task] = {}
        self.ready = False  # said "ready": the program is loaded
        self.init_done = False  # the start-up thread sent everything it had to send
        self.retiring = False  # takes no new task; stopped once its tasks are done
        self.stopped = False  # asked to stop
        self.starter = threading.Thread(target=send_init, args=(self,),
                                        name=f"stoke-start-{index}", daemon=True)
        self.starter.start()

    @property
    def available(self) -> bool:
        return self.ready and self.init_done and not self.retiring

    def send_fd(self, fd: int) -> None:
        socket.send_fds(self.sock, [b"F"], [fd])

    def send_ring(self, ring: BatchRing) -> None:
        """The layout, then one fd per slot (at most 200 in one message: the kernel's
        limit is 253)."""
        self.conn.send((RING, ring.layout, ring.slot_bytes, ring.slots))
        fds = [ring.fd(slot) for slot in range(ring.slots)]
        for start in range(0, len(fds), 200):
            socket.send_fds(self.sock, [b"F"], fds[start:start + 200])

    def send_slot(self, ring: BatchRing, slot: int) -> None:
        self.conn.send((SLOT, slot, ring.slot_bytes))
        self.send_fd(ring.fd(slot))

    def stop(self) -> None:
        """Ask the worker to exit (or kill it, if it is still being started)."""
        self.stopped = True
        if not self.init_done:
            self.process.kill()
            return
        try:
            self.conn.send((STOP,))
        except OSError:
            pass

    def died(self) -> StokeError:
        """The error that says this worker is gone: its own start-up error if it sent one,
        else its exit code and the batch it held."""
        try:
            if self.conn.poll(0):
                message = self.conn.recv()
                if message[0] == INIT_ERROR:
                    return _init_error(self, message[1])
        except (EOFError, OSError):
            pass
        try:
            code = self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        held = ", ".join(_held(t) for t in self.outstanding.values()) or "no batch"
        return WorkerDiedError(self.name, code, held)

    def close_handles(self) -> None:
        for handle in (self.conn, self.sock):
            try:
                handle.close()
            except OSError:
                pass


def _held(task: Task | ProgramUpdate) -> str:
    """What a worker holds, in words: a batch's samples, or the update it is applying."""
    if isinstance(task, ProgramUpdate):
        return f"{task.what} (a message to the program)"
    more = "..." if len(task.indices) > 4 else ""
    return f"batch of samples {task.indices[:4].tolist()}{more} (epoch {task.epoch})"


@dataclass
class _Answers:
    """The answers still awaited to one broadcast update (from these workers), and whether
    its result was reported (at the first failure, or once every worker applied it)."""

    waiting: set[_Worker]
    reported: bool = False


def _init_error(worker: _Worker, trace: str) -> StokeError:
    return StokeError(
        f"{worker.name} could not load the pipeline:\n{trace}"
        "If a function lives in a module, that module must be importable from "
        "the worker (same sys.path); or use executor=\"thread\"."
    )


class ProcessPool:
    """``workers`` persistent worker processes. ``packed``: the program already packed
    (the caller then owns it and closes it). ``wait``: block until every worker has loaded
    the program (else they come up in the background, and tasks go to ready ones only).
    :meth:`resize` resizes a running pool; a removed worker finishes the tasks it holds
    before it is stopped, so no task is lost or run twice. Follows
    :class:`~stoke.executors.base.WorkerPool`."""

    kind = "process"
    shared_ring = True
    addressable = True  # each worker has its own socket: submit(..., worker=k)
    shares_program = False  # each worker unpickled its own copy

    def __init__(self, program: SampleProgram, workers: int, start_timeout_s: float = 120.0,
                 *, packed: PackedProgram | None = None, wait: bool = True) -> None:
        self._owns_packed = packed is None
        self.packed = pack(program) if packed is None else packed
        self.start_timeout_s = start_timeout_s
        self._workers: list[_Worker] = []  # live: take tasks (once ready)
        self._retiring: list[_Worker] = []  # removed: finishing their tasks, then stopped
        self._ready: deque[Result] = deque()
        self._broadcasts: dict[int, _Answers] = {}  # task id of an update sent to all
        self._send_lock = threading.Lock()
        self._ring: BatchRing | None = None
        self._next_index = 0
        self._started_at = time.monotonic()
        self._closed = False
        # start-up slots: at most (cores - 1) workers load the program at once (see
        # worker._take_load_slot); the trainer keeps a core for its own set-up meanwhile.
        # Each slot is an unnamed file (nothing on disk to clean up) that a worker opens
        # anew through /proc, so that its lock is its own.
        from stoke.executors.host import available_cores

        self._slot_fds: list[int] = []
        try:
            for _ in range(max(1, available_cores() - 1)):
                self._slot_fds.append(os.open(tempfile.gettempdir(),
                                              os.O_TMPFILE | os.O_RDWR, 0o600))
        except (AttributeError, OSError):  # no O_TMPFILE here: workers load at once
            self._close_slots()
        try:
            self._add_workers(workers)
            if wait:
                self._wait_ready(start_timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        return len(self._workers)

    def load_slot(self, index: int) -> str:
        """The lock file worker ``index`` holds while it loads the program ("": none)."""
        if not self._slot_fds:
            return ""
        return f"/proc/{os.getpid()}/fd/{self._slot_fds[index % len(self._slot_fds)]}"

    def _close_slots(self) -> None:
        fds, self._slot_fds = self._slot_fds, []
        for fd in fds:
            os.close(fd)

    # -- starting and resizing ----------------------------------------------------------
    def resize(self, workers: int) -> None:
        """Run ``workers`` workers: new ones take tasks once they have loaded the program;
        those taken out (still starting first, then the least busy) finish their tasks."""
        if workers < 1:
            raise ValueError(f"a process pool needs at least one worker. Received: {workers}")
        if workers > len(self._workers):
            self._add_workers(workers - len(self._workers))
        elif workers < len(self._workers):
            self._remove_workers(len(self._workers) - workers)

    def _add_workers(self, count: int) -> None:
        """Start ``count`` more workers; they take tasks once they have loaded the program."""
        for _ in range(count):
            index = self._next_index
            self._workers.append(_Worker(index, self.load_slot(index), self._send_init))
            self._next_index += 1
        self._started_at = time.monotonic()

    def _remove_workers(self, count: int) -> None:
        """Take ``count`` workers out: those still starting first, then the least busy. Each
        finishes the tasks it holds (their results come as usual), then is stopped."""
        count = min(count, len(self._workers) - 1)
        for _ in range(max(0, count)):
            worker = min(self._workers, key=lambda w: (w.ready, len(w.outstanding)))
            self._workers.remove(worker)
            worker.retiring = True
            self._retiring.append(worker)
            if not worker.outstanding:
                worker.stop()
        self._reap()

    def ready(self) -> bool:
        """Has every live worker loaded the program?"""
        return all(w.ready and w.init_done for w in self._workers)

    def first_ready(self) -> bool:
        """Without waiting: has one worker loaded the program (and got its start-up)? Reads
        the start-up answers that already came; a start-up error raises, as in
        :meth:`wait_ready`."""
        starting = {w.conn: w for w in self._workers if not w.ready}
        for conn in wait(list(starting), timeout=0):
            self._receive(starting[conn])
        return any(w.ready and w.init_done for w in self._workers)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in (*self._workers, *self._retiring) if not w.stopped]

    def _send_init(self, worker: _Worker) -> None:
        """Runs in the worker's start-up thread: the program, then the ring if there is one.
        The trainer sends nothing else to this worker until ``init_done``."""
        packed = self.packed
        try:
            worker.conn.send((INIT, trainer_import_path(), packed.data, packed.spans))
            if packed.buffer is not None:
                worker.send_fd(packed.buffer.fd)
            with self._send_lock:
                if self._ring is not None:
                    worker.send_ring(self._ring)
                worker.init_done = True
        except Exception:  # noqa: BLE001 - a worker that died early: reported by check_alive
            pass

    def wait_ready(self, timeout_s: float | None = None, first: bool = False) -> None:
        """Block until every worker (``first``: one worker) has loaded the program, for a
        pool started with ``wait=False``; raises what a waited start would have. With
        ``first``, the others keep loading and take tasks once they are up."""
        self._wait_ready(self.start_timeout_s if timeout_s is None else timeout_s, first)

    def _wait_ready(self, timeout_s: float, first: bool = False) -> None:
        deadline = time.monotonic() + timeout_s

        def done() -> bool:
            if first:
                return any(w.ready and w.init_done for w in self._workers)
            return self.ready()

        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = [w for w in self._workers if not w.ready]
                raise StokeError(
                    f"{len(waiting)} worker process(es) did not start within {timeout_s:.0f} s. "
                    "Is the machine overloaded, or does unpickling the source do heavy work?"
                )
            starting = {w.conn: w for w in self._workers if not w.ready}
            for conn in wait(list(starting), timeout=min(left, 0.1)):
                self._receive(starting[conn])
            for worker in self._workers:  # said ready; the start-up thread is finishing
                if worker.ready and not worker.init_done:
                    worker.starter.join(timeout=min(max(left, 0.01), 1.0))
            self.check_alive()

    def _receive(self, worker: _Worker) -> None:
        """Read one message from ``worker``: a result (queued), or its start-up answer."""
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            raise worker.died() from None
        kind = message[0]
        if kind == RESULT:
            result: Result = message[1]
            worker.outstanding.pop(result.task_id, None)
            answers = self._broadcasts.get(result.task_id)
            if answers is None:
                self._ready.append(result)
            else:
                self._answered(answers, worker, result)
            if worker.retiring and not worker.outstanding and not worker.stopped:
                worker.stop()
        elif kind == READY:
            worker.ready = True
        elif kind == INIT_ERROR:
            raise _init_error(worker, message[1])

    def _answered(self, answers: _Answers, worker: _Worker, result: Result) -> None:
        """``worker`` answered a broadcast update: its result is the broadcast's when it
        failed (the first failure, at once) or when it was the last answer awaited."""
        answers.waiting.discard(worker)
        if not answers.reported and (result.error is not None or not answers.waiting):
            answers.reported = True
            self._ready.append(result)
        if not answers.waiting:
            del self._broadcasts[result.task_id]

    # -- the WorkerPool protocol --------------------------------------------------------
    def set_ring(self, ring: BatchRing) -> None:
        assert ring.shared
        with self._send_lock:
            self._ring = ring
            for worker in (*self._workers, *self._retiring):
                if worker.init_done and not worker.stopped:
                    worker.send_ring(ring)

    def replace_slot(self, slot: int) -> None:
        """Send every started worker the slot's new memory (before any task that uses
        it); workers still starting get the whole ring as it is now."""
        with self._send_lock:
            for worker in (*self._workers, *self._retiring):
                if worker.init_done and not worker.stopped:
                    try:
                        worker.send_slot(self._ring, slot)
                    except (BrokenPipeError, ConnectionResetError, OSError):
                        raise worker.died() from None

    def submit(self, task: Task | ProgramUpdate, worker: int | None = None) -> None:
        if worker is not None:
            self._send(self._workers[worker], task, _pickled_update(task))
            return
        if isinstance(task, ProgramUpdate):
            raise ValueError("an update goes to every worker (pool.broadcast(update)) or to "
                             "one given worker (pool.submit(update, worker=k))")
        candidates = [w for w in self._workers if w.available]
        if not candidates:
            # none has loaded the program yet: queue behind the start-up of any of them
            for worker in self._workers:
                worker.starter.join(timeout=self.start_timeout_s)
            candidates = [w for w in self._workers if w.init_done] or self._workers
        self._send(min(candidates, key=lambda w: len(w.outstanding)), task)

    def broadcast(self, update: ProgramUpdate) -> None:
        """Every live worker applies ``update`` before the tasks sent to it later (one
        still loading the program, before its first task); one result for
        ``update.task_id`` comes once all did, or at the first failure. Workers added
        later do not get it: the sender replays what they need."""
        payload = _pickled_update(update)
        self._broadcasts[update.task_id] = _Answers(set(self._workers))
        for worker in list(self._workers):
            self._send(worker, update, payload)

    def _send(self, worker: _Worker, task: Task | ProgramUpdate,
              payload: bytes | None = None) -> None:
        """Send ``task`` (an update: its ``payload``) to ``worker`` (after its start-up
        messages), accounted to it so that its death names the task."""
        if not worker.init_done:
            worker.starter.join(timeout=self.start_timeout_s)  # the program first
        worker.outstanding[task.task_id] = task
        if isinstance(task, ProgramUpdate):
            message = (UPDATE, task.task_id, payload, task.what)
        else:
            message = (TASK, task)
        try:
            worker.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise worker.died() from None

    def next_result(self, timeout_s: float) -> Result | None:
        if self._ready:
            return self._ready.popleft()
        by_conn = {w.conn: w for w in (*self._workers, *self._retiring) if not w.stopped}
        ready = wait(list(by_conn), timeout=timeout_s) if by_conn else []
        for conn in ready:
            self._receive(by_conn[conn])
        if not ready:
            self.check_alive()
        self._reap()
        return self._ready.popleft() if self._ready else None

    def drop_queued(self) -> list[int]:
        return []  # every task was sent to a worker process, which runs it

    def check_alive(self) -> None:
        for worker in (*self._workers, *self._retiring):
            if not worker.stopped and worker.process.poll() is not None:
                raise worker.died()
        if not all(w.ready for w in self._workers):
            waited = time.monotonic() - self._started_at
            if waited > self.start_timeout_s:
                raise StokeError(
                    f"worker process(es) did not start within {self.start_timeout_s:.0f} s. "
                    "Is the machine overloaded, or does unpickling the source do heavy work?"
                )

    def _reap(self) -> None:
        """Forget retired workers that have exited."""
        for worker in list(self._retiring):
            if worker.stopped and worker.process.poll() is not None:
                worker.starter.join(timeout=1.0)
                worker.close_handles()
                self._retiring.remove(worker)

    def cpu_seconds(self) -> float | None:
        import psutil

        total = 0.0
        for worker in (*self._workers, *self._retiring):
            try:
                times = psutil.Process(worker.process.pid).cpu_times()
            except psutil.Error:  # exited: its death is reported by check_alive
                continue
            total += times.user + times.system
        return total

    def busy_workers(self) -> list[str]:
        return [
            f"{w.name} (pid {w.process.pid}) on " + (
                t.what if isinstance(t, ProgramUpdate) else f"samples {t.indices[:4].tolist()}")
            for w in (*self._workers, *self._retiring) for t in w.outstanding.values()
        ]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        everyone = [*self._workers, *self._retiring]
        for worker in everyone:
            if not worker.stopped:
                worker.stop()
        deadline = time.monotonic() + 2.0
        for worker in everyone:
            try:
                worker.process.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
        for worker in everyone:
            try:
                worker.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                pass
            worker.starter.join(timeout=5.0)
            worker.close_handles()
        self._workers, self._retiring = [], []
        self._close_slots()
        if self._owns_packed:
            self.packed.close()
