"""Sample the host (and GPUs) in the background while a training run is measured.

Owns :class:`SystemSampler`: one daemon thread that, a few times a second, reads per-core CPU
of the whole machine, the CPU of this process and its children, the CPU everything else takes
(machine total minus ours: other users' jobs competing for the cores; lower-priority work,
which yields to the run, is kept apart: :mod:`.core_load`), the RSS of this process
tree, and, when :mod:`stoke.diagnosis.measure.nvml` finds GPUs, one NVML reading per GPU.

Times are seconds on the same clock as the step samples (``time.perf_counter()`` minus the
run's start), so the analysis can line steps and load up. The sampler's own CPU time is kept
(:attr:`SystemSampler.cpu_time_s`) so the doctor can report what it cost.

Also owns :class:`ProcessTreeCpu`: the CPU seconds this process and its worker processes use
over one interval (a probe), where the interval's wall time is no measure of them (workers
that sleep on I/O, several of them at once).
"""

from __future__ import annotations

import os
import threading
import time

import psutil

from stoke.diagnosis.measure.core_load import CoreLoadMeter
from stoke.diagnosis.measure.process_cpu import cpu_seconds
from stoke.diagnosis.record import SystemSample

# How often the list of child processes is refreshed: walking /proc costs more than a read,
# so at most this often, and at most 2% of a core (the last walk's cost times 50); on a
# machine with a few hundred processes that is every reading, which sees pool workers that
# live for one epoch.
_CHILDREN_REFRESH_MAX_S = 2.0
_CHILDREN_REFRESH_COST_FACTOR = 50.0


class SystemSampler:
    """A background thread that appends :class:`SystemSample` readings.

    ``started_at`` is the ``perf_counter()`` value that counts as t=0. ``interval_s`` is the
    time between samples (0.25 s: 4 Hz). When more than ``max_samples`` are held, every other
    one is dropped and the interval doubles, so a long run keeps a bounded, even record.

        sampler = SystemSampler(started_at=time.perf_counter())
        sampler.start()
        ...  # training
        samples = sampler.stop()
    """

    def __init__(
        self,
        started_at: float,
        interval_s: float = 0.25,
        gpu_reader=None,
        max_samples: int = 20_000,
    ):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds. Received: interval_s={interval_s}")
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2. Received: max_samples={max_samples}")
        self._started_at = started_at
        self._interval_s = float(interval_s)
        self._gpu_reader = gpu_reader
        self._max_samples = max_samples
        self._samples: list[SystemSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._children: dict[int, psutil.Process] = {}
        self._children_checked_at = -1e9
        self._children_refresh_s = _CHILDREN_REFRESH_MAX_S
        self._cpu_seen: dict[int, float] = {}  # pid -> CPU seconds counted up to now
        self._credit_s: dict[int, float] = {}  # pid -> exited children's counted seconds
        self._parent_of: dict[int, int] = {}
        self._read_at = time.monotonic()
        self._children_walked = False
        self._core_load: CoreLoadMeter | None = None
        self.cpu_time_s = 0.0

    @property
    def samples(self) -> list[SystemSample]:
        with self._lock:
            return list(self._samples)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._core_load = CoreLoadMeter()  # readings count from now
        self._read_at = time.monotonic()
        self._cpu_seen[self._process.pid] = cpu_seconds(self._process.cpu_times(),
                                                        reaped_children=True)
        self._refresh_children()  # the children alive now count from now on
        self._children_checked_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name="stoke-doctor-system-sampler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> list[SystemSample]:
        """Stop the thread (waits up to ``timeout_s``) and return all samples."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        if self._gpu_reader is not None:
            self._gpu_reader.close()
            self._gpu_reader = None
        return self.samples

    def sample_once(self) -> SystemSample:
        """Take one reading now (also usable without the thread)."""
        t_s = time.perf_counter() - self._started_at
        if self._core_load is None:
            self._core_load = CoreLoadMeter()
        load = self._core_load.read()
        per_core = load.competing_pct
        self_pct, rss = self._process_tree_usage()
        other_pct = max(0.0, sum(per_core) - self_pct)
        gpus = []
        if self._gpu_reader is not None:
            try:
                gpus = self._gpu_reader.read()
            except Exception:
                gpus = []
        return SystemSample(
            t_s=t_s,
            cpu_per_core_pct=per_core,
            cpu_self_pct=self_pct,
            cpu_other_pct=other_pct,
            cpu_yielding_pct=sum(load.yielding_pct),
            rss_bytes=rss,
            gpus=gpus,
        )

    def _process_tree_usage(self) -> tuple[float, int]:
        """(CPU % of this process tree since the previous reading, its RSS in bytes).

        CPU is counted from cumulative CPU times, not per-process ``cpu_percent``: worker
        processes that live shorter than the children refresh (a ``PyDataset`` with
        ``use_multiprocessing=True`` makes a new pool each epoch; a ``DataLoader`` without
        ``persistent_workers`` new workers) are never seen alive, but their CPU time lands in
        the parent's ``children_user``/``children_system`` when they are reaped. A tracked
        child's time already counted is taken off its parent's at that moment, so nothing
        is counted twice."""
        now = time.monotonic()
        if now - self._children_checked_at >= self._children_refresh_s:
            self._children_checked_at = now
            walk_started = time.thread_time()
            self._refresh_children()
            self._children_refresh_s = min(
                _CHILDREN_REFRESH_MAX_S,
                _CHILDREN_REFRESH_COST_FACTOR * (time.thread_time() - walk_started))
        counted_s = 0.0
        rss = 0
        # children first: one found gone hands its counted time to its parent's credit
        # before the parent's reaped-children counters are read
        for pid, process in [*self._children.items(), (self._process.pid, self._process)]:
            try:
                with process.oneshot():
                    total = cpu_seconds(process.cpu_times(), reaped_children=True)
                    rss += process.memory_info().rss
            except psutil.Error:
                self._child_gone(pid)
                continue
            previous = self._cpu_seen.get(pid, total)
            delta = total - previous - self._credit_s.pop(pid, 0.0)
            if delta < 0:  # the credit outweighs this interval: keep the rest for later
                self._credit_s[pid] = -delta
                delta = 0.0
            counted_s += delta
            self._cpu_seen[pid] = total
        elapsed = now - self._read_at
        self._read_at = now
        return (100.0 * counted_s / elapsed if elapsed > 0 else 0.0), rss

    def _refresh_children(self) -> None:
        first_walk = not self._children_walked
        self._children_walked = True
        try:
            current = {c.pid: c for c in self._process.children(recursive=True)}
        except psutil.Error:
            current = {}
        for pid, child in current.items():
            if pid in self._children:
                continue
            try:
                with child.oneshot():
                    self._parent_of[pid] = child.ppid()
                    # found after the first walk, it was born while the run is measured:
                    # all its CPU time is the run's (create_time() is no use: it is only
                    # exact to the second)
                    self._cpu_seen[pid] = (cpu_seconds(child.cpu_times(), reaped_children=True)
                                           if first_walk else 0.0)
            except psutil.Error:
                continue
            self._children[pid] = child
        for pid in list(self._children):
            if pid not in current:
                self._child_gone(pid)

    def _child_gone(self, pid: int) -> None:
        """A tracked child has exited: its CPU time counted so far will show up again in its
        parent's reaped-children counters, so it is credited against that parent."""
        self._children.pop(pid, None)
        seen = self._cpu_seen.pop(pid, 0.0)
        parent = self._parent_of.pop(pid, None)
        self._credit_s.pop(pid, None)
        if parent is not None and (parent == self._process.pid or parent in self._children):
            self._credit_s[parent] = self._credit_s.get(parent, 0.0) + seen

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            started_cpu = time.thread_time()
            try:
                sample = self.sample_once()
            except Exception:
                sample = None
            if sample is not None:
                with self._lock:
                    self._samples.append(sample)
                    if len(self._samples) > self._max_samples:
                        self._samples = self._samples[::2]
                        self._interval_s *= 2
            self.cpu_time_s += time.thread_time() - started_cpu


class ProcessTreeCpu:
    """CPU seconds this process (every thread) and its descendant processes use from
    :meth:`start` to :meth:`seconds`: what a piece of work costs the cores, which its wall time
    is not (a worker sleeping on I/O costs none; four busy ones cost four times their wall).

    ``exclude``: pids of processes left out (the training input's own worker pool, still
    alive while a probe starts its own). Processes born later count in full, whoever their
    parent (a ``forkserver`` started earlier forks the new pool's workers), and so do those
    that exit within the interval (an exited child's time reaches its parent's
    reaped-children counters when the parent waits for it).

        clock = ProcessTreeCpu(exclude=child_pids())
        clock.start()
        ...  # the work, with its worker processes
        cpu_s = clock.seconds()
    """

    def __init__(self, exclude: set[int] | frozenset[int] = frozenset()):
        self._process = psutil.Process()
        self._exclude = set(exclude)
        self._started: dict[int, float] = {}

    def start(self) -> None:
        self._started = self._read()

    def seconds(self) -> float:
        now = self._read()
        used = sum(total - self._started.get(pid, 0.0) for pid, total in now.items())
        # alive at the start and gone now: its whole time is in its parent's reaped counters,
        # of which only what it used after the start belongs to the interval
        used -= sum(total for pid, total in self._started.items() if pid not in now)
        return max(0.0, used)

    def _read(self) -> dict[int, float]:
        try:
            children = self._process.children(recursive=True)
        except psutil.Error:
            children = []
        children = [child for child in children if child.pid not in self._exclude]
        # this process to the nanosecond (psutil reads clock ticks of 10 ms: an input on the
        # trainer's threads is timed as exactly as it was before its workers were counted)
        reaped = os.times()
        seconds = {self._process.pid: (time.process_time() + reaped.children_user
                                       + reaped.children_system)}
        for process in children:
            try:
                seconds[process.pid] = cpu_seconds(process.cpu_times(), reaped_children=True)
            except psutil.Error:
                continue
        return seconds


def child_pids() -> set[int]:
    """The pids of this process's descendants now."""
    try:
        return {child.pid for child in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()
