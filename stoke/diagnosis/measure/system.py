"""Sample the host (and GPUs) in the background while a training run is measured.

Owns :class:`SystemSampler`: one daemon thread that, a few times a second, reads per-core CPU
of the whole machine, the CPU of this process and its children, the CPU everything else takes
(machine total minus ours: other users' jobs competing for the cores), the RSS of this process
tree, and, when :mod:`stoke.diagnosis.measure.nvml` finds GPUs, one NVML reading per GPU.

Times are seconds on the same clock as the step samples (``time.perf_counter()`` minus the
run's start), so the analysis can line steps and load up. The sampler's own CPU time is kept
(:attr:`SystemSampler.cpu_time_s`) so the doctor can report what it cost.
"""

from __future__ import annotations

import threading
import time

import psutil

from stoke.diagnosis.record import SystemSample

# How often the list of child processes is refreshed: walking /proc costs more than a read.
_CHILDREN_REFRESH_S = 2.0


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
        self.cpu_time_s = 0.0

    @property
    def samples(self) -> list[SystemSample]:
        with self._lock:
            return list(self._samples)

    def start(self) -> None:
        if self._thread is not None:
            return
        # Prime the stateful psutil counters: the first reading of each is meaningless.
        psutil.cpu_percent(percpu=True)
        self._process.cpu_percent()
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
        per_core = [float(p) for p in psutil.cpu_percent(percpu=True)]
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
            rss_bytes=rss,
            gpus=gpus,
        )

    def _process_tree_usage(self) -> tuple[float, int]:
        now = time.monotonic()
        if now - self._children_checked_at >= _CHILDREN_REFRESH_S:
            self._children_checked_at = now
            try:
                current = {c.pid: c for c in self._process.children(recursive=True)}
            except psutil.Error:
                current = {}
            for pid, child in current.items():
                if pid not in self._children:
                    self._children[pid] = child
                    try:
                        child.cpu_percent()  # prime: counts from now on
                    except psutil.Error:
                        pass
            for pid in list(self._children):
                if pid not in current:
                    del self._children[pid]
        cpu = 0.0
        rss = 0
        for process in (self._process, *self._children.values()):
            try:
                with process.oneshot():
                    cpu += process.cpu_percent()
                    rss += process.memory_info().rss
            except psutil.Error:
                continue
        return cpu, rss

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
