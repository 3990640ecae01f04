"""How busy each core is with work that competes with this process.

Owns :class:`CoreLoadMeter`: per-core busy shares between two readings of the kernel's CPU
times, split into the work that competes with this process for the cores and the work that
yields to it. On Linux the kernel books the CPU time of processes at a lower priority
(``nice`` > 0) on its own counter; the scheduler gives them a core only when nothing of normal
priority wants it (a ``nice 19`` job gets about 1.5% of a core against one at ``nice 0``). So a
job niced out of the way, which is what ``cpu-contention``'s fix tells users to do, is not
counted as contention for a run at normal priority. A run that is itself niced competes with
that work on equal terms, so then it all counts.

Used by the doctor's :class:`~stoke.diagnosis.measure.system.SystemSampler` and by
``stoke env``'s CPU load check, so that both judge contention on the same numbers.

    meter = CoreLoadMeter()
    ...  # some time passes
    load = meter.read()
    load.competing_pct   # per core, 0-100: busy with work at this process' priority or above
    load.yielding_pct    # per core, 0-100: busy with lower-priority (niced) work
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class CoreLoad:
    """Per-core busy shares (0-100) over the ``seconds`` since the previous reading."""

    competing_pct: list[float]
    yielding_pct: list[float]
    seconds: float


def runs_at_normal_priority() -> bool:
    """True when this process is not niced: lower-priority work then yields to it."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0) <= 0
    except (AttributeError, OSError):
        return True


def _busy_and_niced(times) -> tuple[float, float, float]:
    """(total, busy, niced) seconds of one core's cumulative times, as psutil counts them:
    guest time is already inside user/nice, iowait is idle."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return total, busy, getattr(times, "nice", 0.0)


class CoreLoadMeter:
    """Reads the machine's per-core CPU times; each :meth:`read` covers the time since the
    previous one (the first, since the meter was made)."""

    def __init__(self) -> None:
        self._normal_priority = runs_at_normal_priority()
        self._previous = [_busy_and_niced(t) for t in psutil.cpu_times(percpu=True)]

    def read(self) -> CoreLoad:
        current = [_busy_and_niced(t) for t in psutil.cpu_times(percpu=True)]
        competing, yielding, elapsed_s = [], [], []
        for (total0, busy0, niced0), (total1, busy1, niced1) in zip(self._previous, current):
            elapsed = total1 - total0
            elapsed_s.append(max(0.0, elapsed))
            if elapsed <= 0:
                competing.append(0.0)
                yielding.append(0.0)
                continue
            busy = min(1.0, max(0.0, (busy1 - busy0) / elapsed))
            niced = min(busy, max(0.0, (niced1 - niced0) / elapsed))
            if self._normal_priority:
                competing.append(100.0 * (busy - niced))
                yielding.append(100.0 * niced)
            else:
                competing.append(100.0 * busy)
                yielding.append(0.0)
        self._previous = current
        seconds = sum(elapsed_s) / len(elapsed_s) if elapsed_s else 0.0
        return CoreLoad(competing_pct=competing, yielding_pct=yielding, seconds=seconds)
