"""Start-up: workers start when the feed is made (before the first ``next()``), load the
pipeline while the caller does other work, and never outlive a feed nobody iterated; and
``executor="auto"`` never runs user code in the trainer's own threads when process workers
can run it, so a sample that segfaults raises ``WorkerDiedError`` (issue 12, item 9)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import stoke
from tests.core.helpers import identity, running, wait_for, worker_processes


class SquaresSequence:
    """A tutorial-style Sequence: len + __getitem__(batch_index)."""

    def __init__(self, batches: int = 6, batch_size: int = 4) -> None:
        self.batches = batches
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int):
        x = np.arange(index * self.batch_size, (index + 1) * self.batch_size, dtype=np.float32)
        return x[:, None], x * x


def counting(worker_index=0, worker_count=1):
    for i in range(worker_index, 8, worker_count):
        yield np.full((2, 3), i, np.float32), np.array([i, i])


def test_a_loader_starts_its_workers_without_waiting_and_serves_every_batch(tmp_path):
    from tests.core.helpers import GatedSamples

    gate = tmp_path / "gate"  # closed: no worker can finish loading the pipeline
    samples = GatedSamples(str(gate), np.zeros((32, 2), np.float32), np.arange(32))
    pipe = stoke.from_sequence(samples).map(identity).batch(4)
    loader = pipe.loader()
    try:
        started = time.monotonic()
        loader.start()
        # a start() that waited for the workers would wait for the gate's 60 s: the bound is
        # that, not the speed of starting processes on a loaded machine (was < 1.0 s)
        assert time.monotonic() - started < 30, "start() waited for the workers to load"
        assert len(worker_processes()) >= 1  # but they run, before any batch was asked for
        gate.touch()
        labels = [int(v) for _, y in loader.iter() for v in y]
        assert labels == list(range(32))
        assert loader.tuning().executor == "process"
    finally:
        loader.close()
    assert wait_for(lambda: not worker_processes())


def test_accelerate_starts_workers_before_the_first_batch():
    acc = stoke.accelerate(SquaresSequence(), workers=2)
    try:
        assert len(worker_processes()) == 2  # started by accelerate(), no batch asked for yet
        batches = [(x.copy(), y.copy()) for x, y in acc.iter()]
        assert len(batches) == 6
        np.testing.assert_array_equal(batches[5][1], np.arange(20, 24, dtype=np.float32) ** 2)
    finally:
        acc.close()
    assert wait_for(lambda: not worker_processes())


def test_a_generator_starts_its_worker_copies_when_accelerated():
    acc = stoke.accelerate(counting, replicas=2)
    try:
        assert len(worker_processes()) == 2
        got = sorted(int(y[0]) for _, y in acc.iter())
        assert got == list(range(8))
    finally:
        acc.close()


@pytest.mark.parametrize("make", [
    lambda: stoke.accelerate(SquaresSequence(), workers=2),
    lambda: stoke.accelerate(counting, replicas=2),
    lambda: stoke.from_arrays(np.zeros((8, 1), np.float32)).map(identity).batch(2).loader(),
], ids=["sequence", "generator", "loader"])
def test_workers_of_a_feed_nobody_iterated_stop_when_it_is_dropped(make):
    feed = make()
    if isinstance(feed, stoke.Loader):
        feed.start()
    assert wait_for(lambda: len(worker_processes()) >= 1)
    del feed
    gc.collect()
    assert wait_for(lambda: not worker_processes(), timeout_s=60.0), "workers outlived their feed"


def test_a_feed_never_iterated_leaves_no_worker_at_exit(tmp_path):
    script = tmp_path / "never_iterated.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, stoke, sys

        class Seq:
            def __len__(self): return 4
            def __getitem__(self, i): return np.zeros((2, 2), np.float32), np.zeros(2)

        acc = stoke.accelerate(Seq(), workers=2)
        loader = stoke.from_arrays(np.zeros((8, 1), np.float32)).batch(2).loader()
        loader.start()
        import psutil
        print(" ".join(str(c.pid) for c in psutil.Process().children()), flush=True)
        # exits without iterating or closing anything
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) >= 3
    assert wait_for(lambda: not any(running(p) for p in pids), timeout_s=60.0)


# -- executor="auto" and a sample that crashes the process running it --------------------

CRASH_SCRIPT = """
import ctypes, os, sys, time
import numpy as np
import stoke

TRAINER = os.getpid()

def crash_in_the_trainer(sample):
    # a C extension that crashes, but only where it would take the trainer down with it
    if os.getpid() == TRAINER:
        ctypes.string_at(0)
    time.sleep(0.001)
    return sample

def crash_on_37(sample):
    if int(sample[1]) == 37:
        ctypes.string_at(0)
    return sample

which = sys.argv[1]
n = 3000 if which == "trainer" else 200
fn = crash_in_the_trainer if which == "trainer" else crash_on_37
pipe = stoke.from_arrays(np.zeros((n, 4), np.float32), np.arange(n)).map(fn).batch(8).repeat(2)
try:
    seen = sum(len(y) for _, y in pipe.iter())
    print("delivered", seen)
except stoke.WorkerDiedError as exc:
    print("WorkerDiedError:", exc)
"""


def test_auto_never_runs_the_map_in_the_trainer_when_process_workers_can(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    out = subprocess.run([sys.executable, str(script), "trainer"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, f"the trainer died (rc {out.returncode}): {out.stderr[-2000:]}"
    assert "delivered 6000" in out.stdout


def test_a_segfaulting_sample_under_auto_raises_worker_died(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    out = subprocess.run([sys.executable, str(script), "sample"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, f"the trainer died (rc {out.returncode}): {out.stderr[-2000:]}"
    assert "WorkerDiedError" in out.stdout and "SIGSEGV" in out.stdout


class SlowToLoadInOddWorkers:
    """A Sequence that takes 1.5 s to unpickle in a worker whose pid is odd (so that of two
    workers, usually one is up well before the other), and whose ``on_epoch_end`` changes
    what ``__getitem__`` returns: the change must reach the late worker too."""

    def __init__(self) -> None:
        self.offset = 0

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return np.full((2, 1), index + self.offset, np.float32), np.full(2, self.offset)

    def on_epoch_end(self) -> None:
        self.offset += 100

    def __setstate__(self, state):
        import os

        if os.getpid() % 2:
            time.sleep(1.5)
        self.__dict__.update(state)


def test_batches_start_with_the_first_worker_up_and_messages_reach_the_late_one():
    acc = stoke.accelerate(SlowToLoadInOddWorkers(), workers=2)
    try:
        epochs = [[(int(x[0, 0]), int(y[0])) for x, y in acc.iter()] for _ in range(3)]
    finally:
        acc.close()
    for epoch, got in enumerate(epochs):
        assert got == [(i + 100 * epoch, 100 * epoch) for i in range(8)], epoch


class ShiftingSequence:
    """The first ``on_epoch_end`` changes what ``__getitem__`` returns (an offset of 100),
    once: a worker added later must get that change although it is not sent again."""

    def __init__(self) -> None:
        self.offset = 0

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int):
        time.sleep(0.02)
        return np.full((2, 1), index + self.offset, np.float32), np.full(2, self.offset)

    def on_epoch_end(self) -> None:
        self.offset = 100


def test_accelerate_auto_is_tuned_and_workers_added_later_hold_the_same_state():
    from stoke.accelerate.tuned_workers import TunedWorkers

    acc = stoke.accelerate(ShiftingSequence())  # workers="auto": tuned
    try:
        loader = acc._get_loader()
        loader.pool  # noqa: B018 - up, with its tuner
        assert loader.tuner is not None and acc.tuning().tuned
        loader.tuner.observe = lambda rows, wait_s: None  # the test resizes the pool itself
        workers = TunedWorkers(loader, 0)
        got, used = [], set()
        for number in range(5):
            epoch = []
            for position, (x, y) in enumerate(acc.iter()):
                epoch.append((int(x[0, 0]), int(y[0])))
                used.update(loader.process_pool().worker_pids())
                if position == 1 and number in (2, 4):
                    workers.apply("process", {2: 4, 4: 2}[number])
                if number == 2 and position >= 2:
                    time.sleep(0.3)  # slowly: the added workers come up meanwhile
            got.append(epoch)
        for number, epoch in enumerate(got):
            offset = 0 if number == 0 else 100
            assert epoch == [(i + offset, offset) for i in range(10)], number
        assert loader.process_pool().workers == 2
        assert len(used) == 4  # two workers were added along the way
    finally:
        acc.close()


# -- the trainer makes the first batches while every worker still starts --------------------
class GatedSequence:
    """Batch i holds i + offset and the pid that made it. A worker copy loads only once the
    ``gate`` file exists (a worker still importing, held as long as the test wants);
    ``__getitem__`` draws from numpy's global random (the trainer's must stay as it was);
    ``on_epoch_end`` changes the offset (the change must reach the workers when they come)."""

    def __init__(self, gate: str, batches: int = 6) -> None:
        self.gate = gate
        self.batches = batches
        self.offset = 0

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int):
        import os

        np.random.random()
        return (np.full((2, 1), index + self.offset, np.float64),
                np.full(2, os.getpid(), np.int64))

    def on_epoch_end(self) -> None:
        self.offset += 100

    def __setstate__(self, state):
        import os

        deadline = time.monotonic() + 60
        while not os.path.exists(state["gate"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.__dict__.update(state)


def _keras_iterator(acc, indices):
    for index in indices:
        yield acc[index]


def test_auto_serves_the_first_batches_from_the_trainer_while_the_workers_start(tmp_path):
    import os

    gate = tmp_path / "gate"
    acc = stoke.accelerate(GatedSequence(str(gate)), workers=2)  # executor="auto"
    try:
        numpy_state = np.random.get_state()[1].copy()
        stream = _keras_iterator(acc, range(6))
        with pytest.warns(stoke.StokeWarning, match="float64"):
            early = [next(stream) for _ in range(2)]  # no worker is up: the trainer makes them
        np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
        assert [int(y[0]) for _, y in early] == [os.getpid()] * 2
        assert all(x.dtype == np.float32 for x, _ in early)  # as the workers deliver them
        gate.touch()
        assert wait_for(lambda: acc._get_loader().workers_up())
        late = list(stream)
        assert os.getpid() not in {int(y[0]) for _, y in late}  # the workers go on
        assert [int(x[0, 0]) for x, _ in early + late] == list(range(6))  # once, in order
        acc.on_epoch_end()  # the state the workers must get
        following = [(int(x[0, 0]), int(y[0])) for x, y in _keras_iterator(acc, range(6))]
        assert [x for x, _ in following] == [100 + i for i in range(6)]
        assert os.getpid() not in {pid for _, pid in following}
    finally:
        acc.close()


class GatedAugmentation(GatedSequence):
    """A tutorial augmentation: each batch is a fresh draw from numpy's global random."""

    def __getitem__(self, index: int):
        return np.full((2, 1), np.random.random(), np.float32), np.zeros(2, np.float32)


def test_batches_made_in_the_trainer_draw_new_numbers_and_leave_the_users_draws(tmp_path):
    # each batch made while the workers start continues one stream of the stand-in's own:
    # restoring the trainer's state after each batch made them all draw the same numbers
    acc = stoke.accelerate(GatedAugmentation(str(tmp_path / "gate")), workers=1)
    try:
        np.random.seed(7)
        expected_user_draw = np.random.random(3)
        np.random.seed(7)
        stream = _keras_iterator(acc, range(6))
        draws = [float(next(stream)[0][0, 0]) for _ in range(4)]  # the gate is closed
        assert len(set(draws)) == 4, draws
        np.testing.assert_array_equal(np.random.random(3), expected_user_draw)
    finally:
        (tmp_path / "gate").touch()
        acc.close()


def test_process_executor_makes_every_batch_in_a_worker(tmp_path):
    import os
    import threading

    gate = tmp_path / "gate"
    acc = stoke.accelerate(GatedSequence(str(gate)), workers=1, executor="process")
    try:
        threading.Timer(0.5, gate.touch).start()
        got = [int(y[0]) for _, y in _keras_iterator(acc, range(6))]
        assert os.getpid() not in got
    finally:
        acc.close()


# -- a loader whose first batches the trainer makes while its workers start (to_keras) ------
def _gated_loader(gate, n=40):
    from tests.core.helpers import GatedSamples, with_maker

    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    pipe = stoke.from_sequence(GatedSamples(str(gate), x, np.arange(n))).map(with_maker)
    pipe = pipe.shuffle(2).batch(4)
    loader = pipe.loader(workers=1, executor="process")
    loader.start(trainer_first=True)
    return pipe, loader


def test_trainer_first_hands_the_rest_of_the_epoch_to_the_worker_once_it_is_up(tmp_path):
    import os

    gate = tmp_path / "gate"
    pipe, loader = _gated_loader(gate)
    try:
        assert len(worker_processes()) == 1  # started, loading the program
        batches = loader.iter(epoch=0)
        early = [tuple(a.copy() for a in next(batches)) for _ in range(3)]
        assert [int(pid[0]) for _, _, pid in early] == [os.getpid()] * 3
        gate.touch()
        pool = loader.pool
        assert wait_for(pool.hand_over_if_up, timeout_s=60)
        late = [tuple(a.copy() for a in batch) for batch in batches]
        assert os.getpid() not in {int(p) for _, _, pid in late for p in pid}
        assert loader.tuning().executor == "process"
    finally:
        loader.close()
    expected = list(pipe.iter(executor="inline", epoch=0, copy=True))
    assert len(early) + len(late) == len(expected) == 10
    for (x, y, _), (ex, ey, _) in zip(early + late, expected):
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


def test_an_iterator_dropped_early_leaves_nothing_for_the_trainer_to_make(tmp_path):
    """A probe (Keras takes one batch to build the model, then starts the epoch again): the
    batches queued behind it are dropped when the next iterator starts, not made in the
    trainer for nothing."""
    gate = tmp_path / "gate"  # never opened: the trainer makes every batch
    pipe, loader = _gated_loader(gate)
    try:
        probe = loader.iter(epoch=0)
        first = next(probe)[1].copy()
        probe.close()
        pool = loader.pool
        made = pool.tasks_run_here  # the layout probe and the first batch
        again = loader.iter(epoch=0)
        np.testing.assert_array_equal(next(again)[1], first)
        assert pool.tasks_run_here == made + 1
        assert len(list(again)) == 9
        assert pool.tasks_run_here == made + 10
    finally:
        loader.close()


def test_trainer_first_still_raises_when_no_worker_can_load_the_pipeline():
    """The trainer stands in while the workers start, not instead of them: workers that
    cannot load the pipeline stop the feed with their error (never served by the trainer
    alone, silently)."""
    from tests.core.helpers import LoadsOnlyInTheTrainer

    pipe = stoke.from_sequence(LoadsOnlyInTheTrainer()).batch(2)
    loader = pipe.loader(workers=1, executor="process")
    loader.start(trainer_first=True)
    try:
        deadline = time.monotonic() + 120
        with pytest.raises(stoke.StokeError, match="cannot be loaded in a worker"):
            for _ in loader.iter(epochs=None):
                assert time.monotonic() < deadline, "the workers' error never came"
        with pytest.raises(stoke.StokeError, match="cannot be loaded in a worker"):
            next(loader.iter())  # and again at every later use
    finally:
        loader.close()
    assert wait_for(lambda: not worker_processes())
