"""Tuned process workers for an accelerated Sequence: :class:`TunedWorkers` lets
:class:`stoke.autotune.tuner.Tuner` resize a :class:`~.channel_loader.ChannelLoader`'s process
pool, by the same measurements as ``to_keras`` (delivered steps/s, the trainer's own CPU per
step, other processes' share of the cores).

Owns what resizing needs beyond the pool's ``resize``: a worker
added later starts from the program as it was packed at start-up, so every message broadcast
since (the batch layout, the state ``on_epoch_end`` changed) is sent to it again, in order,
before its first task. The decisions are the tuner's; the messages are :mod:`.updates`'s.
A generator's copies are never resized (each is pinned to its worker): only their prefetch
depth is tuned (:class:`stoke.autotune.prefetch.PrefetchTuner`), measured through this
class's CPU readings.
"""

from __future__ import annotations

from typing import Any

from stoke.autotune.meter import CpuMeter
from stoke.executors.host import allowed_cpus


class TunedWorkers:
    """The tuner's view of a channel loader's process pool: a
    :class:`~stoke.autotune.target.TunerTarget` that resizes it (process workers only: the
    executor is not tuned here)."""

    kind = "process"

    def __init__(self, loader: Any, trainer_pid: int) -> None:
        self.loader = loader
        self.unavailable: dict[str, str] = {}
        self.trainer_pid = trainer_pid
        self._meter = CpuMeter(trainer_pid, allowed_cpus())
        self._worker_bytes: int | None = None

    @property
    def pool(self) -> Any:
        return self.loader.process_pool()

    def apply(self, kind: str, workers: int) -> None:
        """Resize the process pool to ``workers`` (``kind`` is always "process" here)."""
        pool = self.pool
        now = pool.workers
        pool.resize(workers)
        for index in range(now, workers):  # the workers just added, if any
            self.loader.replay_to(index)

    def ready(self) -> bool:
        return self.pool.ready()

    def cpu_seconds_by_pid(self) -> dict[int, float]:
        return self._meter.cpu_seconds(self.pool.worker_pids())

    def idle_seconds(self) -> float:
        return self._meter.idle_seconds()

    def worker_bytes(self) -> int | None:
        if self._worker_bytes is None and self.pool.ready():
            self._worker_bytes = self._meter.own_memory(self.pool.worker_pids())
        return self._worker_bytes

    def prestart(self, kind: str, workers: int) -> None:
        pass  # one kind (process workers), already running: nothing to start ahead

    def release_idle(self) -> None:
        pass  # one pool: a worker taken out by apply() is let go by the pool itself
