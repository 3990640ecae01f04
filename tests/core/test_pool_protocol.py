"""Every local executor fulfils the whole worker-pool protocol (stoke/executors/base.py):
what it can do, it does (a task to one given worker, resizing); what it cannot, it says in
a clear error. The tuned pool of pools (``AutoPool``, "auto") too, with real workers. The Ray
executor's side is in tests/ray/test_ray_executor.py."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import stoke
from stoke.autotune.target import TunerTarget
from stoke.data.program import SampleProgram
from stoke.data.sources import SequenceSource
from stoke.errors import SampleError, StokeError, WorkerHungError
from stoke.executors.auto import AutoPool
from stoke.executors.base import WorkerPool
from stoke.executors.chunk import Result, Task
from stoke.executors.inline import InlinePool
from stoke.executors.messages import ProgramUpdate
from stoke.executors.processes import ProcessPool
from stoke.executors.threads import ThreadPool
from stoke.executors.trainer_first import TrainerFirst

PROGRAM = SampleProgram(SequenceSource([np.float32(i) for i in range(16)]))
MEMBERS = [name for name in vars(WorkerPool) if not name.startswith("_")]


def make(kind: str, workers: int = 2):
    if kind == "auto":  # the tuner's pool: process workers first, threads if they cannot run
        return AutoPool(PROGRAM, ("process", "thread"), workers)
    if kind == "process":
        return ProcessPool(PROGRAM, workers)
    if kind == "thread":
        return ThreadPool(PROGRAM, workers)
    if kind == "trainer-first":  # to_keras' (executor="auto"): the caller until one is up
        return TrainerFirst(ProcessPool(PROGRAM, workers, wait=False), PROGRAM)
    return InlinePool(PROGRAM)


def result_of(pool, task_id: int, timeout_s: float = 60.0) -> Result:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = pool.next_result(0.1)
        if result is not None:
            assert result.task_id == task_id
            return result
    raise AssertionError(f"no result for task {task_id} in {timeout_s} s")


def probe(task_id: int, index: int) -> Task:
    return Task(task_id, "probe", 0, np.array([index], np.int64))


@pytest.mark.parametrize("kind", ["inline", "thread", "process", "auto", "trainer-first"])
def test_every_executor_has_every_protocol_member(kind):
    assert {"ready", "first_ready", "wait_ready", "resize", "submit", "broadcast", "worker_pids",
            "cpu_seconds", "busy_workers", "check_alive", "drop_queued", "close", "addressable",
            "shares_program"} <= set(MEMBERS)
    pool = make(kind)
    try:
        missing = [name for name in MEMBERS if not hasattr(pool, name)]
        assert not missing, f"{type(pool).__name__} lacks {missing}"
        pool.wait_ready(timeout_s=60)
        assert pool.ready() and pool.first_ready()
        assert pool.addressable is (kind == "process")  # auto: the tuner moves the workers
        assert pool.shares_program is (kind in ("inline", "thread"))  # auto: processes here
        pool.check_alive()
        assert pool.busy_workers() == []
        assert len(pool.worker_pids()) == (2 if kind in ("process", "auto", "trainer-first")
                                           else 0)
        pool.submit(probe(1, 5))
        assert result_of(pool, 1).probe[0] == 5
    finally:
        pool.close()


def test_a_task_goes_to_the_process_worker_it_is_given_to():
    pool = make("process", workers=2)
    try:
        for task_id, worker in enumerate([1, 0, 1, 1]):
            pool.submit(probe(task_id, task_id), worker=worker)
            assert result_of(pool, task_id).worker == f"worker process {worker}"
    finally:
        pool.close()


@pytest.mark.parametrize("kind", ["thread", "inline", "auto"])
def test_executors_that_cannot_address_one_worker_say_so(kind):
    pool = make(kind)
    try:
        with pytest.raises(StokeError, match="worker 1"):
            pool.submit(probe(0, 0), worker=1)
    finally:
        pool.close()


@pytest.mark.parametrize("kind", ["thread", "process", "auto", "trainer-first"])
def test_resize_grows_and_shrinks_without_losing_a_task(kind):
    pool = make(kind, workers=1)
    try:
        pool.resize(3)
        assert pool.workers == 3
        pool.wait_ready(timeout_s=60)
        for task_id in range(6):
            pool.submit(probe(task_id, task_id))
        pool.resize(1)
        assert pool.workers == 1
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while len(seen) < 6 and time.monotonic() < deadline:
            result = pool.next_result(0.1)
            if result is not None:
                assert result.error is None
                seen.add(result.task_id)
        assert seen == set(range(6))
        if kind in ("process", "auto"):
            deadline = time.monotonic() + 60  # a retired worker exits once it gets a CPU
            while len(pool.worker_pids()) > 1 and time.monotonic() < deadline:
                pool.next_result(0.05)  # retired workers are reaped here
            assert len(pool.worker_pids()) == 1
        with pytest.raises(ValueError, match="at least one worker"):
            pool.resize(0)
    finally:
        pool.close()


def test_the_inline_executor_cannot_be_resized():
    pool = make("inline")
    with pytest.raises(StokeError, match="one worker"):
        pool.resize(2)
    pool.resize(1)


class Scaled:
    """A program that takes updates (``apply``), as stoke.accelerate's programs do: its
    samples are ``index * factor``; an update sets the factor, or fails on purpose."""

    seed = 0
    steps = ()
    has_filter = False

    def __init__(self) -> None:
        self.source = list(range(16))
        self.factor = 1.0
        self.dtype_policy = PROGRAM.dtype_policy

    def run(self, index: int, epoch: int):
        return np.float32(index * self.factor)

    def apply(self, update: dict) -> None:
        if "fail" in update:
            raise KeyError(update["fail"])
        self.factor = update["factor"]


def sample(pool, task_id: int, index: int, worker: int | None = None) -> float:
    pool.submit(probe(task_id, index), worker=worker)
    return float(result_of(pool, task_id).probe[2][0])


@pytest.mark.parametrize("kind", ["inline", "thread", "process"])
def test_a_broadcast_update_reaches_every_worker_before_later_tasks(kind):
    program = Scaled()
    pool = {"process": lambda: ProcessPool(program, 2), "thread": lambda: ThreadPool(program, 2),
            "inline": lambda: InlinePool(program)}[kind]()
    try:
        assert sample(pool, 0, 3) == 3.0
        pool.broadcast(ProgramUpdate(1, {"factor": 10.0}, "the factor"))
        answer = result_of(pool, 1)
        assert answer.error is None
        workers = [0, 1] if kind == "process" else [None]
        for task_id, worker in enumerate(workers, start=2):
            assert sample(pool, task_id, 3, worker) == 30.0  # each worker applied it
    finally:
        pool.close()


def test_an_update_to_one_process_worker_changes_that_worker_only():
    pool = ProcessPool(Scaled(), 2)
    try:
        pool.submit(ProgramUpdate(0, {"factor": 2.0}, "the factor"), worker=1)
        assert result_of(pool, 0).error is None
        assert sample(pool, 1, 4, worker=0) == 4.0
        assert sample(pool, 2, 4, worker=1) == 8.0
        with pytest.raises(ValueError, match="broadcast"):
            pool.submit(ProgramUpdate(3, {"factor": 3.0}))  # to which worker?
    finally:
        pool.close()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_failed_update_comes_back_as_an_error_naming_the_message(kind):
    program = Scaled()
    pool = ProcessPool(program, 2) if kind == "process" else ThreadPool(program, 2)
    try:
        pool.broadcast(ProgramUpdate(0, {"fail": "boom"}, "the broken update"))
        answer = result_of(pool, 0)
        assert isinstance(answer.error, SampleError)
        assert "the broken update" in str(answer.error) and "boom" in str(answer.error)
        assert pool.next_result(0.5) is None  # one answer per broadcast, not one per worker
    finally:
        pool.close()


def test_message_kinds_are_distinct_and_an_update_is_plain_data():
    """The worker loop reads named kinds; an update is plain data (issue 17.2: no
    ``__reduce__`` that acts when the message is unpickled)."""
    import pickle

    from stoke.executors import messages

    kinds = [messages.INIT, messages.RING, messages.SLOT, messages.TASK, messages.UPDATE,
             messages.STOP, messages.READY, messages.INIT_ERROR, messages.RESULT]
    assert len(set(kinds)) == len(kinds)
    update = ProgramUpdate(7, {"factor": 2.0}, "the factor")
    assert pickle.loads(pickle.dumps(update)) == update


def hang_from_8(index):
    if index >= 8:
        time.sleep(600)  # asleep: no CPU, no result
    return np.float32(index)


def test_stuck_workers_of_the_default_autotuned_pool_are_reported_as_hung():
    """workers="auto", executor="auto" (an AutoPool) answers ``cpu_seconds`` as every pool
    does, so a hang is a WorkerHungError naming the stuck batch, not a TypeError from
    subtracting two dicts."""
    pipe = stoke.from_sequence(list(range(64))).map(hang_from_8).batch(4)
    with pytest.raises(WorkerHungError, match="seem stuck"):
        for _ in pipe.iter(workers="auto", executor="auto", timeout_s=3):
            pass


# -- AutoPool: the pool of pools the tuner switches -----------------------------------------


def test_an_autotuned_pool_started_in_the_background_waits_like_the_others():
    pool = AutoPool(PROGRAM, ("process", "thread"), 2, wait=False)
    try:
        pool.wait_ready(timeout_s=60, first=True)  # one worker up: the first batch can go
        pool.submit(probe(0, 3))
        assert result_of(pool, 0).probe[0] == 3
        pool.wait_ready(timeout_s=60)  # every worker
        assert pool.kind == "process" and pool.workers == 2
        assert pool.ready()  # the target setting runs alone
        assert len(pool.worker_pids()) == 2
    finally:
        pool.close()


def test_an_autotuned_pool_lists_the_worker_pids_of_every_pool_it_holds():
    """After a switch to threads the process pool lingers (finishing what it held) until
    the tuner releases it: its workers are still this process's children."""
    pool = make("auto", workers=1)
    try:
        pids = pool.worker_pids()
        assert len(pids) == 1
        pool.apply("thread", 2)
        pool.submit(probe(0, 4))
        assert result_of(pool, 0).worker.startswith("worker thread")
        assert pool.kind == "thread"
        assert pool.worker_pids() == pids  # the process pool is still held
        pool.release_idle()
        assert pool.worker_pids() == []
        pool.resize(1)  # the active kind: threads now
        assert (pool.kind, pool.workers) == ("thread", 1)
    finally:
        pool.close()


def test_an_autotuned_pool_cannot_send_program_updates_and_says_why():
    """Its tuner starts pools and workers that would load the program without the update:
    broadcast and updates to one worker are refused in words, not lost."""
    pool = make("auto")
    try:
        with pytest.raises(StokeError, match="the factor.*pools the tuner starts later"):
            pool.broadcast(ProgramUpdate(0, {"factor": 2.0}, "the factor"))
        with pytest.raises(StokeError, match="cannot give a task or an update"):
            pool.submit(ProgramUpdate(1, {"factor": 2.0}, "the factor"))
        pool.submit(probe(2, 5))  # still a working pool
        assert result_of(pool, 2).probe[0] == 5
    finally:
        pool.close()


@pytest.mark.parametrize("kind", ["inline", "thread", "process", "auto"])
def test_only_tasks_the_caller_would_run_are_dropped(kind):
    """drop_queued: the inline executor forgets the tasks it has not run (they would run in
    the caller); workers run what they were given, and it comes back."""
    pool = make(kind)
    try:
        pool.wait_ready(timeout_s=60)
        for task_id in range(3):
            pool.submit(probe(task_id, task_id))
        dropped = pool.drop_queued()
        if kind == "inline":
            assert dropped == [0, 1, 2]
            assert pool.next_result(0.1) is None
            return
        assert dropped == []
        seen = {result_of_any(pool).task_id for _ in range(3)}
        assert seen == {0, 1, 2}
    finally:
        pool.close()


def test_the_inline_executor_hands_over_what_it_has_not_run():
    """hand_over_queued: the tasks not run yet, in order, for another pool to run (the
    trainer's stand-in gives them to the workers once one is up); none runs here after."""
    pool = make("inline")
    assert not pool.has_queued() and pool.hand_over_queued() == []
    for task_id in (4, 2, 7):
        pool.submit(probe(task_id, task_id))
    assert pool.has_queued()
    assert [task.task_id for task in pool.hand_over_queued()] == [4, 2, 7]
    assert not pool.has_queued() and pool.next_result(0.1) is None
    pool.submit(probe(5, 5))
    assert pool.next_result(0.1).task_id == 5 and not pool.has_queued()


def result_of_any(pool, timeout_s: float = 60.0) -> Result:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = pool.next_result(0.1)
        if result is not None:
            return result
    raise AssertionError(f"no result in {timeout_s} s")


def test_the_pools_a_tuner_tunes_are_tuner_targets():
    from stoke.accelerate.tuned_workers import TunedWorkers

    pool = make("auto")
    try:
        assert isinstance(pool, TunerTarget)
        assert pool.kind == "process" and pool.trainer_pid == os.getpid()
    finally:
        pool.close()
    assert isinstance(TunedWorkers(loader=None, trainer_pid=os.getpid()), TunerTarget)


# -- first_ready: can one worker take tasks, without waiting -------------------------------


@pytest.fixture
def unloadable_program(tmp_path, monkeypatch):
    """A program whose map lives in a module the worker processes cannot import (it is
    on the trainer's sys.path only while the map is imported)."""
    import importlib
    import sys

    (tmp_path / "stoke_protocol_only_here.py").write_text(
        "def double(sample):\n    return sample * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("stoke_protocol_only_here")
    sys.path.remove(str(tmp_path))
    yield stoke.from_arrays(np.arange(8.0)).map(module.double).program
    sys.modules.pop("stoke_protocol_only_here", None)


def poll_first_ready(pool, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pool.first_ready():
        assert time.monotonic() < deadline, f"no worker up in {timeout_s} s"
        time.sleep(0.05)


def test_first_ready_turns_true_once_a_process_worker_is_up_without_a_wait():
    pool = ProcessPool(PROGRAM, 2, wait=False)
    try:
        poll_first_ready(pool)  # never waits: the answers come in between the calls
        pool.submit(probe(0, 6))
        assert result_of(pool, 0).probe[0] == 6
    finally:
        pool.close()


def test_first_ready_raises_the_start_up_error_of_a_process_worker(unloadable_program):
    pool = ProcessPool(unloadable_program, 1, wait=False)
    try:
        with pytest.raises(StokeError, match="could not load the pipeline"):
            poll_first_ready(pool)
    finally:
        pool.close()


def test_an_autotuned_pool_goes_on_with_threads_when_first_ready_finds_processes_failed(
        unloadable_program):
    pool = AutoPool(unloadable_program, ("process", "thread"), 2, wait=False)
    try:
        poll_first_ready(pool)
        assert (pool.kind, pool.workers) == ("thread", 2)
        assert "could not load the pipeline" in pool.unavailable["process"]
        assert pool.shares_program and pool.worker_pids() == []
        pool.submit(probe(0, 3))
        assert result_of(pool, 0).probe[0] == 3
    finally:
        pool.close()


def test_the_trainer_stands_in_for_workers_still_starting_and_says_what_it_cannot_take(tmp_path):
    from tests.core.helpers import GatedSamples

    x = np.arange(8, dtype=np.float32)
    program = SampleProgram(SequenceSource(GatedSamples(str(tmp_path / "gate"), x, x)))
    pool = TrainerFirst(ProcessPool(program, 1, wait=False), program)  # the gate stays shut
    try:
        pool.wait_ready(first=True)  # at once: the caller is the first worker
        assert pool.kind == "process" and len(pool.worker_pids()) == 1
        pool.submit(probe(0, 3))
        result = result_of(pool, 0)
        assert result.probe[0] == 3 and result.worker.startswith("the trainer")
        assert not pool.handed_over and pool.tasks_run_here == 1
        with pytest.raises(StokeError, match="program update"):
            pool.broadcast(ProgramUpdate(1, {"offset": 1}, "an offset"))
        with pytest.raises(StokeError, match="worker 0"):
            pool.submit(probe(2, 0), worker=0)
        pool.submit(probe(3, 4))
        assert pool.drop_queued() == [3]  # queued for the caller, not run
    finally:
        pool.close()
