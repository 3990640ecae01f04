"""Never wrong silently (issue 12, part A): kept batches are never overwritten, on every
path; abandoned and failed iterations give back their ring; a failed loader keeps raising.

Written as users write code: collecting labels over an epoch, a replay buffer, a tensor made
with ``torch.from_numpy`` and kept, ``break`` out of a loop, ``try``/``except`` and retry.
Ends with a soak: 50 faults in one process, with file descriptors, threads, memfds and RSS
flat.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
import warnings

import numpy as np
import psutil
import pytest

import stoke
from stoke.errors import SampleError, StokeError, StokeWarning, WorkerDiedError

EXECUTORS = ["process", "thread", "inline"]


# -- datasets (module level: process workers import them) --------------------------------
def labelled(n: int, size: int = 16):
    """Sample i is (an image filled with i, label i): any mix-up shows."""
    return [(np.full((size, size), i, np.float32), np.int64(i)) for i in range(n)]


class LabelledSequence:
    """A tutorial-style Sequence: batch b holds samples b*8 ... b*8+7, x filled with them."""

    def __init__(self, batches: int = 24, batch: int = 8, slow_first: float = 0.0) -> None:
        self.batches, self.batch, self.slow_first = batches, batch, slow_first
        self.indices = np.arange(batches * batch)
        self.epochs_ended = 0

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int):
        if index == 0 and self.slow_first:
            time.sleep(self.slow_first)  # later batches come back first
        ids = self.indices[index * self.batch:(index + 1) * self.batch]
        x = np.empty((len(ids), 4), np.float32)  # a buffer, as tutorials make them
        x[:] = ids[:, None]
        return x, ids.astype(np.int64)

    def on_epoch_end(self) -> None:
        self.epochs_ended += 1
        np.random.shuffle(self.indices)


def labelled_batches(count: int, batch: int = 8):
    for b in range(count):
        ids = np.arange(b * batch, (b + 1) * batch, dtype=np.int64)
        yield np.repeat(ids[:, None], 4, axis=1).astype(np.float32), ids


def fail_at(sample, index_to_fail=40):
    x, y = sample
    if int(y) == index_to_fail:
        raise ValueError(f"bad sample {int(y)}")
    return x, y


def fail_late(sample):
    return fail_at(sample, 300)


def kill_at(sample):
    x, y = sample
    if int(y) == 20:
        os.kill(os.getpid(), 9)
    return x, y


def check_pairs(xs, ys) -> None:
    """Every kept x still shows the label it came with."""
    for x, y in zip(xs, ys, strict=True):
        np.testing.assert_array_equal(np.asarray(x).reshape(len(y), -1)[:, 0], y)


# -- 1. kept batches are never overwritten --------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_labels_collected_over_an_epoch_are_all_there(executor):
    """The issue's case: labels.append(y) over a 1,536-sample epoch kept 192 values."""
    pipe = stoke.from_sequence(labelled(1536, 8)).shuffle(seed=1).batch(64)
    labels, images = [], []
    for x, y in pipe.iter(workers=2, executor=executor):
        labels.append(y)
        images.append(x)
    assert sorted(np.concatenate(labels).tolist()) == list(range(1536))
    check_pairs(images, labels)


def test_a_replay_buffer_keeps_what_it_sampled():
    """Keep a random third of the batches across three epochs; each stays as it was."""
    pipe = stoke.from_sequence(labelled(480)).shuffle(seed=2).batch(16)
    replay, rng = [], random.Random(0)
    with pipe.loader(workers=2, executor="process") as loader:
        for epoch in range(3):
            for x, y in loader.iter(epoch=epoch):
                if rng.random() < 0.33:
                    replay.append((x, y, y.copy()))
        assert loader.batches_kept >= 1  # then it gets copies while it keeps
    assert replay
    for x, y, y_then in replay:
        np.testing.assert_array_equal(y, y_then)
        np.testing.assert_array_equal(x[:, 0, 0], y)


def test_a_kept_part_of_a_batch_is_safe_and_the_rest_is_given_back():
    """Keeping only y keeps y's memory; x's memory goes back to the OS."""
    pipe = stoke.from_sequence(labelled(256, 64)).batch(32)
    with pipe.loader(workers=2, executor="process") as loader:
        kept = [y for _, y in loader.iter()]
        assert sorted(np.concatenate(kept).tolist()) == list(range(256))
        ring = loader.scheduler.resources.ring
        # only y of the retired batches is kept (later ones came as copies); x went back
        assert loader.batches_kept >= 1
        assert ring.retired_bytes() == loader.batches_kept * kept[0].nbytes


def test_torch_tensors_made_from_batches_keep_their_values():
    torch = pytest.importorskip("torch")
    pipe = stoke.from_sequence(labelled(256)).shuffle(seed=3).batch(32)
    kept = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in
            pipe.iter(workers=2, executor="process")]
    labels = torch.cat([y for _, y in kept]).tolist()
    assert sorted(labels) == list(range(256))
    for x, y in kept:
        assert torch.equal(x[:, 0, 0].long(), y)


def test_jax_arrays_made_from_batches_keep_their_values():
    jax = pytest.importorskip("jax")
    pipe = stoke.from_sequence(labelled(256)).shuffle(seed=4).batch(32)
    kept = [(jax.device_put(x), jax.device_put(y)) for x, y in
            pipe.iter(workers=2, executor="process")]
    labels = np.concatenate([np.asarray(y) for _, y in kept])
    assert sorted(labels.tolist()) == list(range(256))
    for x, y in kept:
        np.testing.assert_array_equal(np.asarray(x)[:, 0, 0], np.asarray(y))


def test_tensorflow_tensors_made_from_batches_keep_their_values():
    tf = pytest.importorskip("tensorflow")
    pipe = stoke.from_sequence(labelled(256)).shuffle(seed=6).batch(32)
    kept = [(tf.convert_to_tensor(x), tf.convert_to_tensor(y)) for x, y in
            pipe.iter(workers=2, executor="process")]
    labels = np.concatenate([y.numpy() for _, y in kept])
    assert sorted(labels.tolist()) == list(range(256))
    for x, y in kept:
        np.testing.assert_array_equal(x.numpy()[:, 0, 0], y.numpy())


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_unbatched_samples_keep_x_and_y_together(executor):
    pipe = stoke.from_sequence(labelled(200)).shuffle(seed=5)
    samples = list(pipe.iter(workers=2, executor=executor))  # list() keeps every sample
    assert sorted(int(y) for _, y in samples) == list(range(200))
    for x, y in samples:
        assert float(x[0, 0]) == int(y)


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_accelerated_sequence_iter_batches_can_be_kept(executor):
    acc = stoke.accelerate(LabelledSequence(24), workers=2, executor=executor)
    try:
        xs, ys = [], []
        for x, y in acc.iter():
            xs.append(x)
            ys.append(y)
        assert sorted(np.concatenate(ys).tolist()) == list(range(24 * 8))
        check_pairs(xs, ys)
    finally:
        acc.close()


def test_accelerated_generator_batches_can_be_kept():
    acc = stoke.accelerate(labelled_batches, 30, workers=1, executor="process")
    try:
        xs, ys = [], []
        for x, y in acc.iter():
            xs.append(x)
            ys.append(y)
        assert np.concatenate(ys).tolist() == list(range(240))
        check_pairs(xs, ys)
    finally:
        acc.close()


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_training_loop_that_drops_each_batch_stays_zero_copy(executor):
    pipe = stoke.from_sequence(labelled(512)).batch(16)
    with pipe.loader(workers=2, executor=executor, ring_slots=6) as loader:
        addresses = set()
        for epoch in range(2):
            for x, y in loader.iter(epoch=epoch):
                addresses.add(x.ctypes.data)
                float(x.sum() + y.sum())  # a training step that keeps nothing
        assert loader.batches_kept == 0
        assert len(addresses) <= 6  # always the ring's own slots


def test_a_consumer_that_keeps_batches_gets_copies_then_views_again():
    pipe = stoke.from_sequence(labelled(640)).batch(16)
    with pipe.loader(workers=2, executor="thread", ring_slots=4) as loader:
        batches = loader.iter()
        kept = [next(batches) for _ in range(10)]  # keeps: a slot or two retired, then copies
        retired = loader.batches_kept
        assert 1 <= retired <= 2
        for _ in range(10):  # drops: views again
            x, y = next(batches)
            check_pairs([x], [y])
        del x, y
        kept += [next(batches) for _ in range(10)]  # keeps again: views retired again
        assert retired < loader.batches_kept <= 2 * retired
        check_pairs([x for x, _ in kept], [y for _, y in kept])
        assert np.concatenate([y for _, y in kept]).tolist() == list(range(160)) + list(
            range(320, 480))


def test_kept_batches_past_the_budget_become_copies_with_one_warning():
    pipe = stoke.from_sequence(labelled(640, 32)).batch(32)  # 128 KiB a batch
    slot = 32 * 32 * 32 * 4 + 4096
    with pipe.loader(workers=2, executor="process", ring_slots=4,
                     memory_budget_bytes=4 * slot + slot // 2) as loader:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kept = list(loader.iter())  # keeps all 20 batches
        said = [w for w in caught if issubclass(w.category, StokeWarning)
                and "copies" in str(w.message)]
        assert len(said) == 1, [str(w.message) for w in caught]
        assert 1 <= loader.batches_kept <= 2
    labels = np.concatenate([y for _, y in kept])
    assert sorted(labels.tolist()) == list(range(640))
    check_pairs([x for x, _ in kept], [y for _, y in kept])


# -- 3. abandoned iterators give their slots back --------------------------------------------
def slow_first(sample):
    """Sample 0 is slow: the first batch comes back last, after the others are buffered."""
    if int(sample[1]) == 0:
        time.sleep(0.01)
    return sample


def test_300_early_breaks_lose_no_ring_slot():
    pipe = stoke.from_sequence(labelled(400, 4)).map(slow_first).batch(4)
    with pipe.loader(workers=2, executor="thread", ring_slots=8) as loader:
        for epoch in range(300):
            for _ in loader.iter(epoch=epoch):
                break
        labels = [y.copy() for _, y in loader.iter(epoch=300)]
        assert sorted(np.concatenate(labels).tolist()) == list(range(400))
        # every slot is back: free, or lingering after the last batch
        assert loader.scheduler.free_slot_count + loader.scheduler.lingering_count == 8


def test_thread_workers_and_on_epoch_end_never_stall():
    """Keras-like: take a few batches of each epoch, then on_epoch_end (which changes what
    thread workers read). Results already back for the dropped pass must be reclaimed."""
    acc = stoke.accelerate(LabelledSequence(24, slow_first=0.2), workers=2,
                           executor="thread", timeout_s=20)
    try:
        for _ in range(4):
            acc.on_epoch_begin()
            started = time.monotonic()
            for index in range(3):
                x, y = acc[index]
                check_pairs([x], [y])
            acc.on_epoch_end()
            assert time.monotonic() - started < 15
    finally:
        acc.close()


# -- 4. a failed iteration does not leak its ring -------------------------------------------
def memfd_count() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:stoke-ring"):
                count += 1
        except OSError:
            pass
    return count


def pin_malloc_mmap_threshold() -> None:
    """glibc raises its mmap threshold after large frees, so freed buffers of tens of MB
    (a pickled dataset) then stay in the heap, fragmented: RSS would measure the allocator.
    Pinned, large buffers go back to the OS when freed, and RSS measures stoke."""
    import ctypes

    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def test_caught_failures_give_their_ring_back():
    """A notebook's retry loop: 10 caught failures, each with a 32 MiB ring."""
    pin_malloc_mmap_threshold()
    pipe = stoke.from_sequence(labelled(400, 128)).map(fail_late).batch(64)  # 4 MiB a batch
    rss_before = psutil.Process().memory_info().rss
    for _ in range(10):
        with pytest.raises(SampleError):
            for batch in pipe.iter(workers=2, executor="process", ring_slots=8):
                float(batch[0].sum())
    assert memfd_count() <= 1  # at most the last batch, still held by `batch`
    del batch
    assert memfd_count() == 0
    assert psutil.Process().memory_info().rss - rss_before < 120 * 2**20


# -- 6. a failed loader keeps raising; one iterator per loader -------------------------------
@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_failed_loader_raises_its_error_at_every_later_use(executor):
    pipe = stoke.from_sequence(labelled(100)).map(fail_at).batch(8)
    with pipe.loader(workers=2, executor=executor) as loader:
        first = loader.iter()
        with pytest.raises(SampleError) as caught:
            list(first)
        for _ in range(3):  # never an empty epoch
            with pytest.raises(SampleError) as again:
                list(loader.iter(epoch=1))
            assert again.value is caught.value
        with pytest.raises(SampleError):
            next(first)


def test_a_dead_worker_is_reported_at_every_later_use():
    pipe = stoke.from_sequence(labelled(100)).map(kill_at).batch(8)
    with pipe.loader(workers=2, executor="process") as loader:
        with pytest.raises(WorkerDiedError):
            list(loader.iter())
        with pytest.raises(WorkerDiedError):
            list(loader.iter(epoch=1))


def test_a_second_iter_on_one_loader_ends_the_first_loudly():
    pipe = stoke.from_sequence(labelled(100)).batch(8)
    with pipe.loader(workers=2, executor="thread") as loader:
        first = loader.iter()
        next(first)
        second = loader.iter()
        with pytest.raises(StokeError, match="newer loader.iter"):
            next(first)
        labels = np.concatenate([y.copy() for _, y in second])
        assert sorted(labels.tolist()) == list(range(100))
        finished = loader.iter(epoch=1)
        list(finished)
        loader.iter(epoch=2)
        with pytest.raises(StopIteration):  # a finished iterator just stays finished
            next(finished)


# -- soak: 50 faults in one process -----------------------------------------------------------
def _fault(number: int) -> None:
    """One of five faults a long notebook session meets."""
    kind = number % 5
    if kind == 0:  # a failing sample, process workers
        with pytest.raises(SampleError):
            list(stoke.from_sequence(labelled(64)).map(fail_at).batch(8)
                 .iter(workers=1, executor="process"))
    elif kind == 1:  # a failing sample, thread workers
        with pytest.raises(SampleError):
            list(stoke.from_sequence(labelled(64)).map(fail_at).batch(8)
                 .iter(workers=2, executor="thread"))
    elif kind == 2:  # a killed worker
        with pytest.raises(WorkerDiedError):
            list(stoke.from_sequence(labelled(64)).map(kill_at).batch(8)
                 .iter(workers=1, executor="process"))
    elif kind == 3:  # break out of a loop, keeping a batch
        kept = None
        for kept in stoke.from_sequence(labelled(64)).batch(8).iter(workers=1,  # noqa: B007
                                                                     executor="process"):
            break
        assert float(kept[0][0, 0, 0]) == 0.0
    else:  # a failed loader used again
        with stoke.from_sequence(labelled(64)).map(fail_at).batch(8).loader(
                workers=2, executor="thread") as loader:
            for _ in range(2):
                with pytest.raises(SampleError):
                    list(loader.iter())


def _resources() -> tuple[int, int, int, int]:
    gc.collect()
    return (len(os.listdir("/proc/self/fd")), threading.active_count(), memfd_count(),
            psutil.Process().memory_info().rss)


def test_soak_50_faults_leave_fds_threads_memfds_and_rss_flat():
    pin_malloc_mmap_threshold()
    for number in range(5):  # warm up: imports, allocator pools
        _fault(number)
    fds, threads, memfds, rss = _resources()
    for number in range(50):
        _fault(number)
    fds_after, threads_after, memfds_after, rss_after = _resources()
    assert fds_after <= fds + 2, (fds, fds_after)
    assert threads_after <= threads + 1, (threads, threads_after)
    assert memfds_after == memfds == 0
    assert rss_after - rss < 64 * 2**20, (rss >> 20, rss_after >> 20)


def slow(sample):
    time.sleep(0.02)
    return sample


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_an_iterator_after_an_abandoned_one_gets_the_whole_epoch(executor):
    """Every slot still out with the abandoned iterator's tasks: wait for them, never an
    empty or short epoch."""
    pipe = stoke.from_sequence(labelled(64)).map(slow).batch(4)
    with pipe.loader(workers=2, executor=executor, ring_slots=4) as loader:
        for epoch in range(3):
            first = loader.iter(epoch=epoch)
            next(first)
            first.close()
            labels = [y.copy() for _, y in loader.iter(epoch=epoch)]
            assert sorted(np.concatenate(labels).tolist()) == list(range(64))
