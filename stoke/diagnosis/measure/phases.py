"""When each part of a doctored run happened: the doctor's phase marks.

Owns the record's ``overhead["phases"]`` (:data:`PHASES`, each a Unix time from
:func:`time.time`, comparable across the ``stoke doctor`` process and the script's) and the
exact start time of a process (:func:`process_started_at`). Marks are written by the parent
(:mod:`stoke.diagnosis.run.runner`), the bootstrap, the hooks and the probe schedule; only
``benchmarks/doctor_overhead.py --wall`` and tests read them, to split a doctored run's wall
time into the doctor's start, the script, the probes, the record and the exit. Leaves the
durations the analysis reads (``probes_s``, ``bootstrap_s``, ...) to their writers.
"""

from __future__ import annotations

import os
import time

# In the order they happen; each is written once (the first time for a repeated phase start,
# the last time for a repeated phase end).
PHASES = (
    "doctor_started",  # the stoke doctor process started (its interpreter, before imports)
    "child_spawned",  # stoke doctor starts the script's process
    "process_started",  # the script's process started
    "script_started",  # the bootstrap runs the script (the doctor's imports are done)
    "keras_imported",  # Keras finished importing: the hooks are installed now
    "hooks_installed",
    "fit_attached",  # the first measured fit (or train_on_batch loop) starts being timed
    "probes_started",  # the first probe (or the input-free window) starts
    "probes_ended",  # the last probe ends
    "script_ended",  # the script returned, raised or was stopped
    "record_ready",  # the record is made and about to be written (the file's mtime: written)
    "child_exited",  # stoke doctor saw the script's process end
    "record_loaded",  # stoke doctor read the record back
)
FIRST_ONLY = {"probes_started", "fit_attached"}

# The stoke doctor process's spawn time, for the script's process to put in its record.
SPAWNED_ENV = "STOKE_DOCTOR_SPAWNED_AT"


def mark(overhead: dict, phase: str, at: float | None = None) -> None:
    """Note that ``phase`` (one of :data:`PHASES`) happens now (or at Unix time ``at``)."""
    if phase not in PHASES:
        raise ValueError(f"unknown doctor phase {phase!r}. Expected one of: {', '.join(PHASES)}")
    phases = overhead.setdefault("phases", {})
    if phase in FIRST_ONLY and phase in phases:
        return
    phases[phase] = time.time() if at is None else at


def process_started_at() -> float | None:
    """The Unix time this process started, to the kernel's clock tick (10 ms) on Linux: its
    start in ``/proc/self/stat`` against the boot clock (psutil's ``create_time`` adds a boot
    time rounded to the second, up to 1 s off). Elsewhere psutil's; None when neither says."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            # field 22 (starttime, clock ticks after boot); the command name (field 2) may hold
            # spaces, so count from its closing parenthesis
            fields = stat.read().rsplit(")", 1)[1].split()
        started_after_boot_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        age_s = time.clock_gettime(time.CLOCK_BOOTTIME) - started_after_boot_s
        return time.time() - max(0.0, age_s)
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return None
