"""Work at a lower priority yields the cores to a run at normal priority, so the doctor and
`stoke env` do not count it as contention (stoke/diagnosis/measure/core_load.py). Counted in
CPU seconds the kernel booked, not wall time: the test holds on a loaded machine."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from stoke.diagnosis.measure.core_load import CoreLoadMeter, own_priority

# a job at nice N (what `renice -n N` does to it) that burns 0.5 s of CPU time when told to
JOB = """import os, sys, time
os.nice({nice})
print("ready", flush=True)
sys.stdin.readline()
start = time.process_time()
while time.process_time() - start < 0.5:
    pass
print("done", flush=True)
sys.stdin.read()
"""


# starts the job and exits: the job, reparented, is another program's, not this test's child
DETACHED = """import subprocess, sys
job = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(job.pid, flush=True)
"""


def burn_while_measured(nice: int, own_child: bool = False) -> tuple[float, float, float]:
    """(seconds the job burned, yielding and competing CPU seconds the meter read). The job is
    another process' (detached from this one) unless ``own_child``."""
    command = [sys.executable, "-c", JOB.format(nice=nice)]
    if not own_child:
        command = [sys.executable, "-c", DETACHED, JOB.format(nice=nice)]
    job = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = job.pid if own_child else int(job.stdout.readline())
        assert job.stdout.readline().strip() == "ready"
        process = psutil.Process(pid)
        before = sum(process.cpu_times()[:2])
        meter = CoreLoadMeter()
        job.stdin.write("go\n")
        job.stdin.flush()
        assert job.stdout.readline().strip() == "done"
        load = meter.read()
        burned_s = sum(process.cpu_times()[:2]) - before
    finally:
        job.stdin.close()
        job.wait(timeout=120)
        if not own_child:
            psutil.wait_procs([process], timeout=120)
    yielding_s = sum(load.yielding_pct) / 100.0 * load.seconds
    competing_s = sum(load.competing_pct) / 100.0 * load.seconds
    assert len(load.competing_pct) == len(load.yielding_pct) == psutil.cpu_count()
    return burned_s, yielding_s, competing_s


def test_a_niced_job_is_counted_as_yielding_not_as_competing():
    burned_s, yielding_s, _ = burn_while_measured(nice=19)
    assert burned_s >= 0.45  # the job did burn its 0.5 s, at nice 19
    if own_priority() < 19:
        # all of the job's time is kept apart (the scale is the kernel's 10 ms ticks)
        assert yielding_s >= 0.8 * burned_s, (yielding_s, burned_s)
    else:  # this test itself runs at nice 19: that job competes with it on equal terms
        assert yielding_s == 0.0


def test_a_job_at_this_priority_competes():
    priority = own_priority()
    if priority < 0:
        pytest.skip("a job cannot raise its priority to this test's (negative nice)")
    burned_s, yielding_s, competing_s = burn_while_measured(nice=0)
    assert burned_s >= 0.45
    # os.nice(0) keeps the test's own priority: the job competes, none of it yields
    assert competing_s >= 0.8 * burned_s, (competing_s, burned_s)


def test_the_runs_own_niced_workers_are_not_others_yielding_work():
    # stoke's process workers run at nice +10 below their trainer: their CPU is the run's own
    burned_s, yielding_s, _ = burn_while_measured(nice=19, own_child=True)
    assert burned_s >= 0.45
    assert yielding_s <= 0.2 * burned_s, (yielding_s, burned_s)
