"""How busy each core is with work that competes with this process.

Owns :class:`CoreLoadMeter`: per-core busy shares between two readings, split into the work
that competes with this process for the cores and the work that yields to it: other
processes at a lower priority (a higher ``nice``). The scheduler gives those a core only when
nothing at a higher priority wants it (a ``nice 19`` job gets about 1.5% of a core against one
at ``nice 0``), so a job niced out of the way, which is what ``cpu-contention``'s fix tells
users to do, is not counted as contention. A run that is itself niced competes with work at
its own priority on equal terms.

The machine's busy time comes from the kernel's per-core counters; the lower-priority share
from the CPU time of those processes themselves (exact, where the per-core ``nice`` counter is
tick-sampled: on a virtual machine a busy loop at ``nice 19`` was booked 0.45 s "nice" and
1.54 s "system" out of 2 s). Reading every process costs about 2 ms per 70 processes, so the
process scan runs at most as often as keeps it under 2% of a core; in between, the last
scan's share stands.

Used by the doctor's :class:`~stoke.diagnosis.measure.system.SystemSampler` and by
``stoke env``'s CPU load check, so that both judge contention on the same numbers.

    meter = CoreLoadMeter()
    ...  # some time passes
    load = meter.read()
    load.competing_pct   # per core, 0-100: busy with work at this process' priority or above
    load.yielding_pct    # per core, 0-100: busy with lower-priority (niced) work of others
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

from stoke.diagnosis.measure.process_cpu import cpu_seconds

# The process scan runs at most every (its last cost x this factor) seconds: 2% of a core.
_SCAN_COST_FACTOR = 50.0


@dataclass(frozen=True)
class CoreLoad:
    """Per-core busy shares (0-100) over the ``seconds`` since the previous reading."""

    competing_pct: list[float]
    yielding_pct: list[float]
    seconds: float


def own_priority() -> int:
    """This process' nice value (0 where the system does not say)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


def _busy_and_total(times) -> tuple[float, float]:
    """(busy, total) seconds of one core's cumulative times, as psutil counts them: guest time
    is already inside user/nice, iowait is idle."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def _descendants(root: int, parents: dict[int, int]) -> set[int]:
    """The pids below ``root`` in a pid -> parent pid map."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    pending = list(children.get(root, ()))
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return found


class CoreLoadMeter:
    """Reads the machine's per-core CPU times and the CPU time of lower-priority processes;
    each :meth:`read` covers the time since the previous one (the first, since the meter was
    made)."""

    def __init__(self) -> None:
        self._priority = own_priority()
        self._previous = [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
        self._lower_seen: dict[int, float] = {}  # pid -> CPU seconds at the last scan
        self._scanned_at = time.monotonic()
        self._scan_every_s = 0.0
        self._lower_cores = 0.0  # the last scan's lower-priority CPU, in cores
        self._scan_lower_priority(first=True)

    def read(self) -> CoreLoad:
        current = [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
        busy, elapsed_s = [], []
        for (busy0, total0), (busy1, total1) in zip(self._previous, current):
            elapsed = total1 - total0
            elapsed_s.append(max(0.0, elapsed))
            busy.append(min(1.0, max(0.0, (busy1 - busy0) / elapsed)) if elapsed > 0 else 0.0)
        self._previous = current
        if time.monotonic() - self._scanned_at >= self._scan_every_s:
            self._scan_lower_priority(first=False)
        busy_cores = sum(busy)
        yielding_cores = min(self._lower_cores, busy_cores)
        # the lower-priority share is not known per core: taken off each in proportion
        keep = (busy_cores - yielding_cores) / busy_cores if busy_cores > 0 else 1.0
        seconds = sum(elapsed_s) / len(elapsed_s) if elapsed_s else 0.0
        return CoreLoad(
            competing_pct=[100.0 * b * keep for b in busy],
            yielding_pct=[100.0 * b * (1.0 - keep) for b in busy],
            seconds=seconds,
        )

    def _scan_lower_priority(self, first: bool) -> None:
        """The CPU of other processes at a lower priority than this one since the last scan, in
        cores (a process first seen now counts from now; one gone since is not counted). This
        process' own descendants are not others: stoke's process workers run niced below
        their trainer, and their CPU is the run's own (the sampler counts it in its tree)."""
        started = time.thread_time()
        now = time.monotonic()
        seen: dict[int, float] = {}
        used_s = 0.0
        lower: dict[int, float] = {}
        parents: dict[int, int] = {}
        for process in psutil.process_iter(["nice", "cpu_times", "ppid"]):
            info = process.info
            nice, times = info.get("nice"), info.get("cpu_times")
            if info.get("ppid") is not None:
                parents[process.pid] = info["ppid"]
            if nice is None or times is None or nice <= self._priority:
                continue
            lower[process.pid] = cpu_seconds(times, reaped_children=False)
        own = _descendants(os.getpid(), parents)
        for pid, cpu_s in lower.items():
            if pid in own:
                continue  # this run's own workers (stoke's run at nice +10): not others' work
            seen[pid] = cpu_s
            if not first and pid in self._lower_seen:
                used_s += max(0.0, cpu_s - self._lower_seen[pid])
        elapsed = now - self._scanned_at
        if not first and elapsed > 0:
            self._lower_cores = used_s / elapsed
        self._lower_seen = seen
        self._scanned_at = now
        self._scan_every_s = _SCAN_COST_FACTOR * (time.thread_time() - started)
