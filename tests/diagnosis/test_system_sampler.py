"""The host sampler counts the CPU of the run's own worker processes, however briefly they
live (stoke/diagnosis/measure/system.py). Counted in CPU seconds, not wall time: the test holds
on a loaded machine."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from stoke.diagnosis.measure.system import SystemSampler

# a child that burns 0.3 s of its own CPU time (not wall time) and exits
BURN = "import time\nwhile time.process_time() < 0.3:\n    pass\n"


def counted_cpu_s(sampler: SystemSampler, previous_t: float) -> tuple[float, float]:
    sample = sampler.sample_once()
    return sample.cpu_self_pct / 100.0 * (sample.t_s - previous_t), sample.t_s


def test_a_worker_that_lives_between_two_readings_is_counted_as_the_run():
    # a PyDataset pool or a DataLoader's workers, born and gone between two readings: their
    # CPU is the run's, not "other processes" (which would read as contention from others)
    sampler = SystemSampler(started_at=time.perf_counter())
    _, t = counted_cpu_s(sampler, 0.0)  # the first reading primes the counters
    own = psutil.Process().cpu_times()
    subprocess.run([sys.executable, "-c", BURN], check=True)
    after = psutil.Process().cpu_times()
    child_s = after.children_user + after.children_system - own.children_user - own.children_system
    assert child_s >= 0.25  # the child did burn its 0.3 s
    counted, _ = counted_cpu_s(sampler, t)
    assert counted >= 0.9 * child_s, (counted, child_s)


def cpu_s_with_reaped_children() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def test_a_child_seen_alive_is_not_counted_twice_when_it_exits():
    sampler = SystemSampler(started_at=time.perf_counter())
    _, t = counted_cpu_s(sampler, 0.0)
    before = cpu_s_with_reaped_children()
    child = subprocess.Popen([sys.executable, "-c", BURN + "import sys; sys.stdin.read()\n"],
                             stdin=subprocess.PIPE)
    try:
        process = psutil.Process(child.pid)
        while process.cpu_times().user + process.cpu_times().system < 0.25:
            time.sleep(0.02)
        total, t = counted_cpu_s(sampler, t)  # the child is seen alive, its CPU counted
        child.stdin.close()
        child.wait(timeout=60)
        later, _ = counted_cpu_s(sampler, t)  # reaped: its time is in our children's counters
        total += later
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    used = cpu_s_with_reaped_children() - before  # this process's and the child's, once
    assert used >= 0.25
    assert 0.8 * used <= total <= used + 0.1, (total, used)  # counted twice would add 0.3 s
