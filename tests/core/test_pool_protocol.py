"""Every local executor fulfils the whole worker-pool protocol (stoke/executors/base.py):
what it can do, it does (a task to one given worker, resizing); what it cannot, it says in
a clear error. The Ray executor's side is in tests/ray/test_ray_executor.py."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stoke.data.program import SampleProgram
from stoke.data.sources import SequenceSource
from stoke.errors import StokeError
from stoke.executors.base import WorkerPool
from stoke.executors.chunk import Result, Task
from stoke.executors.inline import InlinePool
from stoke.executors.processes import ProcessPool
from stoke.executors.threads import ThreadPool

PROGRAM = SampleProgram(SequenceSource([np.float32(i) for i in range(16)]))
MEMBERS = [name for name in vars(WorkerPool) if not name.startswith("_")]


def make(kind: str, workers: int = 2):
    if kind == "process":
        return ProcessPool(PROGRAM, workers)
    if kind == "thread":
        return ThreadPool(PROGRAM, workers)
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


@pytest.mark.parametrize("kind", ["inline", "thread", "process"])
def test_every_executor_has_every_protocol_member(kind):
    assert {"ready", "wait_ready", "resize", "submit", "worker_pids", "cpu_seconds",
            "busy_workers", "check_alive", "close"} <= set(MEMBERS)
    pool = make(kind)
    try:
        missing = [name for name in MEMBERS if not hasattr(pool, name)]
        assert not missing, f"{type(pool).__name__} lacks {missing}"
        pool.wait_ready(timeout_s=60)
        assert pool.ready()
        pool.check_alive()
        assert pool.busy_workers() == []
        assert len(pool.worker_pids()) == (2 if kind == "process" else 0)
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


@pytest.mark.parametrize("kind", ["thread", "inline"])
def test_executors_that_cannot_address_one_worker_say_so(kind):
    pool = make(kind)
    try:
        with pytest.raises(StokeError, match="worker 1"):
            pool.submit(probe(0, 0), worker=1)
    finally:
        pool.close()


@pytest.mark.parametrize("kind", ["thread", "process"])
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
        if kind == "process":
            deadline = time.monotonic() + 10
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
