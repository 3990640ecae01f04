"""What a tuning window measures of the machine: :class:`CpuMeter`, the CPU seconds of the
trainer process and of worker processes (by pid), the idle seconds of the cores this
process may run on, and a process worker's own memory. Read through ``psutil``; which cores
count is told by its maker (:func:`stoke.executors.host.allowed_cpus`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class CpuMeter:
    """CPU seconds of the trainer process and of worker processes, by pid, and the idle
    seconds of the cores this process may run on: what each tuning window measures.
    ``cpus``: the indices of those cores (None: every core)."""

    def __init__(self, trainer_pid: int, cpus: set[int] | None) -> None:
        self.trainer_pid = trainer_pid
        self.cpus = cpus
        self._procs: dict[int, Any] = {}

    def cpu_seconds(self, worker_pids: Iterable[int]) -> dict[int, float]:
        """CPU seconds so far (user + system) of the trainer and of ``worker_pids``."""
        import psutil

        seconds = {}
        for pid in (self.trainer_pid, *worker_pids):
            try:
                proc = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
                times = proc.cpu_times()
                seconds[pid] = times.user + times.system
            except psutil.Error:
                self._procs.pop(pid, None)
        return seconds

    def idle_seconds(self) -> float:
        """Idle (and I/O-wait) CPU seconds so far, summed over the cores we may run on."""
        import psutil

        allowed = self.cpus
        total = 0.0
        for index, times in enumerate(psutil.cpu_times(percpu=True)):
            if allowed is None or index in allowed:
                total += times.idle + getattr(times, "iowait", 0.0)
        return total

    @staticmethod
    def own_memory(worker_pids: list[int]) -> int | None:
        """Memory of its own (USS) of the first of ``worker_pids``, or None."""
        import psutil

        try:
            return psutil.Process(worker_pids[0]).memory_full_info().uss
        except (psutil.Error, IndexError, AttributeError):
            return None
