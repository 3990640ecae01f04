"""Autotuning: the tuner's decisions on simulated pipelines (a fake clock: no real time),
then the real thing: auto on unpicklable and slow functions, the tuning report, the memory
budget, and exactly-once while the pool is resized and switched mid-epoch."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stoke
from stoke.autotune.target import TunerTarget
from stoke.autotune.tuner import Tuner, TunerSettings
from stoke.executors.auto import AutoPool


def sleepy(sample):
    """Waits like I/O (2 ms): parallelises with threads and with processes alike."""
    time.sleep(0.002)
    return sample


def noisy_slowly(sample, rng):
    time.sleep(0.001)
    x, y = sample
    return (x + rng.standard_normal(x.shape).astype(np.float32), y)


def slow_identity(sample):
    time.sleep(0.003)
    return sample


# ======================================================================================
# The tuner on a simulated pipeline
# ======================================================================================


class SimulatedPipeline:
    """A pool and a clock: ``rate(kind, workers)`` samples/s the workers make; a consumer
    that needs ``consumer_s`` per batch. Each observed batch advances the clock by what the
    slower side takes; the consumer waits for the difference."""

    def __init__(self, rate, cores=2, consumer_s=0.0, batch=32, start_delay_batches=3,
                 cpu_per_worker=1.0, unavailable=None):
        self.rate = rate
        self.cores = cores
        self.consumer_s = consumer_s
        self.batch = batch
        self.now = 0.0
        self.cpu = 0.0
        self.trainer_cpu = 0.0
        self.idle = 0.0
        self.cpu_per_worker = cpu_per_worker
        self.unavailable = dict(unavailable or {})
        self.running = None
        self.start_delay_batches = start_delay_batches
        self._starting = 0
        self.applied = []

    # -- the tuner's target (stoke.autotune.target.TunerTarget)
    def apply(self, kind, workers):
        if kind in self.unavailable:
            return
        self.applied.append((kind, workers))
        self.running = (kind, workers)
        self._starting = self.start_delay_batches

    def prestart(self, kind, workers):
        pass  # the simulated kinds start when applied (start_delay_batches)

    def ready(self):
        return self._starting == 0

    @property
    def kind(self):
        return self.running[0]

    trainer_pid = 0

    def cpu_seconds_by_pid(self):
        return {self.trainer_pid: self.trainer_cpu, 1: self.cpu}

    def idle_seconds(self):
        return self.idle

    def worker_bytes(self):
        return 50 << 20

    def release_idle(self):
        pass

    # -- the world
    def clock(self):
        return self.now

    def step(self, tuner):
        kind, workers = self.running
        produce_s = self.batch / self.rate(kind, workers)
        spent = max(produce_s, self.consumer_s)
        busy = min(workers, self.cores) * self.cpu_per_worker * (produce_s / spent)
        self.now += spent
        self.cpu += busy * spent
        self.idle += max(0.0, self.cores - busy) * spent
        if self._starting:
            self._starting -= 1
        tuner.observe(self.batch, max(0.0, produce_s - self.consumer_s))

    def run(self, tuner, batches):
        for _ in range(batches):
            self.step(tuner)


QUICK = TunerSettings(window_s=0.2, monitor_s=0.5, monitor_max_s=2.0)


def tune(sim, kinds=("thread", "process"), batches=3000, cores=None, **kwargs):
    tuner = Tuner(kinds, cores or sim.cores, memory_budget_bytes=8 << 30,
                  settings=kwargs.pop("settings", QUICK), clock=sim.clock, **kwargs)
    sim.running = tuner.config
    assert isinstance(sim, TunerTarget)
    tuner.attach(sim)
    layout = stoke.data.structure.BatchLayout.from_sample([np.zeros(4, np.float32)],
                                                     stoke.data.structure.flatten(0)[0], 32)
    tuner.ring_size(layout)
    sim.run(tuner, batches)
    return tuner


def linear(per_worker, cores, cap=None):
    return lambda workers: per_worker * min(workers, cores, cap or workers)


def test_gil_bound_function_gets_processes_on_every_core():
    cores = 8
    sim = SimulatedPipeline(lambda kind, n: 1000.0 if kind == "thread" else linear(1000, cores)(n),
                            cores=cores)
    tuner = tune(sim)
    report = tuner.report()
    assert (report.executor, report.workers) == ("process", 8)
    assert report.settled
    executor = next(d for d in report.decisions if d.what == "executor")
    assert executor.choice == "process" and executor.measured["process_samples_per_s"] > 0


def test_gil_releasing_function_keeps_threads_when_clearly_faster():
    cores = 4
    sim = SimulatedPipeline(
        lambda kind, n: (1300 if kind == "thread" else 1000) * min(n, cores), cores=cores)
    report = tune(sim).report()
    assert (report.executor, report.workers) == ("thread", 4)


def test_a_tie_goes_to_processes():
    sim = SimulatedPipeline(lambda kind, n: 1000.0 * min(n, 2) * (1.02 if kind == "thread" else 1))
    assert tune(sim).report().executor == "process"


def test_threads_that_plateau_lose_to_processes_that_climb():
    cores = 16
    sim = SimulatedPipeline(
        lambda kind, n: 1000 * min(n, 3) if kind == "thread" else 950 * min(n, cores),
        cores=cores)
    report = tune(sim, batches=6000).report()
    assert (report.executor, report.workers) == ("process", 16)


@pytest.mark.parametrize("saturates_at", [3, 5, 6])
def test_workers_stop_where_more_stop_paying(saturates_at):
    cores = 8
    rate = linear(1000, cores, cap=saturates_at)
    sim = SimulatedPipeline(lambda kind, n: rate(n), cores=cores)
    report = tune(sim, kinds=("process",)).report()
    assert rate(report.workers) >= 0.9 * rate(cores)
    assert report.workers <= 8


def test_the_cpu_budget_caps_workers():
    sim = SimulatedPipeline(lambda kind, n: 1000.0 * n, cores=16)
    report = tune(sim, kinds=("process",), cores=3).report()
    assert report.workers == 3
    assert any("budget" in d.why for d in report.decisions)


def test_consumer_bound_stops_early_then_grows_when_the_consumer_speeds_up():
    sim = SimulatedPipeline(lambda kind, n: 1000.0 * min(n, 8), cores=8, consumer_s=32 / 1500)
    tuner = tune(sim, kinds=("process",), batches=400)
    assert tuner.report().workers == 2  # 2 workers make 2000/s > the consumer's 1500/s
    sim.consumer_s = 0.0  # compilation done: the consumer is now fast
    sim.run(tuner, 6000)
    report = tuner.report()
    assert report.workers == 8
    assert any(d.what == "retune" for d in report.decisions)


def test_a_slower_consumer_lets_workers_go():
    sim = SimulatedPipeline(lambda kind, n: 1000.0 * min(n, 8), cores=8)
    tuner = tune(sim, kinds=("process",))
    assert tuner.report().workers == 8
    sim.consumer_s = 32 / 1000.0  # the model now takes 1000 samples/s
    sim.run(tuner, 3000)
    report = tuner.report()
    assert 1 < report.workers < 8
    shrink = [d for d in report.decisions if d.what == "workers" and "consumer takes" in d.why]
    assert shrink and shrink[-1].measured["consumer_wait"] <= 0.02


def test_sleeping_workers_go_past_the_core_budget_when_cores_are_idle():
    sim = SimulatedPipeline(lambda kind, n: 200.0 * n, cores=2, cpu_per_worker=0.05)
    report = tune(sim, kinds=("thread",)).report()
    assert report.workers > 2


def test_busy_machine_is_not_mistaken_for_sleeping_workers():
    # workers get little CPU because others take it, and no core is idle: stay at the budget
    sim = SimulatedPipeline(lambda kind, n: 200.0 * min(n, 2), cores=2, cpu_per_worker=0.3)
    sim_idle = sim.idle_seconds
    sim.idle_seconds = lambda: 0.0 * sim_idle()
    report = tune(sim, kinds=("thread",)).report()
    assert report.workers == 2


def test_an_executor_that_cannot_run_is_skipped_with_its_reason():
    sim = SimulatedPipeline(lambda kind, n: 1000.0 * min(n, 2),
                            unavailable={"process": "the function cannot be pickled"})
    report = tune(sim).report()
    assert report.executor == "thread"
    assert any("pickled" in d.why for d in report.decisions if d.what == "executor")


def test_fixed_workers_only_compare_executors():
    sim = SimulatedPipeline(lambda kind, n: (500 if kind == "thread" else 900) * n, cores=8)
    report = tune(sim, fixed_workers=3).report()
    assert (report.executor, report.workers) == ("process", 3)
    assert {t.workers for t in report.trials} == {3}


class SharedCores(SimulatedPipeline):
    """A model trained on the CPU, sharing ``cores`` with the workers (and ``others`` cores
    taken by other processes, which do not give way): a step takes ``trainer_cpu_s`` of
    the trainer's CPU; a worker makes a batch with ``worker_cpu_s`` of CPU. The trainer
    gets the CPU it needs; the workers share what is left, at most one core each."""

    def __init__(self, cores, trainer_cpu_s, worker_cpu_s, others=0.0):
        super().__init__(rate=None, cores=cores)
        self.trainer_cpu_s = trainer_cpu_s
        self.worker_cpu_s = worker_cpu_s
        self.others = others

    def step(self, tuner):
        _, workers = self.running
        free = self.cores - self.others
        rate = 1.0
        for _ in range(50):  # the steady state: the trainer's use depends on the rate
            worker_cores = max(0.05, min(workers, free - self.trainer_cpu_s * rate))
            produce_s = self.worker_cpu_s / worker_cores
            spent = max(produce_s, self.trainer_cpu_s)
            rate = 1 / spent
        self.now += spent
        self.trainer_cpu += self.trainer_cpu_s
        self.cpu += self.worker_cpu_s
        used = self.trainer_cpu_s + self.worker_cpu_s + self.others * spent
        self.idle += max(0.0, self.cores * spent - used)
        if self._starting:
            self._starting -= 1
        tuner.observe(self.batch, max(0.0, produce_s - self.trainer_cpu_s))

    def steps_per_s(self, workers):
        self.running = ("process", workers)
        before = self.now
        tuner = type("Quiet", (), {"observe": lambda *a: None})()
        for _ in range(10):
            self.step(tuner)
        return 10 / (self.now - before)


def test_a_trainer_that_mostly_waits_leaves_the_workers_every_core():
    # the demo on 2 cores: input 28 ms of CPU per batch, the model 10 ms per step
    sim = SharedCores(cores=2, trainer_cpu_s=0.010, worker_cpu_s=0.028)
    report = tune(sim, kinds=("process",)).report()
    assert report.workers == 2
    assert sim.steps_per_s(2) > 1.3 * sim.steps_per_s(1)
    trial = report.trials[-1]
    assert trial.trainer_cores == pytest.approx(0.010 * trial.steps_per_s, rel=0.01)
    text = str(report)
    assert "trainer" in text and "steps/s" in text and "ms of CPU per step" in text


class MeasuredCores(SimulatedPipeline):
    """Each worker count's numbers given outright: ``{workers: (produce_s, train_s,
    trainer_cpu_s)}`` per batch, every core busy (``cores`` of them): what the workers
    make a batch in, what a step takes, and the trainer's own CPU per step."""

    def __init__(self, table, cores=2):
        super().__init__(rate=None, cores=cores)
        self.table = table

    def step(self, tuner):
        produce_s, train_s, trainer_cpu_s = self.table[self.running[1]]
        spent = max(produce_s, train_s)
        self.now += spent
        self.trainer_cpu += trainer_cpu_s
        self.cpu += self.cores * spent - trainer_cpu_s  # the workers take the rest
        if self._starting:
            self._starting -= 1
        tuner.observe(self.batch, max(0.0, produce_s - train_s))


def test_a_trainer_that_needs_a_core_gets_it_back_when_fewer_workers_deliver_more():
    # 2 workers: the trainer takes 0.83 cores and still waits; 1 worker delivers more
    sim = MeasuredCores({2: (0.030, 0.025, 0.025), 1: (0.028, 0.012, 0.012)})
    report = tune(sim, kinds=("process",)).report()
    assert report.workers == 1
    back_off = [d for d in report.decisions if d.what == "workers" and "shares the cores" in d.why]
    assert back_off and back_off[0].choice == 1
    assert back_off[0].measured["trainer_cores"] == pytest.approx(0.012 / 0.028, rel=0.01)
    assert "took 0.8" in back_off[0].why  # what the trainer took with 2 workers


def test_a_trainer_that_does_not_wait_but_lacks_cpu_gets_cores_back():
    # 2 workers: the input keeps up, but the trainer runs 20 ms of its 40 ms steps (it had
    # no core the rest): 1 worker lets it step in 25 ms
    sim = MeasuredCores({2: (0.010, 0.040, 0.020), 1: (0.020, 0.025, 0.025)})
    report = tune(sim, kinds=("process",)).report()
    assert report.workers == 1


def test_a_window_taken_while_the_trainer_compiled_is_looked_at_again():
    # the first windows fall on compilation (the trainer busy, 2 workers look no better
    # than 1); once it runs, the consumer waits with room on the cores: 2 workers again
    sim = MeasuredCores({2: (0.030, 0.026, 0.024), 1: (0.028, 0.012, 0.012)})
    tuner = tune(sim, kinds=("process",), batches=0)
    while not tuner.report().settled:
        sim.step(tuner)
    assert tuner.report().workers == 1
    sim.table[2] = (0.018, 0.012, 0.012)  # compiled: 2 workers make a batch in 18 ms
    sim.run(tuner, 3000)
    report = tuner.report()
    assert report.workers == 2
    assert any(d.what == "retune" and "room" in d.why for d in report.decisions)


class CompilingFirst(MeasuredCores):
    """The trainer compiles during its first ``compile_batches`` steps: its CPU per step
    is ``compile_cpu_s`` then, and the workers, crowded, make a batch in ``compile_produce_s``."""

    def __init__(self, table, compile_batches, compile_cpu_s, compile_produce_s):
        super().__init__(table)
        self.compile_batches = compile_batches
        self.compile_cpu_s = compile_cpu_s
        self.compile_produce_s = compile_produce_s
        self.steps = 0

    def step(self, tuner):
        self.steps += 1
        if self.steps > self.compile_batches:
            return super().step(tuner)
        produce_s = self.compile_produce_s
        spent = max(produce_s, self.compile_cpu_s)
        self.now += spent
        self.trainer_cpu += self.compile_cpu_s
        self.cpu += self.cores * spent - self.compile_cpu_s
        if self._starting:
            self._starting -= 1
        tuner.observe(self.batch, max(0.0, produce_s - self.compile_cpu_s))


def test_a_window_where_the_trainer_compiled_is_measured_again_before_backing_off():
    # 2 workers deliver more (18 ms a batch against 28), but the first windows of 2
    # workers fall while the trainer compiles (70 ms of its CPU a step, the workers
    # crowded: 80 ms a batch): 1 worker looks better until 2 are measured again
    sim = CompilingFirst({2: (0.018, 0.012, 0.012), 1: (0.028, 0.012, 0.012)},
                         compile_batches=20, compile_cpu_s=0.070, compile_produce_s=0.080)
    tuner = tune(sim, kinds=("process",), batches=0)
    while not tuner.report().settled:
        sim.step(tuner)
    report = tuner.report()
    assert report.workers == 2
    assert not any(d.what == "retune" for d in report.decisions)  # right the first time
    assert [t.workers for t in report.trials] == [2, 2, 1, 2]  # 2 was measured again


def test_fewer_workers_that_deliver_less_are_not_kept():
    sim = MeasuredCores({2: (0.030, 0.025, 0.025), 1: (0.045, 0.012, 0.012)})
    report = tune(sim, kinds=("process",)).report()
    assert report.workers == 2
    assert any(t.workers == 1 for t in report.trials)  # it did look


def test_other_processes_on_the_cores_leave_less_room():
    # 4 cores, 2 of them taken by other processes, a light trainer: 2 workers, not 4
    sim = SharedCores(cores=4, trainer_cpu_s=0.002, worker_cpu_s=0.030, others=2.0)
    report = tune(sim, kinds=("process",)).report()
    assert report.workers == 2
    assert any("other processes 2.0" in d.why for d in report.decisions if d.what == "workers")


def test_report_reads_as_text_and_as_data():
    sim = SimulatedPipeline(lambda kind, n: 1000.0 * min(n, 2))
    report = tune(sim).report()
    text = str(report)
    assert "samples/s" in text and "executor" in text
    data = report.as_dict()
    assert data["trials"] and all(t["samples_per_s"] > 0 for t in data["trials"])


# ======================================================================================
# The real thing
# ======================================================================================


def labels(iterator):
    return [int(v) for _, y in iterator for v in np.atleast_1d(y)]


def test_auto_runs_an_unpicklable_function_in_threads():
    lock = threading.Lock()

    def locked(sample):  # holds a lock: cannot be pickled for process workers
        with lock:
            return sample

    pipe = stoke.from_arrays(np.zeros((64, 2), np.float32), np.arange(64)).map(locked).batch(8)
    iterator = pipe.iter()
    assert sorted(labels(iterator)) == list(range(64))
    report = iterator.tuning()
    assert report.executor == "thread" and report.tuned
    assert any("pickle" in d.why.lower() for d in report.decisions if d.what == "executor")


def test_auto_uses_several_workers_for_a_slow_function():
    n = 1600
    pipe = (stoke.from_arrays(np.zeros((n, 2), np.float32), np.arange(n))
            .map(sleepy).batch(8))
    iterator = pipe.iter()
    got = labels(iterator)
    assert sorted(got) == list(range(n))
    report = iterator.tuning()
    assert report.workers >= 2
    assert report.trials, "no window was measured"
    for trial in report.trials:
        assert trial.samples_per_s > 0 and 0 <= trial.consumer_wait <= 1 and trial.seconds > 0
    assert all(isinstance(d.why, str) and d.why for d in report.decisions)
    assert any(d.measured for d in report.decisions)


def test_fixed_settings_report_themselves():
    pipe = stoke.from_arrays(np.zeros((8, 2), np.float32), np.arange(8)).batch(4)
    iterator = pipe.iter(executor="thread", workers=2)
    list(iterator)
    report = iterator.tuning()
    assert (report.executor, report.workers, report.tuned) == ("thread", 2, False)
    assert "set by you" in str(report)


def test_a_batch_larger_than_the_memory_budget_says_so():
    pipe = stoke.from_arrays(np.zeros((64, 256, 256), np.float32), np.arange(64)).batch(16)
    with pytest.raises(stoke.StokeError) as info:
        next(pipe.iter(memory_budget_bytes=8 << 20))
    message = str(info.value)
    assert "does not fit the memory budget" in message
    assert "4.0 MiB" in message and "8.0 MiB" in message and "memory_budget_bytes" in message


def test_options_are_validated():
    with pytest.raises(ValueError, match="cpu_budget_cores"):
        stoke.from_arrays(np.zeros(4)).iter(cpu_budget_cores=0)


# -- exactly once while the pool changes under the loader ---------------------------------

def _muted(loader):
    """Start ``loader``'s pool with the tuner muted: the test drives the pool itself."""
    pool = loader.pool
    loader.tuner.observe = lambda rows, wait_s: None
    return pool


def test_exactly_once_in_order_while_resized_and_switched_mid_epoch():
    n = 360
    pipe = (stoke.from_arrays(np.arange(n, dtype=np.float32).reshape(n, 1), np.arange(n))
            .shuffle(3).map(noisy_slowly).batch(6))
    expected = [(x.copy(), y.copy()) for x, y in pipe.iter(executor="inline")]
    schedule = {2: ("thread", 3), 5: ("process", 2), 12: ("process", 3), 20: ("process", 1),
                26: ("thread", 1), 32: ("thread", 4), 38: ("process", 2), 44: ("process", 1)}
    loader = pipe.loader()
    try:
        pool = _muted(loader)
        pool.apply("process", 3)  # boot process workers now, so that switches take effect
        deadline = time.monotonic() + 60
        while not pool.ready() and time.monotonic() < deadline:
            pool.next_result(0.05)  # no task yet: only start-up messages to read
        pool.apply("thread", 1)
        ran = collections.Counter()
        submit = pool.submit

        def counting_submit(task):
            pool._switch_if_ready()
            ran[pool.active] += 1
            submit(task)

        pool.submit = counting_submit
        got = []
        for index, (x, y) in enumerate(loader.iter()):
            got.append((np.array(x), np.array(y)))
            if index in schedule:
                pool.apply(*schedule[index])
            if index == 50:
                loader.tuner.depth = loader.tuner.capacity  # a deeper ring mid-epoch
        assert len(got) == len(expected)
        for (gx, gy), (ex, ey) in zip(got, expected):
            np.testing.assert_array_equal(gy, ey)
            np.testing.assert_array_equal(gx, ex)
        assert ran["thread"] > 5 and ran["process"] > 5, ran
    finally:
        loader.close()


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 80), batch=st.integers(1, 9),
       changes=st.lists(st.tuples(st.integers(0, 12), st.integers(1, 4)), max_size=5))
def test_exactly_once_while_thread_workers_come_and_go(n, batch, changes):
    pipe = stoke.from_arrays(np.zeros((n, 1), np.float32), np.arange(n)).shuffle(1).batch(batch)
    expected = labels(pipe.iter(executor="inline"))
    schedule = dict(changes)
    loader = pipe.loader(executor="thread")
    try:
        pool = _muted(loader)
        got = []
        for index, (_, y) in enumerate(loader.iter()):
            got += [int(v) for v in y]
            if index in schedule:
                pool.apply("thread", schedule[index])
        assert got == expected
    finally:
        loader.close()


def test_removed_process_workers_finish_their_tasks_then_exit():
    pipe = (stoke.from_arrays(np.zeros((96, 1), np.float32), np.arange(96))
            .map(slow_identity).batch(4))
    loader = pipe.loader(executor="process")
    try:
        pool = _muted(loader)
        pool.apply("process", 3)
        iterator = loader.iter()
        got = labels(x for _, x in zip(range(4), iterator))
        inner = pool._pools["process"]
        before = set(inner.worker_pids())
        pool.apply("process", 1)
        got += labels(iterator)
        assert got == list(range(96))
        deadline = time.monotonic() + 60  # a retired worker exits once it gets a CPU
        while len(inner.worker_pids()) > 1 and time.monotonic() < deadline:
            inner.next_result(0.05)
        assert len(inner.worker_pids()) == 1 and set(inner.worker_pids()) < before
    finally:
        loader.close()


def test_a_pool_that_fails_to_start_in_the_background_is_dropped():
    # process workers that cannot import the function's module: auto stays with threads
    pipe = stoke.from_arrays(np.zeros((8, 1), np.float32), np.arange(8)).batch(4)
    pool = AutoPool(pipe.program, ("thread", "process"), 1)
    try:
        pool._packed.data = b"not a pickle"
        pool.apply("process", 1)
        deadline = time.monotonic() + 60
        while "process" not in pool.unavailable and time.monotonic() < deadline:
            pool.next_result(0.05)
        assert "could not load the pipeline" in pool.unavailable["process"]
        assert pool.kind == "thread"
    finally:
        pool.close()


def test_auto_falls_back_to_threads_when_process_workers_cannot_load_the_pipeline(
        tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "stoke_only_here.py").write_text(
        "def double(sample):\n    return (sample[0] * 2, sample[1])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("stoke_only_here")
    sys.path.remove(str(tmp_path))  # the workers will not find the module
    try:
        pipe = stoke.from_arrays(np.ones((16, 1), np.float32), np.arange(16)).map(
            module.double).batch(4)
        iterator = pipe.iter()
        assert sorted(labels(iterator)) == list(range(16))
        report = iterator.tuning()
        assert report.executor == "thread"
        assert any("could not load the pipeline" in d.why for d in report.decisions)
    finally:
        sys.modules.pop("stoke_only_here", None)


def test_release_idle_keeps_the_pool_being_switched_to():
    pipe = stoke.from_arrays(np.zeros((8, 1), np.float32), np.arange(8)).batch(4)
    pool = AutoPool(pipe.program, ("thread", "process"), 1)
    try:
        pool.apply("process", 1)  # booting in the background: not active yet
        pool.release_idle()
        assert "process" in pool._pools
        deadline = time.monotonic() + 60
        while not pool.ready() and time.monotonic() < deadline:
            pool.next_result(0.05)
        assert pool.kind == "process"
        pool.release_idle()  # now the thread pool is the idle one
        assert list(pool._pools) == ["process"]
    finally:
        pool.close()


# ======================================================================================
# The prefetch depth of a generator's copies (stoke.autotune.prefetch), simulated
# ======================================================================================


class SimulatedGenerator:
    """One generator copy that runs ahead by the tuner's depth, and a consumer that takes
    ``consume_s`` per item: item i starts when item i-1 is made and item i-depth was taken
    (its slot is free), and takes ``cost_s(i)``. The clock is the consumer's."""

    def __init__(self, tuner, cost_s, consume_s):
        from stoke.data.structure import BatchLayout, flatten

        self.tuner = tuner
        self.cost_s = cost_s
        self.consume_s = consume_s
        self.now = 0.0
        treedef, leaves = flatten(np.zeros(4, np.float32))
        tuner.ring_size(BatchLayout.from_sample(leaves, treedef, rows=8))
        self.made = []  # when each item was ready
        self.taken = []  # when the consumer took each item
        self.waits = []

    def run(self, items):
        for _ in range(items):
            i = len(self.made)
            depth = self.tuner.depth
            start = max(self.made[-1] if self.made else 0.0,
                        self.taken[i - depth] if i >= depth else 0.0)
            self.made.append(start + self.cost_s(i))
            asked = self.taken[-1] + self.consume_s if self.taken else 0.0
            self.now = max(asked, self.made[i])
            self.taken.append(self.now)
            self.waits.append(self.now - asked)
            self.tuner.observe(8, self.now - asked)
        return self


def prefetch_tuner(**kwargs):
    from stoke.autotune.prefetch import PrefetchTuner

    clock = {"now": 0.0}
    tuner = PrefetchTuner(1, machine_cores=2, memory_budget_bytes=1 << 30,
                          clock=lambda: clock["now"], **kwargs)
    return tuner, clock


def simulate(cost_s, consume_s, items, **kwargs):
    tuner, clock = prefetch_tuner(**kwargs)
    sim = SimulatedGenerator(tuner, cost_s, consume_s)
    original = tuner.observe

    def observe(rows, wait_s):  # the tuner reads the simulated consumer's clock
        clock["now"] = sim.now
        original(rows, wait_s)

    tuner.observe = observe
    return tuner, sim.run(items)


def test_uneven_items_get_a_deeper_ring_until_the_consumer_stops_waiting():
    # 0.5 ms an item, but every 40th waits 60 ms more (a file read): on average the copy
    # is far ahead of a consumer that takes 3 ms; 10 slots ahead do not cover the 60 ms
    tuner, sim = simulate(lambda i: 0.0005 + (0.060 if i % 40 == 39 else 0.0), 0.003, 6000)
    report = tuner.report()
    assert report.tuned and report.settled and report.executor == "process"
    assert report.workers == 1 and report.ring_slots >= 20
    assert any(d.what == "ring" and d.choice > 10 for d in report.decisions)
    assert not any(d.what == "bottleneck" for d in report.decisions)
    assert sum(sim.waits[-1000:]) < 0.01 * 1000 * 0.003  # it no longer waits
    assert sum(sim.waits[:200]) > 0.1  # it did with 10 (about 30 ms each 40 items)


def test_a_copy_slower_than_the_consumer_is_said_to_be_the_bottleneck():
    tuner, sim = simulate(lambda i: 0.004, 0.001, 1000)
    report = tuner.report()
    assert report.settled and report.ring_slots == 10  # deeper would stay empty
    bottleneck = [d for d in report.decisions if d.what == "bottleneck"]
    assert bottleneck and "replicas=N" in bottleneck[0].why
    assert bottleneck[0].measured["items_waited_for"] > 0.9


def test_a_copy_that_keeps_up_keeps_the_first_ring():
    tuner, _ = simulate(lambda i: 0.001, 0.003, 1000)
    report = tuner.report()
    assert report.settled and report.ring_slots == 10
    assert [d.what for d in report.decisions] == ["ring", "settled"]
    assert "keep up" in report.decisions[-1].why


def test_a_ring_depth_set_by_the_user_is_kept_and_measured():
    tuner, _ = simulate(lambda i: 0.0005 + (0.060 if i % 40 == 39 else 0.0), 0.003, 2000,
                        ring_slots=3)
    report = tuner.report()
    assert not report.tuned and report.ring_slots == report.ring_capacity == 3
    assert "set by you" in report.decisions[0].why
    assert report.trials and all(t.depth == 3 for t in report.trials)


def test_the_ring_fits_the_memory_budget():
    from stoke.autotune.prefetch import PrefetchTuner
    from stoke.data.structure import BatchLayout, flatten

    treedef, leaves = flatten(np.zeros(1 << 16, np.float32))  # 2 MiB rows x 8
    layout = BatchLayout.from_sample(leaves, treedef, rows=8)
    tuner = PrefetchTuner(1, machine_cores=2, memory_budget_bytes=5 * layout.slot_bytes)
    assert tuner.ring_size(layout) == (5, 5)
    with pytest.raises(stoke.StokeError, match="memory budget"):
        PrefetchTuner(1, machine_cores=2, memory_budget_bytes=layout.slot_bytes).ring_size(
            layout)
