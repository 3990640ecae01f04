"""Shards on an S3-compatible server running on this machine (moto's server on 127.0.0.1,
written and read through the real S3 API with s3fs): TFRecord, WebDataset tar, Parquet and
ArrayRecord (through its local copy) read with ``s3://`` URLs give every sample exactly once per epoch, in the order of the same
files on local disk, with process workers; a missing bucket or key is named with its URL
within 10 s."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

import stoke
from stoke.data.formats.tfrecord import write_tfrecord
from tests.core.formats_helpers import raw_id, record_bytes, sample_id, write_webdataset

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "stoke-test"
SIZES = [17, 25, 9]
TOTAL = sum(SIZES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """``(storage_options, local folder)``: a moto S3 server with the test shards uploaded."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs
    from array_record.python.array_record_module import ArrayRecordWriter

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"key": "testing", "secret": "testing",
               "endpoint_url": f"http://127.0.0.1:{port}",
               "client_kwargs": {"region_name": "eu-west-1"}}
    folder = tmp_path_factory.mktemp("s3")
    start = 0
    for shard, size in enumerate(SIZES):
        write_tfrecord(str(folder / f"train-{shard:03d}.tfrecord"),
                       [record_bytes(i) for i in range(start, start + size)])
        ids = np.arange(start, start + size)
        pq.write_table(pa.table({"id": ids, "blob": [record_bytes(int(i)) for i in ids]}),
                       str(folder / f"part-{shard}.parquet"), row_group_size=8)
        writer = ArrayRecordWriter(str(folder / f"rec-{shard}.array_record"), "group_size:1")
        for i in range(start, start + size):
            writer.write(record_bytes(i))
        writer.close()
        start += size
    write_webdataset(folder, SIZES)
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(BUCKET)
    for path in sorted(folder.iterdir()):
        fs.put_file(str(path), f"{BUCKET}/data/{path.name}")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield options, folder
    finally:
        server.stop()


def ids_of(pipe, **options) -> list[int]:
    return [int(i) for batch in pipe.iter(**options) for i in batch]


def test_tfrecord_from_s3_glob_matches_local(s3):
    options, folder = s3
    local = stoke.from_tfrecord(str(folder / "train-*.tfrecord"), cycle_length=2,
                                block_records=4).shuffle(3).map(raw_id).batch(8)
    remote = stoke.from_tfrecord(f"s3://{BUCKET}/data/train-*.tfrecord", cycle_length=2,
                                 block_records=4, storage_options=options).shuffle(3).map(
        raw_id).batch(8)
    assert list(remote.source.paths) == [f"s3://{BUCKET}/data/train-{i:03d}.tfrecord"
                                         for i in range(3)]  # listed through the S3 API
    expected = ids_of(local, executor="inline")
    assert sorted(expected) == list(range(TOTAL))
    for executor, workers in (("inline", 1), ("process", 2)):
        assert ids_of(remote, executor=executor, workers=workers) == expected


def test_lazy_tfrecord_brace_pattern_on_s3(s3):
    options, _ = s3
    pipe = stoke.from_tfrecord(f"s3://{BUCKET}/data/train-{{000..002}}.tfrecord", index="lazy",
                               storage_options=options).shuffle(1).map(raw_id).batch(5).repeat(2)
    got = ids_of(pipe, executor="process", workers=2)
    assert sorted(got[:TOTAL]) == sorted(got[TOTAL:]) == list(range(TOTAL))  # once per epoch


def test_webdataset_and_parquet_from_s3(s3):
    options, _ = s3
    tar = stoke.from_webdataset(f"s3://{BUCKET}/data/shard-{{000..002}}.tar",
                                storage_options=options).shuffle(2).map(sample_id).batch(6)
    assert sorted(ids_of(tar, executor="process", workers=2)) == list(range(TOTAL))
    table = stoke.from_parquet(f"s3://{BUCKET}/data/part-*.parquet", columns=["id"],
                               storage_options=options).shuffle(2).map(sample_id).batch(6)
    assert len(table.source) == TOTAL
    assert sorted(ids_of(table, executor="process", workers=2)) == list(range(TOTAL))


def test_array_record_from_s3_through_the_local_cache(s3, tmp_path):
    options, folder = s3
    pipe = stoke.from_array_record(f"s3://{BUCKET}/data/rec-*.array_record",
                                   cache_dir=str(tmp_path), storage_options=options)
    assert len(pipe) == TOTAL and len(list(tmp_path.iterdir())) == 3  # copied once, here
    local = stoke.from_array_record(str(folder / "rec-*.array_record"))
    expected = ids_of(local.shuffle(4).map(raw_id).batch(7), executor="inline")
    assert ids_of(pipe.shuffle(4).map(raw_id).batch(7), executor="process",
                  workers=2) == expected


@pytest.mark.parametrize("url", [f"s3://{BUCKET}/data/nope-000.tfrecord",
                                 "s3://no-such-bucket-stoke/train-000.tfrecord"])
def test_missing_key_or_bucket_is_named_within_10_s(s3, url):
    options, _ = s3
    started = time.monotonic()
    with pytest.raises((stoke.RecordError, FileNotFoundError)) as info:
        len(stoke.from_tfrecord(url, storage_options=options))
    assert time.monotonic() - started < 10
    assert url in str(info.value)


def test_no_match_on_s3_says_so(s3):
    options, _ = s3
    with pytest.raises(FileNotFoundError, match="from_tfrecord found no files"):
        stoke.from_tfrecord(f"s3://{BUCKET}/data/absent-*.tfrecord", storage_options=options)


def test_unreachable_endpoint_is_named_within_10_s():
    options = {"key": "testing", "secret": "testing",
               "endpoint_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
               "client_kwargs": {"region_name": "eu-west-1"}}
    url = f"s3://{BUCKET}/data/train-000.tfrecord"
    started = time.monotonic()
    with pytest.raises(stoke.RecordError, match=f"could not read {url}"):
        len(stoke.from_tfrecord(url, storage_options=options))
    assert time.monotonic() - started < 10
