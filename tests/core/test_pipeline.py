"""The pipeline API: structure of batches, shuffling, rng determinism, dtype policy."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

import stoke
from tests.core import helpers

EXECUTORS = ["inline", "thread", "process"]


def collect(pipe, **kw):
    return [tuple(np.array(a) for a in batch) for batch in pipe.iter(**kw)]


def data(n=50):
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4), np.arange(n)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_batches_have_the_samples_structure(executor):
    x, y = data(10)
    pipe = stoke.from_arrays(x, y).map(helpers.as_dict).batch(4)
    batches = list(pipe.iter(executor=executor, workers=2, copy=True))
    assert [b["image"].shape for b in batches] == [(4, 2, 2), (4, 2, 2), (2, 2, 2)]
    assert isinstance(batches[0]["extra"], list) and batches[0]["extra"][0].shape == (4,)
    assert batches[2]["label"].tolist() == [8, 9]


def test_unbatched_pipeline_yields_samples():
    pipe = stoke.from_sequence([np.ones(3) * i for i in range(5)])
    samples = [np.array(s) for s in pipe.iter(executor="thread", workers=2)]
    assert [s[0] for s in samples] == [0, 1, 2, 3, 4]


def test_len_is_batches_per_epoch():
    x, y = data(10)
    assert len(stoke.from_arrays(x, y).batch(4)) == 3
    assert len(stoke.from_arrays(x, y).batch(4, drop_remainder=True)) == 2
    assert len(stoke.from_arrays(x, y).shard(1, 3).batch(2)) == 2  # 3 samples of 10


def test_shuffle_is_a_permutation_that_changes_by_epoch_and_seed():
    x, y = data(40)
    pipe = stoke.from_arrays(x, y).shuffle(seed=3).batch(8)
    epoch0 = np.concatenate([b[1] for b in collect(pipe, executor="inline")])
    epoch1 = np.concatenate([b[1] for b in collect(pipe, executor="inline", epoch=1)])
    other = np.concatenate([b[1] for b in collect(pipe.shuffle(seed=4), executor="inline")])
    assert sorted(epoch0) == list(range(40))
    assert not np.array_equal(epoch0, epoch1)
    assert not np.array_equal(epoch0, other)


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("workers", [1, 3])
def test_rng_and_order_do_not_depend_on_executor(executor, workers):
    x, y = data(30)
    pipe = stoke.from_arrays(x, y).shuffle(seed=7).map(helpers.add_noise).batch(4)
    reference = collect(pipe, executor="inline")
    got = collect(pipe, executor=executor, workers=workers)
    assert len(got) == len(reference)
    for (gx, gy), (rx, ry) in zip(got, reference):
        np.testing.assert_array_equal(gy, ry)
        np.testing.assert_array_equal(gx, rx)


def test_sample_rng_is_a_function_of_its_coordinates_only():
    from stoke.data.program import sample_rng

    fresh = sample_rng(7, 1, 5, 0).random(6)
    sample_rng(7, 1, 4, 0).standard_normal(1001)  # another sample leaves the generator mid-block
    np.testing.assert_array_equal(sample_rng(7, 1, 5, 0).random(6), fresh)
    streams = {tuple(sample_rng(*c).random(2)) for c in
               [(7, 1, 5, 0), (8, 1, 5, 0), (7, 2, 5, 0), (7, 1, 6, 0), (7, 1, 5, 1), (2**70, 1, 5, 0)]}
    assert len(streams) == 6  # seed, epoch, index and step each change the stream

    results = {}

    def draw(name, coordinates):
        for _ in range(200):  # interleave with the other thread
            values = sample_rng(*coordinates).random(3)
        results[name] = values

    threads = [threading.Thread(target=draw, args=(k, (7, 1, 5 + k, 0))) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    np.testing.assert_array_equal(results[0], sample_rng(7, 1, 5, 0).random(3))
    np.testing.assert_array_equal(results[1], sample_rng(7, 1, 6, 0).random(3))


def test_lambdas_and_closures_reach_process_workers():
    offset = 100
    pipe = stoke.from_sequence(list(range(6))).map(lambda s: s + offset).batch(3)
    assert [b.tolist() for b in pipe.iter(executor="process", workers=2)] == [
        [100, 101, 102], [103, 104, 105]]


def test_float64_becomes_float32_with_one_warning():
    x = np.random.default_rng(0).random((20, 3))
    pipe = stoke.from_arrays(x, np.arange(20)).batch(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = collect(pipe, executor="thread", workers=2)
    assert batches[0][0].dtype == np.float32
    float_warnings = [w for w in caught if issubclass(w.category, stoke.StokeWarning)]
    assert len(float_warnings) == 1 and "float64" in str(float_warnings[0].message)
    kept = collect(stoke.from_arrays(x, np.arange(20)).batch(5, keep_float64=True),
                   executor="inline")
    assert kept[0][0].dtype == np.float64


def test_filter_keeps_batches_full():
    x, y = data(40)
    pipe = stoke.from_arrays(x, y).shuffle(seed=1).filter(helpers.keep_odd).batch(6)
    batches = collect(pipe, executor="process", workers=2)
    sizes = [len(b[1]) for b in batches]
    assert sizes == [6, 6, 6, 2]
    labels = np.concatenate([b[1] for b in batches])
    assert sorted(labels) == list(range(1, 40, 2))


@pytest.mark.parametrize("filtered", [False, True])
def test_the_pipeline_its_length_and_its_program_agree_on_a_filter(filtered):
    x, y = data(12)
    pipe = stoke.from_arrays(x, y).map(helpers.identity)
    if filtered:
        pipe = pipe.filter(helpers.keep_odd)
    pipe = pipe.batch(4)
    assert pipe.steps_have_filter() is filtered
    with pipe.loader(workers=1, executor="inline") as loader:
        assert loader.program.has_filter is filtered
        sizes = [len(b[1]) for b in loader.iter(epoch=0)]
    assert sizes == ([4, 2] if filtered else [4, 4, 4])
    if filtered:
        with pytest.raises(TypeError, match="not known before it runs"):
            len(pipe)
    else:
        assert len(pipe) == 3


def test_repeat_runs_several_epochs_on_the_same_workers():
    x, y = data(10)
    pipe = stoke.from_arrays(x, y).shuffle(seed=0).batch(5).repeat(3)
    labels = [np.array(b[1]) for b in pipe.iter(executor="process", workers=2)]
    assert len(labels) == 6
    for epoch in range(3):
        assert sorted(np.concatenate(labels[2 * epoch: 2 * epoch + 2])) == list(range(10))


def test_loader_keeps_workers_across_epochs():
    x, y = data(12)
    pipe = stoke.from_arrays(x, y).shuffle(seed=0).batch(4)
    with pipe.loader(workers=2, executor="process") as loader:
        pids_before = loader.pool.worker_pids()
        for epoch in range(3):
            labels = np.concatenate([np.array(b[1]) for b in loader.iter(epoch=epoch)])
            assert sorted(labels) == list(range(12))
        assert loader.pool.worker_pids() == pids_before


def test_loader_drains_an_abandoned_epoch():
    x, y = data(64)
    pipe = stoke.from_arrays(x, y).batch(4)
    with pipe.loader(workers=2, executor="process", ring_slots=3) as loader:
        first = loader.iter(epoch=0)
        next(first)  # leave work in flight
        labels = np.concatenate([np.array(b[1]) for b in loader.iter(epoch=1)])
        assert sorted(labels) == list(range(64))


def test_from_files_reads_bytes(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.bin").write_bytes(bytes([i]) * 8)
    pipe = stoke.from_files(str(tmp_path / "*.bin"), labels=list(range(5))).map(
        lambda s: (np.frombuffer(s[0], np.uint8), s[1])).batch(5)
    (x, y), = collect(pipe, executor="process", workers=2)
    assert x.shape == (5, 8) and x[3, 0] == 3 and y.tolist() == [0, 1, 2, 3, 4]


def test_from_files_without_matches_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no files"):
        stoke.from_files(str(tmp_path / "*.jpg"))


def test_bad_arguments_name_the_value():
    x, y = data(4)
    with pytest.raises(ValueError, match="executor must be one of"):
        stoke.from_arrays(x, y).batch(2).iter(executor="gpu")
    with pytest.raises(ValueError, match="workers=0"):
        stoke.from_arrays(x, y).batch(2).iter(workers=0)
    with pytest.raises(ValueError, match="before .batch"):
        stoke.from_arrays(x, y).batch(2).map(helpers.identity)
    with pytest.raises(TypeError, match="__len__"):
        stoke.from_sequence(iter([1, 2]))
    with pytest.raises(ValueError, match="same length"):
        stoke.from_arrays(np.zeros(3), np.zeros(4))


def test_large_arrays_travel_by_shared_memory():
    from stoke.executors.payload import pack

    x = np.zeros((512, 1024), np.float32)  # 2 MiB
    pipe = stoke.from_arrays(x, np.arange(512)).batch(64)
    packed = pack(pipe.program)
    try:
        assert len(packed.data) < 100_000 and packed.spans
    finally:
        packed.close()
    assert sum(len(b[1]) for b in collect(pipe, executor="process", workers=2)) == 512
