"""The Ray executor: the per-sample program runs as Ray tasks on a cluster's CPUs.

Owns connecting to a cluster, shipping the sample program to it once, turning each
:class:`~stoke.executors.chunk.Task` into one Ray task, and copying what comes back into the
loader's ring. It leaves the epoch plan, the order of delivery, the ring and the device feed
to the loader: for the loader this is one more :class:`~stoke.executors.base.WorkerPool`
(``shared_ring=False``), like the thread executor.

How a chunk travels. The program (source + map/filter chain) is put in the object store once
(``ray.put``; cloudpickle, large numpy arrays zero-copy) and each worker process unpickles it
once and keeps it. A task gets the chunk's indices and the batch layout, runs exactly
:func:`~stoke.executors.chunk.run_task` (the code every executor runs) into a private slot
of its own, and returns that slot as one numpy array through the object store. The trainer
copies the kept rows into the ring slot the loader gave the task (one ``memcpy``) and frees
the object.

What is guaranteed, and why:

- **Same samples, same order, exactly once** as the local executors. The loader decides the
  plan and delivers strictly in plan order; results may come back in any order. Every task
  id has one ``ObjectRef``, so the trainer sees at most one result per task whatever Ray does
  underneath, and the loader takes one result per task id. Per-sample randomness depends on
  ``(seed, epoch, index, step)`` only, so a re-executed task returns the very same arrays.
- **A node that dies mid-epoch** loses nothing: tasks that were running on it are retried on
  other nodes (``max_retries``, for system failures only: an exception in the user's function
  is never retried, it is raised in the trainer with the sample index, as locally), and
  results that lived only in its object store are rebuilt from lineage when fetched. User
  functions may therefore run more than once for a sample (keep them free of side effects);
  the trainer still gets each sample once. When retries run out, the batch is named in a
  :class:`~stoke.errors.WorkerDiedError`.
- **Back-pressure**: at most one task per free ring slot (the loader's bound), and no more
  results in flight than fit in ``object_store_budget_bytes`` (default: half the object store
  of the trainer's node); further tasks wait in the trainer.
- **Nothing hangs**: each wait polls with the loader's timeout; if the cluster has no CPU at
  all, the stuck-workers error says so.

Why Ray Core tasks, not Ray Data (``from_items(chunks).map_batches(...)``): the loader hands
out work one chunk at a time as ring slots free up and needs each chunk's result by id; a
Ray Data dataset wants the whole epoch up front and runs its own streaming executor, whose
buffering and back-pressure would sit on top of the ring's (two budgets to tune, batches made
far ahead of the trainer), whose per-operator resource reservation must be switched off on
small clusters, and whose order must be forced (``preserve_order``) although the loader
already orders. Its fault tolerance is the one underneath, task retries and lineage, which
this module uses directly. Resuming mid-epoch (``it.state()``) and abandoned iterators work
unchanged, because the loader's plan stays the single source of truth.

Connecting, in order: the cluster this process already joined (``ray.init()`` in the user's
script); else ``ray_address=`` or the ``RAY_ADDRESS`` environment variable; else a local Ray
started for this pool (and shut down by :meth:`RayPool.close`), listening on 127.0.0.1 only,
with its session files in a private directory and its token file owner-only. A connection
this pool made is closed by it too. The cluster's nodes need stoke installed (same version), like any
library a Ray task imports.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
import traceback
from collections import OrderedDict, deque
from typing import Any

import numpy as np

from stoke.data.program import SampleProgram, seed_worker_globals
from stoke.errors import SampleError, StokeError, UnpicklableError, WorkerDiedError
from stoke.executors.chunk import Result, Task, run_task
from stoke.executors.messages import ProgramUpdate
from stoke.executors.ring import BatchRing, slot_views

log = logging.getLogger("stoke")

INSTALL_HINT = "pip install 'stoke[ray]'"
CONNECT_TIMEOUT_S = 5.0
DEFAULT_MAX_RETRIES = 3
_NO_CPU_CHECK_EVERY_S = 10.0
LOOPBACK = "127.0.0.1"
_local_temp_dir: str | None = None  # the session directory of a local Ray started here


class RayTaskLostError(WorkerDiedError):
    """Ray could not finish a batch: a worker or node died on every try (system failure)."""

    def __init__(self, message: str) -> None:
        StokeError.__init__(self, message)  # a plain message, unlike WorkerDiedError's
        self.worker = "a Ray worker"
        self.exitcode = None

    def __reduce__(self):
        return (RayTaskLostError, (str(self),))


# -- connecting --------------------------------------------------------------------------------
def import_ray():
    """The ``ray`` module, or a :class:`StokeError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise StokeError(
            f"executor=\"ray\" needs Ray, which cannot be imported here ({exc}). Install it "
            f"with: {INSTALL_HINT}   (or use a local executor: executor=\"process\")"
        ) from exc
    return ray


def connect(ray_address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to a Ray cluster; True if this call connected it
    (the caller then calls :func:`disconnect` when done), False if it already was."""
    ray = import_ray()
    if ray.is_initialized():
        if ray_address:
            _check_same_cluster(ray, ray_address)
        return False
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    origin = "ray_address" if ray_address else "the RAY_ADDRESS environment variable"
    if address is None:
        log.info("stoke: starting a local Ray (no ray_address, no RAY_ADDRESS)")
        _start_local_ray(ray, num_cpus)
        return True
    _check_reachable(address, origin)
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise StokeError(
            f"could not connect to the Ray cluster at {address!r} (from {origin}): "
            f"{type(exc).__name__}: {exc}. Check the address (`ray start --head` prints it, "
            "e.g. 10.0.0.5:6379) and that the head node is running, or leave ray_address and "
            "RAY_ADDRESS unset to start a local Ray."
        ) from exc
    return True


def _start_local_ray(ray, num_cpus: int | None) -> None:
    """A Ray for this machine only: its servers listen on 127.0.0.1, its session files lie
    in a private temporary directory (0700; removed by :func:`disconnect`), and its token
    file is readable by its owner only."""
    global _local_temp_dir
    _private_token_file()
    # where Ray would put it: socket paths under it must stay within 107 bytes
    temp_dir = tempfile.mkdtemp(prefix="stoke-ray-", dir=os.environ.get("RAY_TMPDIR") or
                                ("/tmp" if os.path.isdir("/tmp") else None))
    # Ray turns a loopback node address into this host's network address unless it thinks
    # clusters are off (as on macOS); that switch is read once, while the node starts.
    from ray._private import ray_constants

    cluster_switch = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        # Ray makes its own temp directory world-writable: it lives inside the private one
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 _node_ip_address=LOOPBACK, _temp_dir=os.path.join(temp_dir, "r"))
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_switch
    _local_temp_dir = temp_dir


def _private_token_file() -> None:
    """Ray's default token file (``~/.ray/auth_token``), which a new local Ray creates
    readable by everyone: create it first, owner-only, or make an existing one owner-only."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") \
            or os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    path = os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if os.stat(path).st_mode & 0o077 and os.stat(path).st_uid == os.getuid():
            log.info("stoke: %s was readable by other users; made it owner-only", path)
            os.chmod(path, 0o600)
        return
    with os.fdopen(fd, "w") as token_file:
        token_file.write(secrets.token_hex(32))  # as Ray makes one


def disconnect(ray) -> None:
    """Leave the cluster that :func:`connect` joined or started (a local one stops, and its
    session directory is removed)."""
    global _local_temp_dir
    ray.shutdown()
    temp_dir, _local_temp_dir = _local_temp_dir, None
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _split_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of "host:port" or "ray://host:port"; None for "auto", "local"..."""
    bare = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _check_reachable(address: str, origin: str) -> None:
    """Fail in seconds, not minutes: ``ray.init`` retries an unreachable address for long."""
    if address in ("auto", "local"):
        return
    parsed = _split_host_port(address)
    if parsed is None:
        raise StokeError(
            f"cannot read the Ray address {address!r} (from {origin}): give \"host:port\" of "
            "the head node (e.g. 10.0.0.5:6379), \"ray://host:10001\" for Ray Client, or "
            "\"auto\" for the cluster started on this machine."
        )
    try:
        with socket.create_connection(parsed, timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise StokeError(
            f"no Ray cluster answers at {address!r} (from {origin}): {exc}. Check the address "
            "(`ray start --head` prints it, e.g. 10.0.0.5:6379), that the head node is running "
            "and that this machine can reach it (firewall, port), or leave ray_address and "
            "RAY_ADDRESS unset to start a local Ray."
        ) from exc


def _check_same_cluster(ray, address: str) -> None:
    """Refuse an explicit address that is not the cluster this process joined. Compared by
    port only: one host has many names (127.0.0.1, its IP, its hostname)."""
    wanted = _split_host_port(address)
    joined = _split_host_port(ray.get_runtime_context().gcs_address or "")
    if wanted is None or joined is None or address.startswith("ray://"):
        return
    if wanted[1] != joined[1]:
        raise StokeError(
            f"this process is already connected to the Ray cluster at {joined[0]}:{joined[1]}, "
            f"but ray_address={address!r}. Leave out ray_address to use the connected cluster, "
            "or call ray.shutdown() first."
        )


def put_program(ray, program: SampleProgram):
    """``ray.put`` the program once; an :class:`UnpicklableError` names the culprit."""
    try:
        return ray.put(program)
    except Exception as exc:  # noqa: BLE001 - turned into advice
        from stoke.executors.payload import unpicklable_part

        culprit = unpicklable_part(program)
        raise UnpicklableError(
            f"{culprit} cannot be sent to the Ray cluster: {type(exc).__name__}: "
            f"{_first_line(exc)}. Ray tasks need serialisable functions and sources: define the "
            "function at module level and keep handles such as open files, locks or sessions "
            "out of it (open them lazily inside the function), or use a local executor "
            "(executor=\"thread\")."
        ) from exc


def _retries(count: int) -> str:
    return f"{count} {'retry' if count == 1 else 'retries'}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- what runs on the cluster ------------------------------------------------------------------
_PROGRAMS: OrderedDict[str, SampleProgram] = OrderedDict()  # per worker process: ref -> program
_PROGRAMS_KEPT = 2
_SEEDED: set[str] = set()  # programs this worker process seeded its global rngs for


def _program_of(program_ref) -> SampleProgram:
    """The program behind ``program_ref``, unpickled once per worker process. The first
    time, the process's global ``random`` and ``numpy.random`` are seeded as a process
    worker's are (after the user's modules were imported: one may seed them at the top),
    from the pipeline seed and this Ray worker's id, so that code drawing from them gets a
    different stream in each worker. Which worker runs which task is Ray's choice, so these
    draws differ from run to run; the per-sample ``rng`` of ``map`` never does."""
    key = program_ref.hex()
    program = _PROGRAMS.get(key)
    if program is None:
        import ray

        program = ray.get(program_ref)
        _PROGRAMS[key] = program
        while len(_PROGRAMS) > _PROGRAMS_KEPT:
            _PROGRAMS.popitem(last=False)
        if key not in _SEEDED:  # once: a program evicted and loaded again keeps its stream
            _SEEDED.add(key)
            seed_worker_globals(program.seed, int(ray.get_runtime_context().get_worker_id(), 16))
    else:
        _PROGRAMS.move_to_end(key)
    return program


_WORKER_NAME: list[str] = []  # per worker process, made once


def _worker_name() -> str:
    if not _WORKER_NAME:
        import ray

        node = ray.get_runtime_context().get_node_id()
        _WORKER_NAME.append(f"Ray worker pid {os.getpid()} on node {node[:8]}")
    return _WORKER_NAME[0]


def _run_chunk(program_box: list, task: Task, layout) -> tuple[Result, np.ndarray | None]:
    """One task on the cluster: the chunk's kept samples in a slot of our own, returned whole.

    ``program_box`` holds the program's ObjectRef inside a list, so that Ray hands the ref
    itself (not a fresh unpickled copy per task) and the worker can keep the program.
    """
    worker = _worker_name()
    try:
        program = _program_of(program_box[0])
        if task.kind == "probe" or layout is None:
            return run_task(program, task, None, None, worker), None
        memory = np.empty(layout.slot_bytes, dtype=np.uint8)
        result = run_task(program, task, layout, slot_views(memory, layout, 0), worker)
    except Exception as exc:  # noqa: BLE001 - must travel back picklable, with its traceback
        error = StokeError(
            f"{worker} failed on samples {_describe_indices(task.indices)} (epoch "
            f"{task.epoch}): {type(exc).__name__}: {exc}\n--- traceback in the worker ---\n"
            + "".join(traceback.format_exception(exc)).rstrip()
        )
        return Result(task.task_id, error=error, worker=worker), None
    error = result.error
    if isinstance(error, SampleError) and not error.worker:
        error = SampleError(error.index, error.stage, error.original_type,
                            error.original_message, error.worker_traceback, worker, error.sample)
        return Result(task.task_id, error=error, worker=worker), None
    if error is not None:
        return result, None
    return result, memory


def _describe_indices(indices: np.ndarray) -> str:
    head = [int(i) for i in indices[:4]]
    return f"{head}{'...' if len(indices) > 4 else ''}"


# -- the pool ----------------------------------------------------------------------------------
class RayPool:
    """Runs tasks as Ray tasks; results are copied into the trainer's (private) ring.

    ``workers``: tasks the loader should keep in flight, which sizes the ring (None: the
    cluster's CPUs when the pool starts). ``ray_address``: see the module docstring.
    ``max_retries``: tries after a worker or node died (system failures only).
    ``object_store_budget_bytes``: most bytes of results in flight (None: half the object
    store of this node). ``task_options``: more options for each Ray task
    (``RemoteFunction.options``), e.g. ``{"resources": {"preprocess": 1}}`` to run on the
    nodes that have that resource, ``{"num_cpus": 2}`` for a map that uses two cores, or a
    ``runtime_env``.

    >>> pool = RayPool(pipe.program, ray_address="10.0.0.5:6379")   # doctest: +SKIP
    """

    kind = "ray"
    shared_ring = False
    addressable = False  # Ray places each task on the cluster itself
    shares_program = False  # each task runs the program put in the object store

    def __init__(self, program: SampleProgram, workers: int | None = None,
                 ray_address: str | None = None, *, max_retries: int = DEFAULT_MAX_RETRIES,
                 object_store_budget_bytes: int | None = None,
                 task_options: dict[str, Any] | None = None) -> None:
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive int or None. Received: {workers!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0. Received: max_retries={max_retries}")
        fixed = {"num_returns", "max_retries", "retry_exceptions"} & set(task_options or {})
        if fixed:
            raise ValueError(
                f"task_options cannot set {', '.join(sorted(fixed))}: the Ray executor's "
                "guarantees depend on them (use max_retries=...). Received: "
                f"task_options={task_options!r}"
            )
        self._ray = ray = import_ray()
        self._closed = False
        self._owns_connection = False
        self._program_ref = None
        self._in_flight: dict[Any, Task] = {}  # ObjectRef -> task, in submission order
        self._queued: deque[Task] = deque()
        self._ready: deque[Result] = deque()
        self._ring: BatchRing | None = None
        self._max_in_flight: int | None = None
        self._budget_bytes = object_store_budget_bytes
        self._max_retries = max_retries
        self._last_cpu_check = time.monotonic()
        self._warned_no_cpu = False
        self._owns_connection = connect(ray_address, num_cpus=workers)
        try:
            self._program_ref = put_program(ray, program)
            cpus = int(ray.cluster_resources().get("CPU", 0))
            self.workers = workers or max(1, cpus)
            options = {"num_cpus": 1, **(task_options or {})}
            self._remote = ray.remote(max_retries=max_retries, retry_exceptions=False,
                                      **options)(_run_chunk)
        except BaseException:
            self.close()
            raise
        log.debug("stoke: Ray executor, %d tasks in flight, cluster CPUs %d", self.workers, cpus)

    # -- WorkerPool protocol -------------------------------------------------------------------
    def ready(self) -> bool:
        return True  # the cluster's workers load the program with their first task

    def first_ready(self) -> bool:
        return True  # the cluster's workers load the program with their first task

    def wait_ready(self, timeout_s: float | None = None, first: bool = False) -> None:
        pass  # nothing is started here: tasks wait for the cluster's CPUs

    def resize(self, workers: int) -> None:
        """Keep ``workers`` tasks in flight (the cluster decides where they run)."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1. Received: {workers}")
        self.workers = workers
        self._dispatch()

    def drop_queued(self) -> list[int]:
        return []  # queued tasks go to the cluster as others finish: they run

    def worker_pids(self) -> list[int]:
        return []  # Ray's worker processes are the cluster's, not this process's children

    def check_alive(self) -> None:
        pass  # a lost Ray task comes back as a RayTaskLostError result

    def replace_slot(self, slot: int) -> None:
        pass  # results are copied into ring.views(slot) in the trainer

    def set_ring(self, ring: BatchRing) -> None:
        self._ring = ring
        budget = self._budget_bytes
        if budget is None:
            budget = self._node_object_store_bytes() // 2
        self._max_in_flight = max(1, budget // max(1, ring.layout.slot_bytes))
        if self._max_in_flight < ring.slots:
            log.info("stoke: Ray results in flight limited to %d by the object store budget "
                     "(%d MiB)", self._max_in_flight, budget >> 20)

    def submit(self, task: Task | ProgramUpdate, worker: int | None = None) -> None:
        if worker is not None:
            raise StokeError(
                f"the Ray executor cannot give a task to worker {worker}: Ray places each "
                "task on the cluster itself. Use executor=\"process\" to address one worker.")
        if isinstance(task, ProgramUpdate):
            self.broadcast(task)  # says why it cannot
        self._check_open()
        self._queued.append(task)
        self._dispatch()

    def broadcast(self, update: ProgramUpdate) -> None:
        raise StokeError(
            f"the Ray executor cannot send {update.what} to its workers: each Ray task runs "
            "the program as it was put in the object store when the pool started. Make a new "
            "loader after changing the pipeline, or use executor=\"process\".")

    def next_result(self, timeout_s: float) -> Result | None:
        self._check_open()
        if self._ready:
            return self._ready.popleft()
        if not self._in_flight:
            self._dispatch()
        if not self._in_flight:
            time.sleep(timeout_s)  # nothing submitted: nothing can arrive
            return None
        ray = self._ray
        try:
            done, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=timeout_s)
        except ray.exceptions.RayError as exc:
            raise StokeError(f"Ray failed while waiting for batches: {exc}") from exc
        if not done:
            self._watch_cluster()
            return None
        for ref in done:
            task = self._in_flight.pop(ref)
            self._ready.append(self._collect(ref, task))
        self._dispatch()
        return self._ready.popleft()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        in_flight, self._in_flight = list(self._in_flight), {}
        self._queued.clear()
        self._ready.clear()
        self._ring = None
        self._program_ref = None
        if not ray.is_initialized():  # Ray's own exit hook ran first
            return
        for ref in in_flight:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - finished or gone already: nothing to stop
                pass
        if self._owns_connection:
            disconnect(ray)

    def cpu_seconds(self) -> float | None:
        return None  # the tasks' CPU is on the cluster: stuck is judged by time alone

    def busy_workers(self) -> list[str]:
        """What is in flight, for the loader's stuck-workers error."""
        busy = [f"Ray task on samples {_describe_indices(t.indices)} (epoch {t.epoch})"
                for t in self._in_flight.values()]
        try:
            cpus = self._ray.cluster_resources().get("CPU", 0)
        except Exception:  # noqa: BLE001
            return busy
        busy.append(f"the cluster has {cpus:g} CPUs now (see `ray status`)")
        return busy

    # -- internals ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StokeError("this Ray executor is closed; make a new loader.")

    def _dispatch(self) -> None:
        limit = self._max_in_flight or self.workers
        while self._queued and len(self._in_flight) < limit:
            task = self._queued.popleft()
            layout = self._ring.layout if (self._ring is not None and task.slot >= 0) else None
            ref = self._remote.remote([self._program_ref], task, layout)
            self._in_flight[ref] = task

    def _collect(self, ref, task: Task) -> Result:
        """The task's result, its rows copied into its ring slot; Ray errors become ours."""
        ray = self._ray
        try:
            result, memory = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # our task code itself raised
            return Result(task.task_id, error=StokeError(
                f"a Ray task failed on samples {_describe_indices(task.indices)} (epoch "
                f"{task.epoch}): {exc}"))
        except ray.exceptions.RayError as exc:  # system failure, retries exhausted
            return Result(task.task_id, error=RayTaskLostError(
                f"Ray lost the batch of samples {_describe_indices(task.indices)} (epoch "
                f"{task.epoch}) after {_retries(self._max_retries)}: {type(exc).__name__}: "
                f"{_first_line(exc).rstrip('.')}. A worker or node died each time it ran it: check the "
                "nodes' memory (out-of-memory kills) and `ray status`, or allow more "
                "max_retries."))
        if memory is not None and self._ring is not None and task.slot >= 0:
            rows = result.rows
            received = slot_views(memory, self._ring.layout, 0)
            for target, source in zip(self._ring.views(task.slot), received, strict=True):
                target[:rows] = source[:rows]
        return result

    def _node_object_store_bytes(self) -> int:
        ray = self._ray
        here = ray.get_runtime_context().get_node_id()
        for node in ray.nodes():
            if node.get("NodeID") == here and node.get("Alive"):
                return int(node.get("Resources", {}).get("object_store_memory", 0)) or 1 << 30
        return 1 << 30

    def _watch_cluster(self) -> None:
        now = time.monotonic()
        if self._warned_no_cpu or now - self._last_cpu_check < _NO_CPU_CHECK_EVERY_S:
            return
        self._last_cpu_check = now
        if self._ray.cluster_resources().get("CPU", 0) <= 0:
            self._warned_no_cpu = True
            log.warning("stoke: the Ray cluster has no CPU now; batches wait until a node "
                        "with CPUs joins (see `ray status`).")
