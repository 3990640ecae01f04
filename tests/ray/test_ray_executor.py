"""The Ray executor against a real Ray cluster on this machine (no mocks).

The cluster (``ray.cluster_utils.Cluster``) has a head node with no CPU and two worker nodes
with one CPU each, so every chunk runs on a worker node and its result crosses nodes through
the object store. The same batches as the inline executor, exactly once, also when a worker
node is killed mid-epoch. Object stores are kept small: the machine is shared.

Until the loader knows ``executor="ray"``, the tests put a :class:`RayPool` into a loader
directly (``loader.scheduler.resources.pool``), which is what ``make_pool`` will do.
"""

from __future__ import annotations

import collections
import functools
import os
import random
import socket
import sys
import threading
import time
import warnings

import numpy as np
import psutil
import pytest

import stoke
from stoke.errors import SampleError, StokeError, UnpicklableError, WorkerDiedError

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from stoke.executors.ray import RayPool, connect  # noqa: E402

# This file is not importable on the Ray workers (pytest imports it by file path): its
# functions travel by value, as a user's __main__ functions do.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

OBJECT_STORE_BYTES = 200 * 2**20
WAIT_S = 60.0
# Notice a killed node in ~5 s instead of Ray's default ~15 s (the node-death test waits on it).
FAST_NODE_DEATH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}


# -- per-sample functions ------------------------------------------------------------------------
def augment(sample, rng):
    x, y = sample
    return (x * rng.uniform(0.5, 1.5) + rng.standard_normal(x.shape).astype(np.float32), y)


def keep_not_multiple_of_3(sample):
    return int(sample[1]) % 3 != 0


def as_dict(sample):
    x, y = sample
    return {"image": x.astype(np.float64), "label": y}


def tag_node(sample):
    """The sample's label and the Ray node that made it (to see work cross nodes)."""
    x, y = sample
    node = ray.get_runtime_context().get_node_id()
    return y, np.int64(int(node[:12], 16))


def slow(sample):
    time.sleep(0.004)
    return sample


def record_run(sample, path):
    """Append the sample's label to ``path`` each time it is made (all nodes share this disk)."""
    with open(path, "a") as log:
        log.write(f"{int(sample[1])} {os.getpid()}\n")
    return sample


def hold_on_node(sample, node_id, busy):
    """On the node ``node_id`` only: say so in the file ``busy``, then wait there to be killed."""
    if ray.get_runtime_context().get_node_id() == node_id:
        with open(busy, "a") as note:
            note.write(f"{int(sample[1])}\n")
        time.sleep(WAIT_S)
    return sample


def exit_on_5(sample):
    if int(sample[1]) == 5:
        os._exit(3)
    return sample


def fail_on_13(sample):
    if int(sample[1]) == 13:
        raise ValueError("sample thirteen is cursed")
    return sample


# -- helpers -------------------------------------------------------------------------------------
def dataset(n: int = 96, features: int = 4):
    x = np.arange(n * features, dtype=np.float32).reshape(n, features)
    return stoke.from_arrays(x, np.arange(n))


def copied(batch):
    if isinstance(batch, dict):
        return {k: np.array(v) for k, v in batch.items()}
    return tuple(np.array(v) for v in batch)


def ray_loader(pipe, workers: int = 2, **pool_options):
    """A loader whose pool is a RayPool: what ``pipe.loader(executor="ray")`` will build."""
    loader = pipe.loader(executor="inline", timeout_s=WAIT_S)
    loader.scheduler.resources.pool = RayPool(loader.program, workers, **pool_options)
    return loader


def batches(loader, epoch: int = 0, stop: int | None = None, state=None):
    out = []
    iterator = loader.iter(epoch=epoch, state=state)
    for batch in iterator:
        out.append(copied(batch))
        if stop is not None and len(out) == stop:
            break
    return out, iterator.state()


def inline_batches(pipe, epoch: int = 0, state=None):
    with warnings.catch_warnings(), pipe.loader(executor="inline") as loader:
        warnings.simplefilter("ignore", stoke.StokeWarning)  # the Ray run checks warnings
        return batches(loader, epoch, state=state)[0]


def assert_same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            a, b = [a[k] for k in sorted(a)], [b[k] for k in sorted(b)]
        for left, right in zip(a, b, strict=True):
            assert left.dtype == right.dtype
            np.testing.assert_array_equal(left, right)


def labels(got) -> list[int]:
    return [int(v) for batch in got for v in batch[1]]


def ray_children() -> list[str]:
    """Ray's daemons and workers started by this process (raylet, gcs_server, ray::...)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        if "ray" in cmdline and ("site-packages/ray" in cmdline or cmdline.startswith("ray::")):
            found.append(f"{child.pid}: {cmdline[:80]}")
    return found


def assert_no_ray_processes(timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while ray_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ray_children(), f"Ray processes left behind: {ray_children()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warm_up(nodes) -> None:
    """Start a Ray worker process on each node, so that no node lags behind the other."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    def pid() -> int:
        return os.getpid()

    ray.get([pid.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id,
                                                                           soft=False)).remote()
             for node in nodes], timeout=WAIT_S)


# -- without a cluster ---------------------------------------------------------------------------
def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(StokeError, match=r"pip install 'stoke\[ray\]'"):
        RayPool(dataset().program)


def test_options_that_would_break_the_guarantees_are_refused():
    program = dataset().program
    with pytest.raises(ValueError, match="task_options cannot set max_retries"):
        RayPool(program, task_options={"max_retries": 5})
    with pytest.raises(ValueError, match="workers must be a positive int or None"):
        RayPool(program, workers=0)


def test_unreachable_address_fails_fast():
    if ray.is_initialized():
        pytest.skip("needs a process not connected to Ray yet")
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(StokeError, match="no Ray cluster answers at") as info:
        connect(address)
    assert address in str(info.value) and "RAY_ADDRESS" in str(info.value)
    assert time.monotonic() - started < 10  # ray.init alone retries for minutes
    assert not ray.is_initialized()
    with pytest.raises(StokeError, match="cannot read the Ray address"):
        connect("not-an-address")


@pytest.mark.slow
def test_without_address_starts_a_local_ray_and_stops_it(monkeypatch):
    if ray.is_initialized():
        pytest.skip("needs a process not connected to Ray yet")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    pipe = dataset(24).shuffle(seed=5).map(augment).batch(8)
    loader = pipe.loader(executor="inline", timeout_s=WAIT_S)
    loader.scheduler.resources.pool = RayPool(loader.program, 1)
    try:
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 1
        got, _ = batches(loader)
    finally:
        loader.close()
    assert not ray.is_initialized()  # the pool started it, the pool stopped it
    assert_no_ray_processes()
    assert_same(got, inline_batches(pipe))


# -- on a cluster: head without CPU, two worker nodes of one CPU ---------------------------------
@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False,
        "_system_config": FAST_NODE_DEATH})
    try:
        workers = [cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
                   for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        cluster.worker_nodes_started = workers
        warm_up(workers)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        assert_no_ray_processes()


@pytest.mark.slow
def test_work_runs_on_both_worker_nodes(cluster):
    pipe = dataset(64).map(slow).map(slow).map(tag_node).batch(4)
    with ray_loader(pipe) as loader:
        got, _ = batches(loader)
    assert sorted(int(v) for b in got for v in b[0]) == list(range(64))
    assert len({int(v) for b in got for v in b[1]}) == 2  # both nodes made samples


class SeedsGlobalsOnLoad:
    """A source that draws from the global ``numpy.random`` and ``random``, and seeds them
    with 0 when it is loaded (unpickled), as a module that calls ``np.random.seed(0)`` at
    its top does when a worker imports it: every worker would draw the same stream."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        time.sleep(0.004)  # long enough for both nodes to take chunks
        draws = [np.random.randint(1 << 30), random.getrandbits(30), os.getpid()]
        return np.array(draws, np.int64), np.int64(index)

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        np.random.seed(0)
        random.seed(0)


@pytest.mark.slow
def test_each_ray_worker_seeds_its_global_rngs_apart(cluster):
    """Issue 12 item 8 for Ray: a dataset's own global-rng draws are not the same in every
    worker (process workers are seeded per worker; so are Ray's, after loading)."""
    pipe = stoke.from_sequence(SeedsGlobalsOnLoad(64)).batch(4)
    # SPREAD: Ray's default packs a busy machine's short tasks onto one node (CI once saw one).
    with ray_loader(pipe, task_options={"scheduling_strategy": "SPREAD"}) as loader:
        got, _ = batches(loader)
    rows = np.concatenate([b[0] for b in got])
    assert sorted(int(v) for b in got for v in b[1]) == list(range(64))
    by_worker: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for numpy_draw, random_draw, pid in rows.tolist():
        by_worker[pid].append((numpy_draw, random_draw))
    assert len(by_worker) >= 2, "the test needs two Ray workers to compare"
    seeded_zero = (np.random.RandomState(0).randint(1 << 30), random.Random(0).getrandbits(30))
    firsts = [draws[0] for draws in by_worker.values()]
    assert seeded_zero not in firsts  # the source's own seed(0) was replaced
    assert len(set(firsts)) == len(firsts)  # no two workers start the same stream
    all_draws = [d for draws in by_worker.values() for d in draws]
    assert len(set(all_draws)) == len(all_draws)  # no draw repeated across workers


@pytest.mark.slow
def test_the_ray_pool_follows_the_whole_pool_protocol(cluster):
    from stoke.executors.base import WorkerPool
    from stoke.executors.chunk import Task
    from stoke.executors.messages import ProgramUpdate

    pool = RayPool(dataset(8).batch(4).loader(executor="inline").program, 2)
    try:
        missing = [n for n in vars(WorkerPool) if not n.startswith("_") and not hasattr(pool, n)]
        assert not missing
        pool.wait_ready(timeout_s=1)
        assert pool.ready() and pool.worker_pids() == [] and pool.busy_workers()[-1]
        assert pool.first_ready() and not pool.addressable and not pool.shares_program
        pool.check_alive()
        with pytest.raises(StokeError, match="cannot give a task to worker 1"):
            pool.submit(Task(0, "probe", 0, np.array([1])), worker=1)
        with pytest.raises(StokeError, match="cannot send the layout"):
            pool.broadcast(ProgramUpdate(2, {}, "the layout"))
        pool.resize(3)
        assert pool.workers == 3
        pool.submit(Task(1, "probe", 0, np.array([5])))
        deadline = time.monotonic() + WAIT_S
        result = None
        while result is None and time.monotonic() < deadline:
            result = pool.next_result(0.2)
        assert result is not None and result.task_id == 1 and result.probe[0] == 5
    finally:
        pool.close()


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["augment", "filter", "dict-float64"])
def test_same_batches_as_inline_over_epochs(cluster, variant):
    pipe = dataset().shuffle(seed=7)
    if variant == "augment":
        pipe = pipe.map(augment).batch(8)
    elif variant == "filter":
        pipe = pipe.map(augment).filter(keep_not_multiple_of_3).batch(7)
    else:
        pipe = pipe.map(as_dict).batch(10)
    with ray_loader(pipe) as loader:
        for epoch in (0, 1):
            if variant == "dict-float64" and epoch == 0:
                with pytest.warns(stoke.StokeWarning, match="float64"):
                    got, _ = batches(loader, epoch)
            else:
                got, _ = batches(loader, epoch)
            assert_same(got, inline_batches(pipe, epoch))
            if variant != "dict-float64":
                ids = labels(got)
                kept = [i for i in range(96) if variant != "filter" or i % 3]
                assert sorted(ids) == kept  # exactly once


@pytest.mark.slow
def test_resume_mid_epoch_matches_inline(cluster):
    pipe = dataset().shuffle(seed=3).map(augment).batch(8)
    with ray_loader(pipe) as loader:
        head, state = batches(loader, epoch=2, stop=5)
        rest, _ = batches(loader, state=state)
    assert_same(head + rest, inline_batches(pipe, epoch=2))


@pytest.mark.slow
def test_error_in_map_names_the_sample_and_the_ray_worker(cluster):
    pipe = dataset(32).map(fail_on_13).batch(4)
    with ray_loader(pipe) as loader, pytest.raises(SampleError) as info:
        batches(loader)
    assert info.value.index == 13 and info.value.original_type == "ValueError"
    assert "Ray worker" in str(info.value) and "cursed" in str(info.value)


@pytest.mark.slow
def test_worker_that_dies_on_every_try_is_reported(cluster):
    pipe = dataset(16).map(exit_on_5).batch(4)
    with ray_loader(pipe, max_retries=1) as loader, pytest.raises(WorkerDiedError) as info:
        batches(loader)
    message = str(info.value)
    assert "samples [4, 5, 6, 7]" in message and "after 1 retry:" in message
    assert "WorkerCrashedError" in message


@pytest.mark.slow
def test_unserialisable_function_is_named(cluster):
    lock = threading.Lock()

    def locked(sample):
        with lock:
            return sample

    pipe = dataset(8).map(locked).batch(4)
    with pytest.raises(UnpicklableError, match=r"map\(.*locked\) cannot be sent to the Ray") as info:
        RayPool(pipe.program, 2)
    assert "module level" in str(info.value)


@pytest.mark.slow
def test_ray_address_from_the_environment(cluster, monkeypatch):
    ray.shutdown()
    try:
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        pipe = dataset().shuffle(seed=4).map(augment).batch(8)
        with ray_loader(pipe) as loader:
            assert loader.pool._owns_connection
            got, _ = batches(loader)
        assert not ray.is_initialized()  # the pool's connection, closed with it
        assert_same(got, inline_batches(pipe))
    finally:
        if not ray.is_initialized():
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            warm_up(cluster.worker_nodes_started)  # a new job: its workers start afresh


@pytest.mark.slow
def test_other_address_than_the_connected_cluster_is_refused(cluster):
    with pytest.raises(StokeError, match="already connected"):
        RayPool(dataset().program, 2, ray_address=f"127.0.0.1:{free_port()}")


@pytest.mark.slow
def test_object_store_budget_bounds_tasks_in_flight(cluster):
    pipe = dataset().shuffle(seed=1).map(augment).batch(8)
    # a slot is 8 rows x (16 + 8) bytes, aligned: 192 bytes; budget of two slots
    with ray_loader(pipe, object_store_budget_bytes=2 * 192) as loader:
        pool = loader.pool
        original = pool._dispatch
        peak = [0]

        def watched():
            original()
            peak[0] = max(peak[0], len(pool._in_flight))

        pool._dispatch = watched
        got, _ = batches(loader)
    assert peak[0] == 2
    assert_same(got, inline_batches(pipe))


@pytest.mark.slow
def test_pipe_iter_executor_ray(cluster):
    from stoke.executors.options import EXECUTORS

    if "ray" not in EXECUTORS:
        pytest.skip("the loader does not route executor=\"ray\" yet")
    pipe = dataset().shuffle(seed=2).map(augment).batch(8)
    assert_same([copied(b) for b in pipe.iter(executor="ray", workers=2)], inline_batches(pipe))


@pytest.mark.slow
def test_worker_node_killed_mid_epoch_every_sample_once(cluster, tmp_path):
    """Kept last in this file: it changes the cluster (one of its two worker nodes is killed).

    The victim node is caught busy for sure: a sample it makes holds its chunk (after the
    sample was logged as made) until the node is killed, so Ray must make that chunk again.
    """
    n = 480
    runs, busy = tmp_path / "runs.log", tmp_path / "victim-busy"
    victim = cluster.worker_nodes_started[0]
    # 16 KiB samples: a chunk's result (128 KiB) is too big to travel inside Ray's reply, so
    # it sits in the object store of the node that made it, and is lost with that node.
    pipe = (dataset(n, features=4096).shuffle(seed=11).map(slow)
            .map(functools.partial(record_run, path=str(runs)))
            .map(functools.partial(hold_on_node, node_id=victim.node_id, busy=str(busy)))
            .map(augment).batch(8))
    expected = inline_batches(pipe)
    runs.unlink()

    def kill_when_busy():
        deadline = time.monotonic() + WAIT_S
        while not busy.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.remove_node(victim, allow_graceful=False)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    with ray_loader(pipe) as loader:
        killer.start()
        got = [copied(b) for b in loader.iter()]
    killer.join(timeout=WAIT_S)
    assert busy.exists(), "the victim node never started a chunk"
    assert sorted(labels(got)) == list(range(n))  # every sample exactly once
    assert_same(got, expected)  # and the same batches in the same order
    made = collections.Counter(int(line.split()[0]) for line in runs.read_text().splitlines())
    made[int(pipe.plan_spec.order(0)[0])] -= 1  # the layout probe made the first one too
    assert set(made) == set(range(n))
    # the kill interrupted work: Ray made the held chunk again, the trainer got each sample once
    assert max(made.values()) >= 2, "no sample was made twice: the kill hit an idle node"
