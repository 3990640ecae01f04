"""padded_batch (with the ring grown mid-epoch), bucket_by_length, cache() and stoke.mix
under executor="ray", on a real local Ray cluster: the same batches as the inline executor."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import stoke

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

LENGTHS = [3, 5, 2, 9, 1, 17, 4, 40, 6, 11, 7, 2, 30, 8]


def tokens(i):
    return {"tokens": np.arange(LENGTHS[i], dtype=np.int32) + 1, "id": np.int32(i)}


def noisy(sample, rng):
    return sample + np.float32(rng.random())


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False})
    try:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def same(pipe):
    got = list(pipe.iter(executor="ray", workers=1, copy=True))
    want = list(pipe.iter(executor="inline", copy=True))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
        else:
            np.testing.assert_array_equal(a, b)
    return got


@pytest.mark.slow
def test_padded_grown_bucketed_cached_and_mixed_batches_under_ray(cluster):
    base = stoke.from_sequence(list(range(len(LENGTHS)))).map(tokens)
    padded = same(base.shuffle(1).padded_batch(4, lengths="lengths"))  # grows 4 -> 64
    assert sorted(np.concatenate([b["id"] for b in padded]).tolist()) == list(range(14))
    same(base.shuffle(1).bucket_by_length(lambda i: LENGTHS[i], [4, 10], [4, 3, 2]))
    cached = stoke.from_arrays(np.arange(20, dtype=np.float32)).map(lambda x: x * 2).cache()
    same(cached.shuffle(0).map(noisy).batch(6))
    mixed = stoke.mix([stoke.from_arrays(np.arange(5.0)).map(noisy),
                       stoke.from_arrays(np.arange(100.0, 108.0))], weights=[2, 1], seed=3)
    same(mixed.batch(5))
