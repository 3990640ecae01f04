"""Record formats under the Ray executor (a local Ray started by the pool, no mocks): the
same batches as inline, every record once, resumable mid-shard. Shards are local files,
which every Ray worker on this machine reads."""

from __future__ import annotations

import sys

import pytest

import stoke

ray = pytest.importorskip("ray")

from stoke.executors.ray import RayPool  # noqa: E402
from tests.core import formats_helpers  # noqa: E402

# the helpers travel by value, as a user's own functions do
ray.cloudpickle.register_pickle_by_value(formats_helpers)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def ids_with(pipe, pool_workers: int | None, epoch: int = 0, state=None, stop=None):
    loader = pipe.loader(executor="inline", timeout_s=120.0)
    if pool_workers is not None:
        loader.scheduler.resources.pool = RayPool(loader.program, pool_workers)
    try:
        out = []
        iterator = loader.iter(epoch=epoch, state=state)
        for count, batch in enumerate(iterator, 1):
            out += [int(i) for i in batch]
            if stop is not None and count == stop:
                break
        return out, iterator.state()
    finally:
        loader.close()


@pytest.mark.slow
def test_tfrecord_and_webdataset_on_ray(tmp_path):
    if ray.is_initialized():
        pytest.skip("needs a process not connected to Ray yet")
    (tmp_path / "tfr").mkdir()
    tfrecords = formats_helpers.write_tfrecords_with_tf(tmp_path / "tfr", [23, 31, 12])
    tars = formats_helpers.write_webdataset(tmp_path, [15, 26])
    tfr = stoke.from_tfrecord(tfrecords, cycle_length=2, buffer_size=10).shuffle(4).map(
        formats_helpers.example_id).batch(8)
    wds = stoke.from_webdataset(tars, cycle_length=2, buffer_size=10).shuffle(4).map(
        formats_helpers.sample_id).batch(8)
    lazy = stoke.from_tfrecord(tfrecords, index="lazy", cycle_length=2, buffer_size=10).shuffle(
        4).map(formats_helpers.example_id).batch(8)
    for pipe, total in ((tfr, 66), (wds, 41), (lazy, 66)):
        expected, _ = ids_with(pipe, None, epoch=1)
        got, _ = ids_with(pipe, 2, epoch=1)
        assert got == expected and sorted(got) == list(range(total))
    head, state = ids_with(tfr, 2, epoch=1, stop=3)
    rest, _ = ids_with(tfr, None, state=state)
    assert head + rest == ids_with(tfr, None, epoch=1)[0]
    assert not ray.is_initialized()
