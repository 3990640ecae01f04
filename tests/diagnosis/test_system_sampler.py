"""The host sampler counts the CPU of the run's own worker processes, however briefly they
live (stoke/diagnosis/measure/system.py). Counted in CPU seconds, not wall time: the test holds
on a loaded machine."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from stoke.diagnosis.measure.system import ProcessTreeCpu, SystemSampler, child_pids

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


# a child that waits for a line, burns --cpu seconds of its own CPU time or sleeps --sleep
# wall seconds, prints its own CPU time, and stays alive until its stdin closes (a pool worker)
WORKER = (
    "import sys, time\n"
    "mode, seconds = sys.argv[1], float(sys.argv[2])\n"
    "sys.stdin.readline()\n"
    "start = time.process_time()\n"
    "if mode == 'burn':\n"
    "    while time.process_time() - start < seconds:\n"
    "        pass\n"
    "else:\n"
    "    time.sleep(seconds)\n"
    "print(time.process_time() - start, flush=True)\n"
    "sys.stdin.read()\n"
)


def run_worker(mode: str, seconds: float, clock_from: set[int] | None = None
               ) -> tuple[float, float, float]:
    """(the clock's CPU seconds, the worker's own CPU seconds for its work, wall seconds) of
    one worker doing ``mode`` while a ProcessTreeCpu runs; ``clock_from``: the clock is made
    after the worker started, excluding the children alive then (the worker too)."""
    worker = subprocess.Popen([sys.executable, "-c", WORKER, mode, str(seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        clock = ProcessTreeCpu(exclude=child_pids() if clock_from is not None else frozenset())
        clock.start()
        started = time.perf_counter()
        worker.stdin.write("go\n")
        worker.stdin.flush()
        own_s = float(worker.stdout.readline())
        wall_s = time.perf_counter() - started
        counted_s = clock.seconds()  # the worker still alive, as a pool's are at a probe's end
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    return counted_s, own_s, wall_s


def test_the_probe_clock_counts_a_worker_process_by_its_cpu_not_its_wall_time():
    # a pool worker computing: its CPU is the input's cost on the cores, though it is not
    # this process's (time.process_time() missed it)
    counted_s, own_s, _ = run_worker("burn", 0.3)
    assert own_s >= 0.3
    assert counted_s >= 0.9 * own_s, (counted_s, own_s)
    # a pool worker waiting on I/O: its wall time is no cost on the cores
    counted_s, own_s, wall_s = run_worker("sleep", 0.5)
    assert wall_s >= 0.5
    assert counted_s < 0.3 * wall_s, (counted_s, wall_s)


def test_the_probe_clock_leaves_out_the_processes_it_is_told_to():
    # the training input's own pool, still running while a probe starts its own
    counted_s, own_s, _ = run_worker("burn", 0.3, clock_from=set())
    assert own_s >= 0.3
    assert counted_s < 0.5 * own_s, (counted_s, own_s)
