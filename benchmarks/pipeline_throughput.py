"""Input-pipeline throughput: stoke against the loaders Keras users reach for, on one workload.

``--workload jpeg`` (the default, issue 2's) is described below; ``tabular`` and
``large-arrays`` (:class:`workloads.ArrayWorkload`) run the same rows on in-memory numbers, to
check the engine on other shapes of work (tiny samples; big samples with little compute).

Every loader streams the same samples (:class:`workloads.JpegSamples`: in-memory JPEGs and
labels) through the same plain-Python transform (:func:`workloads.transform`: decode, random
crop, flip, brightness, float32), in batches, with the machine's cores as workers, at the
settings its documentation recommends. The trainer side is a loop that touches each batch
(sums one image and one label, no full copy), so what is measured is the pipeline alone.

Method (also in ``benchmarks/README.md``):

- all loaders run in this one process, interleaved: each round visits every loader once (the
  order rotates from round to round), so a noisy neighbour hurts every row alike;
- each visit builds the loader fresh and times the first batch (``startup_s``: worker
  start-up, first decode, graph building). Then it warms up: at least ``warmup_batches``
  batches AND at least as long as the start-up took. Whatever workers made ahead while the
  first batch was awaited (at most start-up x production rate) is drained by then, since the
  consumer takes buffered batches far faster than they are made; so a loader with deep
  buffers and a slow start gets no head start. Then ``batches`` batches are timed. The
  reported img/s is the **median over rounds** of those timed windows (best and all rounds
  are in the JSON): start-up is excluded from img/s and reported on its own;
- the stream is long (a virtual dataset: index ``i`` reads file ``i % files``), much longer
  than a visit reads, so no loader runs into an epoch end; each visit stops early and closes;
- after each visit the loader is closed and its worker processes must be gone (waited for,
  else killed and reported as ``leftover_processes``);
- a peer whose package is missing is skipped with a note, never an error.

Rows: ``python-loop`` (1 core, the baseline of every ratio), stoke's ``process`` and
``thread`` executors, ``stoke-process-keep`` (process workers, and a consumer that keeps every
batch in a replay buffer of the last 16: what safe zero-copy costs when batches are kept;
the other rows drop each batch), the peers (tf.data with ``numpy_function``, keras ``PyDataset`` with
threads and with processes, torch ``DataLoader``, grain with threads and with processes) and
the reference ``tf-native-ops`` (the same work in TensorFlow's C++ ops: what users get when
they rewrite the transform, not a loader of Python code; it is not counted as a peer).

Two more references: ``independent-loops x1`` and ``xW`` (W = ``--workers``), the plain loop
in 1 and W spawned processes with nothing shared (see below): what one core, and W cores,
give for this work when nothing moves between processes. ``x1`` against ``python-loop`` shows
how much a fresh single-purpose process gains per core alone (it keeps freed memory, as
stoke's workers do: ``stoke/executors/allocator.py``).

``--scaling`` runs only ``stoke-process`` at each worker count, the loop, and for each count
W the machine's own ceiling ``independent-loops xW``: W spawned processes, no stoke and
nothing shared, each running the plain loop on its own share, warmed up and then started
together (all warm first), their rates added up. Cores slow down when all are busy (shared
caches, memory bandwidth, turbo, SMT), so stoke's efficiency vs linear is split into the
machine's (the loops' own efficiency vs linear) and stoke's "efficiency vs machine" (stoke's
img/s at W / the loops' at W).

    python benchmarks/pipeline_throughput.py                      # full comparison
    python benchmarks/pipeline_throughput.py --quick              # a smoke run, seconds
    python benchmarks/pipeline_throughput.py --only stoke-process,torch-dataloader
    python benchmarks/pipeline_throughput.py --scaling 1,2,4,8,12,15  # stoke alone, efficiency
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import math
import multiprocessing
import os
import queue
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `workloads` must import the same way in every worker
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("stoke") is None:  # a checkout that was not pip-installed
    sys.path.insert(1, str(HERE.parent))
import common  # noqa: E402
import workloads  # noqa: E402
from common import (  # noqa: E402
    Running,
    Window,
    available_cores,
    installed,
    interleaved,
    touch,
    warm_up,
    write_json,
)

SCHEMA = "stoke.bench.pipeline_throughput/1"
WORKLOADS = ("jpeg", "tabular", "large-arrays")
DISTINCT_SAMPLES = {"jpeg": 512, "tabular": 50_000, "large-arrays": 256}
STATISTIC = "median"  # over rounds; "best" is also recorded

# -- the environment -----------------------------------------------------------------------
def _keras_backend_note() -> str | None:
    """Keras needs a backend to import; without TensorFlow, pick an installed one."""
    if "KERAS_BACKEND" in os.environ or installed("tensorflow"):
        return None
    for backend in ("jax", "torch"):
        if installed(backend):
            os.environ["KERAS_BACKEND"] = backend
            return f"Keras on {backend} (no TensorFlow)"
    os.environ["KERAS_BACKEND"] = "numpy"
    return "Keras on numpy (no TensorFlow, JAX, torch)"


# -- what a run needs ----------------------------------------------------------------------
@dataclass(frozen=True)
class Settings(Window):
    workers: int = 1  # of every parallel loader (--workers); --scaling sets its own


@dataclass
class Context:
    """Everything a loader factory gets: the same samples and transform for all."""

    workload: workloads.Workload | workloads.ArrayWorkload
    settings: Settings
    samples: workloads.JpegSamples | workloads.ArraySamples
    transform: Callable[[Any, np.random.Generator], tuple[np.ndarray, np.int32]]
    jpegs: list[bytes] | None  # the JPEG workload's files (for the TF-ops reference)
    labels: np.ndarray | None
    workers: int  # may differ from settings.workers in --scaling mode
    x_shape: tuple[int, ...] = ()  # one sample's x, as the transform makes it
    x_dtype: str = "float32"


@dataclass(frozen=True)
class LoaderSpec:
    name: str
    kind: str  # "baseline" | "stoke" | "peer" | "reference" | "machine"
    description: str
    requires: tuple[str, ...]
    build: Callable[[Context], Running]
    # How a visit is timed: None is measure_once (this process consumes the batches); a row
    # whose batches are made and timed in other processes brings its own.
    measure: Callable[[LoaderSpec, Context], dict[str, Any]] | None = None


# -- the loaders ---------------------------------------------------------------------------
def _order(ctx: Context) -> np.ndarray:
    return np.random.default_rng(ctx.settings.seed).permutation(len(ctx.samples))


def build_python_loop(ctx: Context, share: int = 0, shares: int = 1) -> Running:
    """Transform each sample, ``np.stack`` the batch; over every ``shares``-th sample of the
    shuffled order from ``share`` on (the independent loops each take their own share)."""
    dataset = workloads.TransformedSamples(ctx.samples, ctx.transform, ctx.settings.seed)
    order, size = _order(ctx)[share::shares], ctx.settings.batch_size

    def batches():
        for start in range(0, len(order) - size + 1, size):
            yield workloads.collate([dataset[i] for i in order[start:start + size]])

    return Running(batches())


def _build_stoke(executor: str) -> Callable[[Context], Running]:
    def build(ctx: Context) -> Running:
        import stoke

        pipe = (stoke.from_sequence(ctx.samples).shuffle(seed=ctx.settings.seed)
                .map(ctx.transform).batch(ctx.settings.batch_size))
        loader = pipe.loader(workers=ctx.workers, executor=executor)
        return Running(iter(loader.iter(epoch=0)), loader.close)

    return build


KEPT_BATCHES = 16  # the replay buffer of the consumer that keeps every batch


def build_stoke_keeping(ctx: Context) -> Running:
    """stoke's process row, with a consumer that keeps every batch it gets for a while (a
    replay buffer of the last :data:`KEPT_BATCHES`): the first kept slot is retired to the
    consumer, then batches come as copies while the consumer keeps them (the cost of safe
    zero-copy for batches that are kept)."""
    import collections

    running = _build_stoke("process")(ctx)
    replay: collections.deque = collections.deque(maxlen=KEPT_BATCHES)

    def keeping():
        for batch in running.batches:
            replay.append(batch)
            yield batch

    return Running(keeping(), running.close)


def build_tf_numpy_function(ctx: Context) -> Running:
    import tensorflow as tf

    dataset = workloads.TransformedSamples(ctx.samples, ctx.transform, ctx.settings.seed)

    def load(index):
        image, label = tf.numpy_function(
            lambda i: dataset[i], [index], (tf.as_dtype(ctx.x_dtype), tf.int32), stateful=False)
        image.set_shape(ctx.x_shape)
        label.set_shape(())
        return image, label

    # The same permutation as the loop; a full-size .shuffle() of int64s costs the same.
    ds = (tf.data.Dataset.from_tensor_slices(_order(ctx))
          .map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(ctx.settings.batch_size)
          .prefetch(tf.data.AUTOTUNE))
    return Running(iter(ds))


def build_tf_native(ctx: Context) -> Running:
    import tensorflow as tf

    files = len(ctx.jpegs)
    jpegs = tf.constant(ctx.jpegs)
    labels = tf.constant(ctx.labels)
    fn = workloads.tf_native_transform(ctx.workload)

    def load(index):
        k = index % files
        return fn(tf.gather(jpegs, k), tf.gather(labels, k), index)

    ds = (tf.data.Dataset.from_tensor_slices(_order(ctx))
          .map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(ctx.settings.batch_size)
          .prefetch(tf.data.AUTOTUNE))
    return Running(iter(ds))


def _build_pydataset(use_multiprocessing: bool) -> Callable[[Context], Running]:
    def build(ctx: Context) -> Running:
        import keras
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        dataset = workloads.TransformedSamples(ctx.samples, ctx.transform, ctx.settings.seed)
        order, size = _order(ctx), ctx.settings.batch_size

        # Defined here so that importing this script never imports Keras. The processes
        # variant relies on fork (Linux's default before Python 3.14), like Keras' own users.
        class JpegPyDataset(keras.utils.PyDataset):
            def __len__(self):
                return len(order) // size

            def __getitem__(self, batch_index):
                indices = order[batch_index * size:(batch_index + 1) * size]
                return workloads.collate([dataset[i] for i in indices])

        py_dataset = JpegPyDataset(workers=ctx.workers, use_multiprocessing=use_multiprocessing)
        # What fit() does: one adapter, on_epoch_begin, the numpy iterator, on_epoch_end.
        adapter = PyDatasetAdapter(py_dataset, shuffle=False)
        adapter.on_epoch_begin()
        return Running(iter(adapter.get_numpy_iterator()), adapter.on_epoch_end)

    return build


def build_torch(ctx: Context) -> Running:
    import torch
    from torch.utils.data import DataLoader

    dataset = workloads.TransformedSamples(ctx.samples, ctx.transform, ctx.settings.seed)
    generator = torch.Generator()
    generator.manual_seed(ctx.settings.seed)
    loader = DataLoader(dataset, batch_size=ctx.settings.batch_size, shuffle=True,
                        generator=generator, num_workers=ctx.workers, persistent_workers=True,
                        pin_memory=False)
    iterator = iter(loader)

    def close():
        nonlocal iterator
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        iterator = None

    return Running(iterator, close)


def _grain_dataset(ctx: Context):
    import grain

    return (grain.MapDataset.source(ctx.samples)
            .shuffle(seed=ctx.settings.seed)
            .random_map(ctx.transform, seed=ctx.settings.seed))


def build_grain_threads(ctx: Context) -> Running:
    import grain

    # N threads, each making whole batches (batching inside the MapDataset): the fastest of
    # the thread layouts tried (README.md); the buffer holds 2 batches per thread.
    ds = (_grain_dataset(ctx)
          .batch(ctx.settings.batch_size)
          .to_iter_dataset(grain.ReadOptions(num_threads=ctx.workers,
                                             prefetch_buffer_size=2 * ctx.workers)))
    iterator = iter(ds)
    return Running(iterator, getattr(iterator, "close", lambda: None))


def build_grain_processes(ctx: Context) -> Running:
    import grain
    from absl import flags

    # grain reads an absl flag when a framework profiler is loaded (TensorFlow is, in this
    # process); outside an absl app nobody parsed the flags, so take their defaults.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()

    # One process per worker, one thread in each (the data are in memory: grain's advice);
    # batching last, so that mp_prefetch ships batches through shared memory.
    ds = (_grain_dataset(ctx)
          .to_iter_dataset(grain.ReadOptions(num_threads=0))
          .batch(ctx.settings.batch_size)
          .mp_prefetch(grain.MultiprocessingOptions(num_workers=ctx.workers)))
    iterator = iter(ds)
    return Running(iterator, iterator.close)


LOADERS: tuple[LoaderSpec, ...] = (
    LoaderSpec("python-loop", "baseline", "plain Python loop, 1 core: transform + np.stack",
               (), build_python_loop),
    LoaderSpec("stoke-process", "stoke", "stoke, process workers + shared-memory ring",
               ("stoke",), _build_stoke("process")),
    LoaderSpec("stoke-thread", "stoke", "stoke, thread workers", ("stoke",),
               _build_stoke("thread")),
    LoaderSpec("stoke-process-keep", "stoke",
               f"stoke, process workers; the consumer keeps every batch (last {KEPT_BATCHES})",
               ("stoke",), build_stoke_keeping),
    LoaderSpec("tf.data-numpy_function", "peer",
               "tf.data map(numpy_function), AUTOTUNE, prefetch", ("tensorflow",),
               build_tf_numpy_function),
    LoaderSpec("pydataset-threads", "peer", "keras PyDataset, workers=N threads", ("keras",),
               _build_pydataset(False)),
    LoaderSpec("pydataset-processes", "peer", "keras PyDataset, use_multiprocessing=True",
               ("keras",), _build_pydataset(True)),
    LoaderSpec("torch-dataloader", "peer", "torch DataLoader, num_workers=N, persistent",
               ("torch",), build_torch),
    LoaderSpec("grain-threads", "peer", "grain, ReadOptions(num_threads=N), batches made in threads",
               ("grain",), build_grain_threads),
    LoaderSpec("grain-processes", "peer", "grain mp_prefetch(num_workers=N), shared-memory batches", ("grain",),
               build_grain_processes),
    LoaderSpec("tf-native-ops", "reference",
               "reference: same work in TF ops (decode_jpeg, tf.image), AUTOTUNE",
               ("tensorflow",), build_tf_native),
)
LOADER_NAMES = tuple(spec.name for spec in LOADERS)


# -- measuring -----------------------------------------------------------------------------
def _describe_batch(batch: Any) -> dict[str, Any]:
    x, y = batch[0], batch[1]

    def dtype(a):
        return str(getattr(a.dtype, "name", a.dtype)).replace("torch.", "")

    return {"x_shape": [int(d) for d in x.shape], "x_dtype": dtype(x),
            "y_shape": [int(d) for d in y.shape], "y_dtype": dtype(y),
            "x_type": f"{type(x).__module__}.{type(x).__name__}"}


def _infrastructure(process) -> bool:
    """Interpreter-wide helpers (not a loader's workers), started once and kept."""
    try:
        cmdline = " ".join(process.cmdline())
    except Exception:  # noqa: BLE001 - gone or inaccessible: not ours to judge
        return True
    return any(s in cmdline for s in ("resource_tracker", "forkserver", "semaphore_tracker"))


def _reap_new_children(before: set[int], timeout_s: float = 20.0) -> list[str]:
    """Wait until the worker processes a loader started are gone; kill and name stragglers."""
    import psutil

    me = psutil.Process()

    def alive():
        found = []
        for child in me.children(recursive=True):
            try:
                if child.pid in before or child.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            if not _infrastructure(child):
                found.append(child)
        return found

    deadline = time.monotonic() + timeout_s
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftovers = []
    for child in left:
        try:
            leftovers.append(f"pid {child.pid}: {' '.join(child.cmdline())[:120]}")
            child.kill()
        except psutil.Error:
            pass
    return leftovers


def _tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and its live descendants."""
    import psutil

    me = psutil.Process()
    times = me.cpu_times()
    total = times.user + times.system
    for child in me.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _children() -> set[int]:
    import psutil

    return {c.pid for c in psutil.Process().children(recursive=True)}


def measure_once(spec: LoaderSpec, ctx: Context) -> dict[str, Any]:
    """One visit: build, first batch (start-up), warm-up, timed window, close, reap."""
    settings = ctx.settings
    before = _children()
    gc.collect()
    started = time.perf_counter()
    running = spec.build(ctx)
    sink = 0.0
    try:
        batches = running.batches
        first = next(batches)
        sink += touch(first)
        batch_info = _describe_batch(first)
        del first
        startup = time.perf_counter() - started
        warmup, warm_sink = warm_up(batches, settings, startup)
        sink += warm_sink
        cpu_from = _tree_cpu_s()
        timed_from = time.perf_counter()
        for _ in range(settings.batches):
            sink += touch(next(batches))
        timed_to = time.perf_counter()
        cpu_to = _tree_cpu_s()
    finally:
        try:
            running.close()
        finally:
            del running
            gc.collect()
            leftovers = _reap_new_children(before)
    if not np.isfinite(sink):
        raise RuntimeError(f"{spec.name} delivered non-finite values")
    return {
        "startup_s": startup,
        "warmup_batches": warmup,
        "images_per_s": settings.batches * settings.batch_size / (timed_to - timed_from),
        # all processes of the loader together: how much CPU one image costs end to end
        "cpu_us_per_image": (cpu_to - cpu_from) * 1e6 / (settings.batches * settings.batch_size),
        "batch": batch_info,
        "leftover_processes": leftovers,
    }


# -- the machine's own ceiling: W independent plain loops ----------------------------------
LOOPS_TIMEOUT_S = 300.0  # the longest the independent loops may take to get ready, or to report
LOOPS_EXIT_S = 20.0  # after the visit, for all of them to exit (then killed, as stragglers)


def _independent_loop(ctx: Context, share: int, warmup_batches: int, timed_batches: int,
                      go, stop, results) -> None:
    """One of ``ctx.workers`` spawned processes: the plain loop on its own share of the
    stream. Warm up, say so, wait for ``go`` (set once every process is warm), time
    ``timed_batches`` batches, report; then keep the core busy (untimed) until ``stop``, set
    once all have reported, so that every process's timed batches ran with all W at work."""
    try:
        from stoke.executors.allocator import keep_freed_memory

        keep_freed_memory()  # the allocator stoke's workers run with (STOKE_WORKER_MALLOC)

        def endless():
            while True:
                yield from _reused_buffer_loop(ctx, share, ctx.workers)

        batches = endless()
        first = next(batches)
        first_at = time.perf_counter()  # CLOCK_MONOTONIC: the same clock in every process
        sink = touch(first)
        batch_info = _describe_batch(first)
        for _ in range(warmup_batches):
            sink += touch(next(batches))
        results.put({"share": share, "ready": True, "first_at": first_at, "batch": batch_info})
        if not go.wait(timeout=LOOPS_TIMEOUT_S) or stop.is_set():
            return
        cpu_from, timed_from = time.process_time(), time.perf_counter()
        for _ in range(timed_batches):
            sink += touch(next(batches))
        timed_to, cpu_to = time.perf_counter(), time.process_time()
        results.put({"share": share, "images": timed_batches * ctx.settings.batch_size,
                     "seconds": timed_to - timed_from, "cpu_s": cpu_to - cpu_from,
                     "finite": bool(np.isfinite(sink))})
        busy_until = time.monotonic() + LOOPS_TIMEOUT_S
        while not stop.is_set() and time.monotonic() < busy_until:
            touch(next(batches))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put({"share": share, "error": f"{type(exc).__name__}: {exc}"[:300]})


def _reused_buffer_loop(ctx: Context, share: int, shares: int):
    """The plain loop's work written into one batch buffer kept across batches, as stoke's
    workers write into their ring slots: without it each process pays fresh pages for every
    batch (measured: a spawned np.stack loop took 298 µs/img where the same loop in a warm
    process took 221 and stoke's one worker 226), and the ceiling would measure malloc."""
    dataset = workloads.TransformedSamples(ctx.samples, ctx.transform, ctx.settings.seed)
    order, size = _order(ctx)[share::shares], ctx.settings.batch_size
    x = y = None
    for start in range(0, len(order) - size + 1, size):
        for j, index in enumerate(order[start:start + size]):
            image, label = dataset[index]
            if x is None:
                x = np.empty((size, *np.shape(image)), dtype=np.asarray(image).dtype)
                y = np.empty((size,), dtype=np.asarray(label).dtype)
            x[j], y[j] = image, label
        yield x, y


def _one_message_each(results, processes: list, what: str) -> list[dict[str, Any]]:
    """A message from every process (``what`` they were doing, for errors); a process's
    error, a process that exits without a word, or LOOPS_TIMEOUT_S raises."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + LOOPS_TIMEOUT_S
    while len(messages) < len(processes):
        try:
            message = results.get(timeout=0.5)
        except queue.Empty:
            gone = [p for p in processes if p.exitcode is not None]
            if gone and results.empty():
                raise RuntimeError(f"independent loop {gone[0].name} (pid {gone[0].pid}) exited "
                                   f"with code {gone[0].exitcode} while {what}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(messages)} of {len(processes)} independent loops done "
                                   f"{what} within {LOOPS_TIMEOUT_S:.0f} s") from None
            continue
        if "error" in message:
            raise RuntimeError(f"independent loop {message['share']} failed while {what}: "
                               f"{message['error']}")
        messages.append(message)
    return messages


def measure_independent_loops(spec: LoaderSpec, ctx: Context) -> dict[str, Any]:
    """One visit of the machine's ceiling for ``ctx.workers`` busy cores: as many spawned
    processes, no stoke and nothing shared, each running the plain loop (``spec.build``'s
    work) on its own share. All warm up, then start together; each times its part of the
    window (together about ``settings.batches`` batches, as the stoke row). img/s is the sum
    of their rates (all W busy throughout); CPU µs/img is theirs together."""
    settings, count = ctx.settings, ctx.workers
    warmup = max(2, math.ceil(settings.warmup_batches / count))
    timed = math.ceil(settings.batches / count)
    mp = multiprocessing.get_context("spawn")  # fresh interpreters, like stoke's workers
    go, stop, results = mp.Event(), mp.Event(), mp.Queue()
    before = _children()
    gc.collect()
    started = time.perf_counter()
    processes = [mp.Process(target=_independent_loop, name=f"independent-loop-{k}", daemon=True,
                            args=(ctx, k, warmup, timed, go, stop, results))
                 for k in range(count)]
    try:
        for process in processes:
            process.start()
        ready = _one_message_each(results, processes, "starting and warming up")
        go.set()
        reports = _one_message_each(results, processes, "timing its batches")
    finally:
        stop.set()
        go.set()
        exit_by = time.monotonic() + LOOPS_EXIT_S
        for process in processes:
            if process.pid is not None:
                process.join(timeout=max(0.0, exit_by - time.monotonic()))
        leftovers = _reap_new_children(before, timeout_s=max(0.0, exit_by - time.monotonic()))
        for process in processes:
            if process.pid is not None:
                process.join(timeout=5.0)  # the killed ones: no zombie left
        results.close()
    if not all(r["finite"] for r in reports):
        raise RuntimeError(f"{spec.name} delivered non-finite values")
    images = sum(r["images"] for r in reports)
    return {
        "startup_s": max(r["first_at"] for r in ready) - started,  # every process's first batch
        "warmup_batches": warmup,  # per process
        "images_per_s": sum(r["images"] / r["seconds"] for r in reports),
        "cpu_us_per_image": sum(r["cpu_s"] for r in reports) * 1e6 / images,
        "batch": ready[0]["batch"],
        "leftover_processes": leftovers,
    }


INDEPENDENT_LOOPS = LoaderSpec(
    "independent-loops", "machine",
    "the machine's ceiling: W plain loops (one reused batch buffer each) in W spawned processes, no stoke, nothing shared",
    (), build_python_loop, measure_independent_loops)


@dataclass
class Row:
    spec: LoaderSpec
    workers: int
    label: str
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float | None:
        values = [r["images_per_s"] for r in self.rounds]
        return statistics.median(values) if values else None

    @property
    def best_images_per_s(self) -> float | None:
        values = [r["images_per_s"] for r in self.rounds]
        return max(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        startups = [r["startup_s"] for r in self.rounds]
        leftovers = [p for r in self.rounds for p in r["leftover_processes"]]
        return {
            "name": self.label,
            "loader": self.spec.name,
            "kind": self.spec.kind,
            "description": self.spec.description,
            "workers": 1 if self.spec.kind == "baseline" else self.workers,
            "status": self.status,
            "note": self.note,
            "images_per_s": self.images_per_s,
            "images_per_s_best": self.best_images_per_s,
            "images_per_s_rounds": [r["images_per_s"] for r in self.rounds],
            "startup_s": statistics.median(startups) if startups else None,
            "cpu_us_per_image": (statistics.median(r["cpu_us_per_image"] for r in self.rounds)
                                 if self.rounds else None),
            "startup_s_rounds": startups,
            "warmup_batches_rounds": [r["warmup_batches"] for r in self.rounds],
            "batch": self.rounds[0]["batch"] if self.rounds else None,
            "leftover_processes": leftovers,
        }


def run_rounds(rows: list[Row], ctx_for: Callable[[Row], Context], rounds: int,
               log: Callable[[str], None]) -> None:
    """Round-robin over the rows; the order rotates each round."""
    active = [r for r in rows if r.status == "ok"]
    for round_index, row in interleaved(active, rounds):
        if row.status != "ok":
            continue
        measure = row.spec.measure or measure_once
        try:
            result = measure(row.spec, ctx_for(row))
        except Exception as exc:  # noqa: BLE001 - one broken peer must not stop the rest
            row.status = "failed"
            row.note = f"{type(exc).__name__}: {exc}"[:300]
            log(f"round {round_index + 1}/{rounds}  {row.label:<26} FAILED: {row.note}")
            continue
        row.rounds.append(result)
        log(f"round {round_index + 1}/{rounds}  {row.label:<26} "
            f"{result['images_per_s']:>9,.0f} img/s   start-up {result['startup_s']:.2f} s")


# -- reporting -----------------------------------------------------------------------------
def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios to the plain loop and to the best peer; fills each row's ratio fields."""
    ok = [r for r in rows if r["status"] == "ok" and r["images_per_s"]]
    loop = next((r for r in ok if r["kind"] == "baseline"), None)
    peers = [r for r in ok if r["kind"] == "peer"]
    best_peer = max(peers, key=lambda r: r["images_per_s"], default=None)
    for r in rows:
        value = r["images_per_s"] if r["status"] == "ok" else None
        r["ratio_to_loop"] = value / loop["images_per_s"] if value and loop else None
        r["ratio_to_best_peer"] = (value / best_peer["images_per_s"]
                                   if value and best_peer else None)
    summary: dict[str, Any] = {
        "loop_images_per_s": loop["images_per_s"] if loop else None,
        "best_peer": best_peer["name"] if best_peer else None,
        "best_peer_images_per_s": best_peer["images_per_s"] if best_peer else None,
    }
    ceiling = {r["workers"]: r for r in ok if r["kind"] == "machine"}
    for r in ok:
        if r["kind"] == "stoke":
            summary[f"{r['name']}_ratio_to_loop"] = r["ratio_to_loop"]
            summary[f"{r['name']}_ratio_to_best_peer"] = r["ratio_to_best_peer"]
            machine = ceiling.get(r["workers"])
            if machine:  # stoke against W busy cores of this machine running the plain loop
                summary[f"{r['name']}_ratio_to_machine"] = (r["images_per_s"]
                                                           / machine["images_per_s"])
    return summary


def summarise_scaling(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Efficiency vs linear: img/s at w workers / (w x img/s at the fewest workers measured,
    scaled to one worker); for the independent loops the same against their own fewest.
    Efficiency vs machine: stoke's img/s at w workers / the independent loops' at w, the most
    that w busy cores of this machine give; so efficiency vs linear = the machine's own
    efficiency vs linear x efficiency vs machine x (loops / stoke at the fewest workers)."""
    def ok_of(kind: str) -> list[dict[str, Any]]:
        return sorted((r for r in rows if r["status"] == "ok" and r["kind"] == kind
                       and r["images_per_s"]), key=lambda r: r["workers"])

    ok, machine = ok_of("stoke"), ok_of("machine")
    loop = next((r for r in rows if r["status"] == "ok" and r["kind"] == "baseline"), None)
    for r in rows:
        r["ratio_to_loop"] = (r["images_per_s"] / loop["images_per_s"]
                              if loop and r["status"] == "ok" else None)
        r["ratio_to_best_peer"] = None
        r["efficiency_vs_linear"] = None
        r["efficiency_vs_machine"] = None
    for measured in (ok, machine):
        if measured:
            per_worker = measured[0]["images_per_s"] / measured[0]["workers"]
            for r in measured:
                r["efficiency_vs_linear"] = r["images_per_s"] / (r["workers"] * per_worker)
    if not ok:
        return {}
    ceiling = {r["workers"]: r["images_per_s"] for r in machine}
    for r in ok:
        if loop:
            r["efficiency_vs_loop"] = r["images_per_s"] / (r["workers"] * loop["images_per_s"])
        if r["workers"] in ceiling:
            r["efficiency_vs_machine"] = r["images_per_s"] / ceiling[r["workers"]]
    most = ok[-1]
    machine_most = next((r for r in machine if r["workers"] == most["workers"]), None)
    return {"per_worker_images_per_s": ok[0]["images_per_s"] / ok[0]["workers"],
            "linear_reference": f"{ok[0]['name']} / {ok[0]['workers']}",
            "efficiency_at_max_workers": most["efficiency_vs_linear"],
            "max_workers": most["workers"],
            "efficiency_vs_machine_at_max_workers": most["efficiency_vs_machine"],
            "machine_images_per_s_at_max_workers": machine_most and machine_most["images_per_s"],
            "machine_efficiency_vs_linear_at_max_workers":
                machine_most and machine_most["efficiency_vs_linear"]}


def _fmt(value: float | None, fmt: str, missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    settings, workload = result["settings"], result["workload"]
    machine = result["machine"]
    quick = "QUICK RUN, the numbers mean nothing. " if settings.get("quick") else ""
    title = (f"{quick}{result['mode']}: {workload['describe']}, "
             f"batch {settings['batch_size']}, {machine['cores']} cores, "
             f"{settings['batches']} timed batches x {settings['rounds']} rounds ({STATISTIC})")
    table = Table(title=title, title_justify="left")
    table.add_column("loader", no_wrap=True)
    table.add_column("workers", justify="right")
    table.add_column("img/s", justify="right")
    table.add_column("best", justify="right")
    table.add_column("x loop", justify="right")
    scaling = result["mode"] == "scaling"
    if scaling:
        table.add_column("eff. vs linear", justify="right")
        table.add_column("eff. vs machine", justify="right")
    else:
        table.add_column("x best peer", justify="right")
    table.add_column("start-up s", justify="right")
    table.add_column("CPU µs/img", justify="right")
    table.add_column("note")
    notes = {"reference": "reference: TF C++ ops, not Python",
             "machine": "machine ceiling"}
    styles = {"stoke": "bold", "reference": "dim", "machine": "italic"}
    for r in result["rows"]:
        ratios = ([_fmt(r.get("efficiency_vs_linear"), ".0%"),
                   _fmt(r.get("efficiency_vs_machine"), ".0%")] if scaling
                  else [_fmt(r["ratio_to_best_peer"], ".2f")])
        table.add_row(
            r["name"], str(r["workers"]), _fmt(r["images_per_s"], ",.0f"),
            _fmt(r["images_per_s_best"], ",.0f"), _fmt(r["ratio_to_loop"], ".2f"), *ratios,
            _fmt(r["startup_s"], ".2f"), _fmt(r["cpu_us_per_image"], ",.0f"),
            r["note"] or notes.get(r["kind"], ""), style=styles.get(r["kind"]),
        )
    console = Console(width=max(140 if scaling else 130, Console().width))
    console.print(table)
    summary = result["summary"]
    if not scaling and summary.get("best_peer"):
        console.print(f"best peer: {summary['best_peer']} "
                      f"({summary['best_peer_images_per_s']:,.0f} img/s); ratios are medians "
                      "of rounds; tf-native-ops and the independent loops are references, "
                      "not peers.")
    for key, value in summary.items():
        if not scaling and key.endswith("_ratio_to_machine"):
            console.print(f"{key.removesuffix('_ratio_to_machine')}: {value:.0%} of the "
                          "machine's ceiling (as many independent plain loops as workers)")
    if scaling and summary.get("efficiency_vs_machine_at_max_workers") is not None:
        console.print(
            f"at {summary['max_workers']} workers: stoke "
            f"{summary['efficiency_at_max_workers']:.0%} of linear; the machine itself "
            f"({summary['max_workers']} independent plain loops) "
            f"{summary['machine_efficiency_vs_linear_at_max_workers']:.0%} of linear; stoke "
            f"{summary['efficiency_vs_machine_at_max_workers']:.0%} of the machine.")


# -- main ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = available_cores()
    parser = argparse.ArgumentParser(
        description="Throughput of stoke and its peers on one JPEG workload (see README.md).")
    parser.add_argument("--workload", default="jpeg", choices=WORKLOADS,
                        help="jpeg (issue 2's), tabular (64 float32 features: noise, dropout) "
                             "or large-arrays (256px uint8 -> crop 224, flip, normalise)")
    parser.add_argument("--images", type=int, default=None,
                        help="distinct samples: JPEG files (default 512), tabular rows (50000), "
                             "large arrays (256); --quick: 32")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: jpeg 64, tabular 256, large-arrays 32; --quick: 16")
    parser.add_argument("--workers", type=int, default=cores,
                        help=f"workers of every parallel loader (default: the cores, {cores})")
    parser.add_argument("--rounds", type=int, default=None, help="default 5; --quick: 1")
    parser.add_argument("--batches", type=int, default=None,
                        help="timed batches per round (default max(100, 25 x workers): long "
                             "against every loader's buffers)")
    parser.add_argument("--warmup-batches", type=int, default=None,
                        help="least batches after the first, before timing (default max(8, "
                             "2 x workers + 2)); warm-up also lasts as long as start-up took")
    parser.add_argument("--image-size", type=int, default=160, help="JPEG side, pixels")
    parser.add_argument("--crop-size", type=int, default=128, help="random crop side, pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one round: checks that every row runs")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated loaders, of: {', '.join(LOADER_NAMES)}, "
                             f"{INDEPENDENT_LOOPS.name} (the ceiling rows x1 and x workers)")
    parser.add_argument("--scaling", default=None, metavar="W[,W...]",
                        help="run only stoke-process at these worker counts (and the loop, "
                             "and W independent plain loops per count: the machine's ceiling), "
                             "and report efficiency vs linear and vs machine, e.g. 1,2,4,8,12,15")
    parser.add_argument("--data-dir", default=None,
                        help=f"where the JPEGs are cached (default {workloads.default_cache_dir()})")
    parser.add_argument("--caption-words", type=int, default=0, metavar="N",
                        help="add a pure-Python step per sample that holds the GIL: tokenize "
                        "a caption of N words (0: off; 300 costs about as much as the image "
                        "work); the batches stay the same")
    parser.add_argument("--tag", default=None, help="results file suffix (default: hostname)")
    parser.add_argument("--out", default=None, help="results JSON path (default: "
                        "benchmarks/results/pipeline_throughput[-scaling]-TAG.json)")
    args = parser.parse_args(argv)

    if args.only:
        chosen = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in (*LOADER_NAMES, INDEPENDENT_LOOPS.name)]
        if unknown:
            parser.error(f"unknown loader(s) {', '.join(unknown)}; choose from: "
                         f"{', '.join(LOADER_NAMES)}, {INDEPENDENT_LOOPS.name}")
        args.only = chosen
    if args.scaling:
        try:
            args.scaling = sorted({int(w) for w in args.scaling.split(",") if w.strip()})
        except ValueError:
            parser.error(f"--scaling takes worker counts like 1,2,4. Received: {args.scaling}")
        if not args.scaling or min(args.scaling) < 1:
            parser.error("--scaling worker counts must be >= 1")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1. Received: {args.workers}")
    max_workers = max(args.scaling) if args.scaling else args.workers
    quick = args.quick
    args.images = args.images or (32 if quick else DISTINCT_SAMPLES[args.workload])
    args.batch_size = args.batch_size or (
        16 if quick else (64 if args.workload == "jpeg" else
                          workloads.ArrayWorkload.BATCH_SIZES[args.workload]))
    args.rounds = args.rounds or (1 if quick else 5)
    if args.batches is None:
        args.batches = 4 if quick else max(100, 25 * max_workers)
    if args.warmup_batches is None:
        args.warmup_batches = 2 if quick else max(8, 2 * max_workers + 2)
    for name in ("images", "batch_size", "rounds", "batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup_batches < 0:
        parser.error("--warmup-batches must be >= 0")
    if args.caption_words < 0:
        parser.error(f"--caption-words must be >= 0. Received: {args.caption_words}")
    if args.caption_words and args.workload != "jpeg":
        parser.error("--caption-words adds to the jpeg workload only")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's chatter, not the table
    backend_note = _keras_backend_note()
    settings = Settings(batch_size=args.batch_size, workers=args.workers, batches=args.batches,
                        warmup_batches=args.warmup_batches, rounds=args.rounds, seed=args.seed)
    if args.workload == "jpeg":
        workload = workloads.Workload(files=args.images, image_size=args.image_size,
                                      crop_size=args.crop_size, seed=args.seed)
        jpegs, labels = workloads.load_samples(workload, args.data_dir)
        samples = workloads.JpegSamples(jpegs, labels, length=settings.stream_samples)
        transform = (workloads.TransformWithCaption(workload, args.caption_words)
                     if args.caption_words else workloads.Transform(workload))
    else:
        workload = workloads.ArrayWorkload(args.workload, args.images, seed=args.seed)
        jpegs = labels = None
        samples = workload.load(settings.stream_samples)
        transform = workload.transform()
    x_first = np.asarray(transform(samples[0], workloads.sample_rng(args.seed, 0, 0))[0])
    by_name = {spec.name: spec for spec in LOADERS}

    if args.scaling:
        mode = "scaling"
        rows = [Row(by_name["python-loop"], 1, "python-loop")]
        for w in args.scaling:  # stoke at w workers, then the machine's ceiling for w cores
            rows += [Row(by_name["stoke-process"], w, f"stoke-process w={w}"),
                     Row(INDEPENDENT_LOOPS, w, f"independent-loops x{w}")]
    else:
        mode = "compare"
        names = args.only or [*LOADER_NAMES, INDEPENDENT_LOOPS.name]
        rows = [Row(by_name[n], settings.workers, n) for n in LOADER_NAMES if n in names]
        if INDEPENDENT_LOOPS.name in names:  # one core's ceiling, and the machine's
            rows += [Row(INDEPENDENT_LOOPS, w, f"independent-loops x{w}")
                     for w in sorted({1, settings.workers})]
    for row in rows:
        missing = [m for m in row.spec.requires if not installed(m)]
        if missing:
            row.status = "skipped"
            row.note = f"not installed: {', '.join(missing)}"
        elif row.spec.kind == "reference" and args.caption_words:
            row.status = "skipped"
            row.note = "the TF-ops reference has no caption step"
        elif row.spec.kind == "reference" and args.workload != "jpeg":
            row.status = "skipped"
            row.note = "the TF-ops reference exists for the jpeg workload only"
        elif row.spec.name.startswith("pydataset") and backend_note:
            row.note = backend_note

    def ctx_for(row: Row) -> Context:
        return Context(workload, settings, samples, transform, jpegs, labels, row.workers,
                       x_first.shape, x_first.dtype.name)

    def log(message: str) -> None:
        print(message, flush=True)

    load_start = common.load_average()
    started = time.time()
    print(f"{mode}: {len(rows)} rows, {settings.rounds} round(s), {settings.batches} timed "
          f"batches of {settings.batch_size} after {settings.warmup_batches} warm-up; "
          f"{workload.describe()}", flush=True)
    run_rounds(rows, ctx_for, settings.rounds, log)

    row_dicts = [r.as_dict() for r in rows]
    summary = summarise_scaling(row_dicts) if mode == "scaling" else summarise(row_dicts)
    machine = common.machine_info()
    machine["loadavg_start"] = load_start
    machine["loadavg_end"] = common.load_average()
    result = {
        "schema": SCHEMA,
        "mode": mode,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine,
        "workload": {**workload.as_dict(), "caption_words": args.caption_words},
        "settings": {
            "batch_size": settings.batch_size, "workers": settings.workers,
            "batches": settings.batches, "warmup_batches": settings.warmup_batches,
            "rounds": settings.rounds, "seed": settings.seed, "statistic": STATISTIC,
            "startup": "excluded from img/s; the first batch's latency, reported as startup_s",
            "warmup": "at least warmup_batches and at least startup_s of wall time",
            "stream_batches": settings.stream_batches,
            "consumer": "touches one image and one label per batch (no full copy)",
            "scaling_workers": args.scaling,
            "quick": args.quick,
        },
        "rows": row_dicts,
        "summary": summary,
    }
    print_table(result)
    tag = args.tag or socket.gethostname()
    out = Path(args.out) if args.out else (
        HERE / "results" / (f"pipeline_throughput{'-scaling' if mode == 'scaling' else ''}"
                            f"{'' if args.workload == 'jpeg' else '-' + args.workload}-{tag}.json"))
    write_json(out, result)
    print(f"wrote {out}  (plot: python benchmarks/plot.py {out})")
    failed = [r["name"] for r in row_dicts if r["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
