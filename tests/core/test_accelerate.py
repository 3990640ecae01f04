"""stoke.accelerate without Keras: Sequences and generators run by stoke's workers, read
with ``acc.iter()``. The same checks run over the process, thread and inline executors."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from stoke.accelerate import AcceleratedGenerator, AcceleratedSequence, accelerate
from stoke.accelerate.keras_requests import KerasRequests
from stoke.errors import LayoutError, SampleError, StokeError, StokeWarning, UnpicklableError

EXECUTORS = ["process", "thread", "inline"]


def _same(got, expected):
    """Equal batches: same structure, same arrays (dtype included)."""
    assert type(got) is type(expected) or isinstance(expected, (tuple, list))
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected)
        for key in expected:
            _same(got[key], expected[key])
    elif isinstance(expected, (tuple, list)):
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            _same(a, b)
    else:
        expected = np.asarray(expected)
        assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
        np.testing.assert_array_equal(got, expected)


def _copies(batches):
    """Batches from iter() are ring views valid until the next: keep copies."""
    return [_copy(b) for b in batches]


def _keras_iterator(acc, indices):
    """What one of Keras' iterators does: ask each index in turn, from its own generator
    (stoke tells Keras' iterators apart by the generator that asks)."""
    for index in indices:
        yield acc[index]


def _asked(acc, indices):
    """Copies of the batches one new Keras iterator gets for ``indices``."""
    return [_copy(b) for b in _keras_iterator(acc, indices)]


def _copy(batch):
    if isinstance(batch, dict):
        return {k: _copy(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_copy(v) for v in batch)
    return np.array(batch)


# -- datasets and generators (module level: process workers get them by reference) --


class ShufflingSequence:
    """A Keras-2-style Sequence: whole batches from an index array that ``on_epoch_end``
    reshuffles in place with a seeded generator; the last batch is smaller."""

    def __init__(self, samples=22, batch_size=4, features=3):
        self.samples = samples
        self.batch_size = batch_size
        self.features = features
        self.indexes = np.arange(samples)
        self.rng = np.random.default_rng(7)
        self.epochs_ended = 0

    def __len__(self):
        return -(-self.samples // self.batch_size)

    def __getitem__(self, index):
        chosen = self.indexes[index * self.batch_size:(index + 1) * self.batch_size]
        x = np.repeat(chosen[:, None], self.features, axis=1).astype(np.float32)
        return x, chosen.astype(np.int64)

    def on_epoch_end(self):
        self.rng.shuffle(self.indexes)
        self.epochs_ended += 1


def expected_passes(make, passes):
    """What iterating a fresh dataset by hand gives, pass after pass (the reference)."""
    dataset = make()
    out = []
    for _ in range(passes):
        if hasattr(dataset, "on_epoch_begin"):
            dataset.on_epoch_begin()
        out.append([dataset[i] for i in range(len(dataset))])
        if hasattr(dataset, "on_epoch_end"):
            dataset.on_epoch_end()
    return out


class DictSequence:
    """Items are dicts with a per-batch constant leaf and float64 data."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        rows = 2 if index == 2 else 4
        return ({"image": np.full((rows, 2, 2), index, np.float64),
                 "mask": np.ones((rows,), bool)},
                np.arange(rows) + 10 * index,
                np.array([0.5, 0.25]))


class VariableSequence:
    """Batch 1 has images of another size: it cannot go in the ring's layout."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        side = 5 if index == 1 else 4
        return np.full((2, side, side), index, np.float32), np.array([index, index])


class FailingSequence:
    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == 2:
            raise ValueError("batch two is cursed")
        return np.zeros((2, 2), np.float32), np.zeros(2)


class StringSequence:
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return np.zeros((2, 2), np.float32), ["a", "b"]


class LockedSequence(ShufflingSequence):
    """Cannot be pickled: process workers are impossible."""

    def __init__(self):
        super().__init__(samples=8)
        self.lock = threading.Lock()


class PidSequence:
    def __init__(self, batches=4):
        self.batches = batches

    def __len__(self):
        return self.batches

    def __getitem__(self, index):
        return np.array([os.getpid()]), np.array([index])


# A class that claims to be Keras' PyDataset, to test that workers get a copy without it.
class FakeKerasPyDataset:
    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers

    @property
    def workers(self):
        return self._workers


FakeKerasPyDataset.__module__ = "keras.src.trainers.data_adapters.py_dataset_adapter"
FakeKerasPyDataset.__qualname__ = "PyDataset"
FakeKerasPyDataset.__name__ = "PyDataset"


class KerasStyleBase(FakeKerasPyDataset):
    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def __len__(self):
        return self.n

    def row(self, index):
        return np.array([index, self.n])


class KerasStyleSequence(KerasStyleBase):
    def __getitem__(self, index):
        base = super().row(index)  # super() must work in the workers' copy
        imported = "keras.src.trainers.data_adapters.py_dataset_adapter" in sys.modules
        return base[None], np.array([imported])


def counting(limit, worker_index=0, worker_count=1):
    """Shards range(limit) across copies: each number once in all."""
    for number in range(worker_index, limit, worker_count):
        yield np.array([number, number * 2]), np.array(number)


def counting_batches(limit, batch_size=3):
    """Batches of consecutive numbers; the last one is smaller."""
    for start in range(0, limit, batch_size):
        chunk = np.arange(start, min(start + batch_size, limit))
        yield chunk.astype(np.float32), chunk


def seeded(count, seed=None):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.integers(0, 1 << 30, size=(1,))


def unsharded(count):
    yield from (np.array([i]) for i in range(count))


def failing_generator(count):
    for i in range(count):
        if i == 3:
            raise RuntimeError("the generator broke at 3")
        yield np.array([i])


def pid_generator(count, worker_index=0):
    for _ in range(count):
        yield np.array([os.getpid()])


# -- Sequences ---------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_sequence_passes_match_keras_order_and_on_epoch_end_state(executor):
    expected = expected_passes(ShufflingSequence, 3)
    with accelerate(ShufflingSequence(), workers=2, executor=executor) as acc:
        assert isinstance(acc, AcceleratedSequence)
        assert len(acc) == 6
        got = [_copies(acc.iter()) for _ in range(3)]
        assert acc.executor == executor
        assert acc.dataset.epochs_ended == 3  # on_epoch_end ran in the trainer, once a pass
    for pass_got, pass_expected in zip(got, expected, strict=True):
        _same(pass_got, pass_expected)
    # the last batch is smaller, and every sample comes once a pass
    assert [len(y) for _, y in got[1]] == [4, 4, 4, 4, 4, 2]
    assert sorted(np.concatenate([y for _, y in got[1]]).tolist()) == list(range(22))


def test_sequence_iter_epochs_runs_passes_back_to_back():
    expected = expected_passes(ShufflingSequence, 2)
    with accelerate(ShufflingSequence(), workers=2) as acc:
        got = _copies(acc.iter(epochs=2))
    _same(got, expected[0] + expected[1])


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_sequence_shuffle_permutes_batches_per_epoch_seeded(executor):
    with accelerate(ShufflingSequence(samples=40, batch_size=4), workers=2, executor=executor,
                    shuffle=True, seed=3) as acc:
        first = [y.tolist() for _, y in _copies(acc.iter())]
    reference = ShufflingSequence(samples=40, batch_size=4)
    batches = [reference[i][1].tolist() for i in range(10)]
    assert sorted(first) == sorted(batches)  # each batch once
    assert first != batches  # in another order
    with accelerate(ShufflingSequence(samples=40, batch_size=4), workers=1,
                    executor="inline", shuffle=True, seed=3) as again:
        assert [y.tolist() for _, y in _copies(again.iter())] == first  # seeded


def test_sequence_with_dicts_constants_and_float64_kept():
    expected = expected_passes(DictSequence, 1)[0]
    with accelerate(DictSequence(), workers=2, keep_float64=True) as acc:
        got = _copies(acc.iter())
    _same(got, expected)  # float64 stays float64; the (2,) constant is not cut to 2 rows


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_float64_becomes_float32_with_one_warning(executor):
    """As in pipelines: float64 leaves arrive as float32 (same values), one warning naming
    them and the opt-out; other dtypes are untouched."""
    expected = expected_passes(DictSequence, 1)[0]
    with pytest.warns(StokeWarning) as caught:
        with accelerate(DictSequence(), workers=2, executor=executor) as acc:
            got = _copies(acc.iter())
    messages = [str(w.message) for w in caught if "float64" in str(w.message)]
    assert len(messages) == 1 and "keep_float64=True" in messages[0], messages
    assert "[0]['image']" in messages[0]
    for ours, theirs in zip(got, expected, strict=True):
        assert ours[0]["image"].dtype == np.float32
        np.testing.assert_array_equal(ours[0]["image"], theirs[0]["image"].astype(np.float32))
        assert ours[1].dtype == theirs[1].dtype


class BareFloat64Sequence:
    """Batches that are one float64 array each (no tuple)."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        return np.full((2, 3), index, np.float64)


def bare_float64_batches():
    for index in range(3):
        yield np.full((2, 3), index, np.float64)


@pytest.mark.parametrize("data, executor", [(BareFloat64Sequence, "process"),
                                            (BareFloat64Sequence, "thread"),
                                            (bare_float64_batches, "thread")])
def test_float64_warning_for_batches_that_are_one_array(data, executor):
    """A batch that is one float64 array has no field to name: the warning says the batches
    are float64 (not "field(s) batch of the batches")."""
    source = data() if data is BareFloat64Sequence else data
    with pytest.warns(StokeWarning) as caught:
        with accelerate(source, executor=executor) as acc:
            got = [np.array(batch) for batch in acc.iter()]
    messages = [str(w.message) for w in caught if "float64" in str(w.message)]
    assert messages == [messages[0]] and messages[0].startswith(
        "stoke: the batches are float64 arrays: stoke.accelerate delivers float64 as float32"), \
        messages
    assert [batch.dtype for batch in got] == [np.float32] * 3
    assert [batch[0, 0] for batch in got] == [0, 1, 2]


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_batch_of_another_shape_is_made_in_the_trainer_with_a_warning(executor):
    expected = expected_passes(VariableSequence, 2)
    with accelerate(VariableSequence(), workers=2, executor=executor) as acc:
        with pytest.warns(StokeWarning, match=r"batch 1 of VariableSequence .* does not fit"):
            first = _copies(acc.iter())
        second = _copies(acc.iter())  # warned once
    _same(first, expected[0])
    _same(second, expected[1])


def test_workers_copy_has_no_keras_base_and_super_works():
    dataset = KerasStyleSequence(3, workers=4)
    with accelerate(dataset, workers=2, executor="process") as acc:
        got = _copies(acc.iter())
    assert [b[0].tolist() for b in got] == [[[0, 3]], [[1, 3]], [[2, 3]]]
    assert not any(b[1][0] for b in got)  # the fake Keras module was never imported there
    assert type(dataset).__mro__[2].__module__.startswith("keras.")  # the user's is untouched


def test_work_happens_in_other_processes():
    with accelerate(PidSequence(), workers=2, executor="process") as acc:
        pids = {int(x[0]) for x, _ in acc.iter()}
    assert os.getpid() not in pids


def test_failing_getitem_names_the_batch_and_the_error():
    with accelerate(FailingSequence(), workers=2, executor="process") as acc:
        with pytest.raises(SampleError, match=r"sample 2 failed in FailingSequence.__getitem__"
                                              r".*ValueError: batch two is cursed") as info:
            list(acc.iter())
    assert "batch two is cursed" in info.value.worker_traceback


def test_non_numeric_field_is_refused_with_the_fix():
    with accelerate(StringSequence(), workers=1, executor="inline") as acc:
        with pytest.raises(LayoutError, match=r"field \[1\] is list .* Return numpy arrays"):
            list(acc.iter())


def test_unpicklable_dataset_falls_back_to_threads():
    # said when the workers start: when the dataset is accelerated
    with pytest.warns(StokeWarning, match="runs in threads, not processes") as caught:
        acc = accelerate(LockedSequence(), workers=2)
    assert caught[0].filename == __file__  # points at the user's call
    with acc:
        batches = _copies(acc.iter())
        assert acc.executor == "thread"
    assert len(batches) == 2


def test_pass_left_early_is_abandoned_and_the_next_starts_clean():
    expected = expected_passes(ShufflingSequence, 1)[0]
    with accelerate(ShufflingSequence(), workers=2) as acc:
        for _ in acc.iter():
            break
        got = _copies(acc.iter())
        assert acc.dataset.epochs_ended == 1
    # the abandoned pass did not call on_epoch_end, so the state is the first epoch's
    _same(got, expected)


def test_keras_protocol_answers_each_index_once_per_pass():
    """What Keras does: ask for indices (maybe twice, maybe in any order), end epochs."""
    expected = expected_passes(ShufflingSequence, 2)
    with accelerate(ShufflingSequence(), workers=2) as acc:
        probe_0, probe_1 = _copy(acc[0]), _copy(acc[1])  # TF's signature probe
        acc.on_epoch_begin()
        first = _asked(acc, [0, 1, 5, 2, 3, 4])
        acc.on_epoch_end()
        second = _asked(acc, range(6))
        acc.on_epoch_end()
    _same([probe_0, probe_1], expected[0][:2])
    _same(first, expected[0])  # batches in the pass's order, whatever index Keras asked
    _same(second, expected[1])


def test_keras_protocol_without_epoch_hooks_keeps_every_batch_in_the_workers():
    """No on_epoch_end: a pass read to its end is closed at once; nothing is made again in
    the trainer (every batch comes from a worker process)."""
    dataset = PidSequence(batches=12)
    with accelerate(dataset, workers=2, executor="process", shuffle=True) as acc:
        acc.on_epoch_begin()
        _copy(acc[0])  # the build probe
        acc.on_epoch_end()
        epochs = []
        for _ in range(3):
            acc.on_epoch_begin()
            epochs.append(_asked(acc, np.random.default_rng(0).permutation(12)))
            acc.on_epoch_end()
    orders = [[int(y[0]) for _, y in batches] for batches in epochs]
    for order, batches in zip(orders, epochs, strict=True):
        assert sorted(order) == list(range(12))
        assert os.getpid() not in {int(x[0]) for x, _ in batches}
    assert orders[1] != orders[2]  # each epoch a new pass, reshuffled


def test_state_changed_between_epochs_by_a_callback_reaches_the_workers():
    """The next pass starts right after on_epoch_end; a change made after that (by a Keras
    callback, say) is still seen: the early work is dropped when the epoch begins."""
    with accelerate(ShufflingSequence(), workers=2, executor="process") as acc:
        acc.on_epoch_begin()
        _asked(acc, range(6))
        acc.on_epoch_end()  # the next pass is being made now
        acc.dataset.indexes[:] = np.arange(22)[::-1]  # a callback's curriculum step
        acc.on_epoch_begin()
        got = _asked(acc, range(2))
        acc.on_epoch_end()
    assert [y.tolist() for _, y in got] == [[21, 20, 19, 18], [17, 16, 15, 14]]


def test_keras_build_probe_then_on_epoch_end_restarts_with_the_new_state():
    expected = expected_passes(ShufflingSequence, 2)
    with accelerate(ShufflingSequence(), workers=2) as acc:
        acc.on_epoch_begin()
        _copy(acc[0])  # Keras builds the model from one batch, then ends the "epoch"
        acc.on_epoch_end()
        acc.on_epoch_begin()
        got = _asked(acc, range(6))
        acc.on_epoch_end()
    _same(got, expected[1])


class ShrinkingSequence(ShufflingSequence):
    """Drops its last samples at every epoch end: len() changes."""

    def on_epoch_end(self):
        self.samples -= 8


def test_len_read_again_every_pass():
    with accelerate(ShrinkingSequence(samples=22), workers=2, executor="process") as acc:
        batches = [len(_copies(acc.iter())) for _ in range(3)]
    assert batches == [6, 4, 2]  # ceil(22 / 4), ceil(14 / 4), ceil(6 / 4)


class LockAtEpochEnd(ShufflingSequence):
    def on_epoch_end(self):
        super().on_epoch_end()
        self.guard = threading.Lock()


def test_unpicklable_state_from_on_epoch_end_says_what_and_how():
    with accelerate(LockAtEpochEnd(), workers=2, executor="process") as acc:
        list(acc.iter())
        with pytest.raises(UnpicklableError, match=r"LockAtEpochEnd.guard \(lock\).*lazily"):
            list(acc.iter())


def test_accelerating_twice_is_the_same_object():
    with accelerate(ShufflingSequence(), workers=1, executor="inline") as acc:
        assert accelerate(acc) is acc


def test_another_librarys_loader_is_refused_with_what_to_write():
    torch_data = pytest.importorskip("torch.utils.data")
    import torch

    loader = torch_data.DataLoader(torch_data.TensorDataset(torch.zeros(8, 2)), batch_size=4)
    with pytest.raises(TypeError, match=r"stoke.from_sequence\(loader.dataset\)"):
        accelerate(loader)


def test_argument_errors_say_what_to_do():
    with pytest.raises(TypeError, match=r"len\(\) and __getitem__"):
        accelerate(42)
    import stoke

    with pytest.raises(TypeError, match=r"pipe.to_keras\(\)"):
        accelerate(stoke.from_arrays(np.zeros(4)).batch(2))
    with pytest.raises(TypeError, match="not a generator function"):
        accelerate(lambda: 1)
    with pytest.raises(ValueError, match=r"executor must be one of .* Received: executor='gpu'"):
        accelerate(ShufflingSequence(), executor="gpu")
    with pytest.raises(TypeError, match="replicas"):
        accelerate(ShufflingSequence(), replicas=2)
    with pytest.raises(TypeError, match="steps_per_epoch is for generators"):
        accelerate(ShufflingSequence(), steps_per_epoch=3)
    with pytest.raises(ValueError, match="generator can only be read in order"):
        accelerate(counting, 4, shuffle=True)
    with pytest.raises(ValueError, match=r"pass replicas=4 .* Received: workers=4"):
        accelerate(counting, 4, workers=4)
    with pytest.raises(ValueError, match=r"worker_index parameter .* unsharded\(count\)"):
        accelerate(unsharded, 4, replicas=2)


def test_closed_dataset_says_so():
    acc = accelerate(ShufflingSequence(), workers=1, executor="inline")
    acc.close()
    with pytest.raises(StokeError, match="closed"):
        list(acc.iter())


# -- generators --------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_generator_items_in_order_once(executor):
    with accelerate(counting, 7, executor=executor) as acc:
        assert isinstance(acc, AcceleratedGenerator)
        got = [(x.tolist(), int(y)) for x, y in acc.iter()]
        again = [int(y) for _, y in acc.iter()]  # a second pass runs the function again
    assert got == [([i, 2 * i], i) for i in range(7)]
    assert again == list(range(7))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_replicated_generator_shards_and_takes_turns(executor):
    with accelerate(counting, 10, replicas=3, executor=executor) as acc:
        got = [int(y) for _, y in acc.iter()]
    # copy k yields k, k+3, ...; turns 0, 1, 2, 0, ... (a finished copy drops out)
    assert got == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_replicated_generator_runs_in_parallel_processes():
    with accelerate(pid_generator, 3, replicas=2, executor="process") as acc:
        pids = {int(x[0]) for x in acc.iter()}
    assert len(pids) == 2 and os.getpid() not in pids


def test_replicas_get_their_own_seed():
    with accelerate(seeded, 3, replicas=2, seed=5) as acc:
        got = [int(x[0]) for x in acc.iter()]
    assert got[0::2] != got[1::2]
    with accelerate(seeded, 3, replicas=2, seed=5, executor="inline") as again:
        assert [int(x[0]) for x in again.iter()] == got


def test_generator_last_smaller_batch():
    with accelerate(counting_batches, 8) as acc:
        got = [y.tolist() for _, y in acc.iter()]
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_generator_object_is_run_from_its_function_in_a_process():
    acc = accelerate(counting(5))
    with acc:
        assert acc.executor == "process"
        assert [int(y) for _, y in acc.iter()] == list(range(5))


def test_started_generator_object_runs_in_a_thread():
    generator = counting(5)
    next(generator)
    with accelerate(generator) as acc:
        assert acc.executor == "thread"
        assert [int(y) for _, y in acc.iter()] == [1, 2, 3, 4]
        with pytest.raises(StokeError, match="can be read only once"):
            list(acc.iter())


def test_generator_expression_runs_in_a_thread():
    with accelerate(np.array([i]) for i in range(3)) as acc:
        assert acc.executor == "thread"
        assert [int(x[0]) for x in acc.iter()] == [0, 1, 2]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_failing_generator_raises_with_its_traceback(executor):
    with accelerate(failing_generator, 6, executor=executor) as acc:
        got = []
        with pytest.raises((SampleError, StokeError, RuntimeError), match="broke at 3"):
            for x in acc.iter():
                got.append(int(x[0]))
    assert got == [0, 1, 2]


def uneven(count):
    """Items of uneven cost: every 10th waits 20 ms more (a file read)."""
    import time

    for number in range(count):
        if number % 10 == 9:
            time.sleep(0.02)
        yield np.full((4, 3), number, np.float32), np.full(4, number)


def test_a_generators_tuning_says_what_is_fixed_and_why_and_keeps_its_items():
    import time

    with accelerate(uneven, 300) as acc:
        got = []
        for x, y in acc.iter():
            time.sleep(0.002)  # a consumer that takes its time: the ring may deepen
            got.append((x.tolist(), y.tolist()))
        report = acc.tuning()
    # exactly the generator's items, in its order
    assert got == [([[n] * 3] * 4, [n] * 4) for n in range(300)]
    decisions = {d.what: d for d in report.decisions}
    assert report.executor == "process" and report.workers == 1 and report.tuned
    assert "cannot move" in decisions["executor"].why
    assert "one stream in one order" in decisions["workers"].why
    assert report.ring_slots <= report.ring_capacity
    assert all(t.depth is not None and t.depth <= report.ring_capacity for t in report.trials)
    assert report.as_dict()["decisions"][0]["what"] == "executor"


def test_replicas_are_reported_as_set_by_the_user():
    with accelerate(counting, 10, replicas=3) as acc:
        assert sorted(int(y) for _, y in acc.iter()) == list(range(10))
        report = acc.tuning()
    assert report.workers == 3
    assert "replicas set by you" in [d for d in report.decisions if d.what == "workers"][0].why


def test_a_generator_in_a_thread_reports_why_and_its_fixed_depth():
    generator = counting(5)
    next(generator)
    with accelerate(generator, ring_slots=3) as acc:
        report = acc.tuning()
        assert [int(y) for _, y in acc.iter()] == [1, 2, 3, 4]
    assert report.executor == "thread" and not report.tuned and report.ring_slots == 3
    assert "cannot be moved" in report.decisions[0].why
    assert "ring_slots set by you" in report.decisions[-1].why


def test_generator_keras_protocol_continues_one_stream():
    with accelerate(counting, 100, steps_per_epoch=4) as acc:
        assert acc.num_batches == 4
        probe = int(acc[0][1])
        acc.on_epoch_end()  # Keras built the model from one item: not a full epoch
        first = [int(b[1]) for b in _keras_iterator(acc, range(4))]
        acc.on_epoch_end()
        second = [int(b[1]) for b in _keras_iterator(acc, range(4))]
        acc.on_epoch_end()
    assert probe == 0 and first == [0, 1, 2, 3] and second == [4, 5, 6, 7]


class KilledAtFive:
    """A Sequence whose worker dies (SIGKILL, as the out-of-memory killer does) on batch 5."""

    def __init__(self):
        self.trainer = os.getpid()

    def __len__(self):
        return 12

    def __getitem__(self, index):
        if index == 5 and os.getpid() != self.trainer:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        return np.full((2, 2), index, np.float32)


def killed_at_three(trainer):
    import signal

    for index in range(1000):
        if index == 3 and os.getpid() != trainer:
            os.kill(os.getpid(), signal.SIGKILL)
        yield np.full((2, 2), index, np.float32)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("make", ["sequence", "generator"])
def test_a_killed_worker_is_worker_died_error_not_a_hang(make):
    from stoke.errors import WorkerDiedError

    acc = accelerate(KilledAtFive(), workers=2, executor="process") if make == "sequence" \
        else accelerate(killed_at_three, os.getpid(), executor="process")
    with acc:
        with pytest.raises(WorkerDiedError, match="killed by signal SIGKILL"):
            list(acc.iter())


class WaitsForAnotherAsker:
    """A finalizer that waits for another thread's request, as a TensorFlow iterator's waits
    for its ``py_function`` threads (which ask for the next batch) when it is let go."""

    def __init__(self, acc):
        self.acc = acc
        self.answered: list[bool] = []

    def __del__(self):
        asker = threading.Thread(target=self.acc.on_epoch_end, daemon=True)
        asker.start()
        asker.join(timeout=60)  # a deadlock never ends; a loaded machine may take seconds
        self.answered.append(not asker.is_alive())


def held_by_an_iterator_let_go(acc, answered: list[bool]) -> None:
    """A Keras-like iterator that asked one batch, holding a :class:`WaitsForAnotherAsker`,
    dropped by its user: only the accelerated object's record of who asks keeps its frame."""

    def keras_iterator():
        waiter = WaitsForAnotherAsker(acc)
        waiter.answered = answered
        for index in range(2):
            yield acc[index]

    iterator = keras_iterator()
    next(iterator)


@pytest.mark.parametrize("kind", ["sequence", "generator"])
def test_keras_iterators_let_go_at_close_finalize_outside_the_lock(kind):
    """``stoke run``'s ``evaluate_generator`` on TensorFlow hung at close: dropping Keras'
    iterator frame ran a finalizer that waited for a thread waiting on the lock close held."""
    if kind == "sequence":
        acc = accelerate(ShufflingSequence(6), executor="thread")
    else:
        acc = accelerate(counting_batches, 12, steps_per_epoch=4, executor="thread")
    answered: list[bool] = []
    held_by_an_iterator_let_go(acc, answered)
    acc.close()
    assert answered == [True]


def test_a_keras_iterator_no_longer_followed_finalizes_outside_the_lock():
    acc = accelerate(ShufflingSequence(6), executor="thread")
    answered: list[bool] = []
    held_by_an_iterator_let_go(acc, answered)
    try:
        for _ in range(KerasRequests.STREAMS):  # newer iterators: the first one is let go
            next(_keras_iterator(acc, [0]))
        assert answered == [True]
    finally:
        acc.close()



class NiceSequence:
    """Each batch: the niceness of the process that made it."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return np.array([os.nice(0)]), np.array([index])


def test_process_workers_run_below_the_trainers_priority(monkeypatch):
    """Workers only fill the cores the trainer leaves: their start-up (importing what the
    dataset imports) took a CPU-trained model's cores for a whole short fit (issue 14)."""
    monkeypatch.delenv("STOKE_WORKER_NICE", raising=False)
    with accelerate(NiceSequence(), workers=1, executor="process") as acc:
        seen = {int(x[0]) for x, _ in acc.iter()}
    assert seen == {min(19, os.nice(0) + 10)}


class PickleCounter:
    """An attribute that counts how often it is pickled."""

    pickled = 0

    def __reduce__(self):
        PickleCounter.pickled += 1
        return (PickleCounter, ())


class CheapSequence:
    def __init__(self):
        self.counter = PickleCounter()
        self.values = np.arange(64, dtype=np.float32)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.values[16 * index:16 * (index + 1)]


def test_whole_passes_made_in_the_trainer_do_not_pickle_the_dataset_each_pass():
    """A dataset's state is noted (pickled, digested) for a pass made in the trainer only
    while a pass may end open: after whole passes, none (it cost a 16-batch epoch of a
    1 ms ``__getitem__`` 1 ms a batch)."""
    with accelerate(CheapSequence()) as acc:
        first = np.concatenate(list(acc.iter()))
        PickleCounter.pickled = 0
        later = [np.concatenate(list(acc.iter())) for _ in range(5)]
        assert "batches made in the trainer" in repr(acc)
    assert PickleCounter.pickled == 0
    for batches in [first, *later]:
        assert batches.tolist() == list(range(64))
