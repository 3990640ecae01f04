"""The CPU seconds of one process, as psutil reads them.

Owns :func:`cpu_seconds`: user plus system time of a process' ``cpu_times()``, and, where it is
asked for, the time of the children that process has reaped (``children_user``,
``children_system``: a worker that exited lands there once its parent waited for it; platforms
without those fields count none). Three readers use it, each counting something of its own:
the doctor's host sampler (this process tree, reaped workers included:
:class:`~stoke.diagnosis.measure.system.SystemSampler`), a probe's clock (its process tree less
the training input's pool: :class:`~stoke.diagnosis.measure.system.ProcessTreeCpu`) and the
lower-priority scan (other processes at a higher ``nice``, without their reaped children:
:class:`~stoke.diagnosis.measure.core_load.CoreLoadMeter`).

A process that is gone or not ours to read raises ``psutil.Error`` (``NoSuchProcess``,
``AccessDenied``) where its times are read, in the caller, which knows what a gone process
means for its count; a zombie's times can still be read until its parent reaps it (then they
move into the parent's reaped counters).

    times = psutil.Process(pid).cpu_times()
    cpu_seconds(times, reaped_children=True)
"""

from __future__ import annotations


def cpu_seconds(times, *, reaped_children: bool) -> float:
    """User plus system seconds of ``times`` (a psutil ``cpu_times()`` reading), plus those of
    the children the process has reaped when ``reaped_children``."""
    seconds = times.user + times.system
    if reaped_children:
        seconds += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    return seconds
