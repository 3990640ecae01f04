"""Work at a lower priority yields the cores to a run at normal priority, so the doctor and
`stoke env` do not count it as contention (stoke/diagnosis/measure/core_load.py). Counted in
CPU seconds the kernel booked, not wall time: the test holds on a loaded machine."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from stoke.diagnosis.measure.core_load import CoreLoadMeter, runs_at_normal_priority

# a process that lowers its own priority (what `renice -n 19` does to a job) and burns 0.5 s
# of CPU time
NICED_BURN = "import os, time\nos.nice(19)\nwhile time.process_time() < 0.5:\n    pass\n"


def reaped_children_cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.children_user + times.children_system


def test_a_niced_job_is_counted_as_yielding_not_as_competing():
    before = reaped_children_cpu_s()
    meter = CoreLoadMeter()
    subprocess.run([sys.executable, "-c", NICED_BURN], check=True)
    load = meter.read()
    burned_s = reaped_children_cpu_s() - before
    assert burned_s >= 0.45  # the job did burn its 0.5 s, at nice 19
    yielding_s = sum(load.yielding_pct) / 100.0 * load.seconds
    assert len(load.competing_pct) == len(load.yielding_pct) == psutil.cpu_count()
    if runs_at_normal_priority():
        # the kernel booked the job's time as niced: all of it is kept apart (10 ms ticks)
        assert yielding_s >= 0.8 * burned_s, (yielding_s, burned_s)
    else:  # this test itself is niced: that job competes with it on equal terms
        assert yielding_s == 0.0


def test_a_job_at_normal_priority_competes():
    if not runs_at_normal_priority() or os.getpriority(os.PRIO_PROCESS, 0) < 0:
        pytest.skip("this test runs niced: every job competes with it (see the test above)")
    before = reaped_children_cpu_s()
    meter = CoreLoadMeter()
    subprocess.run([sys.executable, "-c", NICED_BURN.replace("os.nice(19)\n", "")], check=True)
    load = meter.read()
    burned_s = reaped_children_cpu_s() - before
    competing_s = sum(load.competing_pct) / 100.0 * load.seconds
    assert competing_s >= 0.8 * burned_s, (competing_s, burned_s)
