"""The doctor's phase marks (``overhead.phases``): when each part of a doctored run happened,
from both processes, in order; and a process's exact start. Orders and bounds only, no
durations: what ``benchmarks/doctor_overhead.py --wall`` splits a run's wall time with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import stoke
from stoke.diagnosis.measure import phases
from stoke.diagnosis.measure.options import DoctorOptions
from stoke.diagnosis.run.runner import run_measured

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(stoke.__file__)))
TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def test_a_process_start_is_never_before_it_was_spawned():
    # psutil's create_time adds a boot time rounded down to the second: it put processes up
    # to 1 s before their spawn, and the doctor's bootstrap_s 1 s too long
    spawned = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "from stoke.diagnosis.measure.phases import process_started_at;"
                               "print(repr(process_started_at()))"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT},
        check=True)
    started = float(out.stdout.strip())
    assert spawned - TICK_S - 0.002 <= started <= time.time()


def test_marks_are_named_and_a_repeated_start_keeps_the_first():
    overhead: dict = {}
    phases.mark(overhead, "probes_started", at=1.0)
    phases.mark(overhead, "probes_started", at=2.0)  # the window, then the probes
    phases.mark(overhead, "probes_ended", at=3.0)
    phases.mark(overhead, "probes_ended", at=4.0)
    assert overhead["phases"] == {"probes_started": 1.0, "probes_ended": 4.0}
    with pytest.raises(ValueError, match="unknown doctor phase 'probe_start'"):
        phases.mark(overhead, "probe_start")


def test_a_doctored_run_marks_both_processes_phases_in_order():
    before = time.time()
    run = run_measured(["python", "-c", "import time; time.sleep(0.2)"],
                       DoctorOptions(probes=False), timeout_s=300)
    after = time.time()
    assert run.exit_code == 0, run.message
    marks = run.record.overhead.phases
    order = ["doctor_started", "child_spawned", "process_started", "script_started",
             "script_ended", "record_ready", "child_exited", "record_loaded"]
    assert set(order) <= set(marks), sorted(marks)
    times = [marks[name] for name in order]
    # the kernel's start time is to the clock tick: a process may read as started up to a
    # tick before stoke doctor noted its spawn
    slack = {"process_started": TICK_S + 0.002}
    for (a, b), (name_a, name_b) in zip(zip(times, times[1:]), zip(order, order[1:]), strict=True):
        assert a <= b + slack.get(name_b, 0.0), (name_a, a, name_b, b)
    assert times[0] <= before + TICK_S  # this process started before it ran the command
    assert times[-1] <= after
    assert marks["script_ended"] - marks["script_started"] >= 0.2  # the script's own sleep
    overhead = run.record.overhead
    assert overhead.bootstrap_s == pytest.approx(marks["script_started"] - marks["process_started"])
    # the marks travel in the record's JSON
    assert json.loads(json.dumps(run.record.to_dict()))["overhead"]["phases"] == marks
