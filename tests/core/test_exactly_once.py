"""Exactly once: every index of an epoch appears once, for every worker count, batch size,
executor, shard and resume point (property tests with hypothesis)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stoke
from tests.core import helpers

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def labels_of(iterator):
    return [int(v) for _, y in iterator for v in np.atleast_1d(y)]


@FAST
@given(n=st.integers(0, 60), batch=st.integers(1, 17), workers=st.integers(1, 3),
       executor=st.sampled_from(["inline", "thread"]), seed=st.integers(0, 3),
       drop=st.booleans())
def test_every_index_once_threads(n, batch, workers, executor, seed, drop):
    pipe = stoke.from_arrays(np.zeros((n, 2), np.float32), np.arange(n)).shuffle(seed).batch(
        batch, drop_remainder=drop)
    got = labels_of(pipe.iter(executor=executor, workers=workers))
    expected = n - (n % batch if drop else 0)
    assert len(got) == expected == len(set(got))
    assert len(pipe) == (expected // batch if drop else -(-expected // batch))


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 50), batch=st.integers(1, 9), workers=st.integers(1, 3))
def test_every_index_once_processes(n, batch, workers):
    pipe = stoke.from_arrays(np.zeros((n, 2), np.float32), np.arange(n)).shuffle(1).batch(batch)
    got = labels_of(pipe.iter(executor="process", workers=workers))
    assert sorted(got) == list(range(n))


@FAST
@given(n=st.integers(1, 40), batch=st.integers(1, 7), count=st.integers(1, 4), seed=st.integers(0, 2))
def test_shards_partition_each_epoch(n, batch, count, seed):
    base = stoke.from_arrays(np.zeros((n, 1), np.float32), np.arange(n)).shuffle(seed)
    seen = []
    for index in range(count):
        seen += labels_of(base.shard(index, count).batch(batch).iter(executor="inline"))
    assert sorted(seen) == list(range(n))


@FAST
@given(n=st.integers(1, 50), batch=st.integers(1, 8), stop=st.integers(0, 12),
       filtered=st.booleans(), executor=st.sampled_from(["inline", "thread"]))
def test_resume_from_saved_state_delivers_the_rest_exactly(n, batch, stop, filtered, executor):
    pipe = stoke.from_arrays(np.zeros((n, 1), np.float32), np.arange(n)).shuffle(5)
    if filtered:
        pipe = pipe.filter(helpers.keep_odd)
    pipe = pipe.batch(batch)
    full = labels_of(pipe.iter(executor="inline"))
    iterator = pipe.iter(executor=executor, workers=2)
    first = []
    for _, (_, y) in zip(range(stop), iterator):
        first += y.tolist()
    state = json.loads(json.dumps(iterator.state().to_dict()))  # survives a file
    iterator.close()
    rest = labels_of(pipe.iter(executor=executor, workers=2, state=state))
    if state["epoch"] == 1:  # the epoch was finished: a resume starts the next one
        assert first == full and sorted(rest) == sorted(full)
    else:
        assert first + rest == full


def test_state_from_another_pipeline_is_refused():
    a = stoke.from_arrays(np.zeros((10, 1)), np.arange(10)).batch(2)
    state = a.iter(executor="inline").state()
    with pytest.raises(ValueError, match="different pipeline"):
        a.shuffle(1).iter(executor="inline", state=state)


def test_resume_with_process_workers_mid_epoch():
    pipe = stoke.from_arrays(np.zeros((40, 1), np.float32), np.arange(40)).shuffle(2).batch(6)
    iterator = pipe.iter(executor="process", workers=2)
    first = [v for _, (_, y) in zip(range(3), iterator) for v in y.tolist()]
    state = iterator.state()
    iterator.close()
    rest = labels_of(pipe.iter(executor="process", workers=2, state=state))
    assert first + rest == labels_of(pipe.iter(executor="inline"))


def test_ring_memory_is_private_and_unnamed():
    """The ring has no name in /dev/shm; other users cannot reach it through /proc either."""
    import os
    import stat

    pipe = stoke.from_arrays(np.zeros((8, 4), np.float32), np.arange(8)).batch(4)
    iterator = pipe.iter(executor="process", workers=2)
    next(iterator)
    ring = iterator.loader.scheduler.resources.ring
    target = os.readlink(f"/proc/self/fd/{ring.fd(0)}")
    assert target.startswith("/memfd:stoke-ring")
    fd_dir_mode = stat.S_IMODE(os.stat("/proc/self/fd").st_mode)
    assert fd_dir_mode & 0o077 == 0  # only the owner may look up the process's descriptors
    assert not [n for n in os.listdir("/dev/shm") if "stoke" in n]
    iterator.close()
