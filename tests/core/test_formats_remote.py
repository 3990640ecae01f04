"""Remote shards through fsspec, from a real HTTP server on 127.0.0.1 with byte ranges and
an injected per-request latency: the same samples in the same order as the local files,
the reads of a chunk in flight together, and an unreachable URL named within 10 s."""

from __future__ import annotations

import socket
import time

import pytest

import stoke
from tests.core.formats_helpers import (
    RangeServer,
    example_id,
    sample_id,
    write_tfrecords_with_tf,
    write_webdataset,
)

pytest.importorskip("aiohttp")

SIZES = [20, 33, 8]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("served")
    write_tfrecords_with_tf(path, SIZES)
    write_webdataset(path, SIZES)
    return path


def ids_of(pipe, **options) -> list[int]:
    return [int(i) for batch in pipe.iter(**options) for i in batch]


@pytest.mark.parametrize("executor,workers", [("inline", 1), ("thread", 2), ("process", 2)])
def test_tfrecord_over_http_matches_local(folder, executor, workers):
    local = stoke.from_tfrecord(str(folder / "train-*.tfrecord"), cycle_length=2,
                                block_records=3, buffer_size=12).shuffle(5).map(example_id).batch(8)
    expected = ids_of(local, executor="inline")
    with RangeServer(folder, latency_s=0.02) as url:
        remote = stoke.from_tfrecord(url + "/train-{000..002}.tfrecord", cycle_length=2,
                                     block_records=3, buffer_size=12).shuffle(5).map(example_id).batch(8)
        assert ids_of(remote, executor=executor, workers=workers) == expected


def test_webdataset_over_http_reads_each_chunk_concurrently(folder):
    local = stoke.from_webdataset(str(folder / "shard-{000..002}.tar"), block_records=1).shuffle(1).map(
        sample_id).batch(16)
    expected = ids_of(local, executor="inline")
    server = RangeServer(folder, latency_s=0.05)
    with server as url:
        remote = stoke.from_webdataset(url + "/shard-{000..002}.tar", block_records=1).shuffle(1).map(
            sample_id).batch(16)
        len(remote)  # the index: one pass per shard
        server.max_in_flight = 0
        requests_before = server.requests
        assert ids_of(remote, executor="inline") == expected
        assert server.max_in_flight > 1  # a chunk's ranges were in flight together
        assert server.requests - requests_before <= sum(SIZES)  # at most one per sample


def test_remote_blocks_are_read_with_one_request_each(folder):
    server = RangeServer(folder)
    with server as url:
        pipe = stoke.from_tfrecord(url + "/train-{000..002}.tfrecord").shuffle(2).map(
            example_id).batch(16)
        assert pipe.source.block_records == 16  # the remote default
        len(pipe)
        before = server.requests
        assert sorted(ids_of(pipe, executor="thread", workers=2)) == list(range(sum(SIZES)))
        blocks = sum(-(-size // 16) for size in SIZES)
        assert server.requests - before <= 2 * blocks  # a block split by a batch: two reads


def test_process_worker_reads_its_queued_batches_ahead(folder):
    """One worker process, batches of one block each: while it computes one batch, the
    reads of the batches queued behind it are already in flight."""
    server = RangeServer(folder, latency_s=0.3)
    with server as url:
        pipe = stoke.from_tfrecord(url + "/train-{000..002}.tfrecord", block_records=8,
                                   cycle_length=1, buffer_size=0).map(example_id).batch(8)
        len(pipe)
        server.max_in_flight = 0
        got = ids_of(pipe, executor="process", workers=1, ring_slots=5)
        assert got == list(range(sum(SIZES)))
        assert server.max_in_flight >= 3  # one chunk alone needs at most 2 requests


def test_parquet_over_http(folder):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.arange(50)
    pq.write_table(pa.table({"id": ids, "x": ids * 2.0}), str(folder / "t.parquet"),
                   row_group_size=16)
    server = RangeServer(folder, latency_s=0.05)
    with server as url:
        pipe = stoke.from_parquet(url + "/t.parquet", columns=["id", "x"])
        expected = ids_of(stoke.from_parquet(str(folder / "t.parquet")).shuffle(0).map(
            sample_id).batch(10), executor="inline")
        got = ids_of(pipe.shuffle(0).map(sample_id).batch(10), executor="process", workers=2)
        assert got == expected and sorted(got) == list(range(50))
        server.max_in_flight = 0
        got = ids_of(pipe.shuffle(0).map(sample_id).batch(10), executor="inline")
        assert got == expected
        assert server.max_in_flight > 1  # a batch's row groups were read together
        with pytest.raises(KeyError, match=r"\['label'\].*'id', 'x'"):
            stoke.from_parquet(url + "/t.parquet", columns=["label"])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_is_named_quickly():
    url = f"http://127.0.0.1:{_closed_port()}/train-000.tfrecord"
    started = time.monotonic()
    with pytest.raises(stoke.RecordError) as info:
        len(stoke.from_tfrecord(url))
    assert time.monotonic() - started < 10
    assert url in str(info.value) and "could not read" in str(info.value)
    # what happened, not only fsspec's bare FileNotFoundError(url)
    assert "Cannot connect to host" in str(info.value)


def test_unreachable_url_of_a_lazy_source_is_named_quickly():
    """index="lazy": the trainer indexes the first shards while it makes the plan."""
    base = f"http://127.0.0.1:{_closed_port()}"
    pipe = stoke.from_tfrecord(base + "/train-{000..002}.tfrecord", index="lazy").map(
        example_id).batch(8)
    started = time.monotonic()
    with pytest.raises(stoke.RecordError, match="could not read .*Cannot connect to host") as info:
        ids_of(pipe, executor="thread", workers=2)
    assert time.monotonic() - started < 10
    assert base + "/train-00" in str(info.value)


def test_silent_server_is_named_within_10_s():
    """A server that accepts the connection and never answers: no hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/shard-000.tar"
    try:
        started = time.monotonic()
        with pytest.raises(stoke.RecordError, match="could not read") as info:
            len(stoke.from_webdataset(url))
        assert time.monotonic() - started < 10
        assert url in str(info.value)
        lazy = stoke.from_webdataset(url, index="lazy").map(sample_id).batch(4)
        started = time.monotonic()
        with pytest.raises(stoke.RecordError, match="could not read") as info:
            ids_of(lazy, executor="inline")
        assert time.monotonic() - started < 10
        assert url in str(info.value)
    finally:
        listener.close()


def test_server_that_stops_answering_mid_epoch_is_named_within_10_s(folder):
    """Indexed, then every request hangs: the read of a batch fails, naming the URL and the
    timeout, instead of waiting for ever."""
    server = RangeServer(folder)
    with server as url:
        pipe = stoke.from_tfrecord(url + "/train-{000..002}.tfrecord").map(example_id).batch(8)
        len(pipe)
        server.latency_s = 8.0  # past the read timeout; the server's threads end soon after
        started = time.monotonic()
        with pytest.raises(stoke.SampleError) as info:
            ids_of(pipe, executor="thread", workers=2)
        assert time.monotonic() - started < 10
        message = str(info.value).splitlines()[0]
        assert "could not read " + url + "/train-00" in message and "no answer within" in message


def test_missing_remote_file_is_named(folder):
    with RangeServer(folder) as url:
        with pytest.raises(stoke.RecordError, match="nothere.tfrecord"):
            len(stoke.from_tfrecord(url + "/nothere.tfrecord"))


def test_lazy_index_over_http_matches_local(folder):
    """index="lazy": each worker indexes the remote shards of its chunks, all at once."""
    local = stoke.from_tfrecord(str(folder / "train-*.tfrecord"), index="lazy", cycle_length=2,
                                block_records=3, buffer_size=12).shuffle(6).map(example_id).batch(8)
    expected = ids_of(local, executor="inline")
    with RangeServer(folder, latency_s=0.02) as url:
        remote = stoke.from_tfrecord(url + "/train-{000..002}.tfrecord", index="lazy",
                                     cycle_length=2, block_records=3, buffer_size=12).shuffle(
            6).map(example_id).batch(8)
        assert ids_of(remote, executor="process", workers=2) == expected


def test_remote_source_gets_a_deeper_ring_within_the_memory_budget(folder):
    """Each worker's look-ahead is the tasks queued on it (their reads start as they
    arrive): a remote source gets REMOTE_CHUNKS_AHEAD of them, a local one the default ring;
    never past the memory budget."""
    from stoke.data.formats.base import REMOTE_CHUNKS_AHEAD

    def ring_of(base, **options):
        pipe = stoke.from_tfrecord(base + "/train-{000..002}.tfrecord").map(example_id).batch(8)
        with pipe.loader(workers=2, executor="thread", **options) as loader:
            assert sorted(int(i) for b in loader.iter() for i in b) == list(range(sum(SIZES)))
            return loader.tuning().ring_slots, loader.layout.slot_bytes

    local, slot_bytes = ring_of(str(folder))
    assert local == 2 * 2 + 2
    with RangeServer(folder) as url:
        assert ring_of(url)[0] == (1 + REMOTE_CHUNKS_AHEAD) * 2 + 2
        # a budget of 8 slots: the deeper ring stops there
        assert ring_of(url, memory_budget_bytes=8 * slot_bytes)[0] == 8
        # below the default ring: the same error as for a local source
        with pytest.raises(stoke.StokeError, match="memory budget"):
            ring_of(url, memory_budget_bytes=4 * slot_bytes)
        # ring_slots given: exactly that
        assert ring_of(url, ring_slots=3)[0] == 3


def test_tuned_ring_is_deeper_for_remote_reads_within_the_budget():
    import numpy as np

    from stoke.autotune.tuner import Tuner
    from stoke.data.structure import BatchLayout, flatten

    layout = BatchLayout.from_sample([np.zeros(1024, np.float32)], flatten(0)[0], 64)
    budget = 100 * layout.slot_bytes
    tuner = Tuner(("process",), 2, fixed_workers=2, memory_budget_bytes=budget)
    assert tuner.ring_size(layout) == (2 * 2 + 2 + 2, 2 * 2 + 2)  # local: 2 per worker + 2
    tuner = Tuner(("process",), 2, fixed_workers=2, memory_budget_bytes=budget)
    capacity, depth = tuner.ring_size(layout, tasks_per_worker=5)
    assert depth == 5 * 2 + 2 and capacity >= depth
    assert "remote reads" in tuner.decisions[-1].why
    tuner = Tuner(("process",), 2, fixed_workers=2, memory_budget_bytes=9 * layout.slot_bytes)
    assert tuner.ring_size(layout, tasks_per_worker=5) == (9, 9)  # the budget caps it


def _io_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("stoke-io")]


def test_remote_ranges_are_read_on_fsspecs_event_loop(folder):
    """An asynchronous filesystem (HTTP): each range is a coroutine on fsspec's loop, no
    thread of stoke's own per request; its bytes are the file's; a missing file is a
    RecordError naming the URL; close() cancels what is still in flight."""
    from stoke.data.formats.remote import ByteReader

    data = (folder / "train-001.tfrecord").read_bytes()
    server = RangeServer(folder)
    with server as url:
        reader = ByteReader()
        try:
            futures = [reader.submit(url + "/train-001.tfrecord", start, start + 100)
                       for start in (0, 100, len(data) - 50)]
            assert [f.result(timeout=60) for f in futures] == [
                data[:100], data[100:200], data[-50:]]
            assert _io_threads() == []
            missing = reader.submit(url + "/nothere.tar", 0, 10)
            with pytest.raises(stoke.RecordError, match="could not read .*/nothere.tar"):
                missing.result(timeout=60)
            server.latency_s = 5.0
            slow = reader.submit(url + "/train-001.tfrecord", 0, 10)
        finally:
            reader.close()
        assert slow.cancelled()
        server.latency_s = 0.0


def test_prefetch_reads_each_shards_span_of_a_chunk_with_one_request(folder):
    """A chunk of whole shards (eager index): one request per shard, the samples then read
    from it with no request of their own; indices already pending are not asked again."""
    server = RangeServer(folder)
    with server as url:
        source = stoke.from_webdataset(url + "/shard-{000..002}.tar").source
        len(source)  # the index
        before = server.requests
        source.prefetch(range(sum(SIZES)))
        source.prefetch(range(SIZES[0]))  # pending: nothing more
        ids = [int(source[i]["id"]) for i in range(sum(SIZES))]
        assert ids == list(range(sum(SIZES)))
        assert server.requests - before == len(SIZES)
